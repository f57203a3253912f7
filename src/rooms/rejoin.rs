//! A resumed session back in a room it never left: nobody is told (its
//! presence did not change), and only the resumed connection hears
//! anything. What it hears completes the replay of what it missed: a fresh
//! `presence_list` (`"resync":true`) and awareness states when the replay
//! was lost to an overflow, then `sync_step1` so its Yjs state catches up
//! both ways.
//!
//! Across instances the member moves: the instance that parked it turns it
//! into a remote member ([`RoomState::detach`]), the one the client
//! reconnected to makes it local ([`RoomState::attach`]), both silently.

use std::sync::Arc;

use uuid::Uuid;

use crate::{
    model::{ids::DocumentId, presence::Presence},
    protocol::json::{Base64, ServerMessage},
    rooms::{
        member::{Member, MemberKind, RemoteMember},
        room::RoomState,
    },
};

impl RoomState {
    /// Welcome `connection_id` back after a resume; `resync` when its
    /// replay was lost. Under the room lock, so this comes after everything
    /// queued for it while parked and before anything sent next. False if
    /// it is no longer a member.
    pub fn welcome_back(&self, document_id: &DocumentId, connection_id: Uuid, resync: bool) -> bool {
        let Some(member) = self
            .members
            .iter()
            .find(|member| member.presence.connection_id == connection_id)
        else {
            return false;
        };
        if resync {
            let users = self.presence_list();
            member.outbox.text(
                ServerMessage::PresenceList {
                    id: None,
                    document_id,
                    users: &users,
                    resync: true,
                }
                .encode(),
            );
            if let Some(states) = self.awareness.snapshot() {
                member.outbox.text(
                    ServerMessage::Awareness {
                        document_id,
                        update: Base64(&states),
                        user_id: None,
                    }
                    .encode(),
                );
            }
        }
        if let Some(doc) = &self.doc {
            let state_vector = crate::crdt::sync::state_vector(doc);
            member.outbox.text(
                ServerMessage::SyncStep1 {
                    document_id,
                    state_vector: Base64(&state_vector),
                }
                .encode(),
            );
        }
        true
    }
}

impl RoomState {
    /// A parked member moves to `instance`, where its client reconnected:
    /// it becomes a remote member here, and nobody is told. Its presence,
    /// or none if it is not a member.
    pub fn detach(&mut self, connection_id: Uuid, instance: Arc<str>) -> Option<Presence> {
        let index = self
            .members
            .iter()
            .position(|member| member.presence.connection_id == connection_id)?;
        let member = self.members.swap_remove(index);
        if self.members.is_empty() {
            self.empty_since = Some(std::time::Instant::now());
        }
        let presence = member.presence.clone();
        self.remote.push(RemoteMember::new(
            instance,
            member.presence,
            member.kind == MemberKind::Yjs,
        ));
        Some(presence)
    }

    /// A member that moved here from another instance: it replaces its
    /// remote mirror, and nobody is told.
    pub fn attach(&mut self, member: Member) {
        let connection_id = member.presence.connection_id;
        self.remote
            .retain(|remote| remote.presence.connection_id != connection_id);
        self.members
            .retain(|local| local.presence.connection_id != connection_id);
        self.members.push(member);
        self.empty_since = None;
    }
}
