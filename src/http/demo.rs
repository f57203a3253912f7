//! The demo (`/demo`): a page anyone can open in two windows to edit one
//! document together, and `/demo/token`, which hands out editor tokens for a
//! display name. The page and its bundle (the `tandem-client` package, Yjs
//! and the page's code, built by `npm run build` in `clients/js`) are
//! embedded in the binary. Served only when [`Config::demo_enabled`]: the
//! token endpoint gives anyone an identity.
//!
//! [`Config::demo_enabled`]: crate::config::Config::demo_enabled

use std::time::Duration;

use poem::{
    Endpoint, EndpointExt, IntoResponse, Response, Route, get, handler,
    http::StatusCode,
    web::{Data, Query},
};
use serde::Deserialize;

use crate::{
    auth::{Claims, jwt},
    http::error::json_error,
    state::AppState,
};

const PAGE: &str = include_str!("../../clients/js/demo/index.html");
const BUNDLE: &str = include_str!("../../clients/js/dist/demo.js");

/// How long a demo token lives; the page asks for a new one before then.
const TOKEN_TTL: Duration = Duration::from_secs(3600);
/// Longest display name, in characters.
const MAX_NAME_CHARS: usize = 64;

/// The demo's routes, or 404 for each when the demo is off.
pub fn routes(enabled: bool) -> impl Endpoint {
    Route::new()
        .at("/", get(page))
        .at("/app.js", get(bundle))
        .at("/token", get(token))
        .before(move |req| async move {
            if enabled {
                Ok(req)
            } else {
                Err(poem::Error::from_status(StatusCode::NOT_FOUND))
            }
        })
}

#[handler]
fn page() -> Response {
    Response::builder()
        .content_type("text/html; charset=utf-8")
        .header("cache-control", "no-cache")
        .body(PAGE)
}

#[handler]
fn bundle() -> Response {
    Response::builder()
        .content_type("text/javascript; charset=utf-8")
        .header("cache-control", "no-cache")
        .body(BUNDLE)
}

#[derive(Deserialize)]
struct TokenQuery {
    name: Option<String>,
}

/// `GET /demo/token?name=Alice` -> `{"token","user_id","name"}`. The user id
/// is derived from the name, so the same name in two windows is one user on
/// two devices, and two names are two people.
#[handler]
fn token(Data(state): Data<&AppState>, Query(query): Query<TokenQuery>) -> Response {
    let name = query.name.as_deref().map(str::trim).unwrap_or_default();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return json_error(
            StatusCode::BAD_REQUEST,
            "invalid_message",
            format!("name must be 1-{MAX_NAME_CHARS} printable characters"),
        );
    }
    let user_id = user_id_for(name);
    let mut claims = Claims::for_user(&user_id, TOKEN_TTL);
    claims.name = Some(name.to_owned());
    match jwt::mint_hs256(&state.config.jwt_secret_or_development(), &claims) {
        Ok(token) => poem::web::Json(serde_json::json!({
            "token": token,
            "user_id": user_id,
            "name": name,
        }))
        .into_response(),
        Err(error) => {
            tracing::error!(%error, "demo token not minted");
            json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "token not minted")
        }
    }
}

/// `demo-` and the name's letters and digits, lowercased (`Ada L.` ->
/// `demo-adal`); names without any get a hex rendering so they stay distinct.
fn user_id_for(name: &str) -> String {
    let slug: String = name
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect();
    if slug.is_empty() {
        let hex: String = name.bytes().take(32).map(|b| format!("{b:02x}")).collect();
        format!("demo-{hex}")
    } else {
        format!("demo-{slug}")
    }
}

#[cfg(test)]
mod tests {
    use super::user_id_for;

    #[test]
    fn user_ids_follow_the_name() {
        assert_eq!(user_id_for("Ada L."), "demo-adal");
        assert_eq!(user_id_for("ada l"), "demo-adal");
        assert_eq!(user_id_for("Åsa"), "demo-åsa");
        assert_eq!(user_id_for("!!"), "demo-2121");
    }
}
