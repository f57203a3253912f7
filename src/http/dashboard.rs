//! The operator's live view: `GET /dashboard` (a page with no data of its
//! own) polls `GET /api/v1/admin/dashboard` (admin tokens and admin API keys
//! only) twice a second for this instance's rooms, their members per user
//! and device, connection counts, message totals, the write-behind backlog
//! and the Redis state. The page turns message totals into rates itself.

use std::collections::BTreeMap;

use poem::{Response, handler};
use poem_openapi::{Object, OpenApi, payload::Json};

use crate::{
    http::{
        error::ApiError,
        views::{BearerToken, UserDevices, group_by_user},
    },
    model::presence::Presence,
    state::AppState,
};

const PAGE: &str = include_str!("../../assets/dashboard.html");

pub struct DashboardApi {
    pub state: AppState,
}

/// One room on this instance: its members (here and on other instances)
/// grouped per user.
#[derive(Debug, Clone, Object)]
pub struct DashboardRoom {
    pub document_id: String,
    /// Connections in the room, on every instance.
    pub members: u64,
    /// Whether its Yjs document is in memory.
    pub loaded: bool,
    pub by_user: Vec<UserDevices>,
}

/// What the dashboard shows, as of the request.
#[derive(Debug, Clone, Object)]
pub struct DashboardResponse {
    pub instance_id: String,
    pub uptime_seconds: u64,
    /// `ok`, `down` or `disabled` (no Redis configured).
    pub redis: String,
    pub connections: u64,
    pub connections_by_protocol: BTreeMap<String, u64>,
    /// Client messages handled since start; the page derives a rate.
    pub messages_processed: u64,
    pub messages_rejected: u64,
    /// Session and presence rows waiting to be written.
    pub write_backlog: u64,
    pub rooms: Vec<DashboardRoom>,
}

#[OpenApi]
impl DashboardApi {
    /// The dashboard's data: rooms, members per user with devices, cursors
    /// and editing state, connection counts, totals, backlog, Redis.
    #[oai(path = "/api/v1/admin/dashboard", method = "get")]
    async fn dashboard(&self, auth: BearerToken) -> Result<Json<DashboardResponse>, ApiError> {
        let identity = auth.identity(&self.state).await?;
        if !identity.is_admin() {
            return Err(ApiError::forbidden(
                "the dashboard needs a token with \"role\":\"admin\" or an admin API key",
            ));
        }
        let hub = &self.state.hub;
        let mut rooms: Vec<DashboardRoom> = hub
            .rooms_snapshot()
            .iter()
            .map(|room| {
                let (mut members, loaded): (Vec<Presence>, bool) = {
                    let state = room.state();
                    (state.presence_list(), state.doc.is_some())
                };
                members.sort_by(|a, b| (&a.user_id, a.joined_at).cmp(&(&b.user_id, b.joined_at)));
                DashboardRoom {
                    document_id: room.id.to_string(),
                    members: members.len() as u64,
                    loaded,
                    by_user: group_by_user(&members),
                }
            })
            .collect();
        rooms.sort_by(|a, b| a.document_id.cmp(&b.document_id));
        let counters = &hub.counters;
        Ok(Json(DashboardResponse {
            instance_id: self.state.instance_id.to_string(),
            uptime_seconds: hub.uptime().as_secs(),
            redis: self.state.bus.state().as_str().to_owned(),
            connections: hub.connection_count() as u64,
            connections_by_protocol: crate::http::views::connections_by_protocol(hub),
            messages_processed: counters
                .messages_processed
                .load(std::sync::atomic::Ordering::Relaxed),
            messages_rejected: counters
                .messages_rejected
                .load(std::sync::atomic::Ordering::Relaxed),
            write_backlog: self.state.writer.backlog() as u64,
            rooms,
        }))
    }
}

/// `GET /dashboard`: the page. It holds no data; it asks for an admin token
/// (or takes one from the URL fragment, `#token=...`, which browsers never
/// send to the server) and polls the API with it.
#[handler]
pub(crate) fn page() -> Response {
    Response::builder()
        .content_type("text/html; charset=utf-8")
        .header("cache-control", "no-cache")
        .body(PAGE)
}
