//! Resuming a `/ws` session across a dropped socket (`--resume-grace`).
//! Opening: a `resume` token that names a session parked on this instance
//! for this user takes it over (`"resumed":true`); any other token is
//! ignored and a new session starts, since a stale token must never block
//! connecting. Closing: a socket that dropped without a close frame parks
//! its session instead of leaving, until it is claimed, the grace runs out,
//! or the session is ended from outside.

use std::sync::Arc;

use crate::{
    cluster::resume::claim_elsewhere,
    model::{
        ids::DocumentId,
        presence::{LeaveReason, Presence, SessionRecord},
    },
    protocol::json::ServerMessage,
    rooms::{
        events::RoomEvent,
        member::{Member, MemberKind},
        outbox::Outgoing,
        parking::{ParkedSession, Parking},
        room::Room,
    },
    state::AppState,
    transport::{
        connection::{Connection, Peer, Stream, end_session},
        read_loop::Exit,
        writer::Sink,
    },
};

use super::JsonHandler;

/// A connection just opened: new, or a parked session taken over.
pub(super) struct Opened {
    pub record: SessionRecord,
    pub connection: Connection,
    /// This connection's own resume token (none with `--resume-grace 0`).
    pub resume_token: Option<String>,
    pub resumed: Option<Resumed>,
}

/// What a resumed session rejoins.
pub(super) enum Resumed {
    /// Parked here: the rooms it is still in, and whether its replay was lost.
    Here { rooms: Vec<Arc<Room>>, lost: bool },
    /// Moved from another instance: its presence in each document.
    Moved(Vec<(DocumentId, Presence)>),
}

/// Open the connection: resume the session `peer.resume` names, if it can,
/// else start a new one. Either way `connected` is the first message.
pub(super) async fn open(state: &AppState, sink: Sink, peer: &Peer) -> Opened {
    let resume_token = if state.config.resume_grace.is_zero() {
        None
    } else {
        Parking::token()
    };
    let heartbeat_interval_ms = state.config.heartbeat_interval.as_millis() as u64;
    let connected = |record: &SessionRecord, resumed: bool| {
        ServerMessage::Connected {
            connection_id: record.connection_id,
            session_id: record.session_id,
            user_id: &record.user_id,
            heartbeat_interval_ms,
            resume_token: resume_token.as_deref(),
            resumed,
        }
        .encode()
    };
    let parked = match (&peer.resume, resume_token.is_some()) {
        (Some(token), true) => state.hub.parking.claim(token, &peer.identity.user_id).await,
        _ => None,
    };
    if let Some(parked) = parked {
        let resumed = Connection::resume(state, sink, peer, parked, |record| {
            Outgoing::Text(connected(record, true))
        });
        return Opened {
            record: resumed.record,
            connection: resumed.connection,
            resume_token,
            resumed: Some(Resumed::Here {
                rooms: resumed.rooms,
                lost: resumed.lost,
            }),
        };
    }
    let moved = match (&peer.resume, resume_token.is_some()) {
        (Some(token), true) => claim_elsewhere(&state.bus, token, &peer.identity.user_id).await,
        _ => None,
    };
    if let Some(moved) = moved {
        let (record, connection) = Connection::open_moved(state, sink, peer, moved.record, |record| {
            Outgoing::Text(connected(record, true))
        })
        .await;
        return Opened {
            record,
            connection,
            resume_token,
            resumed: Some(Resumed::Moved(moved.documents)),
        };
    }
    let (record, connection) = Connection::open(state, sink, peer, "json", None).await;
    connection.outbox.text(connected(&record, false));
    Opened {
        record,
        connection,
        resume_token,
        resumed: None,
    }
}

impl JsonHandler {
    pub(super) async fn resumed(&mut self, resumed: Resumed) {
        match resumed {
            Resumed::Here { rooms, lost } => self.rejoin(rooms, lost),
            Resumed::Moved(documents) => self.move_in(documents).await,
        }
    }

