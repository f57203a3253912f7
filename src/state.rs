//! The shared handle every connection, handler and background task gets: the
//! configuration, the hub of rooms, the documents, the bus, the database, the
//! limits and the shutdown signals. Built once by [`crate::app::Application`];
//! cloning it clones `Arc`s. Lives apart from the composition root so that the
//! layers that receive it never import the code that builds them.

use std::sync::Arc;

use sea_orm::DatabaseConnection;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    auth::Verifier,
    cluster::bus::Bus,
    config::Config,
    rooms::{documents::Documents, hub::Hub},
};

/// What every handler and task shares.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub hub: Arc<Hub>,
    /// Verifies tokens (HS256 secret, JWKS) into identities.
    pub verifier: Arc<Verifier>,
    pub db: DatabaseConnection,
    pub instance_id: Arc<str>,
    /// Session and presence rows, written behind.
    pub writer: Arc<crate::storage::write_behind::WriteBehind>,
    /// The document tables (REST reads of the log, health of writes).
    pub store: crate::storage::document_log::DocumentStore,
    /// Documents: loading, applying, persisting.
    pub docs: Arc<Documents>,
    /// Fan-out to other instances (no-op without Redis).
    pub bus: Bus,
    /// Fired at shutdown: every session closes its socket with 1001.
    pub connections_stop: CancellationToken,
    /// Every session and its writer task.
    pub tracker: TaskTracker,
    /// Open WebSocket connections per client IP and per user, against their caps.
    pub caps: Arc<crate::limits::ConnectionCaps>,
    /// REST requests per second per client IP and per token.
    pub rest_limit: Arc<crate::limits::RestRateLimit>,
    /// Document loads that REST requests may run at once, so a flood of
    /// reads of unloaded documents cannot take every pooled database
    /// connection from joins and the session and presence writes.
    pub rest_loads: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    /// Explicit WebSocket limits. The default 128 KiB read buffer per connection would
    /// dominate idle memory; 512 bytes hold a typical message (a cursor move is ~150;
    /// larger frames take more reads, nothing else, and tungstenite grows the buffer
    /// to at least twice this once a frame spans reads). Writes collect up to 1 KiB before a syscall, and the writer
    /// flushes whenever its queue is empty: an idle connection's message goes out at
    /// once, a busy one's burst in few writes (with TCP_NODELAY, one write per message
    /// saturated the core at 200 members x 10 Hz). tungstenite keeps its write buffer's
    /// capacity, so this is also what a connection holds after a burst: 4 KiB measured
    /// the same knee and 1.7 KiB more per idle connection (BENCHMARKS.md).
    pub fn websocket_config(&self) -> WebSocketConfig {
        let max = self.config.max_frame_bytes();
        WebSocketConfig::default()
            .read_buffer_size(512)
            .write_buffer_size(1024)
            .max_write_buffer_size(max + 64 * 1024)
            .max_message_size(Some(max))
            .max_frame_size(Some(max))
    }
}
