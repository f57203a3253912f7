//! Awareness (y-protocols): the latest ephemeral state per Yjs client in a room.
//!
//! Parsed here rather than with yrs's `AwarenessUpdate`, whose decoder
//! asserts on client ids above 2^53: a client controls these bytes. Each
//! client id belongs to the connection that last used it in the room, and
//! only connections of the same user may take it over (a client that
//! reconnects before the server noticed its old socket die): no user can
//! overwrite or erase another's cursor. When a connection leaves, the states
//! it holds are removed for everyone at once.

use std::{collections::HashMap, sync::Arc};

use uuid::Uuid;
use yrs::encoding::{
    read::{Cursor, Read},
    write::Write,
};

/// Largest client id Yjs produces (53 bits, safe in JavaScript).
const MAX_CLIENT_ID: u64 = (1 << 53) - 1;
/// Awareness client ids one connection may hold in a room.
pub const MAX_CLIENTS_PER_CONNECTION: usize = 8;

/// Why an awareness update was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AwarenessError {
    #[error("not a valid awareness update: {0}")]
    Malformed(&'static str),
    #[error("awareness client id {0} belongs to another user")]
    NotOwner(u64),
    #[error("a connection may hold at most {MAX_CLIENTS_PER_CONNECTION} awareness client ids")]
    TooManyClients,
}

/// One entry of an awareness update: `json` is `"null"` for a removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwarenessEntry {
    pub client_id: u64,
    pub clock: u32,
    pub json: Arc<str>,
}

impl AwarenessEntry {
    pub fn is_removal(&self) -> bool {
        &*self.json == "null"
    }
}

/// Decode a y-protocols awareness update.
pub fn decode(bytes: &[u8]) -> Result<Vec<AwarenessEntry>, AwarenessError> {
    let mut cursor = Cursor::new(bytes);
    let count: u64 = cursor
        .read_var()
        .map_err(|_| AwarenessError::Malformed("bad entry count"))?;
    // Each entry takes at least three bytes: refuse counts the input cannot hold.
    if count > (bytes.len() as u64) / 3 {
        return Err(AwarenessError::Malformed("entry count exceeds the payload"));
    }
    let mut entries = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let client_id: u64 = cursor
            .read_var()
            .map_err(|_| AwarenessError::Malformed("bad client id"))?;
        if client_id > MAX_CLIENT_ID {
            return Err(AwarenessError::Malformed("client id above 2^53"));
        }
        // Read wide: yrs's u32 reader wraps larger varints silently, which
        // would let a huge clock pass as a small one.
        let clock: u64 = cursor
            .read_var()
            .map_err(|_| AwarenessError::Malformed("bad clock"))?;
        let clock = u32::try_from(clock).map_err(|_| AwarenessError::Malformed("clock out of range"))?;
        let json = cursor
            .read_string()
            .map_err(|_| AwarenessError::Malformed("bad state string"))?;
        if serde_json::from_str::<serde::de::IgnoredAny>(json).is_err() {
            return Err(AwarenessError::Malformed("state is not JSON"));
        }
        entries.push(AwarenessEntry {
            client_id,
            clock,
            json: json.into(),
        });
    }
    if cursor.has_content() {
        return Err(AwarenessError::Malformed("trailing bytes"));
    }
    Ok(entries)
}

