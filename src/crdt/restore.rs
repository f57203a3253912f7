//! Restoring a version: one forward transaction that makes the live
//! document's content equal to the version's. History is kept (nothing is
//! rewound; the restore is an edit like any other), so every connected
//! client converges on it without reloading. Maps are restored key by key,
//! recursing into nested maps that both sides still share, so untouched
//! parts keep their identity; an array, text or XML root (or nested value)
//! that differs is cleared and refilled with a deep copy of the version's.
//! Pure: no sockets, no database.

use yrs::{
    Array, ArrayRef, Doc, Map, MapRef, Out, ReadTxn, Text, TextRef, Transact, TransactionMut, WriteTxn,
    XmlFragment, XmlFragmentRef, XmlOut,
    types::{AsPrelim, Delta, text::YChange, xml::XmlIn},
};

use crate::crdt::json::{self, RootKind, ptr, root_branch, root_kinds, told_kind};

/// How deep maps are restored key by key; deeper ones are replaced whole.
const MAX_DEPTH: usize = 64;

/// Make `live` (a scratch copy, editing as the server's client) equal in
/// content to the document at `version_state`, and return the transaction's
/// update (empty when they were equal already).
pub fn restore(live: &Doc, version_state: &[u8]) -> Result<Vec<u8>, RestoreError> {
    let version = crate::crdt::ops::scratch(version_state, 1).ok_or(RestoreError::BadVersion)?;
    crate::crdt::sync::contained(|| {
        let vtxn = version.transact();
        let mut txn = live.transact_mut();
        let none = std::collections::HashMap::new();
        let mut names: Vec<(std::sync::Arc<str>, Option<RootKind>)> = root_kinds(&vtxn, &none)
            .into_iter()
            .map(|(name, _)| {
                let told = root_branch(&vtxn, &name).and_then(|b| told_kind(&b));
                (name, told)
            })
            .collect();
        for (name, _) in root_kinds(&txn, &none) {
            if !names.iter().any(|(n, _)| *n == name) {
                names.push((name, None));
            }
        }
        for (name, version_kind) in names {
            let live_kind = root_branch(&txn, &name).and_then(|b| told_kind(&b));
            let kind = version_kind.or(live_kind).unwrap_or(RootKind::Text);
            let source = root_branch(&vtxn, &name);
            match kind {
                RootKind::Map => {
                    let target = txn.get_or_insert_map(&*name);
                    let source = source.map(MapRef::from);
                    restore_map(&mut txn, &target, &vtxn, source.as_ref(), 0);
                }
                RootKind::Array => {
                    let target = txn.get_or_insert_array(&*name);
                    let source = source.map(ArrayRef::from);
                    restore_array(&mut txn, &target, &vtxn, source.as_ref());
                }
                RootKind::Text => {
                    let target = txn.get_or_insert_text(&*name);
                    let source = source.map(TextRef::from);
                    restore_text(&mut txn, &target, &vtxn, source.as_ref());
                }
                RootKind::Xml => {
                    let target = txn.get_or_insert_xml_fragment(&*name);
                    let source = source.map(XmlFragmentRef::from);
                    restore_xml(&mut txn, &target, &vtxn, source.as_ref());
                }
            }
        }
        txn.encode_update_v1()
    })
    .ok_or(RestoreError::Failed)
}

/// Why a restore could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    #[error("the version's state does not decode")]
    BadVersion,
    #[error("the restore could not be applied to this document")]
    Failed,
}

fn restore_map<T: ReadTxn>(
    txn: &mut TransactionMut,
    target: &MapRef,
    vtxn: &T,
    source: Option<&MapRef>,
    depth: usize,
) {
    let keep: Vec<String> = source
        .map(|s| s.keys(vtxn).map(str::to_owned).collect())
        .unwrap_or_default();
    let stale: Vec<String> = target
        .keys(txn)
        .filter(|k| !keep.iter().any(|kept| kept == k))
        .map(str::to_owned)
        .collect();
    for key in stale {
        target.remove(txn, &key);
    }
    let Some(source) = source else { return };
    let entries: Vec<(String, Out)> = source.iter(vtxn).map(|(k, v)| (k.to_owned(), v)).collect();
    for (key, wanted) in entries {
        let current = target.get(txn, &key);
        match (current, &wanted) {
            (Some(Out::YMap(live)), Out::YMap(version)) if depth < MAX_DEPTH => {
                restore_map(txn, &live, vtxn, Some(version), depth + 1)
            }
            (Some(Out::YArray(live)), Out::YArray(version)) => restore_array(txn, &live, vtxn, Some(version)),
            (Some(Out::YText(live)), Out::YText(version)) => restore_text(txn, &live, vtxn, Some(version)),
            (Some(Out::Any(live)), Out::Any(version)) if live == *version => {}
            (Some(current), wanted) if same_json(txn, &current, vtxn, wanted) && is_plain(wanted) => {}
            _ => {
                target.insert(txn, key.as_str(), wanted.as_prelim(vtxn));
            }
        }
    }
}

fn is_plain(out: &Out) -> bool {
    matches!(out, Out::Any(_))
}

fn same_json<A: ReadTxn, B: ReadTxn>(a_txn: &A, a: &Out, b_txn: &B, b: &Out) -> bool {
    json::out_json(a_txn, a, 0) == json::out_json(b_txn, b, 0)
}

