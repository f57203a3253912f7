//! One y-websocket connection on `/yjs/{document_id}`: a stock `WebsocketProvider`
//! joins the same room as JSON clients, as a session and a presence member.
//!
//! The binary protocol has no error message, so bad input (garbage, a text
//! frame, an unknown type, a truncated message) is dropped, logged and counted;
//! a connection that keeps sending it is closed with 4002. A viewer's document
//! updates are dropped and logged rather than answered with a close: a
//! provider sends its local state as sync step 2 right after connecting, and
//! closing would only make it reconnect and send it again, in a loop.

use std::sync::{Arc, atomic::Ordering};

use chrono::Utc;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    model::ids::DocumentId,
    model::presence::Cursor,
    model::presence::LeaveReason,
    model::presence::MAX_COORDINATE,
    model::presence::Selection,
    protocol::codes::CloseCode,
    protocol::yjs::{self, Inbound},
    rooms::documents::Durable,
    rooms::documents::Origin,
    rooms::outbox::Outbox,
    rooms::outbox::Outgoing,
    rooms::{
        member::{Member, MemberKind},
        room::{PresenceChange, Room},
    },
    state::AppState,
    transport::connection::{Connection, Peer, join_room, rate_limiter},
    transport::expiry::{Due, Expiry},
    transport::read_loop::{DataFrame, Exit, Heard, Protocol, Rules, read_loop},
    transport::ws::Socket,
};

