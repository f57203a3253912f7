//! Document operations on rooms: load on first use, apply updates, answer
//! sync step 1, relay awareness. Shared by the JSON socket, REST and the
//! y-websocket endpoint, so every path validates and persists alike.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use uuid::Uuid;

use tokio::sync::oneshot;

mod edits;
pub use edits::EditError;

use crate::{
    crdt::{
        awareness::{self, AwarenessError},
        sync::{self, Applied, Relay, SyncError},
    },
    model::{
        ids::MessageId,
        log::{DocumentLog, LogWrite, WriteEvent},
    },
    protocol::{
        codes::{ErrorCode, ProtocolError},
        json::{ServerMessage, encode_error},
    },
    rooms::{events::Publish, fanout::DocEvent, outbox::Outbox, room::Room},
};

/// How long a reload waits for in-flight writes to commit first.
const RELOAD_SETTLE: Duration = Duration::from_secs(5);

/// Why a document operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DocError {
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error(transparent)]
    Awareness(#[from] AwarenessError),
    #[error("the document could not be loaded; try again")]
    Unavailable(#[source] anyhow::Error),
    #[error("the server is busy persisting updates; retry shortly")]
    Busy,
}

impl DocError {
    pub fn to_protocol(&self) -> ProtocolError {
        let code = match self {
            Self::Sync(SyncError::ForeignClient(_)) => ErrorCode::Forbidden,
            Self::Sync(_) => ErrorCode::InvalidUpdate,
            Self::Awareness(AwarenessError::NotOwner(_)) => ErrorCode::Forbidden,
            Self::Awareness(_) => ErrorCode::InvalidUpdate,
            Self::Unavailable(_) => ErrorCode::DocumentUnavailable,
            Self::Busy => ErrorCode::RateLimited,
        };
        ProtocolError::new(code, self.to_string())
    }
}

/// Who sent an update: excluded from its relay, named in it.
#[derive(Debug, Clone)]
pub struct Origin {
    pub connection_id: Option<Uuid>,
    pub user_id: Arc<str>,
}

/// Who is told when an update is durable.
#[derive(Debug)]
pub enum Durable {
    /// Nobody (no `id` on the message).
    Quietly,
    /// A socket client: `{"type":"ack","id":..}`.
    Ack { outbox: Outbox, id: MessageId },
    /// A REST caller awaiting the commit.
    Notify(oneshot::Sender<()>),
}

/// What a sender is told while commits fail.
const NOT_DURABLE_YET: &str =
    "the database is failing: this update is applied but not durable yet; it is acknowledged once stored";

impl Durable {
    /// Hear what the log does with the write: a socket client gets
    /// `document_unavailable` while the database fails and its ack once the
    /// commit succeeds; a REST caller's wait ends with "not yet durable" at
    /// the first failure (its update stays queued and is stored later).
    fn into_notify(self) -> Box<dyn FnMut(WriteEvent) + Send> {
        let mut durable = Some(self);
        Box::new(move |event| match (event, durable.take()) {
            (_, None) => {}
            (WriteEvent::Committed, Some(durable)) => durable.committed(),
            (WriteEvent::NotDurableYet, Some(Durable::Ack { outbox, id })) => {
                let error = ProtocolError::new(ErrorCode::DocumentUnavailable, NOT_DURABLE_YET);
                outbox.text(encode_error(&error, Some(&id)));
                durable = Some(Durable::Ack { outbox, id });
            }
            // Dropping a REST sender ends its wait; gave up: nothing to tell.
            (WriteEvent::NotDurableYet | WriteEvent::GaveUp, Some(_)) => {}
        })
    }

    /// Tell the sender its update is committed.
    fn committed(self) {
        match self {
            Durable::Quietly => {}
            Durable::Ack { outbox, id } => {
                outbox.text(ServerMessage::Ack { id: &id }.encode());
            }
            Durable::Notify(done) => {
                let _ = done.send(());
            }
        }
    }
}

pub struct Documents {
    /// Where documents are loaded from and written to.
    log: Arc<dyn DocumentLog>,
    max_pending_bytes: usize,
    /// Updates and awareness go to other instances too.
    cluster: Arc<dyn Publish>,
    history: History,
}

/// What the log keeps besides updates.
#[derive(Debug, Clone, Copy, Default)]
pub struct History {
    /// The first edit after this much quiet saves the document as it was
    /// first (`--auto-version-after`); `None`: never.
    pub auto_version_after: Option<Duration>,
    /// Each write carries the state vector after it (webhooks report it).
    pub state_vectors: bool,
}

fn not_loaded() -> DocError {
    DocError::Unavailable(anyhow::anyhow!("document not loaded"))
}

impl Documents {
    pub fn new(log: Arc<dyn DocumentLog>, max_pending_bytes: usize, cluster: Arc<dyn Publish>) -> Self {
        Self {
            log,
            max_pending_bytes,
            cluster,
            history: History::default(),
        }
    }

    /// Keep versions and state vectors as `history` says.
    pub fn with_history(mut self, history: History) -> Self {
        self.history = history;
        self
    }

    /// Load the room's document from storage unless it is in memory. Callers
    /// that arrive while it loads wait for the same load; a failed load
    /// leaves no document behind, so an empty one can never overwrite storage.
    pub async fn ensure_loaded(&self, room: &Room) -> Result<(), DocError> {
        if room.state().doc.is_some() {
            return Ok(());
        }
        // Boxed: the load's future (database query, blocking decode) is large,
        // and inlined it would sit in every idle session's state machine.
        Box::pin(self.load(room)).await
    }

    async fn load(&self, room: &Room) -> Result<(), DocError> {
        let _loading = room.load_lock.lock().await;
        if room.state().doc.is_some() {
            return Ok(());
        }
        // After a dropped document, let queued writes land so the reload has them.
        let settle = tokio::time::Instant::now() + RELOAD_SETTLE;
        while room.log.unpersisted.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < settle {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Hear other instances' updates before reading storage: what they
        // commit after the read arrives here (kept while the load runs).
        self.cluster.subscribe(&room.id).await;
        let mut stored = self.log.load(&room.id).await.map_err(DocError::Unavailable)?;
        let (count, bytes) = (stored.updates.len() as u64, stored.update_bytes);
        let authors = std::mem::take(&mut stored.authors);
        let (doc, skipped) =
            tokio::task::spawn_blocking(move || sync::load(stored.snapshot.as_deref(), stored.updates))
                .await
                .map_err(|e| DocError::Unavailable(e.into()))?;
        if skipped > 0 {
            tracing::error!(document_id = %room.id, skipped, "stored updates that do not decode were skipped");
        }
        room.log.stored_updates.store(count, Ordering::Relaxed);
        room.log
            .last_edit_ms
            .fetch_max(stored.last_edit_ms.unwrap_or(0), Ordering::Relaxed);
        room.log.stored_bytes.store(bytes, Ordering::Relaxed);
        let mut state = room.state();
        state.restore_authors(authors);
        let reloaded = !state.is_empty();
        // Updates other instances published while this copy loaded.
        for update in std::mem::take(&mut state.pending_remote_updates) {
            let _ = sync::apply_update(&doc, &update, usize::MAX);
        }
        let state_vector = sync::state_vector(&doc);
        state.doc = Some(doc);
        state.doc_changed();
        if reloaded {
            // Members hold what the dropped copy had: ask them for it.
            state.fan_out(
                &room.id,
                DocEvent::SyncStep1 {
                    state_vector: &state_vector,
                },
                None,
            );
        }
        Ok(())
    }

    /// Apply an update, relay it to the other members, and queue it for
    /// durability; `durable` is told once it is committed.
    pub fn apply_update(
        &self,
        room: &Arc<Room>,
        origin: &Origin,
        update: Vec<u8>,
        durable: Durable,
    ) -> Result<Applied, DocError> {
        // A place in the durable queue first: nothing is applied that cannot be stored.
        let slot = self.log.try_reserve().ok_or(DocError::Busy)?;
        let mut state = room.state();
        let version_before = self.quiet_period_ended(room, &mut state);
        let Some(outcome) = state.apply_update_as(&update, self.max_pending_bytes, &origin.user_id, true)
        else {
            return Err(DocError::Unavailable(anyhow::anyhow!("document not loaded")));
        };
        let (applied, claimed) = match outcome {
            Ok(applied) => applied,
            Err(error @ (SyncError::Panicked | SyncError::PartlyApplied(_))) => {
                // Quarantine: this copy may differ from storage. Drop it; the
                // next use reloads the last committed state and asks members
                // to resync.
                tracing::error!(document_id = %room.id, %error, "an update left the in-memory document inconsistent; dropping it for a reload");
                state.doc = None;
                metrics::counter!("tandem_documents_quarantined_total").increment(1);
                return Err(error.into());
            }
            Err(error) => return Err(error.into()),
        };
        if applied.empty {
            drop(state);
            drop(slot);
            durable.committed();
            return Ok(applied);
        }
        let update: Arc<[u8]> = update.into();
        if let Some(relay) = relay_bytes(&applied.relay, &update) {
            let event = DocEvent::Update {
                update: relay,
                user_id: &origin.user_id,
            };
            state.fan_out(&room.id, event, origin.connection_id);
        }
        room.log.unpersisted.fetch_add(1, Ordering::AcqRel);
        room.log
            .last_edit_ms
            .store(crate::model::log::now_ms(), Ordering::Relaxed);
        let state_vector_after = match (self.history.state_vectors, state.doc.as_ref()) {
            (true, Some(doc)) => Some(sync::state_vector(doc)),
            _ => None,
        };
        self.cluster.publish(
            &room.id,
            crate::rooms::events::update_event(&update, &origin.user_id),
        );
        slot.write(LogWrite {
            document_id: room.id.clone(),
            update,
            authors: claimed
                .into_iter()
                .map(|client| (client, origin.user_id.clone()))
                .collect(),
            counters: room.log.clone(),
            editor: origin.user_id.clone(),
            version_before,
            state_vector_after,
            notify: durable.into_notify(),
        });
        Ok(applied)
    }

    /// The document as it is now, if an edit now ends a quiet period of
    /// `--auto-version-after` (called with the room locked, before the edit).
    fn quiet_period_ended(
        &self,
        room: &Room,
        state: &mut crate::rooms::room::RoomState,
    ) -> Option<crate::model::log::PriorState> {
        let after = self.history.auto_version_after?;
        let last = room.log.last_edit_ms.load(Ordering::Relaxed);
        let quiet = crate::model::log::now_ms().saturating_sub(last);
        // 0: never edited, nothing to keep.
        if last == 0 || quiet < after.as_millis() as i64 {
            return None;
        }
        let state_vector = sync::state_vector(state.doc.as_ref()?);
        Some(crate::model::log::PriorState {
            state: state.full_state()?,
            state_vector,
        })
    }

    /// The document's state vector (sync step 1), if it is loaded.
    pub fn state_vector(&self, room: &Room) -> Option<Vec<u8>> {
        room.state().doc.as_ref().map(sync::state_vector)
    }

    /// What a peer with `state_vector` lacks (sync step 2), raw and in
    /// base64, shared with other peers that ask with the same state vector.
    pub fn diff(&self, room: &Room, state_vector: &[u8]) -> Result<crate::rooms::room::SharedDiff, DocError> {
        let mut state = room.state();
        if state.doc.is_none() {
            return Err(not_loaded());
        }
        Ok(state.diff(state_vector)?)
    }

    /// The whole document (what a peer with an empty state vector lacks),
    /// raw and in base64; encoded once per version and shared by every joiner.
    pub fn whole_state(&self, room: &Room) -> Result<(bytes::Bytes, bytes::Bytes), DocError> {
        let mut state = room.state();
        let raw = state.full_state().ok_or_else(not_loaded)?;
        let base64 = state.full_state_base64().ok_or_else(not_loaded)?;
        Ok((raw, base64))
    }

    /// Validate an awareness update from `owner`, keep it, relay it to the others.
    /// Returns the entries, so a caller can mirror cursor fields into presence.
    pub fn apply_awareness(
        &self,
        room: &Room,
        owner: Uuid,
        user_id: &str,
        update: &[u8],
    ) -> Result<Vec<awareness::AwarenessEntry>, DocError> {
        let entries = awareness::decode(update)?;
        let mut state = room.state();
        state.awareness.apply(owner, user_id, &entries)?;
        state.fan_out(&room.id, DocEvent::Awareness { update, user_id }, Some(owner));
        self.cluster.publish(
            &room.id,
            crate::rooms::events::awareness_event(update, user_id, owner),
        );
        Ok(entries)
    }
}

impl Documents {
    /// Apply an update another instance applied and persisted: relay it to
    /// local members, store nothing (its origin did). While the document is
    /// still loading here, keep it for when the load completes.
    pub fn apply_remote_update(&self, room: &Room, user_id: &str, update: Vec<u8>) {
        let mut state = room.state();
        let user: Arc<str> = user_id.into();
        let Some(outcome) = state.apply_update_as(&update, usize::MAX, &user, false) else {
            state.pending_remote_updates.push(update);
            return;
        };
        match outcome {
            Ok((applied, _)) if !applied.empty => {
                room.log
                    .last_edit_ms
                    .store(crate::model::log::now_ms(), Ordering::Relaxed);
                if let Some(relay) = relay_bytes(&applied.relay, &update) {
                    let event = DocEvent::Update {
                        update: relay,
                        user_id,
                    };
                    state.fan_out(&room.id, event, None);
                }
            }
            Ok(_) => {}
            Err(SyncError::Panicked | SyncError::PartlyApplied(_)) => state.doc = None,
            Err(error) => {
                tracing::warn!(document_id = %room.id, %error, "ignored a bad update from another instance")
            }
        }
    }

    /// Apply an awareness update from another instance's member.
    pub fn apply_remote_awareness(
        &self,
        room: &Room,
        owner: Uuid,
        user_id: &str,
        update: &[u8],
    ) -> Result<(), DocError> {
        let entries = awareness::decode(update)?;
        let mut state = room.state();
        state.awareness.apply(owner, user_id, &entries)?;
        state.fan_out(&room.id, DocEvent::Awareness { update, user_id }, None);
        Ok(())
    }

    /// Bring the in-memory document up to date with storage (after a Redis
    /// outage hid other instances' updates), relaying what was missing.
    pub async fn resync_from_storage(&self, room: &Room) -> Result<(), DocError> {
        let stored = self.log.load(&room.id).await.map_err(DocError::Unavailable)?;
        let (stored_doc, _) =
            tokio::task::spawn_blocking(move || sync::load(stored.snapshot.as_deref(), stored.updates))
                .await
                .map_err(|e| DocError::Unavailable(e.into()))?;
        let mut state = room.state();
        let Some(doc) = state.doc.as_ref() else {
            return Ok(());
        };
        let missing = sync::diff(&stored_doc, &sync::state_vector(doc))?;
        let outcome = sync::apply_update(doc, &missing, usize::MAX);
        state.doc_changed();
        let applied = outcome?;
        if !applied.empty
            && let Some(relay) = relay_bytes(&applied.relay, &missing)
        {
            let event = DocEvent::Update {
                update: relay,
                user_id: "tandem",
            };
            state.fan_out(&room.id, event, None);
        }
        Ok(())
    }
}

/// The bytes to send members for an applied update: the update itself, or
/// what the document integrated when that differs (see [`Relay`]).
fn relay_bytes<'a>(relay: &'a Relay, received: &'a [u8]) -> Option<&'a [u8]> {
    match relay {
        Relay::Incoming => Some(received),
        Relay::Integrated(bytes) => Some(bytes),
        Relay::Nothing => None,
    }
}

#[cfg(test)]
mod tests {
    //! Documents on an in-memory log: no database, no socket.

    use std::{collections::HashMap, sync::Mutex};

    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;
    use yrs::{Doc, Text, Transact};

    use super::*;
    use crate::{
        model::{
            ids::DocumentId,
            log::{BoxFuture, LogSlot, StoredDocument},
        },
        rooms::{
            events::NoCluster,
            member::{Member, MemberKind},
            outbox::{Outgoing, QueuedBytes},
        },
    };

    /// The log in memory: writes wait in `queued` until [`MemoryLog::commit`].
    #[derive(Default)]
    struct MemoryLog {
        stored: Mutex<HashMap<DocumentId, Vec<Vec<u8>>>>,
        queued: Mutex<Vec<LogWrite>>,
        capacity: usize,
    }

    impl MemoryLog {
        fn with_capacity(capacity: usize) -> Arc<Self> {
            Arc::new(Self {
                capacity,
                ..Default::default()
            })
        }

        /// Commit everything queued, as one group commit would.
        fn commit(&self) -> usize {
            let writes: Vec<LogWrite> = std::mem::take(&mut *self.queued.lock().unwrap());
            let count = writes.len();
            for mut write in writes {
                self.stored
                    .lock()
                    .unwrap()
                    .entry(write.document_id.clone())
                    .or_default()
                    .push(write.update.to_vec());
                write.counters.unpersisted.fetch_sub(1, Ordering::AcqRel);
                (write.notify)(WriteEvent::Committed);
            }
            count
        }
    }

    impl DocumentLog for MemoryLog {
        fn load<'a>(&'a self, document_id: &'a DocumentId) -> BoxFuture<'a, anyhow::Result<StoredDocument>> {
            let updates = self
                .stored
                .lock()
                .unwrap()
                .get(document_id)
                .cloned()
                .unwrap_or_default();
            Box::pin(async move {
                Ok(StoredDocument {
                    update_bytes: updates.iter().map(|u| u.len() as u64).sum(),
                    updates,
                    ..Default::default()
                })
            })
        }

        fn try_reserve(&self) -> Option<LogSlot<'_>> {
            if self.queued.lock().unwrap().len() >= self.capacity {
                return None;
            }
            Some(LogSlot::new(move |write| self.queued.lock().unwrap().push(write)))
        }
    }

    fn member(user: &str, kind: MemberKind) -> (Member, Outbox, mpsc::Receiver<Outgoing>) {
        let (tx, rx) = mpsc::channel(64);
        let outbox = Outbox::new(
            tx,
            CancellationToken::new(),
            Arc::new(QueuedBytes::new(usize::MAX)),
        );
        let presence = crate::model::presence::test_presence(user);
        (Member::new(presence, outbox.clone(), kind), outbox, rx)
    }

    fn drain(rx: &mut mpsc::Receiver<Outgoing>) -> Vec<Outgoing> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    fn text_messages(outgoing: &[Outgoing]) -> Vec<serde_json::Value> {
        outgoing
            .iter()
            .filter_map(|o| match o {
                Outgoing::Text(text) => serde_json::from_str(text).ok(),
                _ => None,
            })
            .collect()
    }

    fn edit(client: u64, text: &str) -> Vec<u8> {
        let doc = Doc::with_client_id(client);
        let root = doc.get_or_insert_text("content");
        let mut txn = doc.transact_mut();
        root.insert(&mut txn, 0, text);
        txn.encode_update_v1()
    }

    async fn room_with(documents: &Documents, members: Vec<Member>) -> Arc<Room> {
        let room = Arc::new(Room::new(DocumentId::parse("doc").unwrap()));
        documents.ensure_loaded(&room).await.unwrap();
        for member in members {
            room.state().join(&room.id, member, None);
        }
        room
    }

    #[tokio::test]
    async fn an_update_reaches_both_member_kinds_at_once_and_is_acked_only_after_its_commit() {
        let log = MemoryLog::with_capacity(16);
        let documents = Documents::new(log.clone(), 1 << 20, Arc::new(NoCluster));
        let (alice, alice_outbox, mut alice_rx) = member("alice", MemberKind::Json);
        let (bob, _, mut bob_rx) = member("bob", MemberKind::Json);
        let (provider, _, mut provider_rx) = member("carol", MemberKind::Yjs);
        let alice_connection = alice.presence.connection_id;
        let room = room_with(&documents, vec![alice, bob, provider]).await;
        drain(&mut alice_rx);
        drain(&mut bob_rx);
        drain(&mut provider_rx);

        let origin = Origin {
            connection_id: Some(alice_connection),
            user_id: "alice".into(),
        };
        let id = MessageId::String("u1".into());
        let durable = Durable::Ack {
            outbox: alice_outbox,
            id,
        };
        documents
            .apply_update(&room, &origin, edit(1, "hello"), durable)
            .unwrap();

        let to_bob = text_messages(&drain(&mut bob_rx));
        assert_eq!(to_bob.len(), 1);
        assert_eq!(
            (to_bob[0]["type"].as_str(), to_bob[0]["user_id"].as_str()),
            (Some("sync_update"), Some("alice"))
        );
        assert!(
            drain(&mut provider_rx)
                .iter()
                .any(|o| matches!(o, Outgoing::Binary(_))),
            "the y-websocket member gets the binary frame"
        );
        assert!(
            drain(&mut alice_rx).is_empty(),
            "no echo, and no ack before the commit"
        );
        assert!(!room.is_settled());

        assert_eq!(log.commit(), 1);
        let acks = text_messages(&drain(&mut alice_rx));
        assert_eq!(
            (acks[0]["type"].as_str(), acks[0]["id"].as_str()),
            (Some("ack"), Some("u1"))
        );
        assert!(room.is_settled());
    }

    #[tokio::test]
    async fn a_document_loads_what_the_log_stored_and_a_full_queue_refuses_without_applying() {
        let log = MemoryLog::with_capacity(1);
        let documents = Documents::new(log.clone(), 1 << 20, Arc::new(NoCluster));
        let room = room_with(&documents, vec![]).await;
        let origin = Origin {
            connection_id: None,
            user_id: "alice".into(),
        };
        documents
            .apply_update(&room, &origin, edit(1, "kept"), Durable::Quietly)
            .unwrap();
        let refused = documents.apply_update(&room, &origin, edit(2, "lost"), Durable::Quietly);
        assert!(matches!(refused, Err(DocError::Busy)), "{refused:?}");
        log.commit();

        let reloaded = room_with(&documents, vec![]).await;
        let text = crate::crdt::sync::text(reloaded.state().doc.as_ref().unwrap(), "content");
        assert_eq!(text.as_deref(), Some("kept"));
    }

    #[tokio::test]
    async fn a_client_id_written_by_one_user_is_refused_for_another_before_anything_is_queued() {
        let log = MemoryLog::with_capacity(16);
        let documents = Documents::new(log.clone(), 1 << 20, Arc::new(NoCluster));
        let room = room_with(&documents, vec![]).await;
        let as_user = |user: &str| Origin {
            connection_id: None,
            user_id: user.into(),
        };
        documents
            .apply_update(&room, &as_user("alice"), edit(7, "a"), Durable::Quietly)
            .unwrap();
        let doc = Doc::with_client_id(7);
        doc.transact_mut()
            .apply_update(yrs::Update::decode_v1(&edit(7, "a")).unwrap())
            .unwrap();
        let forged = {
            let root = doc.get_or_insert_text("content");
            let mut txn = doc.transact_mut();
            root.insert(&mut txn, 1, "b");
            txn.encode_update_v1()
        };
        let refused = documents.apply_update(&room, &as_user("mallory"), forged, Durable::Quietly);
        assert!(
            matches!(refused, Err(DocError::Sync(SyncError::ForeignClient(7)))),
            "{refused:?}"
        );
        assert_eq!(log.commit(), 1, "only alice's update was queued");
    }

    use yrs::updates::decoder::Decode;
}
