//! What REST answers and accepts: the typed objects of the OpenAPI spec,
//! separate from the handlers that fill them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use poem_openapi::{Object, SecurityScheme, auth::Bearer, payload::Json};

use crate::{auth::Identity, http::error::ApiError, model::presence::Presence, state::AppState};

/// `Authorization: Bearer <jwt>`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer")]
pub struct BearerToken(Bearer);

impl BearerToken {
    pub(crate) async fn identity(&self, state: &AppState) -> Result<Identity, ApiError> {
        state.verifier.verify(&self.0.token).await.map_err(|e| match e {
            crate::auth::AuthError::Unavailable => ApiError::unavailable(e.to_string()),
            _ => ApiError::unauthorized(e.to_string()),
        })
    }
}

/// A line/column position.
#[derive(Debug, Clone, Object)]
pub struct CursorView {
    pub line: u32,
    pub column: u32,
}

/// A selected range.
#[derive(Debug, Clone, Object)]
pub struct SelectionView {
    pub start: CursorView,
    pub end: CursorView,
}

/// One member of a document (one user on one connection).
#[derive(Debug, Clone, Object)]
pub struct PresenceView {
    pub user_id: String,
    pub name: Option<String>,
    pub session_id: String,
    pub connection_id: String,
    /// mobile, tablet, desktop, bot or other.
    pub device_type: String,
    pub is_editing: bool,
    pub cursor: Option<CursorView>,
    pub selection: Option<SelectionView>,
    pub joined_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
}

impl From<&Presence> for PresenceView {
    fn from(p: &Presence) -> Self {
        let cursor = |c: crate::model::presence::Cursor| CursorView {
            line: c.line,
            column: c.column,
        };
        Self {
            user_id: p.user_id.to_string(),
            name: p.name.as_deref().map(str::to_owned),
            session_id: p.session_id.to_string(),
            connection_id: p.connection_id.to_string(),
            device_type: p.device_type.as_str().to_owned(),
            is_editing: p.is_editing,
            cursor: p.cursor.map(cursor),
            selection: p.selection.map(|s| SelectionView {
                start: cursor(s.start),
                end: cursor(s.end),
            }),
            joined_at: p.joined_at,
            last_seen_at: p.last_seen_at,
        }
    }
}

/// One user's devices in a document.
#[derive(Debug, Clone, Object)]
pub struct UserDevices {
    pub user_id: String,
    pub name: Option<String>,
    pub devices: Vec<PresenceView>,
}

/// Open connections per protocol (`json`, `yjs`), as REST reports them.
pub fn connections_by_protocol(hub: &crate::rooms::hub::Hub) -> BTreeMap<String, u64> {
    hub.connections_by_protocol()
        .into_iter()
        .map(|(protocol, count)| (protocol.to_owned(), count as u64))
        .collect()
}

/// Members grouped per user, in the order given (sort by user first).
pub fn group_by_user(members: &[Presence]) -> Vec<UserDevices> {
    let mut by_user: Vec<UserDevices> = Vec::new();
    for presence in members {
        match by_user.last_mut() {
            Some(group) if group.user_id == *presence.user_id => group.devices.push(presence.into()),
            _ => by_user.push(UserDevices {
                user_id: presence.user_id.to_string(),
                name: presence.name.as_deref().map(str::to_owned),
                devices: vec![presence.into()],
            }),
        }
    }
    by_user
}

/// Everyone in a document, flat and grouped per user.
#[derive(Debug, Clone, Object)]
pub struct DocumentPresenceResponse {
    pub document_id: String,
    pub users: Vec<PresenceView>,
    pub by_user: Vec<UserDevices>,
}

/// An active session of a user.
#[derive(Debug, Clone, Object)]
pub struct SessionView {
    pub session_id: String,
    pub connection_id: String,
    pub device_type: String,
    pub user_agent: Option<String>,
    pub ip_address: Option<String>,
    pub current_document_id: Option<String>,
    pub instance_id: String,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
}

