//! Yjs document logic on yrs: decode, validate and apply updates, answer
//! sync step 1, load from stored updates. Pure: no sockets, no database.
//!
//! Every client-supplied byte string is hostile. Decoding runs under
//! `catch_unwind` (yrs asserts on some malformed input), applying is
//! refused when it would leave more than a bounded amount of update data
//! waiting for missing dependencies, and no yrs transaction outlives a call.

use std::{
    cell::Cell,
    panic::{AssertUnwindSafe, catch_unwind},
    sync::Once,
};

use yrs::{
    ClientID, Doc, GetString, OffsetKind, Options, ReadTxn, StateVector, Transact, Update,
    updates::{decoder::Decode, encoder::Encode},
};

use crate::crdt::validate::{self, UpdateShape};

/// Why an update or state vector was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    #[error("not a valid Yjs v1 update: {0}")]
    BadUpdate(String),
    #[error("not a valid Yjs state vector: {0}")]
    BadStateVector(String),
    #[error("the update could not be applied: {0}")]
    Rejected(String),
    /// Nothing of the update was applied.
    #[error("too many updates are waiting for missing dependencies; resync with sync_step1")]
    PendingOverflow,
    #[error("the update could not be applied safely; the document was reloaded, resync")]
    Panicked,
    /// yrs refused the update after integrating part of it: the document
    /// differs from storage, the caller drops it and reloads.
    #[error("the update could not be applied: {0}; the document was reloaded, resync")]
    PartlyApplied(String),
    /// The update adds items under a Yjs client id another user writes with.
    #[error("client id {0} belongs to another user of this document; use a client id of your own")]
    ForeignClient(u64),
}

/// What applying an update did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Client ids under which the update added structs the document lacked.
    pub new_clients: Vec<u64>,
    /// The update carried nothing (no blocks, no deletions): nothing to store or relay.
    pub empty: bool,
    /// Some of it waits for updates this server has not seen yet.
    pub pending: bool,
    /// What peers must be sent for this update.
    pub relay: Relay,
}

/// What to send the other peers after an update applied.
///
/// Usually the bytes received: they say exactly what integrated, and
/// relaying them costs nothing. When the document did something else with
/// them (parts wait for missing dependencies, earlier waiting parts
/// integrated now, or an item with crossed origins became GC, see
/// vendor/README.md), peers get what this document integrated instead, so
/// no client ever holds, or resolves in its own way, what the server did
/// not integrate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relay {
    /// Relay the update as received.
    Incoming,
    /// Relay this encoding of what the transaction integrated.
    Integrated(Vec<u8>),
    /// Nothing integrated (it all waits): relay nothing yet.
    Nothing,
}

/// A new document as the server holds it.
///
/// Lengths are counted in UTF-16 code units, as yjs counts them. yjs clients
/// may delete half of a surrogate pair; both yjs and yrs then split the
/// string there and replace each half with U+FFFD. That keeps the UTF-16
/// length but not the UTF-8 one (a 4-byte character becomes two 3-byte
/// ones), so with yrs's default `OffsetKind::Bytes` the parent's
/// `content_len` is decremented by more than was ever added: an overflow
/// panic with overflow checks (`fuzz/regressions/multi_client_reload-delete-*`),
/// a silently wrapped length without them.
pub fn new_doc() -> Doc {
    // The server never edits its live copy: this client id never appears in
    // the document (server-made edits come from a scratch copy, `new_doc_as`).
    Doc::with_options(doc_options())
}

/// A document like [`new_doc`] that edits as Yjs client `client_id`.
pub fn new_doc_as(client_id: u64) -> Doc {
    Doc::with_options(Options {
        client_id: ClientID::new(client_id),
        ..doc_options()
    })
}

fn doc_options() -> Options {
    Options {
        skip_gc: false,
        offset_kind: OffsetKind::Utf16,
        ..Options::default()
    }
}

thread_local! {
    /// Set while this thread runs yrs on untrusted input under `catch_unwind`.
    static CONTAINING: Cell<bool> = const { Cell::new(false) };
}

/// Route panics raised inside [`contained`] to one log line instead of the
/// default hook's backtrace: hostile input can trigger them at will, and they
/// are handled. Every other panic still reaches the previous hook.
fn install_panic_filter() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CONTAINING.with(Cell::get) {
                tracing::warn!(panic = %info, "yrs panicked on client input; contained");
            } else {
                previous(info);
            }
        }));
    });
}

/// Run yrs on untrusted input, turning a panic into `None`.
pub(crate) fn contained<T>(work: impl FnOnce() -> T) -> Option<T> {
    install_panic_filter();
    let was = CONTAINING.with(|flag| flag.replace(true));
    let result = catch_unwind(AssertUnwindSafe(work)).ok();
    CONTAINING.with(|flag| flag.set(was));
    result
}

/// Check a client's v1 update strictly (see [`crate::crdt::validate`]), then decode
/// it with yrs, containing any panic inside the decoder.
pub fn decode_update(bytes: &[u8]) -> Result<Update, SyncError> {
    inspect_and_decode(bytes).map(|(_, update)| update)
}

fn inspect_and_decode(bytes: &[u8]) -> Result<(UpdateShape, Update), SyncError> {
    let shape = validate::inspect_update(bytes).map_err(|error| SyncError::BadUpdate(error.to_string()))?;
    match contained(|| Update::decode_v1(bytes)) {
        Some(Ok(update)) => Ok((shape, update)),
        Some(Err(error)) => Err(SyncError::BadUpdate(error.to_string())),
        None => Err(SyncError::BadUpdate("malformed update".into())),
    }
}

