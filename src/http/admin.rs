//! The admin API: revocation (`POST /api/v1/admin/revoke`), for tokens with
//! `"role":"admin"` and admin API keys only.

use poem_openapi::{Object, OpenApi, payload::Json};

use crate::{
    http::{error::ApiError, views::BearerToken},
    model::{ids::DocumentId, revocation::Revocation},
    state::AppState,
};

pub struct AdminApi {
    pub state: AppState,
}

/// Whom to revoke: a user's connections, a session's, or both at once; with
/// `document_id`, only their membership of that document.
#[derive(Debug, Object)]
pub struct RevokeRequest {
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    pub document_id: Option<String>,
}

#[derive(Debug, Object)]
pub struct RevokeResponse {
    /// Connections targeted on the instance that took the call.
    pub revoked: u64,
    /// Whether the revocation went out to the other instances (Redis).
    pub published: bool,
}

#[OpenApi]
impl AdminApi {
    /// Close the matching connections on every instance within a second
    /// (4005, others see `user_left` with reason `revoked`), or, with
    /// `document_id`, remove them from that document only. Tokens of a
    /// revoked user issued before now, and a revoked session's token, cannot
    /// connect again until they expire.
    #[oai(path = "/api/v1/admin/revoke", method = "post")]
    async fn revoke(
        &self,
        auth: BearerToken,
        body: Json<RevokeRequest>,
    ) -> Result<Json<RevokeResponse>, ApiError> {
        let identity = auth.identity(&self.state).await?;
        if !identity.is_admin() {
            return Err(ApiError::forbidden(
                "the admin API needs a token with \"role\":\"admin\" or an admin API key",
            ));
        }
        let body = body.0;
        let user_id = body.user_id.filter(|id| !id.is_empty());
        let session_id = match body.session_id.as_deref() {
            None | Some("") => None,
            Some(id) => Some(
                id.parse::<uuid::Uuid>()
                    .map_err(|_| ApiError::bad_request("invalid_message", "session_id must be a UUID"))?,
            ),
        };
        if user_id.is_none() && session_id.is_none() {
            return Err(ApiError::bad_request(
                "invalid_message",
                "give a user_id, a session_id or both",
            ));
        }
        if user_id.as_ref().is_some_and(|id| id.len() > 256) {
            return Err(ApiError::bad_request(
                "invalid_message",
                "user_id is at most 256 bytes",
            ));
        }
        let document_id = match body.document_id.as_deref() {
            None => None,
            Some(id) => Some(
                DocumentId::parse(id)
                    .map_err(|e| ApiError::bad_request("invalid_document_id", e.0))?
                    .as_str()
                    .to_owned(),
            ),
        };
        let revocation = Revocation {
            user_id,
            session_id,
            document_id,
            at: jsonwebtoken::get_current_timestamp(),
        };
        tracing::info!(admin = %identity.user_id, ?revocation, "revocation");
        let (revoked, published) = crate::cluster::revoke::revoke_everywhere(
            &self.state.hub,
            &self.state.verifier,
            &self.state.bus,
            revocation,
        )
        .await;
        Ok(Json(RevokeResponse {
            revoked: revoked as u64,
            published,
        }))
    }
}
