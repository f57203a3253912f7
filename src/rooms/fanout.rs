//! The one fan-out step for document events: an event becomes what each
//! kind of member receives (the JSON message for `/ws` members, the
//! y-websocket frame for `/yjs` members), each encoded at most once per event
//! and only when a member of that kind is there to receive it; every
//! recipient shares the encoded bytes.

use std::sync::Arc;

use uuid::Uuid;

use super::{member::MemberKind, room::RoomState};
use crate::{
    model::ids::DocumentId,
    protocol::{
        json::{Base64, ServerMessage},
        yjs,
    },
};

/// A document event for the members of a room.
#[derive(Debug, Clone, Copy)]
pub enum DocEvent<'a> {
    /// A Yjs update, applied and relayed (`sync_update`, y-websocket update).
    Update { update: &'a [u8], user_id: &'a str },
    /// An awareness update (`awareness`, y-websocket awareness).
    Awareness { update: &'a [u8], user_id: &'a str },
    /// Ask members for what the server lacks, after a reload (`sync_step1`).
    SyncStep1 { state_vector: &'a [u8] },
}

impl RoomState {
    /// Send `event` to every member except `except`, in each member's format.
    pub fn fan_out(&self, document_id: &DocumentId, event: DocEvent<'_>, except: Option<Uuid>) {
        let wants = |kind: MemberKind| {
            self.members()
                .iter()
                .any(|m| m.kind == kind && Some(m.presence.connection_id) != except)
        };
        if wants(MemberKind::Json) {
            let text = match event {
                DocEvent::Update { update, user_id } => ServerMessage::SyncUpdate {
                    document_id,
                    update: Base64(update),
                    user_id,
                },
                DocEvent::Awareness { update, user_id } => ServerMessage::Awareness {
                    document_id,
                    update: Base64(update),
                    user_id: Some(user_id),
                },
                DocEvent::SyncStep1 { state_vector } => ServerMessage::SyncStep1 {
                    document_id,
                    state_vector: Base64(state_vector),
                },
            }
            .encode();
            self.broadcast(&text, except);
        }
        if wants(MemberKind::Yjs) {
            let frame: Arc<[u8]> = match event {
                DocEvent::Update { update, .. } => yjs::update(update),
                DocEvent::Awareness { update, .. } => yjs::awareness(update),
                DocEvent::SyncStep1 { state_vector } => yjs::sync_step1(state_vector),
            }
            .into();
            self.broadcast_binary(&frame, except);
        }
    }
}