/// Decode a v1 state vector, checked as strictly as updates.
pub fn decode_state_vector(bytes: &[u8]) -> Result<StateVector, SyncError> {
    validate::inspect_state_vector(bytes).map_err(|error| SyncError::BadStateVector(error.to_string()))?;
    match contained(|| StateVector::decode_v1(bytes)) {
        Some(Ok(sv)) => Ok(sv),
        Some(Err(error)) => Err(SyncError::BadStateVector(error.to_string())),
        None => Err(SyncError::BadStateVector("malformed state vector".into())),
    }
}

/// Encoded size of what waits in `doc` for missing dependencies.
fn waiting_bytes(txn: &yrs::TransactionMut<'_>) -> usize {
    let store = txn.store();
    let structs = store.pending_update().map_or(0, |p| p.update.encode_v1().len());
    let deletes = store.pending_ds().map_or(0, |ds| ds.encode_v1().len());
    structs + deletes
}

/// Apply a client's v1 update to `doc`.
///
/// The update is validated first; if part of it would wait for missing
/// dependencies and the document's waiting data would then exceed
/// `max_pending_bytes`, it is refused whole, before anything is applied, so
/// what is applied, stored and relayed never diverge.
///
/// On `Err(SyncError::Panicked)` the document may be inconsistent: the
/// caller must drop it and load it again from storage.
pub fn apply_update(doc: &Doc, bytes: &[u8], max_pending_bytes: usize) -> Result<Applied, SyncError> {
    apply_update_admitting(doc, bytes, max_pending_bytes, |_| Ok(()))
}

/// [`apply_update`], after `admit` accepted the client ids under which the
/// update adds structs the document lacks (checked before anything applies).
pub fn apply_update_admitting(
    doc: &Doc,
    bytes: &[u8],
    max_pending_bytes: usize,
    admit: impl FnOnce(&[u64]) -> Result<(), SyncError>,
) -> Result<Applied, SyncError> {
    let (shape, update) = inspect_and_decode(bytes)?;
    if shape.is_empty() || update.is_empty() {
        return Ok(Applied {
            new_clients: Vec::new(),
            empty: true,
            pending: false,
            relay: Relay::Nothing,
        });
    }
    let state_vector = doc.transact().state_vector();
    let known = |client: u64| u64::from(state_vector.get(&ClientID::new(client)));
    let new_clients = shape.new_clients(known);
    admit(&new_clients)?;
    let (waiting, waits_over_known) = shape.waiting(known);
    if waits_over_known {
        return Err(SyncError::Rejected(
            "a struct overlapping clocks the document has waits for a missing dependency".into(),
        ));
    }
    let outcome = contained(|| {
        let mut txn = doc.transact_mut();
        if waiting > 0 && waiting_bytes(&txn).saturating_add(waiting) > max_pending_bytes {
            return Err(SyncError::PendingOverflow);
        }
        // The caller holds the room, so nothing changed since it was read.
        let before = state_vector;
        let waited_before = has_pending(txn.store());
        let overlapped_before = waiting_overlaps_state(&txn);
        let crossed_before = txn.store().crossed_origin_items();
        if let Err(error) = txn.apply_update(update) {
            // yrs integrates block by block and keeps what it did before the
            // block it stopped at: if anything landed, the copy now differs
            // from storage and must be reloaded.
            if txn.state_vector() != before {
                return Err(SyncError::PartlyApplied(error.to_string()));
            }
            return Err(SyncError::Rejected(error.to_string()));
        }
        if !overlapped_before && waiting_overlaps_state(&txn) {
            // It filled clocks a waiting struct claims (two contents for one
            // id; no real client writes that): refuse, and have the caller
            // reload the last committed state.
            return Err(SyncError::PartlyApplied(
                "the update writes under ids that a waiting update already claims".into(),
            ));
        }
        let store = txn.store();
        let pending = has_pending(store);
        let relay = if txn.insert_set().is_empty() && txn.delete_set().is_empty() {
            Relay::Nothing
        } else if pending || waited_before || store.crossed_origin_items() != crossed_before {
            Relay::Integrated(txn.encode_update_v1())
        } else {
            Relay::Incoming
        };
        Ok(Applied {
            new_clients,
            empty: false,
            pending,
            relay,
        })
    });
    outcome.unwrap_or(Err(SyncError::Panicked))
}

/// Whether a waiting struct starts below the clock its client has
/// integrated: the ids it claims now hold something else.
fn waiting_overlaps_state(txn: &yrs::TransactionMut) -> bool {
    let Some(pending) = txn.store().pending_update() else {
        return false;
    };
    let state = txn.state_vector();
    pending
        .update
        .state_vector_lower()
        .iter()
        .any(|(client, clock)| *clock < state.get(client))
}

fn has_pending(store: &yrs::Store) -> bool {
    store.pending_update().is_some() || store.pending_ds().is_some()
}

/// The document's state vector, v1 encoded (sync step 1).
pub fn state_vector(doc: &Doc) -> Vec<u8> {
    doc.transact().state_vector().encode_v1()
}

/// Everything in `doc` that a peer with `remote_state_vector` lacks (sync step 2).
pub fn diff(doc: &Doc, remote_state_vector: &[u8]) -> Result<Vec<u8>, SyncError> {
    let sv = decode_state_vector(remote_state_vector)?;
    contained(|| doc.transact().encode_state_as_update_v1(&sv))
        .ok_or_else(|| SyncError::BadStateVector("malformed state vector".into()))
}

