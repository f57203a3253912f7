//! The JSON protocol on `/ws`: the [`Protocol`] handler the shared read loop
//! hands each frame to. It decodes each frame once and dispatches it; nothing
//! on that path waits for the database or for another client. Replies to the
//! client's own messages wait for room in its queue (backpressure); a client
//! too slow for what others send is closed by the connection's writer.

use std::{
    collections::HashMap,
    sync::{Arc, atomic::Ordering},
};

use chrono::Utc;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::{
    auth::Identity,
    model::ids::DocumentId,
    model::ids::MessageId,
    model::presence::EditingStopReason,
    model::presence::LeaveReason,
    model::presence::SessionRecord,
    protocol::codes::CloseCode,
    protocol::codes::ErrorCode,
    protocol::codes::FrameError,
    protocol::codes::ProtocolError,
    protocol::json::{ClientMessage, DecodeLimits, ServerMessage, decode_client_frame, encode_error},
    rooms::outbox::Outbox,
    rooms::outbox::Outgoing,
    rooms::{
        member::{Member, MemberKind},
        room::{PresenceChange, Room},
    },
    state::AppState,
    storage::write_behind::session_row,
    transport::{
        connection::{Peer, join_room, rate_limiter},
        expiry::{Due, Expiry},
        read_loop::{DataFrame, Exit, Heard, Protocol, Rules, read_loop},
        ws::Socket,
    },
};

mod app_messages;
mod credentials;
mod resume;
mod sync;

/// Serve one upgraded `/ws` socket until it closes or the server stops.
pub async fn run(socket: Socket, state: AppState, peer: Peer) {
    let config = state.config.clone();
    let (sink, mut stream) = socket.split();
    // Boxed (as is the finish below): run once, they would otherwise stay
    // part of this connection's state machine for its whole life.
    let resume::Opened {
        record,
        connection,
        resume_token,
        resumed,
    } = Box::pin(resume::open(&state, sink, &peer)).await;
    let mut handler = JsonHandler {
        state: state.clone(),
        expiry: Expiry::new(peer.identity.expires_at, Some(config.token_expiry_warning)),
        credential: connection.credential.clone(),
        identity: peer.identity,
        outbox: connection.outbox.clone(),
        consecutive_errors: 0,
        last_rate_limit_reply_ms: None,
        joined: HashMap::new(),
        record_dirty: false,
        limits: DecodeLimits {
            max_message_bytes: config.max_message_bytes,
            max_update_bytes: config.max_update_bytes,
            max_broadcast_bytes: config.max_broadcast_bytes,
        },
        end: connection.end.clone(),
        record,
        replies: Vec::new(),
        batch: peer.batch,
        resume_token,
    };
    if let Some(resumed) = resumed {
        Box::pin(handler.resumed(resumed)).await;
    }
    let limiter = rate_limiter(&config);
    let exit = read_loop(
        &mut stream,
        &mut handler,
        &connection.outbox,
        connection.signals(&state.connections_stop),
        Rules::new(&config, &limiter),
        Heard {
            last: &connection.last_heard,
            clock: || state.hub.clock_ms(),
        },
        &state.hub.counters,
    )
    .await;
    Box::pin(handler.finish(connection, &mut stream, exit)).await;
}

struct JsonHandler {
    state: AppState,
    identity: Identity,
    /// When the identity's token expires (warning, then 4004).
    expiry: Expiry,
    /// The credential as revocations see it (shared with the hub's handle).
    credential: Arc<std::sync::Mutex<crate::model::revocation::Credential>>,
    outbox: Outbox,
    consecutive_errors: u32,
    /// When the last `rate_limited` reply went out: at most one per second.
    last_rate_limit_reply_ms: Option<u64>,
    joined: HashMap<DocumentId, Arc<Room>>,
    record: SessionRecord,
    /// Activity since the session row was last written (refreshes `last_seen_at`).
    record_dirty: bool,
    limits: DecodeLimits,
    end: CancellationToken,
    /// Replies to this client's own messages, sent after each frame with
    /// backpressure: a client that pipelines requests waits for its answers
    /// instead of overflowing its queue.
    replies: Vec<Outgoing>,
    /// `?batch=1`: frames may hold several newline-delimited messages.
    batch: bool,
    /// Resumes this session if its socket drops (`connected.resume_token`).
    resume_token: Option<String>,
}

