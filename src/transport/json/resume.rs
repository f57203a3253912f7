//! Resuming a `/ws` session across a dropped socket (`--resume-grace`).
//! Opening: a `resume` token that names a session parked on this instance
//! for this user takes it over (`"resumed":true`); any other token is
//! ignored and a new session starts, since a stale token must never block
//! connecting. Closing: a socket that dropped without a close frame parks
//! its session instead of leaving, until it is claimed, the grace runs out,
//! or the session is ended from outside.

use std::sync::Arc;

use crate::{
    model::presence::{LeaveReason, SessionRecord},
    protocol::json::ServerMessage,
    rooms::{outbox::Outgoing, parking::{Parking, ParkedSession}, room::Room},
    state::AppState,
    transport::{
        connection::{Connection, Peer, Sink, Stream, end_session},
        read_loop::Exit,
    },
};

use super::JsonHandler;

/// A connection just opened: new, or a parked session taken over.
pub(super) struct Opened {
    pub record: SessionRecord,
    pub connection: Connection,
    /// This connection's own resume token (none with `--resume-grace 0`).
    pub resume_token: Option<String>,
    /// Resumed: the rooms it is still in, and whether its replay was lost.
    pub resumed: Option<(Vec<Arc<Room>>, bool)>,
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
            resumed: Some((resumed.rooms, resumed.lost)),
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
        let claimed = state
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