/// Whether `state_vector` is the encoding of an empty one (a peer that has nothing).
pub fn is_empty_state_vector(state_vector: &[u8]) -> bool {
    decode_state_vector(state_vector).is_ok_and(|sv| sv.is_empty())
}

/// The whole document as one v1 update, or `None` if yrs panicked encoding
/// it (the document is then unusable: the caller reloads it from storage).
pub fn full_state(doc: &Doc) -> Option<Vec<u8>> {
    contained(|| doc.transact().encode_state_as_update_v1(&StateVector::default()))
}

/// The whole document as one v1 update for a snapshot: like [`full_state`],
/// plus whatever still waits for missing dependencies (those updates were
/// acknowledged; folding the log must not drop them).
pub fn snapshot(doc: &Doc) -> Option<Vec<u8>> {
    contained(|| {
        let txn = doc.transact();
        let state = txn.encode_state_as_update_v1(&StateVector::default());
        let store = txn.store();
        let mut parts = vec![state];
        if let Some(pending) = store.pending_update() {
            parts.push(pending.update.encode_v1());
        }
        if let Some(deletes) = store.pending_ds() {
            // An update with no structs (a zero client count) and this delete set.
            let mut only_deletes = vec![0];
            only_deletes.extend(deletes.encode_v1());
            parts.push(only_deletes);
        }
        if parts.len() == 1 {
            return parts.pop();
        }
        yrs::merge_updates_v1(parts.iter().map(Vec::as_slice)).ok()
    })
    .flatten()
}

/// The content of the root `Y.Text` named `name`, if the document has one.
pub fn text(doc: &Doc, name: &str) -> Option<String> {
    contained(|| {
        let txn = doc.transact();
        let text = txn.get_text(name)?;
        Some(text.get_string(&txn))
    })
    .flatten()
}

/// Rebuild a document from its snapshot and stored updates (in seq order).
/// Rows that do not decode are skipped and reported: they were validated
/// before they were stored, so this only happens if storage was tampered with.
pub fn load(snapshot: Option<&[u8]>, updates: impl IntoIterator<Item = impl AsRef<[u8]>>) -> (Doc, usize) {
    let doc = new_doc();
    let mut skipped = 0;
    for bytes in snapshot
        .into_iter()
        .map(<[u8]>::to_vec)
        .chain(updates.into_iter().map(|u| u.as_ref().to_vec()))
    {
        if apply_update(&doc, &bytes, usize::MAX).is_err() {
            skipped += 1;
        }
    }
    (doc, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::Text;

    fn edit(client: u64, text: &str) -> (Doc, Vec<u8>) {
        let doc = Doc::with_client_id(client);
        let t = doc.get_or_insert_text("content");
        t.insert(&mut doc.transact_mut(), 0, text);
        let update = full_state(&doc).unwrap();
        (doc, update)
    }

    #[test]
    fn concurrent_inserts_converge() {
        let server = new_doc();
        let (_a, from_a) = edit(1, "hello");
        let (_b, from_b) = edit(2, "world");
        apply_update(&server, &from_a, 1024).unwrap();
        apply_update(&server, &from_b, 1024).unwrap();
        let other = new_doc();
        apply_update(&other, &from_b, 1024).unwrap();
        apply_update(&other, &from_a, 1024).unwrap();
        assert_eq!(text(&server, "content"), text(&other, "content"));
        assert_eq!(text(&server, "content").unwrap().len(), 10);
    }

    #[test]
    fn diff_carries_exactly_what_the_peer_lacks() {
        let server = new_doc();
        let (client, update) = edit(1, "abc");
        apply_update(&server, &update, 1024).unwrap();
        let nothing = diff(&server, &state_vector(&client)).unwrap();
        assert!(decode_update(&nothing).unwrap().is_empty());
        let everything = diff(&server, &state_vector(&new_doc())).unwrap();
        let fresh = new_doc();
        apply_update(&fresh, &everything, 1024).unwrap();
        assert_eq!(text(&fresh, "content").as_deref(), Some("abc"));
    }

    #[test]
    fn updates_with_missing_dependencies_are_bounded() {
        let doc = Doc::with_client_id(1);
        let t = doc.get_or_insert_text("content");
        t.insert(&mut doc.transact_mut(), 0, "first");
        let sv = doc.transact().state_vector();
        t.insert(&mut doc.transact_mut(), 5, &"x".repeat(4000));
        let second = doc.transact().encode_state_as_update_v1(&sv);

        let server = new_doc();
        let applied = apply_update(&server, &second, 100_000).unwrap();
        assert!(applied.pending, "the second update waits for the first");
        let tight = new_doc();
        assert_eq!(
            apply_update(&tight, &second, 100),
            Err(SyncError::PendingOverflow)
        );
        assert!(
            tight.transact().store().pending_update().is_none(),
            "pending data is dropped"
        );

        // Half of an update would integrate, half wait: refused whole, nothing applied.
        let (_other, hello) = edit(3, "hello");
        let merged = yrs::merge_updates_v1([hello.as_slice(), second.as_slice()]).unwrap();
        let partial = new_doc();
        assert_eq!(
            apply_update(&partial, &merged, 100),
            Err(SyncError::PendingOverflow)
        );
        assert_eq!(text(&partial, "content"), None);
        assert!(apply_update(&partial, &merged, 100_000).unwrap().pending);
        assert_eq!(text(&partial, "content").as_deref(), Some("hello"));
    }

    #[test]
    fn random_bytes_never_panic_and_never_change_the_document() {
        let server = new_doc();
        let (_c, update) = edit(7, "stable");
        apply_update(&server, &update, 1 << 20).unwrap();
        let before = full_state(&server).unwrap();
        let mut seed = 0x2545F4914F6CDD1Du64;
        for round in 0..4000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 64) as usize + round % 3;
            let bytes: Vec<u8> = (0..len)
                .map(|i| (seed.rotate_left(i as u32 % 64) & 0xff) as u8)
                .collect();
            let _ = apply_update(&server, &bytes, 1 << 16);
            let _ = diff(&server, &bytes);
        }
        let mut truncated = update.clone();
        truncated.truncate(update.len() / 2);
        assert!(
            apply_update(&server, &truncated, 1 << 16).is_err()
                || text(&server, "content").as_deref() == Some("stable")
        );
        assert_eq!(text(&server, "content").as_deref(), Some("stable"));
        let _ = before;
    }

    #[test]
    fn loading_replays_snapshot_and_updates() {
        let (_a, first) = edit(1, "one ");
        let (_b, second) = edit(2, "two");
        let (doc, skipped) = load(Some(&first), [second.clone(), vec![0xff, 0x01]]);
        assert_eq!(skipped, 1);
        assert_eq!(text(&doc, "content").unwrap().len(), 7);
    }
}

