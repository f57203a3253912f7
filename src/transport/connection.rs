//! One connection's lifecycle, the same for the JSON protocol and the
//! y-websocket protocol: its session record (written before the client hears
//! anything), its registration with the hub, its bounded queue and the writer
//! task that drains it ([`super::writer`]), its liveness clock, the per-connection rate limiter,
//! and its end (the session row closed, the close frame sent, the closing
//! handshake finished). The protocol handlers in [`super::json`] and
//! [`super::yjs`] only decode messages and act on them.

use std::{
    num::NonZeroU32,
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};

use chrono::Utc;
use futures_util::StreamExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    auth::Identity,
    model::{
        ids::{DocumentId, MessageId},
        presence::SessionRecord,
        revocation::Credential,
    },
    protocol::codes::CloseCode,
    rooms::{
        documents::DocError,
        hub::{ConnectionHandle, RevokeSignal},
        member::Member,
        outbox::{Outbox, Outgoing, QueuedBytes},
        parking::ParkedSession,
        room::Room,
    },
    state::AppState,
    storage::write_behind::session_row,
    transport::writer::{CLOSE_GRACE, Queue, Sink, write_loop},
    transport::{
        read_loop::Signals,
        ws::{Message, Socket},
    },
};

/// How long a new connection waits for its session row to be committed before
/// it goes on regardless (the row is still written once the database is back).
pub(crate) const SESSION_ROW_WAIT: Duration = Duration::from_secs(5);

/// Who is connecting, from the upgrade request.
#[derive(Debug, Clone)]
pub struct Peer {
    pub identity: Identity,
    pub user_agent: Option<String>,
    pub ip_address: Option<String>,
    /// `/ws?batch=1`: several queued messages go out in one text frame,
    /// newline-delimited, and the client may send frames that way too.
    pub batch: bool,
    /// `/ws?resume=<resume_token>`: take over the session that token names,
    /// if it is still parked and this identity's.
    pub resume: Option<String>,
}

/// A parked session taken over by a new socket.
pub(crate) struct Resumed {
    pub record: SessionRecord,
    /// The rooms it is still a member of.
    pub rooms: Vec<Arc<Room>>,
    /// Messages were dropped while parked: the replay is gone.
    pub lost: bool,
    pub connection: Connection,
}

/// What every connection, JSON or y-websocket, owns besides its protocol:
/// its queue and writer task, its liveness clock and the signals that end it.
pub(crate) struct Connection {
    pub outbox: Outbox,
    /// Fired when the queue overflows (the client is too slow).
    pub overflowed: CancellationToken,
    /// Fired to end the session from outside (stale cleanup, too many errors).
    pub end: CancellationToken,
    /// Hub clock (ms) when the client was last heard from.
    pub last_heard: Arc<AtomicU64>,
    /// Revocations addressed to this connection.
    pub revoke: Arc<RevokeSignal>,
    /// The credential it holds now (`refresh_token` replaces it).
    pub credential: Arc<std::sync::Mutex<Credential>>,
    /// The writer task; it hands its queue back when stopped.
    writer: tokio::task::JoinHandle<mpsc::Receiver<Outgoing>>,
    /// Stops the writer without a close frame (the session is parked).
    stop_writer: CancellationToken,
}

pub(crate) type Stream = futures_util::stream::SplitStream<Socket>;

impl Connection {
    /// Record the session (committed before the client hears anything, so
    /// REST sees what the client sees), register it, and start its writer.
    pub(crate) async fn open(
        state: &AppState,
        sink: Sink,
        peer: &Peer,
        protocol: &'static str,
        current_document_id: Option<DocumentId>,
    ) -> (SessionRecord, Self) {
        let now = Utc::now();
        let record = SessionRecord {
            session_id: Uuid::now_v7(),
            connection_id: Uuid::now_v7(),
            user_id: peer.identity.user_id.clone(),
            name: peer.identity.name.clone(),
            user_agent: peer.user_agent.clone(),
            ip_address: peer.ip_address.clone(),
            device_type: crate::model::device::detect(peer.user_agent.as_deref()),
            current_document_id,
            instance_id: state.instance_id.clone(),
            created_at: now,
            last_seen_at: now,
            disconnected_at: None,
            resumed_count: 0,
        };
        let connection = Self::open_recorded(state, sink, peer, protocol, &record, None).await;
        (record, connection)
    }

    /// Take over a session that moved here from another instance (a resume
    /// there): its record, a new queue, `connected` first.
    pub(crate) async fn open_moved(
        state: &AppState,
        sink: Sink,
        peer: &Peer,
        mut record: SessionRecord,
        connected: impl FnOnce(&SessionRecord) -> Outgoing,
    ) -> (SessionRecord, Self) {
        resumed_here(state, peer, &mut record);
        let connected = connected(&record);
        let connection = Self::open_recorded(state, sink, peer, "json", &record, Some(connected)).await;
        metrics::counter!("tandem_sessions_resumed_total").increment(1);
        tracing::info!(session_id = %record.session_id, "session resumed from another instance");
        (record, connection)
    }

