//! A resumed session back in a room it never left: nobody is told (its
//! presence did not change), and only the resumed connection hears
//! anything. What it hears completes the replay of what it missed: a fresh
//! `presence_list` (`"resync":true`) and awareness states when the replay
//! was lost to an overflow, then `sync_step1` so its Yjs state catches up
//! both ways.

use uuid::Uuid;

use crate::{
    model::ids::DocumentId,
    protocol::json::{Base64, ServerMessage},
    rooms::room::RoomState,
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
