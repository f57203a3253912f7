//! `--presence-max-hz`: a member's cursor and selection are relayed at most
//! that often, whatever rate its client sends at. A change within the
//! interval after the last relay is applied to the member's presence at once
//! (REST and newcomers see it) and relayed on the trailing edge, when the
//! interval has passed: the last position is always sent, the ones between
//! are not. The hub runs the trailing edge for the rooms that hold some.

use std::time::Instant;

use super::{
    events::RemoteChange,
    latest::{LatestKey, Stream},
    member::MemberKind,
    presence_change::stream_index,
    room::RoomState,
};
use crate::{
    model::{ids::DocumentId, presence::Presence},
    protocol::json::ServerMessage,
};

impl RoomState {
    /// Relay the held-back cursors and selections whose interval has passed.
    /// Returns what was relayed (for other instances: presence, change, is
    /// the member on `/yjs`) and whether some still wait.
    pub fn relay_deferred(
        &mut self,
        document_id: &DocumentId,
        now: Instant,
    ) -> (Vec<(Presence, RemoteChange, bool)>, bool) {
        let interval = self.presence_interval;
        let mut due_now = Vec::new();
        let mut still_waiting = false;
        for member in &mut self.members {
            for stream in [Stream::Cursor, Stream::Selection] {
                if !member.deferred[stream_index(stream)] {
                    continue;
                }
                if member.relay_due(stream, interval, now) {
                    member.relaying(stream, now);
                    if member.kind == MemberKind::Json {
                        member.awareness_clock = member.awareness_clock.wrapping_add(1);
                    }
                    due_now.push((member.presence.connection_id, stream));
                } else {
                    still_waiting = true;
                }
            }
        }
        let mut relayed = Vec::new();
        for (connection_id, stream) in due_now {
            let Some(member) = self
                .members()
                .iter()
                .find(|m| m.presence.connection_id == connection_id)
            else {
                continue;
            };
            let presence = &member.presence;
            let (message, change) = match stream {
                Stream::Cursor => match presence.cursor {
                    Some(cursor) => (
                        ServerMessage::CursorMove {
                            document_id,
                            user_id: &presence.user_id,
                            connection_id,
                            cursor,
                        },
                        RemoteChange::Cursor,
                    ),
                    None => continue,
                },
                _ => (
                    ServerMessage::SelectionChange {
                        document_id,
                        user_id: &presence.user_id,
                        connection_id,
                        selection: presence.selection,
                    },
                    RemoteChange::Selection,
                ),
            };
            let key = LatestKey {
                sender: connection_id,
                document: document_id.clone(),
                stream,
            };
            self.broadcast_latest(&message.encode(), &key);
            let yjs = member.kind == MemberKind::Yjs;
            let awareness = (!yjs && self.has_yjs_members()).then(|| member.awareness_entry());
            relayed.push((presence.clone(), change, yjs));
            if let Some(entry) = awareness {
                self.publish_json_member_awareness_latest(document_id, connection_id, entry);
            }
        }
        (relayed, still_waiting)
    }
}
