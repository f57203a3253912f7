//! App messages from backends: `POST /api/v1/documents/{id}/broadcast` (to
//! a document's members; the token's `docs` claim applies) and
//! `POST /api/v1/users/{id}/messages` (to every connection of a user; admin
//! tokens and API keys only). Delivered at once here and published to the
//! other instances; never stored.

use poem_openapi::{Object, OpenApi, param::Path, payload::Json};

use crate::{
    http::{error::ApiError, views::BearerToken},
    model::ids::DocumentId,
    protocol::{
        codes::{ErrorCode, ProtocolError},
        json::{AppData, app::validate_event},
    },
    rooms::{
        app_messages::{self, Sender},
        events::RoomEvent,
    },
    state::AppState,
};

pub struct MessagesApi {
    pub state: AppState,
}

/// An app event: a name and any JSON.
#[derive(Debug, Object)]
pub struct AppMessage {
    /// 1-64 bytes, e.g. `typing` or `notification`.
    pub event: String,
    /// Any JSON, at most `--max-broadcast-bytes` (16 KiB) serialized.
    pub data: serde_json::Value,
}

#[derive(Debug, Object)]
pub struct Delivered {
    /// Connections on this instance it was queued for.
    pub delivered: u64,
    /// Whether it went out to the other instances (Redis configured and up).
    pub published: bool,
}

impl MessagesApi {
    fn checked(&self, body: AppMessage) -> Result<(String, AppData), ApiError> {
        let refuse = |error: ProtocolError| match error.code {
            ErrorCode::TooLarge => ApiError::too_large(error.message),
            _ => ApiError::bad_request("invalid_message", error.message),
        };
        let event = validate_event(Some(&body.event)).map_err(refuse)?;
        let data =
            AppData::parse(&body.data.to_string(), self.state.config.max_broadcast_bytes).map_err(refuse)?;
        Ok((event, data))
    }

    fn redis_up(&self) -> bool {
        matches!(self.state.bus.state(), crate::cluster::bus::RedisState::Ok)
    }
}

#[OpenApi]
impl MessagesApi {
    /// Send an app event to every JSON member of a document, on every
    /// instance, as `{"type":"broadcast",...,"user_id":<the token's>,"connection_id":null}`.
    #[oai(path = "/api/v1/documents/:document_id/broadcast", method = "post")]
    async fn broadcast(
        &self,
        auth: BearerToken,
        document_id: Path<String>,
        body: Json<AppMessage>,
    ) -> Result<Json<Delivered>, ApiError> {
        let identity = auth.identity(&self.state).await?;
        let document_id =
            DocumentId::parse(&document_id).map_err(|e| ApiError::bad_request("invalid_document_id", e.0))?;
        if !identity.may_access(&document_id) {
            return Err(ApiError::forbidden("this token may not open this document"));
        }
        let (event, data) = self.checked(body.0)?;
        let delivered = self.state.hub.room(&document_id).map_or(0, |room| {
            app_messages::broadcast_here(&room, &event, &data, &identity.user_id, None)
        });
        self.state.hub.cluster.publish(
            &document_id,
            RoomEvent::Broadcast {
                event,
                data: data.json().to_owned(),
                user_id: identity.user_id.to_string(),
                connection_id: None,
            },
        );
        Ok(Json(Delivered {
            delivered: delivered as u64,
            published: self.redis_up(),
        }))
    }

    /// Send an app event to every connection of a user, on every instance,
    /// as `{"type":"direct","from_user_id":<the token's>,"from_connection_id":null,...}`.
    #[oai(path = "/api/v1/users/:user_id/messages", method = "post")]
    async fn message_user(
        &self,
        auth: BearerToken,
        user_id: Path<String>,
        body: Json<AppMessage>,
    ) -> Result<Json<Delivered>, ApiError> {
        let identity = auth.identity(&self.state).await?;
        if !(identity.is_admin() || identity.is_api_key()) {
            return Err(ApiError::forbidden(
                "messages to a user need a token with \"role\":\"admin\" or an API key",
            ));
        }
        if user_id.is_empty() || user_id.len() > 256 {
            return Err(ApiError::bad_request("invalid_message", "user_id is 1-256 bytes"));
        }
        let (event, data) = self.checked(body.0)?;
        let from = Sender {
            user_id: &identity.user_id,
            connection_id: None,
        };
        let delivered = app_messages::direct_here(&self.state.hub, &user_id, &event, &data, from);
        let published = crate::cluster::revoke::publish_direct(
            &self.state.bus,
            &user_id,
            &event,
            data.json(),
            &identity.user_id,
        )
        .await;
        Ok(Json(Delivered {
            delivered: delivered as u64,
            published,
        }))
    }
}
