//! Errors at the HTTP edge. Each variant documents its status code; the
//! cause of a 500 is logged, never sent.

use poem::{IntoResponse, Response, http::StatusCode};
use poem_openapi::{ApiResponse, Object, payload::Json};

/// The JSON body of every HTTP error.
#[derive(Debug, Clone, Object)]
pub struct ErrorBody {
    /// A stable machine-readable code, e.g. `unauthorized`.
    pub error: String,
    /// A human-readable explanation.
    pub message: String,
    /// For `invalid_op`: the index of the op that failed (0-based).
    #[oai(skip_serializing_if_is_none)]
    pub index: Option<u32>,
}

/// Errors a REST endpoint returns.
#[derive(Debug, ApiResponse)]
pub enum ApiError {
    /// 400: malformed input (bad id, bad base64, undecodable update).
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// 401: missing, malformed, badly signed or expired token.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// 403: the token does not allow this.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// 404: no such resource.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// 413: payload over the configured limit.
    #[oai(status = 413)]
    TooLarge(Json<ErrorBody>),
    /// 500: the server failed; the cause is in its log.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// 503: a dependency (the database) is unavailable.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

fn body(error: &str, message: impl Into<String>) -> Json<ErrorBody> {
    Json(ErrorBody {
        error: error.into(),
        message: message.into(),
        index: None,
    })
}

impl ApiError {
    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::BadRequest(body(code, message))
    }

    /// 400 `invalid_op`: the op at `index` is wrong; nothing was applied.
    pub fn invalid_op(index: usize, message: impl Into<String>) -> Self {
        let mut body = body("invalid_op", message);
        body.0.index = Some(index as u32);
        Self::BadRequest(body)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::Unauthorized(body("unauthorized", message))
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::Forbidden(body("forbidden", message))
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound(body("not_found", message))
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::TooLarge(body("too_large", message))
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable(body("unavailable", message))
    }

    /// Log `cause` and answer with a generic 500.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "request failed");
        Self::Internal(body("internal", "internal server error"))
    }
}

/// A JSON error response outside poem-openapi (the WebSocket upgrade, fallbacks).
pub fn json_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": code, "message": message.into() });
    (status, poem::web::Json(body)).into_response()
}

/// Render any error that escaped a handler (unknown route, bad method, a
/// failed extractor) as JSON; responses that are JSON already pass through.
pub async fn render_error(error: poem::Error) -> Response {
    let status = error.status();
    let message = error.to_string();
    let response = error.into_response();
    let is_json = response
        .headers()
        .get(poem::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    let message = if status.is_server_error() {
        tracing::error!(%status, error = %message, "request failed");
        "internal server error".to_owned()
    } else if status == StatusCode::UNAUTHORIZED {
        "missing or malformed Authorization: Bearer <jwt> header".to_owned()
    } else {
        message
    };
    json_error(status, code, message)
}
