//! The room's Yjs document: applying an update on behalf of a user (the
//! client-id authors that keep users from writing under each other's ids),
//! and the encodings every peer shares until the document changes (the whole
//! document for newcomers, the last sync step 2 for repeated state vectors).

use std::sync::Arc;

use super::room::{RoomState, SharedDiff};

impl RoomState {
    /// Forget what was derived from `doc`; call after anything applied to it or replaced it.
    pub fn doc_changed(&mut self) {
        self.full_state = None;
        self.full_state_base64 = None;
        self.last_diff = None;
    }

    /// Apply `update` to the loaded document on behalf of `user` (`None` if
    /// none is loaded); also returns the client ids it claimed for `user`. With `enforce`, an update adding items under a client
    /// id another user wrote first is refused before anything applies; client
    /// ids new to the document become `user`'s either way (updates relayed
    /// by other instances were checked there).
    pub fn apply_update_as(
        &mut self,
        update: &[u8],
        max_pending_bytes: usize,
        user: &Arc<str>,
        enforce: bool,
    ) -> Option<Result<(crate::crdt::sync::Applied, Vec<u64>), crate::crdt::sync::SyncError>> {
        let doc = self.doc.as_ref()?;
        let authors = &mut self.authors;
        let result = crate::crdt::sync::apply_update_admitting(doc, update, max_pending_bytes, |clients| {
            let foreign = clients
                .iter()
                .find(|client| authors.get(client).is_some_and(|owner| **owner != **user));
            match foreign {
                Some(&client) if enforce => Err(crate::crdt::sync::SyncError::ForeignClient(client)),
                _ => Ok(()),
            }
        });
        let result = result.map(|applied| {
            let claimed = applied
                .new_clients
                .iter()
                .copied()
                .filter(|client| match authors.entry(*client) {
                    std::collections::hash_map::Entry::Occupied(_) => false,
                    std::collections::hash_map::Entry::Vacant(entry) => {
                        entry.insert(user.clone());
                        true
                    }
                })
                .collect();
            (applied, claimed)
        });
        self.doc_changed();
        Some(result)
    }

    /// Restore the client-id claims stored with the document.
    pub fn restore_authors(&mut self, stored: impl IntoIterator<Item = (u64, String)>) {
        for (client, user) in stored {
            self.authors.entry(client).or_insert_with(|| user.into());
        }
    }

    /// The user who first wrote under Yjs client id `client`, if known.
    pub fn author_of(&self, client: u64) -> Option<&Arc<str>> {
        self.authors.get(&client)
    }

    /// What a peer with `state_vector` lacks, raw and in base64, shared with
    /// the previous peer that sent the same state vector.
    pub fn diff(&mut self, state_vector: &[u8]) -> Result<SharedDiff, crate::crdt::sync::SyncError> {
        if let Some(last) = &self.last_diff
            && *last.state_vector == *state_vector
        {
            return Ok(last.clone());
        }
        let doc = self
            .doc
            .as_ref()
            .ok_or_else(|| crate::crdt::sync::SyncError::Rejected("document not loaded".into()))?;
        let raw: bytes::Bytes = crate::crdt::sync::diff(doc, state_vector)?.into();
        use base64::Engine;
        let base64 = base64::engine::general_purpose::STANDARD.encode(&raw).into();
        let diff = SharedDiff {
            state_vector: state_vector.into(),
            raw,
            base64,
        };
        self.last_diff = Some(diff.clone());
        Ok(diff)
    }

    /// The whole document as one v1 update, encoded once per version of it.
    pub fn full_state(&mut self) -> Option<bytes::Bytes> {
        if self.full_state.is_none() {
            let doc = self.doc.as_ref()?;
            let Some(state) = crate::crdt::sync::full_state(doc) else {
                // Quarantine: yrs could not encode this copy. Drop it; the next
                // use reloads the last good state from storage and resyncs members.
                tracing::error!("yrs panicked encoding a document; dropping it for a reload");
                metrics::counter!("tandem_documents_quarantined_total").increment(1);
                self.doc = None;
                return None;
            };
            self.full_state = Some(state.into());
        }
        self.full_state.clone()
    }

    /// [`Self::full_state`] in standard base64, as JSON messages carry it.
    pub fn full_state_base64(&mut self) -> Option<bytes::Bytes> {
        if self.full_state_base64.is_none() {
            use base64::Engine;
            let raw = self.full_state()?;
            let encoded = base64::engine::general_purpose::STANDARD.encode(&raw);
            self.full_state_base64 = Some(encoded.into());
        }
        self.full_state_base64.clone()
    }
}