impl Protocol for JsonHandler {
    fn heard(&mut self) {
        self.record_dirty = true;
    }

    fn messages_in(&self, frame: &DataFrame) -> u32 {
        match frame {
            DataFrame::Text(text) if self.batch => batch_lines(text).count().try_into().unwrap_or(u32::MAX),
            _ => 1,
        }
    }

    async fn frame(&mut self, frame: DataFrame) {
        match frame {
            DataFrame::Text(text) if self.batch => {
                for line in batch_lines(&text) {
                    self.handle_text(line).await;
                }
            }
            DataFrame::Text(text) => self.handle_text(&text).await,
            DataFrame::Binary(_) => self.reject(
                ProtocolError::new(
                    ErrorCode::UnsupportedFrame,
                    "binary frames are not accepted on /ws: send JSON text frames (Yjs payloads as base64)",
                ),
                None,
            ),
        }
        self.flush_replies().await;
    }

    async fn rate_limited(&mut self) {
        // One reply per second at most, so a flood is not answered by a flood.
        let now = self.state.hub.clock_ms();
        if self
            .last_rate_limit_reply_ms
            .is_some_and(|last| now.saturating_sub(last) < 1000)
        {
            return;
        }
        self.last_rate_limit_reply_ms = Some(now);
        let error = ProtocolError::new(
            ErrorCode::RateLimited,
            format!(
                "more than {} messages per second; messages are being dropped",
                self.state.config.rate_limit_per_second
            ),
        );
        self.reply(encode_error(&error, None));
        self.flush_replies().await;
    }

    fn tick(&mut self) {
        if self.record_dirty {
            self.touch(false);
        }
    }

    fn consecutive_errors(&self) -> u32 {
        self.consecutive_errors
    }

    fn deadline(&self) -> Option<tokio::time::Instant> {
        self.expiry.deadline()
    }

    async fn documents_revoked(&mut self, documents: Vec<DocumentId>) -> Option<Exit> {
        for document_id in documents {
            self.revoke_document(&document_id);
        }
        self.flush_replies().await;
        None
    }

    async fn deadline_passed(&mut self) -> Option<Exit> {
        match self.expiry.passed()? {
            Due::Warn(expires_at) => {
                self.reply(ServerMessage::TokenExpiring { expires_at }.encode());
                self.flush_replies().await;
                None
            }
            Due::End => {
                tracing::info!(session_id = %self.record.session_id, "token expired");
                Some(Exit::closing(CloseCode::TokenExpired, LeaveReason::Expired))
            }
        }
    }
}

/// Time from a message's receipt to its relay being queued for the other
/// members (`tandem_relay_seconds`), for the kinds that are relayed. A cached
/// handle, resolved after the application installed its recorder.
static RELAY_SECONDS: std::sync::LazyLock<metrics::Histogram> =
    std::sync::LazyLock::new(|| metrics::histogram!("tandem_relay_seconds"));

/// The messages of a newline-delimited frame (`?batch=1`); blank lines are
/// skipped.
fn batch_lines(text: &str) -> impl Iterator<Item = &str> {
    text.split('\n').filter(|line| !line.trim().is_empty())
}

/// Whether handling a message of this kind queues it for other members.
fn fans_out(kind: &str) -> bool {
    matches!(
        kind,
        "cursor_move"
            | "selection_change"
            | "editing_start"
            | "editing_stop"
            | "sync_update"
            | "awareness"
            | "broadcast"
            | "send_to_user"
    )
}

