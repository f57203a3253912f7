//! Helpers shared by the fuzz targets: the document every update is applied
//! on top of, a comparable fingerprint of a document, and a way to read a
//! document's roots that survives yrs panicking on a reinterpreted root.
//!
//! Nothing here is fuzzed itself; the targets in `fuzz_targets/` are.

use std::{
    cell::Cell,
    collections::BTreeMap,
    panic::{AssertUnwindSafe, catch_unwind},
    sync::Once,
};

use yrs::{
    Any, Doc, GetString, ReadTxn, StateVector, Transact, any::Number, types::ToJson,
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

/// Any value as canonical text: map keys sorted, floats by their bits (so
/// NaN equals NaN and -0 differs from 0).
pub fn canonical(any: &Any, out: &mut String) {
    use std::fmt::Write;
    match any {
        Any::Null => out.push_str("null"),
        Any::Undefined => out.push_str("undefined"),
        Any::Bool(b) => write!(out, "{b}").unwrap(),
        Any::Number(Number::Float(n)) => write!(out, "f{:016x}", n.to_bits()).unwrap(),
        Any::Number(Number::Int(n)) => write!(out, "i{n}").unwrap(),
        Any::String(s) => write!(out, "{s:?}").unwrap(),
        Any::Buffer(b) => write!(out, "b{b:?}").unwrap(),
        Any::Array(items) => {
            out.push('[');
            for item in items.iter() {
                canonical(item, out);
                out.push(',');
            }
            out.push(']');
        }
        Any::Map(map) => {
            let sorted: BTreeMap<_, _> = map.iter().collect();
            out.push('{');
            for (key, value) in sorted {
                write!(out, "{key:?}:").unwrap();
                canonical(value, out);
                out.push(',');
            }
            out.push('}');
        }
    }
}

fn any_text(any: Any) -> String {
    let mut out = String::new();
    canonical(&any, &mut out);
    out
}

/// What a document holds, in a form that compares across documents: its
/// state vector, whether something waits for missing dependencies, and
/// every root read as text, map, array and XML fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub state_vector: BTreeMap<u64, u32>,
    pub pending_structs: bool,
    pub pending_deletes: bool,
    pub roots: BTreeMap<String, [Result<String, &'static str>; 4]>,
}

pub fn state_vector_map(sv: &StateVector) -> BTreeMap<u64, u32> {
    sv.iter()
        .map(|(client, clock)| (client.get(), *clock))
        .filter(|(_, clock)| *clock > 0)
        .collect()
}

pub fn fingerprint(doc: &Doc) -> Fingerprint {
    let txn = doc.transact();
    let names: Vec<String> = txn.root_refs().map(|(name, _)| name.to_string()).collect();
    let mut roots = BTreeMap::new();
    for name in names {
        let text = tolerant(|| txn.get_text(name.as_str()).map(|t| t.get_string(&txn)).unwrap_or_default());
        let map = tolerant(|| txn.get_map(name.as_str()).map(|m| any_text(m.to_json(&txn))).unwrap_or_default());
        let array = tolerant(|| {
            txn.get_array(name.as_str())
                .map(|a| any_text(a.to_json(&txn)))
                .unwrap_or_default()
        });
        let xml = tolerant(|| {
            txn.get_xml_fragment(name.as_str())
                .map(|x| x.get_string(&txn))
                .unwrap_or_default()
        });
        roots.insert(name, [text, map, array, xml]);
    }
    let store = txn.store();
    Fingerprint {
        state_vector: state_vector_map(&txn.state_vector()),
        pending_structs: store.pending_update().is_some(),
        pending_deletes: store.pending_ds().is_some(),
        roots,
    }
}

/// Like [`fingerprint`] without the pending flags (a client document and
/// the server hold the same content but a client never has pending data).
pub fn content(doc: &Doc) -> (BTreeMap<u64, u32>, BTreeMap<String, [Result<String, &'static str>; 4]>) {
    let f = fingerprint(doc);
    (f.state_vector, f.roots)
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
