//! The HTTP edge: REST (poem-openapi, served with its spec at `/openapi.json`
//! and Swagger UI at `/docs`), the `/ws` upgrade, JSON errors everywhere, and
//! request logs that never contain a query string (tokens travel there).

use std::{sync::atomic::Ordering, time::Instant};

use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response, Route, get, http::StatusCode};
use poem_openapi::{
    OpenApi, OpenApiService,
    param::{Path, Query},
    payload::Json,
};

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};

use crate::{
    http::access::{
        authorize, authorize_write, committed, doc_error, read_document, state_vector, with_document,
    },
    http::error::{ApiError, json_error, render_error},
    http::upgrade::{client_ip, request_token, ws_upgrade, yjs_upgrade},
    http::views::*,
    model::presence::Presence,
    state::AppState,
    storage::durability::WriteHealth,
};

pub struct Api {
    pub state: AppState,
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
        let (_, document_id) = authorize(&self.state, &auth, &document_id).await?;
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
        let by_user = crate::http::views::group_by_user(&users);
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
        let identity = auth.identity(&self.state).await?;
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
        // One more than the page: whether there is a next page, without a count.
        let mut rows = crate::storage::sessions::active_sessions_page(
            &self.state.db,
            user_id.as_str(),
            after,
            u64::from(limit) + 1,
        )
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
        let (_, document_id) = authorize(&self.state, &auth, &document_id).await?;
        let (state, state_vector) = read_document(&self.state, &document_id, async |room| {
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
        let (identity, document_id) =
            authorize_write(&self.state, &auth, &document_id, "document updates").await?;
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
        let state_vector = with_document(&self.state, &document_id, async |room| {
            let (done, committed_rx) = tokio::sync::oneshot::channel();
            self.state
                .docs
                .apply_update(
                    room,
                    &origin,
                    update,
                    crate::rooms::documents::Durable::Notify(done),
                )
                .map_err(doc_error)?;
            let state_vector = state_vector(room);
            committed(committed_rx).await?;
            Ok(state_vector)
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
        let (_, document_id) = authorize(&self.state, &auth, &document_id).await?;
        let text = read_document(&self.state, &document_id, async |room| {
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
        let reachable = crate::storage::sessions::ping(&self.state.db)
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
            connections_by_protocol: crate::http::views::connections_by_protocol(hub),
            connections_opened: hub.counters.connections_opened.load(Ordering::Relaxed),
            messages_processed: hub.counters.messages_processed.load(Ordering::Relaxed),
            messages_rejected: hub.counters.messages_rejected.load(Ordering::Relaxed),
            write_backlog: self.state.writer.backlog() as u64,
        })
    }
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
    let api = OpenApiService::new(
        (
            Api { state: state.clone() },
            crate::http::admin::AdminApi { state: state.clone() },
            crate::http::dashboard::DashboardApi { state: state.clone() },
            crate::http::messages::MessagesApi { state: state.clone() },
            crate::http::document_json::DocumentJsonApi { state: state.clone() },
            crate::http::versions::VersionsApi { state: state.clone() },
        ),
        "tandem",
        env!("CARGO_PKG_VERSION"),
    );
    let spec = api.spec_endpoint();
    let ui = api.swagger_ui();
    Route::new()
        .at("/ws", get(ws_upgrade))
        .at("/yjs/:document_id", get(yjs_upgrade))
        .at("/metrics", get(crate::http::metrics::scrape))
        .at("/dashboard", get(crate::http::dashboard::page))
        .nest("/demo", crate::http::demo::routes(state.config.demo_enabled()))
        .at("/openapi.json", spec)
        .nest("/docs", ui)
        .nest("/", api)
        .catch_all_error(render_error)
        .around(edge)
        .data(state)
}