impl JsonHandler {
    async fn handle_text(&mut self, text: &str) {
        let received = std::time::Instant::now();
        match decode_client_frame(text, self.limits) {
            Err(FrameError { id, error }) => self.reject(error, id.as_ref()),
            Ok(frame) => {
                let kind = frame.message.kind();
                metrics::counter!("tandem_messages_received_total", "type" => kind).increment(1);
                match self.dispatch(frame.message, frame.id.as_ref()).await {
                    Ok(()) => {
                        self.consecutive_errors = 0;
                        if fans_out(kind) {
                            RELAY_SECONDS.record(received.elapsed().as_secs_f64());
                        }
                    }
                    Err(error) => self.reject(error, frame.id.as_ref()),
                }
            }
        }
    }

    fn reply(&mut self, text: crate::protocol::json::Encoded) {
        self.replies.push(Outgoing::Text(text));
    }

    /// Queue this frame's replies, waiting for room in the queue (stop reading
    /// from a client until it reads its answers), up to the session TTL.
    async fn flush_replies(&mut self) {
        let patience = self.state.config.reply_patience();
        for reply in std::mem::take(&mut self.replies) {
            if !self.outbox.push_waiting(reply, patience).await {
                break;
            }
        }
    }

    fn reject(&mut self, error: ProtocolError, id: Option<&MessageId>) {
        self.state
            .hub
            .counters
            .messages_rejected
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(session_id = %self.record.session_id, code = error.code.as_str(), message = %error.message, "rejected message");
        metrics::counter!("tandem_errors_sent_total", "code" => error.code.as_str()).increment(1);
        self.reply(encode_error(&error, id));
        self.consecutive_errors += 1;
        if self.consecutive_errors > self.state.config.max_consecutive_errors {
            self.end.cancel();
        }
    }

    fn ack(&mut self, id: Option<&MessageId>) {
        if let Some(id) = id {
            self.reply(ServerMessage::Ack { id }.encode());
        }
    }

    fn joined_room(&self, document_id: &DocumentId) -> Result<Arc<Room>, ProtocolError> {
        self.joined.get(document_id).cloned().ok_or_else(|| {
            ProtocolError::new(
                ErrorCode::NotJoined,
                format!("join document {document_id:?} first"),
            )
        })
    }

    async fn dispatch(
        &mut self,
        message: ClientMessage,
        id: Option<&MessageId>,
    ) -> Result<(), ProtocolError> {
        let hub = self.state.hub.clone();
        let connection_id = self.record.connection_id;
        match message {
            // The awaiting messages are boxed: their futures (a document
            // load, a token check, a durable write) would otherwise be laid
            // out in every session's state machine for its whole life, idle
            // or not.
            ClientMessage::JoinDocument { document_id } => Box::pin(self.join(document_id, id)).await,
            ClientMessage::LeaveDocument { document_id } => {
                let room = self.joined_room(&document_id)?;
                hub.leave(&room, connection_id, LeaveReason::Left);
                self.joined.remove(&document_id);
                if self.record.current_document_id.as_ref() == Some(&document_id) {
                    self.record.current_document_id = self.joined.keys().next().cloned();
                    self.touch(false);
                }
                self.ack(id);
                Ok(())
            }
            ClientMessage::CursorMove { document_id, cursor } => {
                let room = self.joined_room(&document_id)?;
                hub.update_presence(&room, connection_id, PresenceChange::Cursor(cursor));
                self.ack(id);
                Ok(())
            }
            ClientMessage::SelectionChange {
                document_id,
                selection,
            } => {
                let room = self.joined_room(&document_id)?;
                hub.update_presence(&room, connection_id, PresenceChange::Selection(selection));
                self.ack(id);
                Ok(())
            }
            ClientMessage::EditingStart { document_id } => {
                let room = self.joined_room(&document_id)?;
                hub.update_presence(&room, connection_id, PresenceChange::EditingStart);
                self.ack(id);
                Ok(())
            }
            ClientMessage::EditingStop { document_id } => {
                let room = self.joined_room(&document_id)?;
                hub.update_presence(
                    &room,
                    connection_id,
                    PresenceChange::EditingStop(EditingStopReason::Client),
                );
                self.ack(id);
                Ok(())
            }
            ClientMessage::RefreshToken { token } => Box::pin(self.refresh_token(&token, id)).await,
            ClientMessage::Broadcast {
                document_id,
                event,
                data,
            } => self.broadcast(&document_id, &event, &data, id),
            ClientMessage::SendToUser { user_id, event, data } => {
                self.send_to_user(&user_id, &event, &data, id)
            }
            ClientMessage::Heartbeat => {
                self.touch(false);
                self.reply(
                    ServerMessage::HeartbeatAck {
                        id,
                        server_time: Utc::now().timestamp_millis(),
                    }
                    .encode(),
                );
                Ok(())
            }
            ClientMessage::SyncStep1 {
                document_id,
                state_vector,
            } => Box::pin(self.sync_step1(&document_id, &state_vector, id)).await,
            ClientMessage::SyncUpdate { document_id, update } => {
                Box::pin(self.sync_update(&document_id, update, id)).await
            }
            ClientMessage::Awareness { document_id, update } => self.awareness(&document_id, &update, id),
        }
    }

