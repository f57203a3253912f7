//! `GET /metrics`: Prometheus text format. Counters and histograms are
//! recorded where things happen (the `metrics` facade); gauges of the current
//! state (connections, rooms, Redis) are read from the hub and the bus when
//! scraped. One recorder per process: tests that start several gateways in
//! one process share its counters.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use poem::{Response, handler, web::Data};

use crate::state::AppState;

/// The process's recorder, installed on first use; `None` if another
/// recorder was installed first (an embedder's).
pub fn recorder() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ])
                .ok()?
                .install_recorder()
                .inspect_err(|error| tracing::warn!(%error, "metrics recorder not installed"))
                .ok()
        })
        .as_ref()
}

#[handler]
pub(crate) async fn scrape(Data(state): Data<&AppState>) -> Response {
    let Some(handle) = recorder() else {
        return crate::http::error::json_error(
            poem::http::StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "no metrics recorder",
        );
    };
    let by_protocol = state.hub.connections_by_protocol();
    for protocol in ["json", "yjs"] {
        ::metrics::gauge!("tandem_connections", "protocol" => protocol)
            .set(by_protocol.get(protocol).copied().unwrap_or(0) as f64);
    }
    let rooms = state.hub.rooms_snapshot();
    // Send queues of room members, each connection once (a member of several
    // rooms has one queue).
    let mut seen = std::collections::HashSet::new();
    let (mut messages, mut bytes, mut deepest) = (0usize, 0usize, 0usize);
    for room in &rooms {
        for member in room.state().members() {
            if seen.insert(member.presence.connection_id) {
                let depth = member.outbox.depth();
                messages += depth;
                bytes += member.outbox.queued_bytes();
                deepest = deepest.max(depth);
            }
        }
    }
    ::metrics::gauge!("tandem_send_queue_messages").set(messages as f64);
    ::metrics::gauge!("tandem_send_queue_bytes").set(bytes as f64);
    ::metrics::gauge!("tandem_send_queue_deepest_messages").set(deepest as f64);
    ::metrics::gauge!("tandem_rooms").set(rooms.len() as f64);
    ::metrics::gauge!("tandem_documents_loaded")
        .set(rooms.iter().filter(|room| room.state().doc.is_some()).count() as f64);
    ::metrics::gauge!("tandem_write_backlog").set(state.writer.backlog() as f64);
    let redis_up = matches!(state.bus.state(), crate::cluster::bus::RedisState::Ok);
    ::metrics::gauge!("tandem_redis_up").set(if redis_up { 1.0 } else { 0.0 });
    Response::builder()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(handle.render())
}
