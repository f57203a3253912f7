//! A `/ws` connection's credential after the upgrade: `refresh_token`
//! (same user; the new token's expiry, documents and role apply at once) and
//! leaving documents the connection may no longer open.

use crate::{
    model::ids::{DocumentId, MessageId},
    model::presence::LeaveReason,
    protocol::codes::{ErrorCode, ProtocolError},
    protocol::json::ServerMessage,
};

use super::JsonHandler;

impl JsonHandler {
    /// Verify a fresh token for this connection's user and apply it: its
    /// expiry, role and documents (those it no longer allows are left).
    pub(super) async fn refresh_token(
        &mut self,
        token: &str,
        id: Option<&MessageId>,
    ) -> Result<(), ProtocolError> {
        let identity = self
            .state
            .verifier
            .verify(token)
            .await
            .map_err(|error| ProtocolError::new(ErrorCode::Unauthorized, error.to_string()))?;
        if identity.user_id != self.identity.user_id {
            return Err(ProtocolError::new(
                ErrorCode::Forbidden,
                "the new token names another user; the connection keeps its current token",
            ));
        }
        metrics::counter!("tandem_token_refreshes_total").increment(1);
        self.expiry.renew(identity.expires_at);
        // Revocations from now on deny the new token, not the old one.
        *self.credential.lock().unwrap_or_else(|e| e.into_inner()) = identity.credential();
        self.reply(
            ServerMessage::TokenRefreshed {
                id,
                expires_at: identity.expires_at,
            }
            .encode(),
        );
        self.identity = identity;
        let revoked: Vec<DocumentId> = self
            .joined
            .keys()
            .filter(|document_id| !self.identity.may_access(document_id))
            .cloned()
            .collect();
        for document_id in revoked {
            self.revoke_document(&document_id);
        }
        Ok(())
    }

    /// Leave `document_id` because this connection may no longer open it.
    pub(super) fn revoke_document(&mut self, document_id: &DocumentId) {
        let Some(room) = self.joined.remove(document_id) else {
            return;
        };
        self.state
            .hub
            .leave(&room, self.record.connection_id, LeaveReason::Revoked);
        self.reply(ServerMessage::DocumentRevoked { document_id }.encode());
        if self.record.current_document_id.as_ref() == Some(document_id) {
            self.record.current_document_id = self.joined.keys().next().cloned();
            self.touch(false);
        }
    }
}