#[cfg(test)]
mod findings {
    //! Reproducers from `fuzz/regressions/`, one test per finding.
    use super::*;
    use yrs::Text;

    /// The document `fuzz/seed/make-corpus.mjs` makes with npm yjs.
    const PRIOR: &[u8] = include_bytes!("../../fuzz/seed/prior.bin");

    /// A document's whole state, encoded, loaded and encoded again.
    fn normalized(doc: &Doc) -> Vec<u8> {
        let (again, skipped) = load(Some(&full_state(doc).unwrap()), [] as [&[u8]; 0]);
        assert_eq!(skipped, 0);
        full_state(&again).unwrap()
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    /// `fuzz/regressions/multi_client_reload-delete-one-panics`: the real
    /// updates a yrs client (0x2222, UTF-16 offsets) sent: "xyzxyzxyz😀",
    /// "\n\n", then deletes one by one, some of one half of the 😀.
    #[test]
    fn real_deletes_of_half_a_surrogate_pair_apply() {
        let updates = [
            "0101a24400040107636f6e74656e740d78797a78797a78797af09f988000",
            "0101a2440bc4a24408a24409020a0a00",
            "0001a244010402",
            "0001a2440209010c01",
            "0001a2440202020603",
            "0001a244010a01",
            "0001a244010b01",
            "0001a244010101",
        ];
        let server = new_doc();
        for update in updates {
            assert!(apply_update(&server, &hex(update), 1 << 16).is_ok(), "{update}");
        }
        assert_eq!(text(&server, "content").as_deref(), Some("x"));
    }

    /// The smallest form of it: "😀" from client 1, then its two UTF-16
    /// halves deleted one at a time (clock 0, then clock 1), as a yjs client
    /// does with `text.delete(0, 1)` twice.
    #[test]
    fn deleting_both_halves_of_a_surrogate_pair_one_at_a_time() {
        let insert = hex("01010100040107636f6e74656e7404f09f988000");
        let server = new_doc();
        apply_update(&server, &insert, 1 << 16).unwrap();
        apply_update(&server, &hex("0001010100 01".replace(' ', "").as_str()), 1 << 16).unwrap();
        assert_eq!(text(&server, "content").as_deref(), Some("\u{fffd}"));
        apply_update(&server, &hex("00010101 0101".replace(' ', "").as_str()), 1 << 16).unwrap();
        assert_eq!(text(&server, "content").as_deref(), Some(""));
        let (reloaded, skipped) = load(snapshot(&server).as_deref(), [] as [&[u8]; 0]);
        assert_eq!((skipped, text(&reloaded, "content").as_deref()), (0, Some("")));
    }

    /// The same canonical form the fuzz targets compare documents by: every
    /// item's id, origins, parent, content and deletion, unit by unit,
    /// whatever blocks the store cut them into.
    #[allow(dead_code)]
    mod canonical {
        include!(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/src/canonical.rs"));
    }

    fn canonical_state(doc: &Doc) -> canonical::Canonical {
        canonical::canonical(&full_state(doc).unwrap()).unwrap()
    }

    /// `fuzz/regressions/update_apply-snapshot-reload-differs`: an item
    /// whose right origin (1:47) lies left of its origin (1:48) in the same
    /// block. With stock yrs the live document merged the block it split
    /// again and the reloaded one kept `pa` + `ra`: different encodings,
    /// same items. With the crossed-origins rule the item is GC on both.
    #[test]
    fn snapshot_reload_of_an_item_with_crossed_origins() {
        // Client 2's next clock is 4 in the prior document (the reproducer
        // had 9: since yrs waits for a client's missing clocks, as yjs
        // does, that now waits instead).
        let update = [
            0x01, 0x01, 0x02, 0x04, 0xc4, 0x01, 0x30, 0x01, 0x2f, 0x02, b'x', b'X', 0x00,
        ];
        let (live, skipped) = load(Some(PRIOR), [] as [&[u8]; 0]);
        assert_eq!(skipped, 0);
        let before = text(&live, "content");
        let applied = apply_update(&live, &update, 1 << 16).unwrap();
        assert!(matches!(applied.relay, Relay::Integrated(_)));
        assert_eq!(live.transact().store().crossed_origin_items(), 1);
        assert_eq!(text(&live, "content"), before);
        let (reloaded, skipped) = load(Some(&snapshot(&live).unwrap()), [] as [&[u8]; 0]);
        assert_eq!(skipped, 0);
        assert_eq!(text(&live, "content"), text(&reloaded, "content"));
        assert_eq!(live.transact().state_vector(), reloaded.transact().state_vector());
        assert_eq!(normalized(&live), normalized(&reloaded));
        assert_eq!(canonical_state(&live), canonical_state(&reloaded));
    }

    /// `fuzz/regressions/update_apply-snapshot-reload-differs-2`: a real
    /// divergence, not a block boundary. Client 200 inserts "a" and "aa"
    /// (origin 200:0, two structs); client 202 inserts "ccc" with origin
    /// 200:2 and right origin 200:1, i.e. crossed inside 200's run. Stock
    /// yrs 0.28, live, held "aa" as its own block, so left (end of 200:2)
    /// and right (start of 200:1) were the same block and "ccc" landed
    /// after it: "aaaccc". From the snapshot "aaa" is one block: the origin
    /// lookup took it whole as left, the right-origin lookup then split it
    /// into "a" + "aa", leaving left = "a": "acccaa". yjs's `getMissing`
    /// does the same two lookups in the same order.
    ///
    /// Fixed by the vendored yrs patch (vendor/README.md): an item whose
    /// right origin does not lie right of its origin becomes GC on every
    /// peer, and the server relays what it integrated, so clients get the
    /// GC instead of resolving the crossed item their own way.
    #[test]
    fn crossed_origins_become_gc_on_every_peer() {
        let update = hex(concat!(
            "0202ca0100c4c80102c801010363636328010",
            "36d6170016b01770163",
            "02c80100040107636f6e74656e7401618",
            "4c8010002616101c901010301"
        ));
        let (live, _) = load(Some(PRIOR), [] as [&[u8]; 0]);
        let applied = apply_update(&live, &update, 1 << 16).unwrap();
        assert_eq!(live.transact().store().crossed_origin_items(), 1);
        let Relay::Integrated(relay) = applied.relay else {
            panic!(
                "a crossed item must not be relayed as received: {:?}",
                applied.relay
            );
        };
        let (reloaded, _) = load(Some(&snapshot(&live).unwrap()), [] as [&[u8]; 0]);
        let live_text = text(&live, "content").unwrap();
        assert!(
            live_text.ends_with("aaa") && !live_text.contains("ccc"),
            "{live_text}"
        );
        assert_eq!(Some(&live_text), text(&reloaded, "content").as_ref());
        assert_eq!(canonical_state(&live), canonical_state(&reloaded));
        // A client whose copy cuts the blocks otherwise ("aaa" as one block,
        // as the reload holds it) gets the relay and ends equal, without
        // ever resolving the crossed item itself.
        let client = new_doc();
        for bytes in [PRIOR, &hex("0102c80100040107636f6e74656e74016184c8010002616100")] {
            apply_update(&client, bytes, 1 << 16).unwrap();
        }
        apply_update(&client, &relay, 1 << 16).unwrap();
        assert_eq!(client.transact().store().crossed_origin_items(), 0);
        // Every item the same; the server alone keeps the update's deletion
        // on client 201, which it has never seen (waiting, not relayed).
        let (on_client, on_server) = (canonical_state(&client), canonical_state(&live));
        assert_eq!(on_client.runs, on_server.runs);
        let mut deleted = on_server.deleted.clone();
        assert_eq!(deleted.remove(&201), Some(vec![(3, 4)]));
        assert_eq!(on_client.deleted, deleted);
    }

    /// `fuzz/regressions/update_apply-cross-parent-origins-differ`: an item
    /// of client 5 with its origin in one list (an element of the `list`
    /// array) and its right origin in another (an entry of a nested map).
    /// Stock yrs linked it into both lists; the reload lost array elements.
    #[test]
    fn origins_in_two_lists_become_gc() {
        let bytes = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/regressions/update_apply-cross-parent-origins-differ"
        ))
        .unwrap();
        let (live, _) = load(Some(PRIOR), [] as [&[u8]; 0]);
        let applied = apply_update(&live, &bytes, 1 << 16).unwrap();
        assert!(
            matches!(applied.relay, Relay::Integrated(_)),
            "{:?}",
            applied.relay
        );
        assert_eq!(live.transact().store().crossed_origin_items(), 1);
        let (reloaded, _) = load(Some(&snapshot(&live).unwrap()), [] as [&[u8]; 0]);
        assert_eq!(canonical_state(&live), canonical_state(&reloaded));
    }

