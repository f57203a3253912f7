//! The HTTP edge: REST (poem-openapi, served with its spec at `/openapi.json`
//! and Swagger UI at `/docs`), the `/ws` upgrade, JSON errors everywhere, and
//! request logs that never contain a query string (tokens travel there).

use std::{collections::BTreeMap, sync::atomic::Ordering, time::Instant};

use chrono::{DateTime, Utc};
use entity::user_sessions;
use poem::{
    Endpoint, EndpointExt, IntoResponse, Request, Response, Route, get, handler, http::StatusCode, web::Data,
};
use poem_openapi::{
    Object, OpenApi, OpenApiService, SecurityScheme,
    auth::Bearer,
    param::{Path, Query},
    payload::Json,
};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};

use crate::{
    auth::Identity,
    http::error::{ApiError, json_error, render_error},
    model::ids::DocumentId,
    model::presence::Presence,
    state::AppState,
    storage::durability::WriteHealth,
    transport::connection::Peer,
};

/// `Authorization: Bearer <jwt>`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer")]
pub struct BearerToken(Bearer);

impl BearerToken {
    fn identity(&self, state: &AppState) -> Result<Identity, ApiError> {
        state
            .keys
            .verify(&self.0.token)
            .map_err(|e| ApiError::unauthorized(e.to_string()))
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
const SESSIONS_PAGE: u32 = 100;
/// Largest `?limit=`.
const MAX_SESSIONS_PAGE: u32 = 1000;

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

/// How long a REST update waits for its commit.
const DURABLE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

pub struct Api {
    pub state: AppState,
}

impl Api {
    /// Run `work` on the document's room, loaded, keeping it from being unloaded meanwhile.
    async fn with_document<T>(
        &self,
        document_id: &DocumentId,
        work: impl AsyncFnOnce(&std::sync::Arc<crate::rooms::room::Room>) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let hub = &self.state.hub;
        let room = hub.begin_join(document_id);
        let result = match self.state.docs.ensure_loaded(&room).await {
            Ok(()) => work(&room).await,
            Err(error) => {
                tracing::warn!(%document_id, error = format!("{:#}", anyhow::Error::from(error)), "document load failed");
                Err(ApiError::unavailable(
                    "the document could not be loaded; try again",
                ))
            }
        };
        hub.abort_join(&room);
        result
    }

    /// [`Api::with_document`] for a read: a room nobody is in is dropped
    /// right after, so reads do not pile up rooms until the grace period.
    async fn read_document<T>(
        &self,
        document_id: &DocumentId,
        work: impl AsyncFnOnce(&std::sync::Arc<crate::rooms::room::Room>) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let result = self.with_document(document_id, work).await;
        self.state.hub.release_if_idle(document_id);
        result
    }

    fn authorize(&self, auth: &BearerToken, document_id: &str) -> Result<(Identity, DocumentId), ApiError> {
        let identity = auth.identity(&self.state)?;
        let document_id = parse_document_id(document_id)?;
        if !identity.may_access(&document_id) {
            return Err(ApiError::forbidden("this token may not open this document"));
        }
        Ok((identity, document_id))
    }
}

/// Map a document error to its HTTP status.
fn doc_error(error: crate::rooms::documents::DocError) -> ApiError {
    use crate::rooms::documents::DocError;
    match error {
        DocError::Sync(e @ crate::crdt::sync::SyncError::ForeignClient(_)) => {
            ApiError::forbidden(e.to_string())
        }
        DocError::Sync(e) => ApiError::bad_request("invalid_update", e.to_string()),
        DocError::Awareness(e) => ApiError::bad_request("invalid_update", e.to_string()),
        DocError::Busy => ApiError::unavailable("the server is busy persisting updates; retry shortly"),
        DocError::Unavailable(e) => {
            tracing::warn!(error = format!("{e:#}"), "document unavailable");
            ApiError::unavailable("the document could not be loaded; try again")
        }
    }
}

fn parse_document_id(raw: &str) -> Result<DocumentId, ApiError> {
    DocumentId::parse(raw).map_err(|e| ApiError::bad_request("invalid_document_id", e.0))
}

#[OpenApi]
impl Api {
    /// Who is in a document: every member (all devices of every user), flat and per user.
    #[oai(path = "/api/v1/presence/document/:document_id", method = "get")]
    async fn document_presence(
        &self,
        auth: BearerToken,
        document_id: Path<String>,
    ) -> Result<Json<DocumentPresenceResponse>, ApiError> {
        let identity = auth.identity(&self.state)?;
        let document_id = parse_document_id(&document_id)?;
        if !identity.may_access(&document_id) {
            return Err(ApiError::forbidden("this token may not open this document"));
        }
        // The local room mirrors members on other instances; without one, ask Redis.
        let local = self
            .state
            .hub
            .room(&document_id)
            .map(|room| room.state().presence_list());
        let mut users: Vec<Presence> = match local {
            Some(users) => users,
            None => self.state.bus.remote_members(&document_id).await,
        };
        users.sort_by(|a, b| (&a.user_id, a.joined_at).cmp(&(&b.user_id, b.joined_at)));
        let mut by_user: Vec<UserDevices> = Vec::new();
        for presence in &users {
            match by_user.last_mut() {
                Some(group) if group.user_id == *presence.user_id => group.devices.push(presence.into()),
                _ => by_user.push(UserDevices {
                    user_id: presence.user_id.to_string(),
                    name: presence.name.as_deref().map(str::to_owned),
                    devices: vec![presence.into()],
                }),
            }
        }
        Ok(Json(DocumentPresenceResponse {
            document_id: document_id.to_string(),
            users: users.iter().map(Into::into).collect(),
            by_user,
        }))
    }

    /// A user's active sessions (devices), by session id (UUIDv7: oldest
    /// first), a page at a time. A token may read only its own user's.
    #[oai(path = "/api/v1/users/:user_id/sessions", method = "get")]
    async fn user_sessions(
        &self,
        auth: BearerToken,
        user_id: Path<String>,
        /// Sessions per page, 1 to 1000 (default 100).
        limit: Query<Option<u32>>,
        /// The `next_after` of the previous page.
        after: Query<Option<String>>,
    ) -> Result<Json<UserSessionsResponse>, ApiError> {
        let identity = auth.identity(&self.state)?;
        if *identity.user_id != *user_id {
            return Err(ApiError::forbidden(
                "a token may only read its own user's sessions",
            ));
        }
        let limit = limit.0.unwrap_or(SESSIONS_PAGE);
        if !(1..=MAX_SESSIONS_PAGE).contains(&limit) {
            return Err(ApiError::bad_request(
                "invalid_limit",
                format!("limit must be 1 to {MAX_SESSIONS_PAGE}"),
            ));
        }
        let after = match after.0.as_deref() {
            None => None,
            Some(raw) => Some(uuid::Uuid::parse_str(raw).map_err(|_| {
                ApiError::bad_request(
                    "invalid_cursor",
                    "after must be the next_after of a previous page",
                )
            })?),
        };
        let mut query = user_sessions::Entity::find()
            .filter(user_sessions::Column::UserId.eq(user_id.as_str()))
            .filter(user_sessions::Column::IsActive.eq(true));
        if let Some(after) = after {
            query = query.filter(user_sessions::Column::Id.gt(after));
        }
        // One more than the page: whether there is a next page, without a count.
        let mut rows = query
            .order_by_asc(user_sessions::Column::Id)
            .limit(u64::from(limit) + 1)
            .all(&self.state.db)
            .await
            .map_err(ApiError::internal)?;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_after = more.then(|| rows.last().map(|row| row.id.to_string())).flatten();
        Ok(Json(UserSessionsResponse {
            user_id: user_id.0,
            sessions: rows
                .into_iter()
                .map(|row| SessionView {
                    session_id: row.id.to_string(),
                    connection_id: row.connection_id.to_string(),
                    device_type: row.device_type,
                    user_agent: row.user_agent,
                    ip_address: row.ip_address,
                    current_document_id: row.current_document_id,
                    instance_id: row.instance_id,
                    created_at: row.created_at,
                    last_seen_at: row.last_seen_at,
                })
                .collect(),
            next_after,
        }))
    }

    /// A whole document: its state as one Yjs update, its state vector, and the
    /// number of updates stored since its last compaction.
    #[oai(path = "/api/v1/documents/:document_id", method = "get")]
    async fn get_document(
        &self,
        auth: BearerToken,
        document_id: Path<String>,
    ) -> Result<Json<DocumentResponse>, ApiError> {
        let (_, document_id) = self.authorize(&auth, &document_id)?;
        let (state, state_vector) = self
            .read_document(&document_id, async |room| {
                let mut guard = room.state();
                let reloading = || ApiError::unavailable("the document is reloading; retry");
                let full_state = guard.full_state().ok_or_else(reloading)?;
                let doc = guard.doc.as_ref().ok_or_else(reloading)?;
                Ok((full_state.to_vec(), crate::crdt::sync::state_vector(doc)))
            })
            .await?;
        let updates_since_snapshot = self
            .state
            .store
            .updates_since_snapshot(&document_id)
            .await
            .map_err(ApiError::internal)?;
        Ok(Json(DocumentResponse {
            document_id: document_id.to_string(),
            state: BASE64.encode(state),
            state_vector: BASE64.encode(state_vector),
            updates_since_snapshot,
        }))
    }

    /// Apply a Yjs update: validated like a socket update, made durable, then
    /// broadcast to everyone connected to the document. Viewers get 403.
    #[oai(path = "/api/v1/documents/:document_id/updates", method = "post")]
    async fn post_update(
        &self,
        auth: BearerToken,
        document_id: Path<String>,
        body: Json<UpdateRequest>,
    ) -> Result<Json<UpdateResponse>, ApiError> {
        let (identity, document_id) = self.authorize(&auth, &document_id)?;
        if !identity.may_write() {
            return Err(ApiError::forbidden(
                "this token has the viewer role: document updates are refused",
            ));
        }
        let update =
            crate::protocol::json::decode_base64(&body.update, self.state.config.max_update_bytes, "update")
                .map_err(|e| match e.code {
                    crate::protocol::codes::ErrorCode::TooLarge => {
                        ApiError::too_large(e.message.into_owned())
                    }
                    _ => ApiError::bad_request("invalid_update", e.message.into_owned()),
                })?;
        let origin = crate::rooms::documents::Origin {
            connection_id: None,
            user_id: identity.user_id.clone(),
        };
        let state_vector = self
            .with_document(&document_id, async |room| {
                let (done, committed) = tokio::sync::oneshot::channel();
                self.state
                    .docs
                    .apply_update(
                        room,
                        &origin,
                        update,
                        crate::rooms::documents::Durable::Notify(done),
                    )
                    .map_err(doc_error)?;
                let state_vector = {
                    let guard = room.state();
                    guard
                        .doc
                        .as_ref()
                        .map(crate::crdt::sync::state_vector)
                        .unwrap_or_default()
                };
                match tokio::time::timeout(DURABLE_WAIT, committed).await {
                    Ok(Ok(())) => Ok(state_vector),
                    _ => Err(ApiError::unavailable(
                        "the update was applied but is not yet durable; retry",
                    )),
                }
            })
            .await?;
        Ok(Json(UpdateResponse {
            document_id: document_id.to_string(),
            state_vector: BASE64.encode(state_vector),
        }))
    }

    /// The plain text content of the document's root `Y.Text` named `name`.
    #[oai(path = "/api/v1/documents/:document_id/text/:name", method = "get")]
    async fn get_text(
        &self,
        auth: BearerToken,
        document_id: Path<String>,
        name: Path<String>,
    ) -> Result<poem_openapi::payload::PlainText<String>, ApiError> {
        let (_, document_id) = self.authorize(&auth, &document_id)?;
        let text = self
            .read_document(&document_id, async |room| {
                let guard = room.state();
                let doc = guard
                    .doc
                    .as_ref()
                    .ok_or_else(|| ApiError::unavailable("the document is reloading; retry"))?;
                Ok(crate::crdt::sync::text(doc, &name))
            })
            .await?;
        text.map(poem_openapi::payload::PlainText)
            .ok_or_else(|| ApiError::not_found(format!("the document has no root text named {:?}", name.0)))
    }

    /// Liveness: 200 when the database answers and takes writes, 503 otherwise.
    /// Writes are checked for real (a probe row committed at most once a
    /// second, the SQLite file still in place, the last commit of updates
    /// succeeded): `SELECT 1` answers from a full disk or a deleted file.
    #[oai(path = "/health", method = "get")]
    async fn health(&self) -> HealthResult {
        let reachable = self
            .state
            .db
            .execute_unprepared("SELECT 1")
            .await
            .inspect_err(|error| tracing::warn!(%error, "health check: database unreachable"))
            .is_ok();
        let database = match reachable {
            false => "down",
            true => match self.state.store.writes.health().await {
                WriteHealth::Ok => "ok",
                WriteHealth::Failing => "failing",
            },
        };
        let healthy = database == "ok";
        let response = HealthResponse {
            status: if healthy { "ok" } else { "degraded" }.into(),
            uptime_seconds: self.state.hub.uptime().as_secs(),
            connections: self.state.hub.connection_count() as u64,
            rooms: self.state.hub.rooms_snapshot().len() as u64,
            database: database.into(),
            redis: self.state.bus.state().as_str().into(),
            instance_id: self.state.instance_id.to_string(),
        };
        if healthy {
            HealthResult::Ok(Json(response))
        } else {
            HealthResult::Unavailable(Json(response))
        }
    }

    /// Rooms with member counts, and message counters.
    #[oai(path = "/stats", method = "get")]
    async fn stats(&self) -> Json<StatsResponse> {
        let hub = &self.state.hub;
        let mut rooms: Vec<RoomStats> = hub
            .rooms_snapshot()
            .iter()
            .map(|room| RoomStats {
                document_id: room.id.to_string(),
                members: room.state().members().len() as u64,
            })
            .collect();
        rooms.sort_by(|a, b| a.document_id.cmp(&b.document_id));
        Json(StatsResponse {
            rooms,
            connections: hub.connection_count() as u64,
            connections_by_protocol: hub
                .connection_counts_by_protocol()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v as u64))
                .collect(),
            connections_opened: hub.counters.connections_opened.load(Ordering::Relaxed),
            messages_processed: hub.counters.messages_processed.load(Ordering::Relaxed),
            messages_rejected: hub.counters.messages_rejected.load(Ordering::Relaxed),
            write_backlog: self.state.writer.backlog() as u64,
        })
    }
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

#[derive(serde::Deserialize)]
struct UpgradeQuery {
    token: Option<String>,
}

/// The token from `?token=` or `Authorization: Bearer`.
fn request_token(req: &Request) -> Option<String> {
    if let Ok(query) = req.params::<UpgradeQuery>()
        && let Some(token) = query.token.filter(|t| !t.is_empty())
    {
        return Some(token);
    }
    let header = req
        .headers()
        .get(poem::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = header.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// The client address: the socket peer, or the first `X-Forwarded-For` hop behind a trusted proxy.
pub fn client_ip(req: &Request, trust_proxy: bool) -> Option<String> {
    if trust_proxy {
        let forwarded = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .and_then(|v| v.parse::<std::net::IpAddr>().ok());
        if let Some(ip) = forwarded {
            return Some(ip.to_string());
        }
    }
    req.remote_addr()
        .as_socket_addr()
        .map(|addr| addr.ip().to_string())
}

fn user_agent(req: &Request) -> Option<String> {
    let raw = req.headers().get(poem::http::header::USER_AGENT)?;
    let text = String::from_utf8_lossy(raw.as_bytes());
    Some(crate::model::device::bound_user_agent(&text).to_owned())
}

/// Authenticate before upgrading; a refused token never reaches the socket.
pub fn authenticate_upgrade(req: &Request, state: &AppState) -> Result<Peer, crate::auth::AuthError> {
    let token = request_token(req).ok_or(crate::auth::AuthError::Missing)?;
    let identity = state.keys.verify(&token)?;
    Ok(Peer {
        identity,
        user_agent: user_agent(req),
        ip_address: client_ip(req, state.config.trust_proxy),
    })
}

#[handler]
async fn ws_upgrade(req: &Request, Data(state): Data<&AppState>) -> Response {
    // Authenticate first, so a bad token is a 401 whatever else is wrong.
    let peer = match authenticate_upgrade(req, state) {
        Ok(peer) => peer,
        Err(error) => return json_error(StatusCode::UNAUTHORIZED, "unauthorized", error.to_string()),
    };
    let upgrade = match crate::transport::ws::Upgrade::from_request(req) {
        Ok(upgrade) => upgrade,
        Err(error) => return json_error(StatusCode::BAD_REQUEST, "bad_request", error.to_string()),
    };
    let permit = match acquire_permit(state, &peer) {
        Ok(permit) => permit,
        Err(error) => {
            return json_error(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_connections",
                error.to_string(),
            );
        }
    };
    let state = state.clone();
    upgrade.respond(
        state.websocket_config(),
        &state.tracker.clone(),
        move |socket| async move {
            // Held for the session's life: its end frees the slot.
            let _permit = permit;
            crate::transport::json::run(socket, state, peer).await
        },
    )
}

/// Count the connection against the per-IP and per-user caps (a refusal is a 429).
fn acquire_permit(
    state: &AppState,
    peer: &Peer,
) -> Result<crate::http::limits::ConnectionPermit, crate::http::limits::CapError> {
    state
        .caps
        .acquire(peer.ip_address.as_deref(), &peer.identity.user_id)
        .inspect_err(|error| {
            if let Some(suppressed) = state.caps.log.ready() {
                tracing::warn!(
                    cap = error.kind(),
                    ip_address = peer.ip_address.as_deref(),
                    user_id = %peer.identity.user_id,
                    suppressed,
                    "connection refused: over a cap"
                );
            }
        })
}

/// `/yjs/{document_id}`: the y-websocket binary protocol on the same rooms.
#[handler]
async fn yjs_upgrade(
    req: &Request,
    poem::web::Path(document_id): poem::web::Path<String>,
    Data(state): Data<&AppState>,
) -> Response {
    let peer = match authenticate_upgrade(req, state) {
        Ok(peer) => peer,
        Err(error) => return json_error(StatusCode::UNAUTHORIZED, "unauthorized", error.to_string()),
    };
    let document_id = match DocumentId::parse(&document_id) {
        Ok(id) => id,
        Err(error) => return json_error(StatusCode::BAD_REQUEST, "invalid_document_id", error.0),
    };
    if !peer.identity.may_access(&document_id) {
        return json_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this token may not open this document",
        );
    }
    let upgrade = match crate::transport::ws::Upgrade::from_request(req) {
        Ok(upgrade) => upgrade,
        Err(error) => return json_error(StatusCode::BAD_REQUEST, "bad_request", error.to_string()),
    };
    let permit = match acquire_permit(state, &peer) {
        Ok(permit) => permit,
        Err(error) => {
            return json_error(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_connections",
                error.to_string(),
            );
        }
    };
    let state = state.clone();
    upgrade.respond(
        state.websocket_config(),
        &state.tracker.clone(),
        move |socket| async move {
            let _permit = permit;
            crate::transport::yjs::run(socket, state, peer, document_id).await
        },
    )
}

/// The edge of every request: bound the body, then log method, path (never
/// the query: it may hold a token), status and time.
async fn edge<E: Endpoint>(next: E, mut req: Request) -> poem::Result<Response> {
    let limit = req
        .data::<AppState>()
        .map(|state| state.config.max_frame_bytes())
        .unwrap_or(2 << 20);
    let declared = req
        .headers()
        .get(poem::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Ok(json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("request bodies are limited to {limit} bytes"),
        ));
    }
    if matches!(
        *req.method(),
        poem::http::Method::POST | poem::http::Method::PUT | poem::http::Method::PATCH
    ) {
        // A body without a declared length is cut at the limit (and then fails to parse).
        use tokio::io::AsyncReadExt;
        let body = req.take_body().into_async_read().take(limit as u64 + 1);
        req.set_body(poem::Body::from_async_read(body));
    }
    if req.uri().path().starts_with("/api/v1/")
        && let Some(state) = req.data::<AppState>()
        && let Err(wait) = state.rest_limit.check(
            client_ip(&req, state.config.trust_proxy).and_then(|ip| ip.parse().ok()),
            request_token(&req).as_deref(),
        )
    {
        let retry_after = wait.as_secs_f64().ceil().max(1.0) as u64;
        if let Some(suppressed) = state.rest_limit.log.ready() {
            tracing::warn!(
                path = req.uri().path(),
                retry_after,
                suppressed,
                "REST request refused: over the rate limit"
            );
        }
        let mut response = json_error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many requests; retry in {retry_after} s"),
        );
        response
            .headers_mut()
            .insert(poem::http::header::RETRY_AFTER, retry_after.into());
        return Ok(response);
    }
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let result = next.call(req).await.map(IntoResponse::into_response);
    let status = match &result {
        Ok(response) => response.status(),
        Err(error) => error.status(),
    };
    tracing::debug!(%method, path, status = status.as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "request");
    result
}

/// Every route of the gateway.
pub fn routes(state: AppState) -> impl Endpoint {
    let api = OpenApiService::new(Api { state: state.clone() }, "tandem", env!("CARGO_PKG_VERSION"));
    let spec = api.spec_endpoint();
    let ui = api.swagger_ui();
    Route::new()
        .at("/ws", get(ws_upgrade))
        .at("/yjs/:document_id", get(yjs_upgrade))
        .at("/openapi.json", spec)
        .nest("/docs", ui)
        .nest("/", api)
        .catch_all_error(render_error)
        .around(edge)
        .data(state)
}