    /// Make a session that moved here a local member of its documents
    /// again, silently, and send it fresh presence (the other instance's
    /// queue stayed there). A document that cannot be loaded, or that the
    /// new token may not open, is left.
    async fn move_in(&mut self, documents: Vec<(DocumentId, Presence)>) {
        let connection_id = self.record.connection_id;
        for (document_id, presence) in documents {
            let state = self.state.clone();
            let room = state.hub.begin_join(&document_id);
            if let Err(error) = state.docs.ensure_loaded(&room).await {
                state.hub.abort_join(&room);
                tracing::warn!(%document_id, error = ?error, "document load failed on a resume");
                state.bus.publish(
                    &document_id,
                    RoomEvent::Left {
                        connection_id,
                        user_id: presence.user_id.to_string(),
                        reason: LeaveReason::Disconnected,
                    },
                );
                continue;
            }
            state.bus.seed_room(&room).await;
            state.hub.attach(
                &room,
                Member::new(presence, self.outbox.clone(), MemberKind::Json),
            );
            if self.may_open(&document_id).is_err() {
                state.hub.leave(&room, connection_id, LeaveReason::Revoked);
                continue;
            }
            room.state().welcome_back(&document_id, connection_id, true);
            self.joined.insert(document_id, room);
        }
        self.keep_current_document();
    }

    /// Back in the rooms of a resumed session. Access is checked again
    /// against the new token and the deny list: a document it may no longer
    /// open is left (`revoked`), as a live connection's would be.
    pub(super) fn rejoin(&mut self, rooms: Vec<Arc<Room>>, lost: bool) {
        let connection_id = self.record.connection_id;
        for room in rooms {
            let document_id = room.id.clone();
            if self.may_open(&document_id).is_err() {
                self.state.hub.leave(&room, connection_id, LeaveReason::Revoked);
                continue;
            }
            if room.state().welcome_back(&document_id, connection_id, lost) {
                self.joined.insert(document_id, room);
            }
        }
        self.keep_current_document();
    }

    /// The session's current document, if it is still in it.
    fn keep_current_document(&mut self) {
        if self
            .record
            .current_document_id
            .as_ref()
            .is_some_and(|current| !self.joined.contains_key(current))
        {
            self.record.current_document_id = self.joined.keys().next().cloned();
        }
    }

    /// The read loop ended. A socket that dropped without a close frame
    /// parks its session for the grace period; otherwise (or if parking
    /// fails) the session leaves its rooms and ends now.
    pub(super) async fn finish(mut self, connection: Connection, stream: &mut Stream, exit: Exit) {
        let state = self.state.clone();
        let token = self.resume_token.take().filter(|_| exit.dropped);
        let Some(token) = token else {
            self.leave_all(exit.reason);
            let record = self.record.clone();
            drop(self);
            return Box::pin(connection.close(&state, record, stream, exit.close)).await;
        };
        let end = connection.end.clone();
        let revoke = connection.revoke.clone();
        let (outbox, queue) = match connection.park(&state, self.record.session_id).await {
            Ok(parked) => parked,
            Err(connection) => {
                self.leave_all(exit.reason);
                let record = self.record.clone();
                drop(self);
                return Box::pin(connection.close(&state, record, stream, exit.close)).await;
            }
        };
        tracing::info!(session_id = %self.record.session_id, "socket dropped; session parked for a resume");
        let claimed =
            state
                .hub
                .parking
                .park(token.clone(), self.record.user_id.clone(), self.record.session_id);
        let reason = tokio::select! {
            _ = tokio::time::sleep(state.config.resume_grace) => exit.reason,
            _ = state.connections_stop.cancelled() => exit.reason,
            _ = end.cancelled() => LeaveReason::Timeout,
            _ = revoke.all.cancelled() => LeaveReason::Revoked,
            handover = claimed => match handover {
                Ok(handover) => {
                    let parked = ParkedSession {
                        record: self.record.clone(),
                        rooms: self.joined.drain().map(|(_, room)| room).collect(),
                        outbox,
                        queue,
                    };
                    match handover.send(parked) {
                        Ok(()) => return,
                        // The resuming connection gave up waiting: this
                        // session ends after all.
                        Err(parked) => {
                            self.joined.extend(parked.rooms.into_iter().map(|room| (room.id.clone(), room)));
                            exit.reason
                        }
                    }
                }
                Err(_) => exit.reason,
            },
        };
        state.hub.parking.forget(&token);
        self.leave_all(reason);
        end_session(&state, self.record.clone(), None);
    }
}
