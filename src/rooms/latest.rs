//! Latest wins: a cursor or selection waiting in a slow reader's queue is
//! replaced by the same member's newer one instead of queued behind it, so
//! presence volume alone can never overflow a queue, and a reader that falls
//! behind gets every member's latest position rather than a backlog of old
//! ones. Only messages queued behind others take this path: an empty queue
//! is written at once, with no bookkeeping.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use uuid::Uuid;

use crate::model::ids::DocumentId;

/// A queued message's weight against its connection's byte bound.
pub trait Weighed {
    fn byte_len(&self) -> usize;
}

/// Which presence stream of a member a message belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Cursor,
    Selection,
    /// A JSON member's synthesized awareness state, for `/yjs` members.
    Awareness,
}

/// One member's presence stream in one document.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LatestKey {
    pub sender: Uuid,
    pub document: DocumentId,
    pub stream: Stream,
}

/// A queued message that a newer one of the same key may replace until the
/// writer takes it.
#[derive(Debug)]
pub struct Slot<M> {
    key: LatestKey,
    message: Mutex<Option<M>>,
}

/// One connection's replaceable queued messages (of type `M`), by key.
#[derive(Debug)]
pub struct Pending<M>(Mutex<HashMap<LatestKey, Arc<Slot<M>>>>);

impl<M> Default for Pending<M> {
    fn default() -> Self {
        Self(Mutex::default())
    }
}

impl<M: Weighed> Pending<M> {
    /// Replace the waiting message of `key` with `message`: the replaced
    /// message's byte length, or `message` back if none of that key waits.
    /// Otherwise `enqueue` is called (with the map locked, so the writer
    /// cannot take the slot before it is known) to queue a new slot.
    pub fn replace_or_enqueue(
        &self,
        key: &LatestKey,
        message: M,
        enqueue: impl FnOnce(Arc<Slot<M>>) -> bool,
    ) -> Replaced {
        let mut slots = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = slots.get(key) {
            let mut waiting = slot.message.lock().unwrap_or_else(|e| e.into_inner());
            let old = waiting.replace(message);
            return Replaced::Replaced(old.map_or(0, |old| old.byte_len()));
        }
        let slot = Arc::new(Slot {
            key: key.clone(),
            message: Mutex::new(Some(message)),
        });
        slots.insert(key.clone(), slot.clone());
        if enqueue(slot) {
            Replaced::Queued
        } else {
            slots.remove(key);
            Replaced::NotQueued
        }
    }

    /// The writer's turn for `slot`: its latest message. From now on a
    /// message of its key is queued anew.
    pub fn take(&self, slot: &Arc<Slot<M>>) -> Option<M> {
        let mut slots = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if slots
            .get(&slot.key)
            .is_some_and(|current| Arc::ptr_eq(current, slot))
        {
            slots.remove(&slot.key);
        }
        drop(slots);
        slot.message.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// What [`Pending::replace_or_enqueue`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Replaced {
    /// A waiting message was replaced; it weighed this many bytes.
    Replaced(usize),
    /// A new slot was queued.
    Queued,
    /// The queue refused the new slot (full or closed).
    NotQueued,
}
