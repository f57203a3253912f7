//! The room's mirror of members connected to other instances: seeded from
//! the presence hash, kept current by the bus, replaced after an outage and
//! dropped when their instance dies. Other instances' members are shown to
//! local members exactly like local ones.

use std::{sync::Arc, time::Instant};

use uuid::Uuid;

use crate::{
    model::ids::DocumentId, model::presence::LeaveReason, model::presence::Presence,
    protocol::json::ServerMessage,
};

use super::{
    member::{RemoteMember, synthesized_awareness, synthesized_removal},
    room::RoomState,
};

impl RoomState {
    /// Instances with members in this room.
    pub fn remote_instances(&self) -> impl Iterator<Item = &Arc<str>> {
        self.remote.iter().map(|r| &r.instance)
    }

    pub(super) fn forget_tombstones(&mut self) {
        self.recently_left
            .retain(|(_, at)| at.elapsed() < std::time::Duration::from_secs(60));
    }

    /// Add remote members read from the presence hash (first local join),
    /// skipping ones that left meanwhile or are already known.
    pub fn seed_remote(&mut self, entries: impl IntoIterator<Item = RemoteMember>) {
        self.forget_tombstones();
        for member in entries {
            let id = member.presence.connection_id;
            if self.recently_left.iter().any(|(left, _)| *left == id)
                || self.remote.iter().any(|r| r.presence.connection_id == id)
                || self.contains(id)
            {
                continue;
            }
            self.remote.push(member);
        }
    }

    /// Replace the remote mirror (after a Redis outage), telling local members
    /// who joined and who left meanwhile.
    pub fn replace_remote(
        &mut self,
        document_id: &DocumentId,
        entries: impl IntoIterator<Item = RemoteMember>,
    ) {
        let fresh: Vec<RemoteMember> = entries.into_iter().collect();
        let gone: Vec<Presence> = self
            .remote
            .iter()
            .filter(|r| {
                !fresh
                    .iter()
                    .any(|f| f.presence.connection_id == r.presence.connection_id)
            })
            .map(|r| r.presence.clone())
            .collect();
        for presence in gone {
            self.remote_leave(
                document_id,
                presence.connection_id,
                &presence.user_id,
                LeaveReason::Timeout,
            );
        }
        for member in fresh {
            self.remote_join(document_id, member);
        }
    }

    /// A member joined on another instance.
    pub fn remote_join(&mut self, document_id: &DocumentId, member: RemoteMember) {
        let id = member.presence.connection_id;
        if let Some(entry) = self.remote.iter_mut().find(|r| r.presence.connection_id == id) {
            // Known: an update, or a resumed session that moved between
            // instances (no new join to announce).
            entry.presence = member.presence;
            entry.instance = member.instance;
            return;
        }
        self.broadcast(
            &ServerMessage::UserJoined {
                document_id,
                user: &member.presence,
                first_device: self.devices_of(&member.presence.user_id) == 0,
            }
            .encode(),
            None,
        );
        if !member.yjs {
            self.publish_json_member_awareness(synthesized_awareness(
                &member.presence,
                member.awareness_clock,
            ));
        }
        self.remote.push(member);
    }

    /// A member left on another instance.
    pub fn remote_leave(
        &mut self,
        document_id: &DocumentId,
        connection_id: Uuid,
        user_id: &str,
        reason: LeaveReason,
    ) -> bool {
        self.forget_tombstones();
        self.recently_left.push((connection_id, Instant::now()));
        let Some(index) = self
            .remote
            .iter()
            .position(|r| r.presence.connection_id == connection_id)
        else {
            return false;
        };
        let member = self.remote.swap_remove(index);
        if !member.yjs {
            self.publish_json_member_awareness(synthesized_removal(connection_id, member.awareness_clock));
        }
        self.remove_awareness_of(document_id, connection_id);
        self.broadcast(
            &ServerMessage::UserLeft {
                document_id,
                user_id,
                connection_id,
                reason,
                last_device: self.devices_of(user_id) == 0,
            }
            .encode(),
            None,
        );
        true
    }

    /// A remote member's presence changed: update the mirror, tell local members.
    pub fn remote_presence(
        &mut self,
        document_id: &DocumentId,
        member: RemoteMember,
        change: crate::rooms::events::RemoteChange,
    ) {
        use crate::rooms::events::RemoteChange;
        let presence = &member.presence;
        let connection_id = presence.connection_id;
        let user_id = &*presence.user_id;
        let message = match change {
            RemoteChange::Cursor => match presence.cursor {
                Some(cursor) => ServerMessage::CursorMove {
                    document_id,
                    user_id,
                    connection_id,
                    cursor,
                },
                None => return,
            },
            RemoteChange::Selection => ServerMessage::SelectionChange {
                document_id,
                user_id,
                connection_id,
                selection: presence.selection,
            },
            RemoteChange::EditingStart => ServerMessage::EditingStart {
                document_id,
                user_id,
                connection_id,
            },
            RemoteChange::EditingStop(reason) => ServerMessage::EditingStop {
                document_id,
                user_id,
                connection_id,
                reason,
            },
        }
        .encode();
        let stream = match change {
            RemoteChange::Cursor => Some(crate::rooms::latest::Stream::Cursor),
            RemoteChange::Selection => Some(crate::rooms::latest::Stream::Selection),
            _ => None,
        };
        match stream {
            Some(stream) => {
                let key = crate::rooms::latest::LatestKey {
                    sender: connection_id,
                    document: document_id.clone(),
                    stream,
                };
                self.broadcast_latest(&message, &key);
            }
            None => {
                self.broadcast(&message, None);
            }
        }
        let entry = match self
            .remote
            .iter_mut()
            .position(|r| r.presence.connection_id == connection_id)
        {
            Some(index) => {
                let entry = &mut self.remote[index];
                entry.presence = member.presence;
                entry.awareness_clock = entry.awareness_clock.wrapping_add(1);
                entry.clone()
            }
            None => {
                self.remote.push(member.clone());
                member
            }
        };
        if !entry.yjs {
            self.publish_json_member_awareness(synthesized_awareness(&entry.presence, entry.awareness_clock));
        }
    }

    /// Drop every member of a dead instance; returns them (local members were told `timeout`).
    pub fn remove_instance(&mut self, document_id: &DocumentId, instance: &str) -> Vec<Presence> {
        let gone: Vec<Presence> = self
            .remote
            .iter()
            .filter(|r| &*r.instance == instance)
            .map(|r| r.presence.clone())
            .collect();
        for presence in &gone {
            self.remote_leave(
                document_id,
                presence.connection_id,
                &presence.user_id,
                LeaveReason::Timeout,
            );
        }
        gone
    }
}