/// A page of a user's active sessions, one per connection.
#[derive(Debug, Clone, Object)]
pub struct UserSessionsResponse {
    pub user_id: String,
    pub sessions: Vec<SessionView>,
    /// Pass as `?after=` for the next page; `null` on the last page.
    pub next_after: Option<String>,
}

/// Sessions per page unless `?limit=` says otherwise.
pub(crate) const SESSIONS_PAGE: u32 = 100;
/// Largest `?limit=`.
pub(crate) const MAX_SESSIONS_PAGE: u32 = 1000;

/// Liveness and dependencies.
#[derive(Debug, Clone, Object)]
pub struct HealthResponse {
    /// `ok`, or `degraded` when a dependency is down.
    pub status: String,
    pub uptime_seconds: u64,
    pub connections: u64,
    pub rooms: u64,
    /// `ok`; `failing` when it answers but writes do not commit (full or
    /// unwritable disk, SQLite file deleted, last commit of updates failed),
    /// so nothing is acknowledged; `down` when it does not answer.
    pub database: String,
    /// `ok`, `down` or `disabled`.
    pub redis: String,
    pub instance_id: String,
}

/// A room and how many members it has.
#[derive(Debug, Clone, Object)]
pub struct RoomStats {
    pub document_id: String,
    pub members: u64,
}

/// Counters since start.
#[derive(Debug, Clone, Object)]
pub struct StatsResponse {
    pub rooms: Vec<RoomStats>,
    pub connections: u64,
    /// Open connections per protocol (`json`, `yjs`).
    pub connections_by_protocol: BTreeMap<String, u64>,
    pub connections_opened: u64,
    pub messages_processed: u64,
    pub messages_rejected: u64,
    /// Session and presence rows waiting to be written.
    pub write_backlog: u64,
}

/// A whole document, for backends without a socket.
#[derive(Debug, Clone, Object)]
pub struct DocumentResponse {
    pub document_id: String,
    /// The whole document as one Yjs v1 update, standard base64.
    pub state: String,
    /// Its state vector (v1), standard base64.
    pub state_vector: String,
    /// Update rows stored since the last compaction.
    pub updates_since_snapshot: u64,
}

/// A Yjs v1 update to apply.
#[derive(Debug, Clone, Object)]
pub struct UpdateRequest {
    /// Standard base64 of a Yjs v1 update.
    pub update: String,
}

/// The result of an applied, durable update.
#[derive(Debug, Clone, Object)]
pub struct UpdateResponse {
    pub document_id: String,
    /// The document's state vector after the update, standard base64.
    pub state_vector: String,
}

#[derive(poem_openapi::ApiResponse)]
pub enum HealthResult {
    /// Everything answers.
    #[oai(status = 200)]
    Ok(Json<HealthResponse>),
    /// A dependency is down.
    #[oai(status = 503)]
    Unavailable(Json<HealthResponse>),
}

/// A document as JSON, rendered as the npm `yjs` package renders it.
#[derive(Debug, Clone, Object)]
pub struct DocumentJsonResponse {
    pub document_id: String,
    /// The state vector of the state rendered, standard base64.
    pub state_vector: String,
    /// Each root by name: `Y.Map` -> object, `Y.Array` -> array, `Y.Text` ->
    /// string, `Y.XmlFragment` -> its XML string; binaries as base64.
    pub content: std::collections::BTreeMap<String, serde_json::Value>,
}

/// JSON writes, applied as one Yjs transaction.
#[derive(Debug, Clone, Object)]
pub struct OpsRequest {
    /// `map_set`, `map_delete`, `array_insert`, `array_delete`,
    /// `text_insert`, `text_delete` (see docs/protocol.md); at most 1000.
    pub ops: Vec<serde_json::Value>,
    /// Any value of the caller's, echoed in the answer.
    pub id: Option<serde_json::Value>,
}

/// The result of applied, durable ops.
#[derive(Debug, Clone, Object)]
pub struct OpsResponse {
    pub document_id: String,
    /// The document's state vector after the ops, standard base64.
    pub state_vector: String,
    #[oai(skip_serializing_if_is_none)]
    pub id: Option<serde_json::Value>,
}
