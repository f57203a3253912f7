//! The bounded TTL cache the API keys keep verified (and unknown) keys in.

use std::{
    collections::{HashMap, VecDeque},
    time::Duration,
};

use tokio::time::Instant;

use super::KeyHash;

/// A map whose entries live for one fixed TTL, with at most `capacity` of
/// them. All entries share the TTL, so insertion order is expiry order: the
/// queue front is always the next entry to expire and the one to evict when
/// full, and both cost O(1) amortized.
pub(super) struct TtlCache<V> {
    entries: HashMap<KeyHash, Entry<V>>,
    /// `(seq, inserted_at, key)`, oldest first. An entry replaced or removed
    /// leaves a stale triple behind, told apart by its `seq` and skipped.
    pub(super) order: VecDeque<(u64, Instant, KeyHash)>,
    /// Numbers the inserts. Not the timestamp: two inserts can share one.
    next_seq: u64,
    capacity: usize,
    ttl: Duration,
}

struct Entry<V> {
    seq: u64,
    inserted_at: Instant,
    value: V,
}

impl<V> TtlCache<V> {
    pub(super) fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
            capacity: capacity.max(1),
            ttl,
        }
    }

    pub(super) fn get(&self, key: &KeyHash, now: Instant) -> Option<&V> {
        self.entries
            .get(key)
            .filter(|entry| now.duration_since(entry.inserted_at) < self.ttl)
            .map(|entry| &entry.value)
    }

    pub(super) fn insert(&mut self, key: KeyHash, value: V, now: Instant) {
        while self
            .order
            .front()
            .is_some_and(|(_, inserted_at, _)| now.duration_since(*inserted_at) >= self.ttl)
        {
            self.pop_oldest();
        }
        if !self.entries.contains_key(&key) {
            while self.entries.len() >= self.capacity {
                self.pop_oldest();
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.insert(
            key,
            Entry {
                seq,
                inserted_at: now,
                value,
            },
        );
        self.order.push_back((seq, now, key));
        // Stale triples are bounded too, whatever the pattern of replacements.
        while self.order.len() > 2 * self.capacity {
            self.pop_oldest();
        }
    }

    pub(super) fn remove(&mut self, key: &KeyHash) {
        self.entries.remove(key);
    }

    pub(super) fn retain(&mut self, mut keep: impl FnMut(&V) -> bool) {
        self.entries.retain(|_, entry| keep(&entry.value));
    }

    fn pop_oldest(&mut self) {
        if let Some((seq, _, key)) = self.order.pop_front()
            && self.entries.get(&key).is_some_and(|entry| entry.seq == seq)
        {
            self.entries.remove(&key);
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}
