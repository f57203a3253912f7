//! Edits the server makes itself for a caller that does not run Yjs (JSON
//! ops, version restores): built on a scratch copy of the document as a Yjs
//! client of the server's own, then applied like any client's update, so
//! validation, relay, durability and cross-instance delivery are the ones
//! every update goes through.
//!
//! Each user editing through the server gets one client id per room,
//! minted on first use and never handed to any client. Its clock must not
//! fork, so a room's server edits are built one at a time, each from a copy
//! that holds the previous one (`Room::server_edits`, an async mutex: the
//! build runs on the blocking pool while it is held).

use std::sync::Arc;

use yrs::{Doc, ReadTxn, Transact};

use super::{DocError, Documents, Durable, Origin};
use crate::{
    crdt::{ops, sync::Applied},
    rooms::room::Room,
};

/// Why a server edit failed.
#[derive(Debug, thiserror::Error)]
pub enum EditError<E> {
    /// The caller's build refused (a bad op, say): nothing was applied.
    #[error(transparent)]
    Build(E),
    #[error(transparent)]
    Document(#[from] DocError),
}

/// Client ids are minted below 2^32, as yjs does.
fn mint() -> u64 {
    let mut bytes = [0u8; 4];
    // The OS's random source failing is not recoverable; fall back to the clock.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.subsec_nanos());
        bytes = nanos.to_le_bytes();
    }
    u64::from(u32::from_le_bytes(bytes)).max(1)
}

impl Documents {
    /// Build an update with `build` on a copy of the room's document, as the
    /// server's client for `origin.user_id`, and apply it. `build` returns
    /// the update (empty when it changed nothing).
    pub async fn edit<E: Send + 'static>(
        &self,
        room: &Arc<Room>,
        origin: &Origin,
        build: impl FnOnce(&Doc) -> Result<Vec<u8>, E> + Send + 'static,
        durable: Durable,
    ) -> Result<Applied, EditError<E>> {
        let mut minted = room.server_edits.lock().await;
        let (state, _) = self.whole_state(room)?;
        let client = match minted.get(&origin.user_id) {
            Some(client) => *client,
            None => {
                let guard = room.state();
                let doc = guard.doc.as_ref().ok_or_else(super::not_loaded)?;
                let seen = doc.transact().state_vector();
                std::iter::repeat_with(mint)
                    .find(|id| {
                        !seen.contains_client(&yrs::ClientID::new(*id)) && guard.author_of(*id).is_none()
                    })
                    .unwrap_or_else(mint)
            }
        };
        let built = tokio::task::spawn_blocking(move || {
            let doc = ops::scratch(&state, client).ok_or_else(|| {
                DocError::Unavailable(anyhow::anyhow!("the document's state did not decode into a copy"))
            })?;
            Ok::<_, DocError>(build(&doc))
        })
        .await
        .map_err(|e| DocError::Unavailable(e.into()))??;
        let update = built.map_err(EditError::Build)?;
        let applied = self.apply_update(room, origin, update, durable)?;
        minted.insert(origin.user_id.clone(), client);
        Ok(applied)
    }
}