    /// A right origin left of the origin but in another client's run (no
    /// peer can hold both in one block) is not GC: it integrates as if it
    /// had no right origin, scanning to the end of the list, which every
    /// peer does alike whatever its blocks. Same result live, reloaded and
    /// from one merged update applied to a peer that cut its blocks apart.
    #[test]
    fn crossed_origins_in_two_runs_integrate_alike_everywhere() {
        let typed = |client: u64, at: u32, chunk: &str, base: &[u8]| {
            let doc = Doc::with_client_id(client);
            apply_update(&doc, base, 1 << 16).unwrap();
            let t = doc.get_or_insert_text("content");
            let mut txn = doc.transact_mut();
            t.insert(&mut txn, at, chunk);
            txn.encode_update_v1()
        };
        let hello = typed(1, 0, "hello", &[0, 0]);
        let world = typed(2, 5, "world", &hello);
        // Client 3, clock 0, "Q": origin 2:2 ('r'), right origin 1:1 ('e').
        let crossed = hex("01010300c40202010101510 0".replace(' ', "").as_str());
        let live = new_doc();
        for update in [&hello, &world, &crossed] {
            apply_update(&live, update, 1 << 16).unwrap();
        }
        assert_eq!(live.transact().store().crossed_origin_items(), 0);
        let (reloaded, _) = load(Some(&snapshot(&live).unwrap()), [] as [&[u8]; 0]);
        // A peer that gets all three in one merged update.
        let peer = new_doc();
        let merged = yrs::merge_updates_v1([&hello[..], &world, &crossed]).unwrap();
        apply_update(&peer, &merged, 1 << 16).unwrap();
        let live_text = text(&live, "content").unwrap();
        assert_eq!(live_text, "helloworldQ");
        assert_eq!(text(&reloaded, "content").unwrap(), live_text);
        assert_eq!(text(&peer, "content").unwrap(), live_text);
        assert_eq!(canonical_state(&reloaded), canonical_state(&live));
        assert_eq!(canonical_state(&peer), canonical_state(&live));
    }

