//! The admin API: revocation (`POST /api/v1/admin/revoke`) and the webhook
//! outbox (`GET /api/v1/admin/webhooks`), for tokens with `"role":"admin"`
//! and admin API keys only.

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

/// One webhook delivery not yet made, or given up.
#[derive(Debug, Object)]
pub struct WebhookDeliveryView {
    pub event_id: String,
    #[oai(rename = "type")]
    pub event_type: String,
    pub target: String,
    /// `doc:<id>` or `user:<id>`: deliveries with one key go out in order.
    pub order_key: String,
    /// `pending` or `failed`.
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// The next attempt (pending), or the last one's schedule (failed).
    pub next_attempt_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Object)]
pub struct WebhooksResponse {
    /// Whether webhooks are configured (`--webhook-url`).
    pub enabled: bool,
    /// Oldest first, at most `limit`.
    pub pending: Vec<WebhookDeliveryView>,
    /// Newest first, at most `limit`.
    pub failed: Vec<WebhookDeliveryView>,
}

fn delivery_view(row: entity::webhook_outbox::Model) -> WebhookDeliveryView {
    WebhookDeliveryView {
        event_id: row.event_id.to_string(),
        event_type: row.event_type,
        target: row.target,
        order_key: row.order_key,
        status: row.status,
        attempts: row.attempts,
        last_error: row.last_error,
        created_at: row.created_at,
        next_attempt_at: row.available_at,
    }
}

impl AdminApi {
    async fn admin(&self, auth: &BearerToken) -> Result<crate::auth::Identity, ApiError> {
        let identity = auth.identity(&self.state).await?;
        if !identity.is_admin() {
            return Err(ApiError::forbidden(
                "the admin API needs a token with \"role\":\"admin\" or an admin API key",
            ));
        }
        Ok(identity)
    }
}

#[OpenApi]
impl AdminApi {
    /// Webhook deliveries still pending (with their attempts and last error)
    /// and those given up after `--webhook-max-age`.
    #[oai(path = "/api/v1/admin/webhooks", method = "get")]
    async fn webhooks(
        &self,
        auth: BearerToken,
        /// Deliveries per list, 1 to 1000 (default 100).
        limit: poem_openapi::param::Query<Option<u32>>,
    ) -> Result<Json<WebhooksResponse>, ApiError> {
        self.admin(&auth).await?;
        let limit = limit.0.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(ApiError::bad_request("invalid_limit", "limit must be 1 to 1000"));
        }
        let (pending, failed) = crate::storage::webhooks::outstanding(&self.state.db, u64::from(limit))
            .await
            .map_err(ApiError::internal)?;
        Ok(Json(WebhooksResponse {
            enabled: !self.state.config.webhook_urls.is_empty(),
            pending: pending.into_iter().map(delivery_view).collect(),
            failed: failed.into_iter().map(delivery_view).collect(),
        }))
    }

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
        let identity = self.admin(&auth).await?;
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