/// Why a frame from a y-websocket client was dropped. The binary protocol
/// has no error message: each is logged and counted, and a connection that
/// keeps sending them is closed with 4002.
#[derive(Debug, thiserror::Error)]
enum BadFrame {
    #[error("text frame on the binary y-websocket endpoint")]
    Text,
    #[error(transparent)]
    Frame(#[from] crate::protocol::yjs::FrameError),
    #[error("{what} of {bytes} bytes over the limit")]
    TooLarge { what: &'static str, bytes: usize },
    #[error(transparent)]
    Document(#[from] crate::rooms::documents::DocError),
}

/// Serve one upgraded y-websocket connection for `document_id`.
pub async fn run(socket: Socket, state: AppState, peer: Peer, document_id: DocumentId) {
    let (sink, mut stream) = socket.split();
    let (record, connection) = // Boxed (as is the close below): run once, they would otherwise
    // stay part of this connection's state machine for its whole life.
    Box::pin(Connection::open(&state, sink, &peer, "yjs", Some(document_id.clone()))).await;
    let hub = state.hub.clone();
    let member = Member::new(
        record.presence(Utc::now()),
        connection.outbox.clone(),
        MemberKind::Yjs,
    );
    let close = match join_room(&state, &document_id, member, None).await {
        Err(_) => Some(CloseCode::Unavailable),
        Ok(room) => {
            let mut handler = YjsHandler {
                state: state.clone(),
                room: room.clone(),
                outbox: connection.outbox.clone(),
                connection_id: record.connection_id,
                user_id: record.user_id.clone(),
                may_write: peer.identity.may_write(),
                // No in-band refresh here: the provider reconnects with a fresh token.
                expiry: Expiry::new(peer.identity.expires_at, None),
                consecutive_errors: 0,
                end: connection.end.clone(),
            };
            let limiter = rate_limiter(&state.config);
            let exit = read_loop(
                &mut stream,
                &mut handler,
                &connection.outbox,
                connection.signals(&state.connections_stop),
                Rules::new(&state.config, &limiter),
                Heard {
                    last: &connection.last_heard,
                    clock: || hub.clock_ms(),
                },
                &hub.counters,
            )
            .await;
            hub.leave(&room, record.connection_id, exit.reason);
            exit.close
        }
    };
    Box::pin(connection.close(&state, record, &mut stream, close)).await;
}

struct YjsHandler {
    state: AppState,
    room: Arc<Room>,
    outbox: Outbox,
    connection_id: Uuid,
    user_id: Arc<str>,
    may_write: bool,
    /// The token's expiry: the connection ends with 4004 then.
    expiry: Expiry,
    consecutive_errors: u32,
    /// Ends the connection after too many bad frames in a row.
    end: CancellationToken,
}

impl Protocol for YjsHandler {
    async fn frame(&mut self, frame: DataFrame) {
        let handled = match frame {
            DataFrame::Binary(bytes) => self.handle(&bytes),
            DataFrame::Text(_) => Err(BadFrame::Text),
        };
        match handled {
            Ok(()) => self.consecutive_errors = 0,
            Err(why) => self.bad_input(why),
        }
    }

    fn consecutive_errors(&self) -> u32 {
        self.consecutive_errors
    }

    fn deadline(&self) -> Option<tokio::time::Instant> {
        self.expiry.deadline()
    }

    async fn documents_revoked(&mut self, documents: Vec<DocumentId>) -> Option<Exit> {
        // One document per connection here: leaving it is closing.
        documents
            .contains(&self.room.id)
            .then_some(Exit::closing(CloseCode::Revoked, LeaveReason::Revoked))
    }

    async fn deadline_passed(&mut self) -> Option<Exit> {
        (self.expiry.passed()? == Due::End)
            .then_some(Exit::closing(CloseCode::TokenExpired, LeaveReason::Expired))
    }
}

impl YjsHandler {
    fn bad_input(&mut self, why: BadFrame) {
        self.state
            .hub
            .counters
            .messages_rejected
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(connection_id = %self.connection_id, %why, "dropped y-websocket frame");
        self.consecutive_errors += 1;
        if self.consecutive_errors > self.state.config.max_consecutive_errors {
            self.end.cancel();
        }
    }

    fn handle(&mut self, frame: &[u8]) -> Result<(), BadFrame> {
        let config = &self.state.config;
        let docs = &self.state.docs;
        match yjs::decode(frame)? {
            Inbound::SyncStep1(state_vector) => {
                let update = if crate::crdt::sync::is_empty_state_vector(&state_vector) {
                    // A newcomer: the shared whole-document encoding, not a copy.
                    docs.whole_state(&self.room)?.0
                } else {
                    docs.diff(&self.room, &state_vector)?.raw
                };
                let header = yjs::sync_step2_header(update.len());
                self.outbox
                    .push(Outgoing::Parts(Box::new(crate::rooms::outbox::MessageParts {
                        text: false,
                        parts: vec![header.into(), update],
                    })));
            }
            Inbound::Update(update) => {
                if update.len() > config.max_update_bytes {
                    return Err(BadFrame::TooLarge {
                        what: "update",
                        bytes: update.len(),
                    });
                }
                if !self.may_write {
                    let empty = crate::crdt::sync::decode_update(&update).is_ok_and(|u| u.is_empty());
                    if !empty {
                        tracing::warn!(connection_id = %self.connection_id, user_id = %self.user_id, document_id = %self.room.id, "dropped a viewer's document update");
                        self.state
                            .hub
                            .counters
                            .messages_rejected
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    return Ok(());
                }
                let origin = Origin {
                    connection_id: Some(self.connection_id),
                    user_id: self.user_id.clone(),
                };
                let applied = docs.apply_update(&self.room, &origin, update, Durable::Quietly)?;
                if applied.pending
                    && let Some(state_vector) = docs.state_vector(&self.room)
                {
                    // Part of it waits for something the server lacks (an
                    // earlier update that was refused, say): the provider
                    // answers sync step 1 with what the server is missing.
                    self.outbox
                        .push(Outgoing::Binary(yjs::sync_step1(&state_vector).into()));
                }
                self.state
                    .hub
                    .update_presence(&self.room, self.connection_id, PresenceChange::Activity);
            }
            Inbound::Awareness(update) => {
                if update.len() > config.max_message_bytes {
                    return Err(BadFrame::TooLarge {
                        what: "awareness update",
                        bytes: update.len(),
                    });
                }
                let entries = docs.apply_awareness(&self.room, self.connection_id, &self.user_id, &update)?;
                self.mirror_presence(&entries);
            }
            Inbound::QueryAwareness => {
                if let Some(states) = self.room.state().awareness_for_yjs() {
                    self.outbox.push(Outgoing::Binary(yjs::awareness(&states).into()));
                }
            }
            Inbound::Auth => {}
        }
        Ok(())
    }

    /// Reflect `cursor` / `selection` fields of this client's awareness state
    /// (when they are `{line, column}` shaped) into its presence.
    fn mirror_presence(&self, entries: &[crate::crdt::awareness::AwarenessEntry]) {
        let Some(state) = entries
            .iter()
            .filter(|e| !e.is_removal())
            .find_map(|e| serde_json::from_str::<serde_json::Value>(&e.json).ok())
        else {
            return;
        };
        let current = {
            let room = self.room.state();
            room.members()
                .iter()
                .find(|m| m.presence.connection_id == self.connection_id)
                .map(|m| (m.presence.cursor, m.presence.selection))
        };
        let Some((cursor_now, selection_now)) = current else {
            return;
        };
        let hub = &self.state.hub;
        if let Some(cursor) = state.get("cursor").and_then(as_cursor)
            && Some(cursor) != cursor_now
        {
            hub.update_presence(&self.room, self.connection_id, PresenceChange::Cursor(cursor));
        }
        if let Some(selection) = state.get("selection") {
            let selection = match selection {
                serde_json::Value::Null => Some(None),
                value => match (
                    value.get("start").and_then(as_cursor),
                    value.get("end").and_then(as_cursor),
                ) {
                    (Some(start), Some(end)) => Some(Some(Selection { start, end })),
                    _ => None,
                },
            };
            if let Some(selection) = selection
                && selection != selection_now
            {
                hub.update_presence(
                    &self.room,
                    self.connection_id,
                    PresenceChange::Selection(selection),
                );
            }
        }
    }
}

fn as_cursor(value: &serde_json::Value) -> Option<Cursor> {
    let coordinate = |name: &str| {
        value
            .get(name)?
            .as_i64()
            .filter(|v| (0..=MAX_COORDINATE).contains(v))
            .map(|v| v as u32)
    };
    Some(Cursor {
        line: coordinate("line")?,
        column: coordinate("column")?,
    })
}