    /// Commit the session row, then start the connection.
    async fn open_recorded(
        state: &AppState,
        sink: Sink,
        peer: &Peer,
        protocol: &'static str,
        record: &SessionRecord,
        prelude: Option<Outgoing>,
    ) -> Self {
        let (queue, queue_rx) = mpsc::channel(state.config.send_queue_capacity);
        let queued_bytes = Arc::new(QueuedBytes::new(state.config.max_queued_bytes));
        let overflowed = CancellationToken::new();
        let generation = state.writer.session(session_row(record), true);
        if tokio::time::timeout(SESSION_ROW_WAIT, state.writer.wait_flushed(generation))
            .await
            .is_err()
        {
            tracing::warn!(session_id = %record.session_id, "session row not committed yet; continuing");
        }
        let outbox = Outbox::new(queue, overflowed, queued_bytes);
        if let Some(prelude) = &prelude {
            outbox.count_unqueued(prelude.byte_len());
        }
        let connection = Self::start(state, sink, peer, protocol, record, outbox, queue_rx, prelude);
        metrics::counter!("tandem_connections_opened_total", "protocol" => protocol).increment(1);
        tracing::info!(
            session_id = %record.session_id,
            user_id = %record.user_id,
            device_type = record.device_type.as_str(),
            protocol,
            "session opened"
        );
        connection
    }

    /// Take over a parked session (`/ws?resume=`): the same record and
    /// members, the queue that filled meanwhile drained by a new writer,
    /// after `connected`. The session row records the resume.
    pub(crate) fn resume(
        state: &AppState,
        sink: Sink,
        peer: &Peer,
        parked: ParkedSession,
        connected: impl FnOnce(&SessionRecord) -> Outgoing,
    ) -> Resumed {
        let ParkedSession {
            mut record,
            rooms,
            outbox,
            mut queue,
        } = parked;
        // Live again. A replay that overflowed is dropped: the handler sends
        // fresh state instead.
        let lost = outbox.unpark();
        if lost {
            outbox.discard_queued(&mut queue);
        }
        resumed_here(state, peer, &mut record);
        state.writer.session(session_row(&record), true);
        let connected = connected(&record);
        outbox.count_unqueued(connected.byte_len());
        let connection = Self::start(state, sink, peer, "json", &record, outbox, queue, Some(connected));
        metrics::counter!("tandem_sessions_resumed_total").increment(1);
        tracing::info!(
            session_id = %record.session_id,
            user_id = %record.user_id,
            resumed_count = record.resumed_count,
            "session resumed"
        );
        Resumed {
            record,
            rooms,
            lost,
            connection,
        }
    }

    /// Register the connection with the hub and start its writer, which
    /// sends `prelude` (if any) ahead of the queue.
    #[allow(clippy::too_many_arguments)]
    fn start(
        state: &AppState,
        sink: Sink,
        peer: &Peer,
        protocol: &'static str,
        record: &SessionRecord,
        outbox: Outbox,
        queue: mpsc::Receiver<Outgoing>,
        prelude: Option<Outgoing>,
    ) -> Self {
        let end = CancellationToken::new();
        let revoke = Arc::new(RevokeSignal::default());
        let credential = Arc::new(std::sync::Mutex::new(peer.identity.credential()));
        let last_heard = Arc::new(AtomicU64::new(state.hub.clock_ms()));
        state.hub.register(ConnectionHandle {
            session_id: record.session_id,
            connection_id: record.connection_id,
            user_id: record.user_id.clone(),
            end: end.clone(),
            last_heard_ms: last_heard.clone(),
            protocol,
            revoke: revoke.clone(),
            credential: credential.clone(),
            outbox: (protocol == "json").then(|| outbox.clone()),
        });
        // A revocation that came between the upgrade's check and now missed
        // this connection: check again, now that it is registered.
        if state.verifier.deny_list().denies(
            &record.user_id,
            &peer.identity.credential(),
            jsonwebtoken::get_current_timestamp(),
        ) {
            revoke.all.cancel();
        }
        let (overflowed, queued_bytes) = outbox.writer_handles();
        let stop_writer = CancellationToken::new();
        let writer = state.tracker.spawn(write_loop(
            sink,
            Queue {
                prelude,
                queue,
                latest: outbox.latest(),
                queued_bytes,
            },
            overflowed.clone(),
            stop_writer.clone(),
            peer.batch && protocol == "json",
        ));
        Self {
            outbox,
            overflowed,
            end,
            last_heard,
            revoke,
            credential,
            writer,
            stop_writer,
        }
    }

