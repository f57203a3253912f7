//! `GET /metrics`: Prometheus text format. Counters and histograms are
//! recorded where things happen (the `metrics` facade); gauges of the current
//! state (connections, rooms, Redis) are read from the hub and the bus when
//! scraped. One recorder per process: tests that start several gateways in
//! one process share its counters.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use poem::{Response, handler, web::Data};

use crate::state::AppState;

/// How often the recorder folds histogram samples into their buckets.
pub const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

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
                .inspect(|_| describe())
        })
        .as_ref()
}

/// Counters every scrape shows from the start (at 0 until something
/// happens), so `rate()` and `increase()` in alert rules see a series before
/// the first event: name, labels, help.
type Series = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);
const COUNTERS: &[Series] = &[
    (
        "tandem_connections_opened_total",
        &[("protocol", "json")],
        "WebSocket connections accepted",
    ),
    (
        "tandem_connections_opened_total",
        &[("protocol", "yjs")],
        "WebSocket connections accepted",
    ),
    (
        "tandem_connections_closed_total",
        &[("code", "1000")],
        "WebSocket connections closed, by close code",
    ),
    (
        "tandem_upgrades_refused_total",
        &[("protocol", "json"), ("status", "401")],
        "WebSocket upgrades answered with an HTTP error, by status",
    ),
    (
        "tandem_handshakes_refused_total",
        &[],
        "TCP connections refused with 503: too many pending handshakes",
    ),
    (
        "tandem_messages_received_total",
        &[("type", "cursor_move")],
        "Client JSON messages received, by type",
    ),
    (
        "tandem_errors_sent_total",
        &[("code", "invalid_message")],
        "error messages sent to clients, by code",
    ),
    (
        "tandem_rate_limited_total",
        &[],
        "Client messages refused by the rate limit",
    ),
    (
        "tandem_queue_overflows_total",
        &[],
        "Connections closed as too slow: send queue over its bound",
    ),
    (
        "tandem_fanout_deliveries_total",
        &[],
        "Messages queued for room members by broadcasts",
    ),
    (
        "tandem_presence_rows_written_total",
        &[],
        "document_presence rows written behind",
    ),
    (
        "tandem_session_rows_written_total",
        &[],
        "user_sessions rows written behind",
    ),
    ("tandem_updates_stored_total", &[], "Yjs updates committed"),
    (
        "tandem_database_errors_total",
        &[],
        "Failed commits of Yjs updates",
    ),
    (
        "tandem_compactions_total",
        &[("result", "folded")],
        "Document compactions, by result",
    ),
    (
        "tandem_compactions_total",
        &[("result", "failed")],
        "Document compactions, by result",
    ),
    (
        "tandem_documents_quarantined_total",
        &[],
        "In-memory documents dropped for a reload after yrs failed on them",
    ),
    (
        "tandem_redis_messages_published_total",
        &[],
        "Room events published to Redis",
    ),
    (
        "tandem_redis_messages_received_total",
        &[],
        "Room events received from Redis",
    ),
    (
        "tandem_sessions_swept_total",
        &[("reason", "stale")],
        "Sessions ended by the sweep, by reason",
    ),
    (
        "tandem_sessions_swept_total",
        &[("reason", "dead_instance")],
        "Sessions ended by the sweep, by reason",
    ),
    (
        "tandem_sessions_resumed_total",
        &[],
        "Sessions taken over by a reconnect with their resume token",
    ),
    (
        "tandem_token_refreshes_total",
        &[],
        "Tokens replaced on open connections",
    ),
    ("tandem_revocations_total", &[], "Admin revocations applied"),
];

fn describe() {
    for (name, labels, help) in COUNTERS {
        ::metrics::describe_counter!(*name, *help);
        let labels: Vec<::metrics::Label> = labels
            .iter()
            .map(|(k, v)| ::metrics::Label::new(*k, *v))
            .collect();
        ::metrics::counter!(*name, labels).increment(0);
    }
    for (name, help) in [
        ("tandem_connections", "Open WebSocket connections, by protocol"),
        ("tandem_rooms", "Rooms on this instance"),
        ("tandem_documents_loaded", "Yjs documents in memory"),
        ("tandem_redis_up", "1 when Redis is configured and reachable"),
        (
            "tandem_write_backlog",
            "Session and presence rows waiting to be written",
        ),
        (
            "tandem_sessions_parked",
            "Sessions whose socket dropped, waiting to be resumed",
        ),
        (
            "tandem_send_queue_messages",
            "Messages waiting in room members' send queues",
        ),
        (
            "tandem_send_queue_bytes",
            "Bytes waiting in room members' send queues",
        ),
        (
            "tandem_send_queue_deepest_messages",
            "Messages waiting in the deepest send queue",
        ),
    ] {
        ::metrics::describe_gauge!(name, help);
    }
    ::metrics::describe_histogram!(
        "tandem_commit_seconds",
        ::metrics::Unit::Seconds,
        "Time to commit a batch of Yjs updates"
    );
    ::metrics::describe_histogram!(
        "tandem_relay_seconds",
        ::metrics::Unit::Seconds,
        "Time from a message's receipt to its relay being queued for the other members"
    );
    // Histograms are rendered once they hold a sample; until then alert
    // rules on them see no series, which is no alert.
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
    ::metrics::gauge!("tandem_sessions_parked").set(state.hub.parking.len() as f64);
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