    /// `fuzz/regressions/multi_client_reload-mutated-update-text-differs`
    /// (finding 9): a struct that needs nothing but its client's earlier
    /// clocks (here a map entry), arriving before them. yjs waits for the
    /// missing clocks; stock yrs 0.28 integrated it at once after a Skip, so
    /// what a copy held depended on the order updates arrived in: the live
    /// document and its reload differed (and real updates that later filled
    /// the skipped clocks were sliced against it). The vendored yrs waits,
    /// as yjs does.
    #[test]
    fn a_struct_past_its_clients_missing_clocks_waits_for_them() {
        use yrs::Map;
        let author = Doc::with_client_id(7);
        let (t, m) = (
            author.get_or_insert_text("content"),
            author.get_or_insert_map("map"),
        );
        let first = {
            let mut txn = author.transact_mut();
            t.insert(&mut txn, 0, "ab");
            txn.encode_update_v1()
        };
        let second = {
            let mut txn = author.transact_mut();
            m.insert(&mut txn, "k", 1);
            txn.encode_update_v1()
        };
        let server = new_doc();
        let early = apply_update(&server, &second, 1 << 16).unwrap();
        assert!(
            early.pending,
            "a struct past missing clocks of its client must wait"
        );
        assert_eq!(early.relay, Relay::Nothing);
        assert_eq!(server.transact().state_vector().get(&yrs::ClientID::new(7)), 0);
        let (reloaded, _) = load(snapshot(&server).as_deref(), [] as [&[u8]; 0]);
        assert_eq!(canonical_state(&reloaded), canonical_state(&server));
        let completes = apply_update(&server, &first, 1 << 16).unwrap();
        assert!(!completes.pending);
        let Relay::Integrated(relay) = completes.relay else {
            panic!("{:?}", completes.relay);
        };
        let client = new_doc();
        apply_update(&client, &relay, 1 << 16).unwrap();
        assert_eq!(canonical_state(&client), canonical_state(&author));
        assert_eq!(canonical_state(&server), canonical_state(&author));
    }

    /// Finding 8's open variant: a struct waits (its origin is missing) at
    /// the clock its client has reached, and a later update brings other
    /// content under the same ids, which integrates. No real client writes
    /// two contents for one id; the waiting struct could then only ever
    /// integrate sliced against the other, and a snapshot (which merges what
    /// waits into the state) would hold a third thing. The update that
    /// fills the claimed clocks is refused, and the copy reloaded.
    #[test]
    fn an_update_under_ids_a_waiting_struct_claims_is_refused() {
        // Client 5, clock 0: "x" after 9:0, which nobody has: it waits.
        let waits = hex("01010500840900017800");
        // Client 5, clock 0 again: "y" at the start of `content`, integrable.
        let forged = hex("010105000401 07636f6e74656e74 017900".replace(' ', "").as_str());
        let server = new_doc();
        assert!(apply_update(&server, &waits, 1 << 16).unwrap().pending);
        let outcome = apply_update(&server, &forged, 1 << 16);
        assert!(matches!(outcome, Err(SyncError::PartlyApplied(_))), "{outcome:?}");
        // What storage holds (the waiting update only) reloads as it was.
        let (reloaded, _) = load(None, [&waits]);
        assert_eq!(reloaded.transact().state_vector().get(&yrs::ClientID::new(5)), 0);
        assert_eq!(
            canonical_state(&reloaded),
            canonical_state(&load(snapshot(&reloaded).as_deref(), [] as [&[u8]; 0]).0)
        );
    }

    /// Review finding: an item whose origin or right origin is GC. yjs's
    /// `getMissing` makes it GC (no parent); stock yrs took the parent
    /// from the other neighbour and kept the content, so the server showed
    /// text that no yjs client ever would. Now GC too, and not relayed as
    /// content.
    #[test]
    fn an_item_next_to_a_gc_range_is_gc_as_in_yjs() {
        let server = new_doc();
        let base = {
            let author = Doc::with_client_id(7);
            let t = author.get_or_insert_text("content");
            let mut txn = author.transact_mut();
            t.insert(&mut txn, 0, "ab");
            txn.encode_update_v1()
        };
        apply_update(&server, &base, 1 << 16).unwrap();
        // Client 3: a GC range of two units (clocks 0-1).
        apply_update(
            &server,
            &hex("010103000002 00".replace(' ', "").as_str()),
            1 << 16,
        )
        .unwrap();
        // Client 4: "z" with origin 3:1 (GC), and "q" with origin 7:0 and
        // right origin 3:0 (GC).
        for (update, what) in [
            (hex("01010400840301017a00"), "a GC origin"),
            (
                hex("0101050 0c4070003000171 00".replace(' ', "").as_str()),
                "a GC right origin",
            ),
        ] {
            let before = server.transact().store().crossed_origin_items();
            let applied = apply_update(&server, &update, 1 << 16).unwrap();
            assert_eq!(
                server.transact().store().crossed_origin_items(),
                before + 1,
                "{what}"
            );
            assert!(
                matches!(applied.relay, Relay::Integrated(_)),
                "{what}: {:?}",
                applied.relay
            );
        }
        assert_eq!(text(&server, "content").as_deref(), Some("ab"));
        let (reloaded, _) = load(snapshot(&server).as_deref(), [] as [&[u8]; 0]);
        assert_eq!(canonical_state(&reloaded), canonical_state(&server));
    }