    /// The socket is gone but the session may be resumed: stop the writer
    /// and take back its queue, so what comes meanwhile is kept for the
    /// replay. Gives the connection back if that cannot be done (its queue
    /// overflowed, or the writer would not stop): the session then ends.
    pub(crate) async fn park(
        mut self,
        state: &AppState,
        session_id: Uuid,
    ) -> Result<(Outbox, mpsc::Receiver<Outgoing>), Self> {
        if self.overflowed.is_cancelled() {
            return Err(self);
        }
        self.outbox.park(state.config.resume_buffer);
        self.stop_writer.cancel();
        match tokio::time::timeout(CLOSE_GRACE, &mut self.writer).await {
            Ok(Ok(queue)) => {
                state.hub.mark_parked(session_id);
                Ok((self.outbox, queue))
            }
            _ => {
                self.writer.abort();
                self.outbox.unpark();
                Err(self)
            }
        }
    }

    /// The signals that end this connection, with the server's `shutdown`.
    pub(crate) fn signals<'a>(&'a self, shutdown: &'a CancellationToken) -> Signals<'a> {
        Signals {
            shutdown,
            overflowed: &self.overflowed,
            end: &self.end,
            revoke: &self.revoke,
        }
    }

    /// Record the session's end, unregister it, send the close frame, and
    /// finish the closing handshake. The caller has already left its rooms.
    pub(crate) async fn close(
        self,
        state: &AppState,
        record: SessionRecord,
        stream: &mut Stream,
        close: Option<CloseCode>,
    ) {
        end_session(state, record, close);
        let Self {
            outbox,
            overflowed,
            mut writer,
            ..
        } = self;
        if let Some(close) = close
            && !overflowed.is_cancelled()
        {
            outbox.push(Outgoing::Close(close));
        }
        drop(outbox);
        if tokio::time::timeout(CLOSE_GRACE * 2, &mut writer).await.is_err() {
            writer.abort();
        }
        if close.is_some() && !overflowed.is_cancelled() {
            // Read until the client's close frame (or EOF), so the client sees
            // our close frame rather than a reset.
            let _ = tokio::time::timeout(CLOSE_GRACE, async {
                while let Some(Ok(frame)) = stream.next().await {
                    if matches!(frame, Message::Close(_)) {
                        break;
                    }
                }
            })
            .await;
        }
    }
}

/// A session resumed on this instance, from the new socket's peer.
fn resumed_here(state: &AppState, peer: &Peer, record: &mut SessionRecord) {
    record.resumed_count = record.resumed_count.saturating_add(1);
    record.last_seen_at = Utc::now();
    record.user_agent = peer.user_agent.clone();
    record.ip_address = peer.ip_address.clone();
    record.device_type = crate::model::device::detect(peer.user_agent.as_deref());
    record.instance_id = state.instance_id.clone();
}

/// Record a session's end (its row closed) and unregister it. The caller
/// has already left its rooms.
pub(crate) fn end_session(state: &AppState, mut record: SessionRecord, close: Option<CloseCode>) {
    let now = Utc::now();
    record.current_document_id = None;
    record.last_seen_at = now;
    record.disconnected_at = Some(now);
    // A client's own close (or a dropped socket) has no server close code.
    let reason = Some(close.map_or("closed", |close| close.reason()));
    state.writer.session_ended(session_row(&record), reason);
    state.hub.unregister(record.session_id);
    tracing::info!(session_id = %record.session_id, ?close, "session closed");
    let code = close.map_or_else(|| "none".to_owned(), |close| close.code().to_string());
    metrics::counter!("tandem_connections_closed_total", "code" => code).increment(1);
}

/// The per-connection message rate limiter.
pub(crate) fn rate_limiter(config: &crate::config::Config) -> DefaultDirectRateLimiter {
    let burst = NonZeroU32::new(config.rate_limit_burst).unwrap_or(NonZeroU32::MIN);
    let rate = NonZeroU32::new(config.rate_limit_per_second).unwrap_or(NonZeroU32::MIN);
    RateLimiter::direct(Quota::per_second(rate).allow_burst(burst))
}

/// The join sequence both protocols share: announce the joiner (a room with
/// joiners is never unloaded), load the document (a failed load undoes the
/// join and is logged), seed the mirror of other instances' members, then add
/// the member and send its welcome.
pub(crate) async fn join_room(
    state: &AppState,
    document_id: &DocumentId,
    member: Member,
    id: Option<&MessageId>,
) -> Result<Arc<Room>, DocError> {
    let hub = &state.hub;
    let room = hub.begin_join(document_id);
    if let Err(error) = state.docs.ensure_loaded(&room).await {
        hub.abort_join(&room);
        tracing::warn!(%document_id, error = ?error, "document load failed");
        return Err(error);
    }
    state.bus.seed_room(&room).await;
    hub.finish_join(&room, member, id);
    Ok(room)
}
