//! A `/ws` connection's app messages: `broadcast` to a document it joined
//! (viewers too: typing in a comment box is not an edit) and `send_to_user`
//! to a user it shares a joined document with, never to a stranger.

use crate::{
    model::ids::{DocumentId, MessageId},
    protocol::codes::{ErrorCode, ProtocolError},
    protocol::json::AppData,
    rooms::app_messages::{self, Sender},
};

use super::JsonHandler;

impl JsonHandler {
    pub(super) fn broadcast(
        &mut self,
        document_id: &DocumentId,
        event: &str,
        data: &AppData,
        id: Option<&MessageId>,
    ) -> Result<(), ProtocolError> {
        let room = self.joined_room(document_id)?;
        let from = Sender {
            user_id: &self.record.user_id,
            connection_id: Some(self.record.connection_id),
        };
        app_messages::broadcast(&self.state.hub, &room, event, data, from);
        self.ack(id);
        Ok(())
    }

    pub(super) fn send_to_user(
        &mut self,
        user_id: &str,
        event: &str,
        data: &AppData,
        id: Option<&MessageId>,
    ) -> Result<(), ProtocolError> {
        let Some(shared) = app_messages::shared_room(self.joined.values(), user_id).cloned() else {
            return Err(ProtocolError::new(
                ErrorCode::Forbidden,
                "send_to_user needs a document you and that user have both joined",
            ));
        };
        let from = Sender {
            user_id: &self.record.user_id,
            connection_id: Some(self.record.connection_id),
        };
        app_messages::direct(&self.state.hub, &shared, user_id, event, data, from);
        self.ack(id);
        Ok(())
    }
}
