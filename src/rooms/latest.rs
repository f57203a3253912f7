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

use super::outbox::Outgoing;
use crate::model::ids::DocumentId;

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
pub struct Slot {
    key: LatestKey,
    message: Mutex<Option<Outgoing>>,
}

/// One connection's replaceable queued messages, by key.
#[derive(Debug, Default)]
pub struct Pending(Mutex<HashMap<LatestKey, Arc<Slot>>>);

impl Pending {
    /// Replace the waiting message of `key` with `message`: the replaced
    /// message's byte length, or `message` back if none of that key waits.
    /// Otherwise `enqueue` is called (with the map locked, so the writer
    /// cannot take the slot before it is known) to queue a new slot.
    pub fn replace_or_enqueue(
        &self,
        key: &LatestKey,
        message: Outgoing,
        enqueue: impl FnOnce(Outgoing) -> bool,
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
        if enqueue(Outgoing::Latest(slot)) {
            Replaced::Queued
        } else {
            slots.remove(key);
            Replaced::NotQueued
        }
    }

    /// The writer's turn for `slot`: its latest message. From now on a
    /// message of its key is queued anew.
    pub fn take(&self, slot: &Arc<Slot>) -> Option<Outgoing> {
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

#[cfg(test)]
mod tests {
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::rooms::outbox::{Outbox, QueuedBytes};

    fn key(sender: u128, stream: Stream) -> LatestKey {
        LatestKey {
            sender: Uuid::from_u128(sender),
            document: DocumentId::parse("d").unwrap(),
            stream,
        }
    }

    /// What a writer would write, in order.
    fn drain(rx: &mut tokio::sync::mpsc::Receiver<Outgoing>, pending: &Pending) -> Vec<String> {
        let mut written = Vec::new();
        while let Ok(message) = rx.try_recv() {
            let message = match message {
                Outgoing::Latest(slot) => match pending.take(&slot) {
                    Some(message) => message,
                    None => continue,
                },
                other => other,
            };
            if let Outgoing::Text(text) = message {
                written.push(text.to_string());
            }
        }
        written
    }

    #[test]
    fn a_queued_cursor_is_replaced_by_the_same_members_newer_one() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let bytes = Arc::new(QueuedBytes::new(1 << 20));
        let outbox = Outbox::new(tx, CancellationToken::new(), bytes.clone());
        // An empty queue is written at once: nothing to coalesce with.
        assert!(outbox.push_latest(&key(1, Stream::Cursor), Outgoing::Text("a0".into())));
        for n in 1..1000 {
            assert!(outbox.push_latest(&key(1, Stream::Cursor), Outgoing::Text(format!("a{n}").into())));
            assert!(outbox.push_latest(&key(2, Stream::Cursor), Outgoing::Text(format!("b{n}").into())));
        }
        assert!(outbox.push_latest(&key(1, Stream::Selection), Outgoing::Text("s1".into())));
        assert!(outbox.text("update".into()), "other messages queue as ever");
        assert_eq!(outbox.depth(), 5, "2,000 moves took 4 slots of 8");
        assert_eq!(
            bytes.queued(),
            "a0a999b999s1update".len(),
            "replaced bytes are released"
        );
        let pending = outbox.latest();
        assert_eq!(drain(&mut rx, &pending), ["a0", "a999", "b999", "s1", "update"]);
        // Taken slots are forgotten: the next move queues anew.
        assert!(outbox.text("x".into()));
        assert!(outbox.push_latest(&key(1, Stream::Cursor), Outgoing::Text("a1000".into())));
        assert_eq!(drain(&mut rx, &pending), ["x", "a1000"]);
    }

    #[test]
    fn a_full_queue_still_marks_the_reader_too_slow() {
        let (tx, _rx) = tokio::sync::mpsc::channel(2);
        let overflowed = CancellationToken::new();
        let outbox = Outbox::new(tx, overflowed.clone(), Arc::new(QueuedBytes::new(1 << 20)));
        assert!(outbox.text("one".into()));
        assert!(outbox.text("two".into()));
        assert!(!outbox.push_latest(&key(1, Stream::Cursor), Outgoing::Text("c".into())));
        assert!(overflowed.is_cancelled());
    }
}