    async fn join(&mut self, document_id: DocumentId, id: Option<&MessageId>) -> Result<(), ProtocolError> {
        self.may_open(&document_id)?;
        if self.joined.contains_key(&document_id) {
            return Err(ProtocolError::new(
                ErrorCode::AlreadyJoined,
                format!("already joined {document_id:?}"),
            ));
        }
        if self.joined.len() >= self.state.config.max_documents_per_connection {
            return Err(ProtocolError::new(
                ErrorCode::TooManyDocuments,
                format!(
                    "a connection may join at most {} documents",
                    self.state.config.max_documents_per_connection
                ),
            ));
        }
        let member = Member::new(
            self.record.presence(Utc::now()),
            self.outbox.clone(),
            MemberKind::Json,
        );
        // Joiners wait for the document to load; a failed load fails the join.
        let room = join_room(&self.state, &document_id, member, id)
            .await
            .map_err(|_| {
                ProtocolError::new(
                    ErrorCode::DocumentUnavailable,
                    "the document could not be loaded; try again",
                )
            })?;
        self.joined.insert(document_id.clone(), room);
        self.record.current_document_id = Some(document_id);
        self.touch(false);
        Ok(())
    }

    /// Whether this token may open `document_id` now: its claims, and no
    /// revocation of the document for it.
    fn may_open(&self, document_id: &DocumentId) -> Result<(), ProtocolError> {
        if !self.identity.may_access(document_id) {
            return Err(ProtocolError::new(
                ErrorCode::Forbidden,
                format!("this token may not open document {document_id:?}"),
            ));
        }
        if self.state.verifier.deny_list().denies_document(
            &self.identity.user_id,
            &self.identity.credential(),
            document_id.as_str(),
            jsonwebtoken::get_current_timestamp(),
        ) {
            return Err(ProtocolError::new(
                ErrorCode::Forbidden,
                format!("access to document {document_id:?} was revoked for this token"),
            ));
        }
        Ok(())
    }

    /// Write the session row behind with a fresh `last_seen_at`.
    fn touch(&mut self, urgent: bool) {
        self.record.last_seen_at = Utc::now();
        self.record_dirty = false;
        self.state.writer.session(session_row(&self.record), urgent);
    }

    /// Leave every room, telling the others why.
    fn leave_all(&mut self, reason: LeaveReason) {
        let connection_id = self.record.connection_id;
        for (_, room) in self.joined.drain() {
            self.state.hub.leave(&room, connection_id, reason);
        }
    }
}
