//! A y-protocols awareness update, and the per-room state it feeds.
//!
//! Properties:
//! - an accepted update has client ids within 53 bits and JSON states, and
//!   re-encodes to bytes that decode to the same entries;
//! - applying it as one connection then another respects ownership: the
//!   second is refused for any id the first holds, no connection holds more
//!   than the limit, snapshots and removals decode, and after a connection
//!   leaves none of its states remain.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem::crdt::awareness::{self, AwarenessError, AwarenessStates, MAX_CLIENTS_PER_CONNECTION};
use uuid::Uuid;

fuzz_target!(|data: &[u8]| {
    let Ok(entries) = awareness::decode(data) else { return };
    // JSON by its syntax: "5e9999" is JSON (JS reads Infinity) though
    // serde_json::Value cannot hold it.
    for entry in &entries {
        assert!(entry.client_id < 1 << 53, "client id {} past 2^53", entry.client_id);
        assert!(serde_json::from_str::<serde::de::IgnoredAny>(&entry.json).is_ok(), "state is not JSON: {:?}", entry.json);
    }
    let encoded = awareness::encode(&entries);
    assert_eq!(awareness::decode(&encoded).as_ref(), Ok(&entries), "encode/decode round trip");

    let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
    let mut states = AwarenessStates::default();
    let first = states.apply(a, &entries);
    let distinct: std::collections::HashSet<u64> = entries.iter().map(|e| e.client_id).collect();
    match first {
        Ok(()) => assert!(distinct.len() <= MAX_CLIENTS_PER_CONNECTION),
        Err(AwarenessError::TooManyClients) => assert!(distinct.len() > MAX_CLIENTS_PER_CONNECTION),
        Err(other) => panic!("a fresh room refused {other}"),
    }
    assert!(states.states_of(a).count() <= MAX_CLIENTS_PER_CONNECTION);
    if first.is_ok() && !entries.is_empty() {
        assert_eq!(
            states.apply(b, &entries),
            Err(AwarenessError::NotOwner(entries[0].client_id)),
            "another connection took over client ids"
        );
    }
    if let Some(snapshot) = states.snapshot() {
        let decoded = awareness::decode(&snapshot).expect("our own snapshot decodes");
        assert_eq!(decoded.len(), states.len());
        assert!(decoded.iter().all(|e| !e.is_removal()));
    }
    if let Some(removal) = states.remove_owner(a) {
        let decoded = awareness::decode(&removal).expect("our own removal decodes");
        assert!(decoded.iter().all(|e| e.is_removal()));
    }
    assert_eq!(states.states_of(a).count(), 0, "states outlived their connection");
    assert!(states.is_empty());
    // Once a has left, its ids are free again.
    if first.is_ok() {
        assert_eq!(states.apply(b, &entries), Ok(()));
    }
});