    /// A right origin in the origin's own chain is found however many
    /// blocks other clients' inserts cut that chain into; a right origin of
    /// the same client outside the chain (a legal shape: the client typed
    /// it earlier, elsewhere) is not.
    #[test]
    fn the_origin_chain_is_followed_across_blocks_cut_by_other_inserts() {
        // Client 9 types "w" (clock 0), then 40 letters before it (clocks
        // 1-40, one chain); client 8 inserts a letter after every other
        // one of them, cutting the chain into 20 blocks.
        let author = Doc::with_client_id(9);
        let t = author.get_or_insert_text("content");
        t.insert(&mut author.transact_mut(), 0, "w");
        t.insert(&mut author.transact_mut(), 0, &"x".repeat(40));
        let other = Doc::with_client_id(8);
        apply_update(&other, &full_state(&author).unwrap(), 1 << 16).unwrap();
        let ot = other.get_or_insert_text("content");
        for i in (0..20u32).rev() {
            ot.insert(&mut other.transact_mut(), 2 * i + 2, "-");
        }
        let server = new_doc();
        apply_update(&server, &full_state(&other).unwrap(), 1 << 16).unwrap();
        let crossed = |origin: u8, right: u8| {
            hex(&format!("010106 00 c4 09{origin:02x} 09{right:02x} 017a 00").replace(' ', ""))
        };
        // Origin 9:40 (end of the chain), right origin 9:1 (its start).
        apply_update(&server, &crossed(40, 1), 1 << 16).unwrap();
        assert_eq!(server.transact().store().crossed_origin_items(), 1);
        // Origin 9:40, right origin 9:0 ("w", typed before the chain and
        // right of it): the shape a real client makes typing there.
        let legal = hex("010107 00 c4 0928 0900 017a 00".replace(' ', "").as_str());
        apply_update(&server, &legal, 1 << 16).unwrap();
        assert_eq!(server.transact().store().crossed_origin_items(), 1);
        // It lands after the origin, before client 8's "-" there (lower client id).
        assert!(
            text(&server, "content").unwrap().ends_with("xxz-w"),
            "{:?}",
            text(&server, "content")
        );
    }

    /// `fuzz/regressions/update_apply-deleted-range-gc-after-reload`
    /// (finding 17): a deleted-content struct of client 1 at clocks 37-176
    /// under the root `array`, over a document that holds other content at
    /// 1:37-49. yrs cut the known part and integrated the rest after 1:49,
    /// the `class` attribute of an XML element, i.e. in another list than
    /// the one the struct names; live and reloaded copies then held it
    /// differently. Now the rest is GC, the same everywhere.
    #[test]
    fn the_rest_of_a_struct_overlapping_other_content_is_gc() {
        let update = include_bytes!("../../fuzz/regressions/update_apply-deleted-range-gc-after-reload");
        let (live, _) = load(Some(PRIOR), [] as [&[u8]; 0]);
        apply_update(&live, update, 1 << 16).unwrap();
        assert_eq!(live.transact().store().crossed_origin_items(), 1);
        let (reloaded, _) = load(Some(&snapshot(&live).unwrap()), [] as [&[u8]; 0]);
        assert_eq!(canonical_state(&reloaded), canonical_state(&live));
    }

    /// A real client's resend overlapping what the server holds is not
    /// touched by that rule: the rest continues the same list.
    #[test]
    fn a_resend_overlapping_known_clocks_still_integrates() {
        let author = Doc::with_client_id(3);
        let t = author.get_or_insert_text("content");
        t.insert(&mut author.transact_mut(), 0, "abc");
        let first = full_state(&author).unwrap();
        t.insert(&mut author.transact_mut(), 3, "def");
        let both = full_state(&author).unwrap();
        let server = new_doc();
        apply_update(&server, &first, 1 << 16).unwrap();
        apply_update(&server, &both, 1 << 16).unwrap();
        assert_eq!(server.transact().store().crossed_origin_items(), 0);
        assert_eq!(text(&server, "content").as_deref(), Some("abcdef"));
    }

    /// An ordinary update is relayed as received (no re-encoding on the hot
    /// path); one that only waits for a missing dependency relays nothing,
    /// and the update that completes it relays both.
    #[test]
    fn what_is_relayed_is_what_integrated() {
        let author = Doc::with_client_id(9);
        let t = author.get_or_insert_text("content");
        let mut updates = Vec::new();
        for chunk in ["ab", "cd"] {
            let mut txn = author.transact_mut();
            t.push(&mut txn, chunk);
            updates.push(txn.encode_update_v1());
        }
        let server = new_doc();
        let waits = apply_update(&server, &updates[1], 1 << 16).unwrap();
        assert!(waits.pending);
        assert_eq!(waits.relay, Relay::Nothing);
        let completes = apply_update(&server, &updates[0], 1 << 16).unwrap();
        let Relay::Integrated(relay) = completes.relay else {
            panic!("{:?}", completes.relay);
        };
        let client = new_doc();
        apply_update(&client, &relay, 1 << 16).unwrap();
        assert_eq!(text(&client, "content").as_deref(), Some("abcd"));
        let more = {
            let mut txn = author.transact_mut();
            t.push(&mut txn, "e");
            txn.encode_update_v1()
        };
        assert_eq!(
            apply_update(&server, &more, 1 << 16).unwrap().relay,
            Relay::Incoming
        );
    }