fn restore_array<T: ReadTxn>(
    txn: &mut TransactionMut,
    target: &ArrayRef,
    vtxn: &T,
    source: Option<&ArrayRef>,
) {
    let live: Vec<Option<serde_json::Value>> = target.iter(txn).map(|v| json::out_json(txn, &v, 0)).collect();
    let wanted: Vec<Out> = source.map(|s| s.iter(vtxn).collect()).unwrap_or_default();
    let wanted_json: Vec<Option<serde_json::Value>> =
        wanted.iter().map(|v| json::out_json(vtxn, v, 0)).collect();
    if live == wanted_json {
        return;
    }
    let len = target.len(txn);
    if len > 0 {
        target.remove_range(txn, 0, len);
    }
    for value in wanted {
        target.push_back(txn, value.as_prelim(vtxn));
    }
}

/// A text's chunks with their formatting, comparable.
fn chunks<T: ReadTxn>(
    txn: &T,
    text: &TextRef,
) -> Vec<(Option<serde_json::Value>, Option<Box<yrs::types::Attrs>>)> {
    text.diff(txn, YChange::identity)
        .into_iter()
        .map(|d| (json::out_json(txn, &d.insert, 0), d.attributes))
        .collect()
}

fn restore_text<T: ReadTxn>(txn: &mut TransactionMut, target: &TextRef, vtxn: &T, source: Option<&TextRef>) {
    let wanted = source.map(|s| chunks(vtxn, s)).unwrap_or_default();
    if chunks(txn, target) == wanted {
        return;
    }
    let len = target.len(txn);
    if len > 0 {
        target.remove_range(txn, 0, len);
    }
    if let Some(source) = source {
        let delta: Vec<Delta<yrs::In>> = source
            .diff(vtxn, YChange::identity)
            .into_iter()
            .map(|d| Delta::Inserted(d.insert.as_prelim(vtxn), d.attributes))
            .collect();
        target.apply_delta(txn, delta);
    }
}

fn restore_xml<T: ReadTxn>(
    txn: &mut TransactionMut,
    target: &XmlFragmentRef,
    vtxn: &T,
    source: Option<&XmlFragmentRef>,
) {
    let live = json::render_root(txn, ptr(target), RootKind::Xml);
    let wanted = source.map_or(serde_json::Value::String(String::new()), |s| {
        json::render_root(vtxn, ptr(s), RootKind::Xml)
    });
    if live == wanted {
        return;
    }
    let len = target.len(txn);
    if len > 0 {
        target.remove_range(txn, 0, len);
    }
    let Some(source) = source else { return };
    let children: Vec<XmlIn> = source
        .children(vtxn)
        .map(|child| match child {
            XmlOut::Element(e) => XmlIn::Element(e.as_prelim(vtxn)),
            XmlOut::Text(t) => XmlIn::Text(t.as_prelim(vtxn)),
            XmlOut::Fragment(f) => XmlIn::Fragment(f.as_prelim(vtxn)),
        })
        .collect();
    for child in children {
        target.push_back(txn, child);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::{Value, json};
    use yrs::{StateVector, updates::decoder::Decode};

    use super::*;
    use crate::crdt::{json::render, ops};

    fn state(doc: &Doc) -> Vec<u8> {
        doc.transact().encode_state_as_update_v1(&StateVector::default())
    }

    fn edit(doc: &Doc, batch: Value) {
        let parsed = ops::parse(batch.as_array().unwrap()).unwrap();
        let update = ops::apply(doc, &parsed, 1 << 20).unwrap();
        let _ = update;
    }

    fn content(doc: &Doc) -> Value {
        Value::Object(render(doc, &HashMap::new(), None).unwrap())
    }

    #[test]
    fn a_restore_is_a_forward_update_that_brings_back_the_version() {
        let doc = ops::scratch(&[0, 0], 5).unwrap();
        edit(
            &doc,
            json!([
                {"op": "map_set", "path": ["shapes"], "key": "a", "value": {"x": 1, "tags": ["t"]}, "shared": true},
                {"op": "map_set", "path": ["shapes"], "key": "b", "value": 2},
                {"op": "text_insert", "path": ["body"], "index": 0, "text": "hello", "attributes": {"bold": true}},
                {"op": "array_insert", "path": ["list"], "index": 0, "values": [1, 2, 3]},
            ]),
        );
        let version = state(&doc);
        let before = content(&doc);
        edit(
            &doc,
            json!([
                {"op": "map_set", "path": ["shapes", "a"], "key": "x", "value": 9},
                {"op": "map_delete", "path": ["shapes"], "key": "b"},
                {"op": "map_set", "path": ["shapes"], "key": "c", "value": true},
                {"op": "text_delete", "path": ["body"], "index": 0, "length": 2},
                {"op": "array_delete", "path": ["list"], "index": 0, "length": 1},
                {"op": "text_insert", "path": ["later"], "index": 0, "text": "new root"},
            ]),
        );
        assert_ne!(content(&doc), before);
        // The live copy a server holds: another client's edits, untyped roots.
        let live = ops::scratch(&state(&doc), 6).unwrap();
        let update = restore(&live, &version).unwrap();
        let mut expected = before.clone();
        expected["later"] = json!("");
        assert_eq!(content(&live), expected);
        // Applied to a third replica, the forward update converges on it too.
        let other = ops::scratch(&state(&doc), 7).unwrap();
        other
            .transact_mut()
            .apply_update(yrs::Update::decode_v1(&update).unwrap())
            .unwrap();
        assert_eq!(content(&other), expected);
        // Restoring again changes nothing.
        let again = restore(&live, &version).unwrap();
        let empty = ops::scratch(&state(&live), 8).unwrap();
        assert_eq!(again.len(), {
            let txn = empty.transact_mut();
            txn.encode_update_v1().len()
        });
    }
}