/// Encode entries as a y-protocols awareness update.
pub fn encode(entries: &[AwarenessEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    out.write_var(entries.len() as u64);
    for entry in entries {
        out.write_var(entry.client_id);
        out.write_var(entry.clock);
        out.write_string(&entry.json);
    }
    out
}

#[derive(Debug, Clone)]
struct State {
    clock: u32,
    json: Arc<str>,
    owner: Uuid,
}

/// Who holds a client id: a connection, and its user (who may move the id
/// to another of their connections).
#[derive(Debug, Clone)]
struct Holder {
    clock: u32,
    connection: Uuid,
    user: Arc<str>,
}

/// The latest awareness state of every client in one room.
#[derive(Debug, Default)]
pub struct AwarenessStates {
    states: HashMap<u64, State>,
    /// Highest clock seen per client id and who holds it, kept after removal
    /// so a late, stale update cannot resurrect a removed state.
    clocks: HashMap<u64, Holder>,
}

impl AwarenessStates {
    /// Apply an update from the connection `owner` of `user`. All or nothing.
    pub fn apply(
        &mut self,
        owner: Uuid,
        user: &str,
        entries: &[AwarenessEntry],
    ) -> Result<(), AwarenessError> {
        for entry in entries {
            if let Some(holder) = self.clocks.get(&entry.client_id)
                && *holder.user != *user
            {
                return Err(AwarenessError::NotOwner(entry.client_id));
            }
        }
        let owned = self
            .clocks
            .values()
            .filter(|holder| holder.connection == owner)
            .count();
        // Client ids, not entries: one id may appear more than once. Ids taken
        // over from the user's other connections count as new here.
        let new: std::collections::HashSet<u64> = entries
            .iter()
            .map(|e| e.client_id)
            .filter(|id| {
                self.clocks
                    .get(id)
                    .is_none_or(|holder| holder.connection != owner)
            })
            .collect();
        if owned + new.len() > MAX_CLIENTS_PER_CONNECTION {
            return Err(AwarenessError::TooManyClients);
        }
        let user: Arc<str> = user.into();
        for entry in entries {
            let known_clock = self.clocks.get(&entry.client_id).map_or(0, |holder| holder.clock);
            let current = self.states.contains_key(&entry.client_id);
            // Same rule as y-protocols: newer clock wins; an equal clock may remove.
            if entry.clock < known_clock || (entry.clock == known_clock && current && !entry.is_removal()) {
                continue;
            }
            self.clocks.insert(
                entry.client_id,
                Holder {
                    clock: entry.clock,
                    connection: owner,
                    user: user.clone(),
                },
            );
            if entry.is_removal() {
                self.states.remove(&entry.client_id);
            } else {
                self.states.insert(
                    entry.client_id,
                    State {
                        clock: entry.clock,
                        json: entry.json.clone(),
                        owner,
                    },
                );
            }
        }
        Ok(())
    }

    /// Every current state, as one update for a newcomer.
    pub fn snapshot(&self) -> Option<Vec<u8>> {
        if self.states.is_empty() {
            return None;
        }
        let entries: Vec<AwarenessEntry> = self
            .states
            .iter()
            .map(|(&client_id, state)| AwarenessEntry {
                client_id,
                clock: state.clock,
                json: state.json.clone(),
            })
            .collect();
        Some(encode(&entries))
    }

    /// Remove every state of `owner`; returns the removal update to broadcast.
    pub fn remove_owner(&mut self, owner: Uuid) -> Option<Vec<u8>> {
        let ids: Vec<u64> = self
            .clocks
            .iter()
            .filter(|(_, holder)| holder.connection == owner)
            .map(|(&id, _)| id)
            .collect();
        let mut removals = Vec::new();
        for id in ids {
            let clock = self.clocks.remove(&id).map_or(0, |holder| holder.clock);
            if self.states.remove(&id).is_some() {
                removals.push(AwarenessEntry {
                    client_id: id,
                    clock: clock.wrapping_add(1),
                    json: "null".into(),
                });
            }
        }
        (!removals.is_empty()).then(|| encode(&removals))
    }

    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// Current states with their owners (for mirroring into presence).
    pub fn states_of(&self, owner: Uuid) -> impl Iterator<Item = (u64, &Arc<str>)> {
        self.states
            .iter()
            .filter(move |(_, s)| s.owner == owner)
            .map(|(&id, s)| (id, &s.json))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(client_id: u64, clock: u32, json: &str) -> AwarenessEntry {
        AwarenessEntry {
            client_id,
            clock,
            json: json.into(),
        }
    }

    #[test]
    fn one_new_client_id_repeated_counts_once_against_the_limit() {
        // fuzz/regressions/awareness-repeated-id-counted-per-entry: the
        // per-connection limit counted entries, not client ids, so an
        // update naming one new id nine times was refused.
        let repeated: Vec<_> = (1..=MAX_CLIENTS_PER_CONNECTION as u32 + 1)
            .map(|clock| entry(5, clock, "{}"))
            .collect();
        let mut states = AwarenessStates::default();
        assert_eq!(states.apply(Uuid::from_u128(1), "u1", &repeated), Ok(()));
        let many: Vec<_> = (0..=MAX_CLIENTS_PER_CONNECTION as u64)
            .map(|id| entry(100 + id, 1, "{}"))
            .collect();
        assert_eq!(
            states.apply(Uuid::from_u128(2), "u2", &many),
            Err(AwarenessError::TooManyClients)
        );
    }

    #[test]
    fn encode_and_decode_round_trip() {
        let entries = vec![entry(1, 3, r#"{"user":{"name":"a"}}"#), entry(2, 1, "null")];
        assert_eq!(decode(&encode(&entries)).unwrap(), entries);
    }

    #[test]
    fn hostile_bytes_are_refused_without_panicking() {
        assert!(decode(&[]).is_err());
        assert!(decode(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]).is_err());
        let too_big = encode(&[entry(1 << 60, 1, "{}")]);
        assert!(decode(&too_big).is_err());
        let not_json = encode(&[entry(1, 1, "{oops")]);
        assert!(decode(&not_json).is_err());
        let mut trailing = encode(&[entry(1, 1, "{}")]);
        trailing.push(0);
        assert!(decode(&trailing).is_err());
        for seed in 0..2000u32 {
            let bytes: Vec<u8> = (0..(seed % 40))
                .map(|i| (seed.wrapping_mul(2654435761).rotate_left(i) & 0xff) as u8)
                .collect();
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn states_are_owned_and_removed_with_their_connection() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let mut states = AwarenessStates::default();
        states
            .apply(a, "alice", &[entry(10, 1, r#"{"cursor":1}"#)])
            .unwrap();
        assert_eq!(
            states.apply(b, "bob", &[entry(10, 5, "null")]),
            Err(AwarenessError::NotOwner(10))
        );
        states.apply(b, "bob", &[entry(20, 1, "{}")]).unwrap();
        assert_eq!(states.len(), 2);
        let removal = decode(&states.remove_owner(a).unwrap()).unwrap();
        assert_eq!(removal, vec![entry(10, 2, "null")]);
        assert_eq!(states.len(), 1);
        assert_eq!(
            decode(&states.snapshot().unwrap()).unwrap(),
            vec![entry(20, 1, "{}")]
        );
    }

    #[test]
    fn stale_clocks_are_ignored_and_clients_per_connection_are_bounded() {
        let a = Uuid::now_v7();
        let mut states = AwarenessStates::default();
        states.apply(a, "alice", &[entry(1, 5, r#"{"v":5}"#)]).unwrap();
        states.apply(a, "alice", &[entry(1, 4, r#"{"v":4}"#)]).unwrap();
        assert_eq!(
            decode(&states.snapshot().unwrap()).unwrap()[0].json.as_ref(),
            r#"{"v":5}"#
        );
        let many: Vec<_> = (100..100 + MAX_CLIENTS_PER_CONNECTION as u64)
            .map(|id| entry(id, 1, "{}"))
            .collect();
        assert_eq!(
            states.apply(a, "alice", &many),
            Err(AwarenessError::TooManyClients)
        );
    }

    #[test]
    fn the_same_user_on_another_connection_takes_a_client_id_over() {
        let (old, new) = (Uuid::now_v7(), Uuid::now_v7());
        let mut states = AwarenessStates::default();
        states.apply(old, "alice", &[entry(7, 1, r#"{"v":1}"#)]).unwrap();
        states.apply(new, "alice", &[entry(7, 2, r#"{"v":2}"#)]).unwrap();
        assert_eq!(states.states_of(new).count(), 1);
        assert_eq!(states.states_of(old).count(), 0);
        assert_eq!(
            states.remove_owner(old),
            None,
            "the old connection holds nothing now"
        );
        assert_eq!(
            decode(&states.remove_owner(new).unwrap()).unwrap(),
            vec![entry(7, 3, "null")]
        );
    }
}