    /// `fuzz/regressions/update_apply-pending-overlap-integrates-on-reload`:
    /// refused whole, so nothing waits that a snapshot would turn into
    /// integrable content.
    #[test]
    fn a_waiting_struct_over_known_clocks_is_refused() {
        let update = hex("0101010001000067876300");
        let (live, _) = load(Some(PRIOR), [] as [&[u8]; 0]);
        let before = full_state(&live);
        assert!(matches!(
            apply_update(&live, &update, 1 << 16),
            Err(SyncError::Rejected(_))
        ));
        assert_eq!(full_state(&live), before);
        assert!(live.transact().store().pending_update().is_none());
        let (reloaded, _) = load(Some(&snapshot(&live).unwrap()), [] as [&[u8]; 0]);
        assert_eq!(canonical_state(&live), canonical_state(&reloaded));
    }

    /// The canonical form tells apart what differs in content, origins or
    /// deletion, and not what differs only in block boundaries.
    #[test]
    fn canonical_form_is_exact_but_for_block_boundaries() {
        let one = |client: u64, steps: &[(u32, &str)]| {
            let doc = Doc::with_client_id(client);
            let t = doc.get_or_insert_text("content");
            for (at, chunk) in steps {
                t.insert(&mut doc.transact_mut(), *at, chunk);
            }
            doc
        };
        // "para" typed at once, or "pa" then "ra" typed after it: one
        // block either way, both the same items.
        let merged = one(1, &[(0, "para")]);
        let typed = one(1, &[(0, "pa"), (2, "ra")]);
        assert_eq!(canonical_state(&merged), canonical_state(&typed));
        // Two blocks in the encoding, one in the other: the same items.
        let split = hex("0102010004 01 07636f6e74656e74 027061 8401010272 61 00"
            .replace(' ', "")
            .as_str());
        let whole = hex("010101000401 07636f6e74656e74 0470617261 00"
            .replace(' ', "")
            .as_str());
        let split = canonical::canonical(&split).unwrap();
        assert_eq!(split, canonical::canonical(&whole).unwrap());
        // Different content, origin or deletion: different forms.
        let other = one(1, &[(0, "pa"), (0, "ra")]);
        assert_ne!(canonical_state(&merged), canonical_state(&other));
        let changed = one(1, &[(0, "pare")]);
        assert_ne!(canonical_state(&merged), canonical_state(&changed));
        let deleted = one(1, &[(0, "para")]);
        deleted
            .get_or_insert_text("content")
            .remove_range(&mut deleted.transact_mut(), 1, 1);
        assert_ne!(canonical_state(&merged), canonical_state(&deleted));
    }

    /// `fuzz/regressions/update_apply-refused-update-partly-applied`: an
    /// item whose parent id names an item that is not a type (here a
    /// string). Stock yrs failed the update midway, keeping what it had
    /// integrated (hence `PartlyApplied` and the room's reload); yjs makes
    /// the item GC. The vendored yrs does as yjs, so the update applies.
    #[test]
    fn an_item_under_a_parent_that_is_not_a_type_is_gc_as_in_yjs() {
        // The reproducer's GC starts at clock 135 of a client the document
        // lacks; since yrs waits for missing clocks (as yjs does) the
        // update would only wait, so here it starts at clock 0.
        let update = hex("0102810100000201000100ff7f0100010138");
        let (live, _) = load(Some(PRIOR), [] as [&[u8]; 0]);
        let text_before = text(&live, "content");
        let applied = apply_update(&live, &update, 1 << 16).unwrap();
        assert_eq!(live.transact().store().crossed_origin_items(), 1);
        assert!(matches!(applied.relay, Relay::Integrated(_)));
        assert_eq!(text(&live, "content"), text_before);
        let (reloaded, _) = load(Some(&snapshot(&live).unwrap()), [] as [&[u8]; 0]);
        assert_eq!(canonical_state(&reloaded), canonical_state(&live));
    }

    /// `fuzz/regressions/multi_client_reload-waiting-item-under-a-future-text-parent`
    /// (fourth round): client 17 writes a map entry whose parent is 4369:0,
    /// an id client 4369 has not written yet, so it waits. When 4369 then
    /// writes a string there, its own, real update integrated the waiting
    /// entry, and stock yrs failed the whole update: any user could make
    /// another user's next update fail, again after every reload. Now the
    /// entry becomes GC and the real update applies.
    #[test]
    fn a_waiting_item_under_another_clients_future_text_does_not_block_it() {
        let planted = hex("01011100280091220001780178 00".replace(' ', "").as_str());
        let server = new_doc();
        assert!(apply_update(&server, &planted, 1 << 16).unwrap().pending);
        let victim = Doc::with_client_id(4369);
        let t = victim.get_or_insert_text("content");
        let real = {
            let mut txn = victim.transact_mut();
            t.insert(&mut txn, 0, "ab");
            txn.encode_update_v1()
        };
        let applied = apply_update(&server, &real, 1 << 16).unwrap();
        assert!(!applied.pending);
        assert_eq!(server.transact().store().crossed_origin_items(), 1);
        assert_eq!(text(&server, "content").as_deref(), Some("ab"));
        let (reloaded, _) = load(None, [&planted, &real]);
        assert_eq!(canonical_state(&reloaded), canonical_state(&server));
    }
}
