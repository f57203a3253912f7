//! Helpers shared by the fuzz targets: the document every update is applied
//! on top of, a comparable fingerprint of a document, and a way to read a
//! document's roots that survives yrs panicking on a reinterpreted root.
//!
//! Nothing here is fuzzed itself; the targets in `fuzz_targets/` are.

/// Documents compared item by item, whatever their block boundaries
/// (see the comment at the top of `canonical.rs`).
pub mod canonical;

use std::{
    cell::Cell,
    collections::BTreeMap,
    panic::{AssertUnwindSafe, catch_unwind},
    sync::Once,
};

use yrs::{
    Doc, GetString, ReadTxn, StateVector, Transact,
    updates::decoder::Decode,
};

/// A document made by the npm `yjs` package (`seed/make-corpus.mjs`): Y.Text
/// with formatting and an embed, nested Y.Map / Y.Array values, an XML
/// fragment, deletions, edits of two clients. Fuzzed updates are applied on
/// top of it, and the seed corpus holds updates that extend it.
pub const PRIOR: &[u8] = include_bytes!("../seed/prior.bin");

/// Bound on data waiting for missing dependencies, as a server would set it.
pub const MAX_PENDING: usize = 64 * 1024;

thread_local! {
    static TOLERATING: Cell<bool> = const { Cell::new(false) };
}

/// Let [`tolerant`] catch panics: libFuzzer's hook aborts on every panic,
/// so panics inside `tolerant` are kept from reaching it.
fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !TOLERATING.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Run `work`; a panic becomes `Err("<panic>")` instead of a crash. Used only
/// to *read* a document in ways the server never does (a root reinterpreted
/// as another type), so that two documents are compared by what they hold
/// even when yrs cannot read one of them that way.
pub fn tolerant<T>(work: impl FnOnce() -> T) -> Result<T, &'static str> {
    install_hook();
    let was = TOLERATING.with(|flag| flag.replace(true));
    let result = catch_unwind(AssertUnwindSafe(work)).map_err(|_| "<panic>");
    TOLERATING.with(|flag| flag.set(was));
    result
}

/// What a document holds, in a form that compares across documents: its
/// state vector, whether something waits for missing dependencies, every
/// root that holds text, read as text, and its whole state in
/// [`canonical`] form: every item's id, origins, parent, content unit by
/// unit and deletion, compared exactly, whatever blocks the two stores
/// happen to cut the items into.
///
/// Roots are not read as maps or arrays: on a root or nested array that
/// holds string content (which any update may put there), yrs's
/// `ArrayRef::to_json` never returns. The canonical state covers them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub state_vector: BTreeMap<u64, u32>,
    pub pending_structs: bool,
    pub pending_deletes: bool,
    pub texts: BTreeMap<String, String>,
    pub state: canonical::Canonical,
}

pub fn state_vector_map(sv: &StateVector) -> BTreeMap<u64, u32> {
    sv.iter()
        .map(|(client, clock)| (client.get(), *clock))
        .filter(|(_, clock)| *clock > 0)
        .collect()
}

/// The document's full state, encoded, loaded into a new document and encoded again.
pub fn normalized_state(doc: &Doc) -> Vec<u8> {
    let state = doc.transact().encode_state_as_update_v1(&StateVector::default());
    let again = Doc::new();
    let update = yrs::Update::decode_v1(&state).expect("a document's own state decodes");
    again.transact_mut().apply_update(update).expect("a document's own state applies");
    again.transact().encode_state_as_update_v1(&StateVector::default())
}

pub fn fingerprint(doc: &Doc) -> Fingerprint {
    let encoded = doc.transact().encode_state_as_update_v1(&StateVector::default());
    let state = canonical::canonical(&encoded).expect("a document's own state reads");
    let txn = doc.transact();
    let names: Vec<String> = txn.root_refs().map(|(name, _)| name.to_string()).collect();
    let texts = names
        .into_iter()
        .map(|name| {
            let text = txn.get_text(name.as_str()).map(|t| t.get_string(&txn)).unwrap_or_default();
            (name, text)
        })
        // A root is only a name: one whose items were all deleted and
        // collected is not written to the state, so a reloaded document
        // lacks it. Compare the roots that hold text.
        .filter(|(_, text)| !text.is_empty())
        .collect();
    let store = txn.store();
    Fingerprint {
        state_vector: state_vector_map(&txn.state_vector()),
        pending_structs: store.pending_update().is_some(),
        pending_deletes: store.pending_ds().is_some(),
        texts,
        state,
    }
}

/// Like [`fingerprint`] without the pending flags (a client document and
/// the server hold the same content but a client never has pending data).
pub fn content(doc: &Doc) -> (BTreeMap<u64, u32>, BTreeMap<String, String>, canonical::Canonical) {
    let f = fingerprint(doc);
    (f.state_vector, f.texts, f.state)
}

/// Panic with both fingerprints if two documents differ.
#[track_caller]
pub fn assert_same(what: &str, left: &Doc, right: &Doc) {
    let (l, r) = (fingerprint(left), fingerprint(right));
    assert!(l == r, "divergence: {what}\nleft:  {l:#?}\nright: {r:#?}");
}

/// Whether the root `name` exists in `doc`.
pub fn has_root(doc: &Doc, name: &str) -> bool {
    doc.transact().root_refs().any(|(n, _)| n == name)
}

/// Decode with yrs directly under [`tolerant`]: `Err` if yrs refuses or panics.
pub fn yrs_decodes_update(bytes: &[u8]) -> bool {
    matches!(tolerant(|| yrs::Update::decode_v1(bytes)), Ok(Ok(_)))
}
