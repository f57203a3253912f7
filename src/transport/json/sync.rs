//! A `/ws` connection's Yjs messages: `sync_step1` (answered with what the
//! client lacks), `sync_update` / `sync_step2` (applied, relayed, acked once
//! durable; refused for viewers) and `awareness`.

use crate::{
    model::ids::{DocumentId, MessageId},
    protocol::codes::{ErrorCode, ProtocolError},
    protocol::json::{Base64, ServerMessage},
    rooms::documents::{Durable, Origin},
    rooms::room::PresenceChange,
};

use super::JsonHandler;

impl JsonHandler {
    pub(super) async fn sync_step1(
        &mut self,
        document_id: &DocumentId,
        state_vector: &[u8],
        id: Option<&MessageId>,
    ) -> Result<(), ProtocolError> {
        let room = self.joined_room(document_id)?;
        let docs = &self.state.docs;
        docs.ensure_loaded(&room).await.map_err(|e| e.to_protocol())?;
        let update = if crate::crdt::sync::is_empty_state_vector(state_vector) {
            // A newcomer: the shared whole-document encoding, not a copy.
            docs.whole_state(&room).map_err(|e| e.to_protocol())?.1
        } else {
            docs.diff(&room, state_vector)
                .map_err(|e| e.to_protocol())?
                .base64
        };
        let frame = ServerMessage::SyncStep2 {
            id,
            document_id,
            update: Base64(&[]),
        }
        .encode();
        self.replies
            .push(crate::transport::ws::text_around(&frame, "update", update));
        Ok(())
    }

    pub(super) async fn sync_update(
        &mut self,
        document_id: &DocumentId,
        update: Vec<u8>,
        id: Option<&MessageId>,
    ) -> Result<(), ProtocolError> {
        let hub = self.state.hub.clone();
        let connection_id = self.record.connection_id;
        let room = self.joined_room(document_id)?;
        if !self.identity.may_write() {
            // A viewer answering sync_step1 sends an empty step 2: nothing to refuse.
            if crate::crdt::sync::decode_update(&update).is_ok_and(|u| u.is_empty()) {
                self.ack(id);
                return Ok(());
            }
            return Err(ProtocolError::new(
                ErrorCode::Forbidden,
                "this token has the viewer role: document updates are refused",
            ));
        }
        let docs = &self.state.docs;
        docs.ensure_loaded(&room).await.map_err(|e| e.to_protocol())?;
        let durable = match id {
            Some(id) => Durable::Ack {
                outbox: self.outbox.clone(),
                id: id.clone(),
            },
            None => Durable::Quietly,
        };
        let origin = Origin {
            connection_id: Some(connection_id),
            user_id: self.record.user_id.clone(),
        };
        let applied = docs
            .apply_update(&room, &origin, update, durable)
            .map_err(|e| e.to_protocol())?;
        if applied.pending
            && let Some(state_vector) = docs.state_vector(&room)
        {
            // Part of it waits for something the server lacks (an
            // earlier update of this client that was refused, say):
            // ask the client for it rather than wait for good.
            self.reply(
                ServerMessage::SyncStep1 {
                    document_id,
                    state_vector: Base64(&state_vector),
                }
                .encode(),
            );
        }
        hub.update_presence(&room, connection_id, PresenceChange::Activity);
        Ok(())
    }

    pub(super) fn awareness(
        &mut self,
        document_id: &DocumentId,
        update: &[u8],
        id: Option<&MessageId>,
    ) -> Result<(), ProtocolError> {
        let connection_id = self.record.connection_id;
        let room = self.joined_room(document_id)?;
        if update.len() > self.state.config.max_message_bytes {
            return Err(ProtocolError::new(
                ErrorCode::TooLarge,
                format!(
                    "awareness updates are limited to {} bytes",
                    self.state.config.max_message_bytes
                ),
            ));
        }
        self.state
            .docs
            .apply_awareness(&room, connection_id, &self.record.user_id, update)
            .map_err(|e| e.to_protocol())?;
        self.ack(id);
        Ok(())
    }
}
