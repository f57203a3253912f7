//! JSON writes of Yjs types for clients that do not run Yjs (backends, AI
//! agents): `map_set`, `map_delete`, `array_insert`, `array_delete`,
//! `text_insert`, `text_delete`, addressed by a path through roots, map keys
//! and array indexes. A batch is applied to a scratch copy of the document
//! in one transaction; the result is that transaction's update, which the
//! caller applies like any client's. A bad op fails the whole batch with its
//! index, and the copy is thrown away: the document never sees half a batch.
//! Pure: no sockets, no database.

use std::{collections::HashMap, sync::Arc};

use serde::Deserialize;
use serde_json::Value;
use yrs::{
    Any, Array, ArrayPrelim, ArrayRef, Doc, In, Map, MapPrelim, MapRef, Out, Text, TextRef, Transact,
    TransactionMut, WriteTxn, any::Number,
};

use crate::crdt::json::{RootKind, root_branch, told_kind};

/// Ops in one request, at most.
pub const MAX_OPS: usize = 1000;

/// One JSON write.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    MapSet {
        path: Vec<Step>,
        key: String,
        value: Value,
        /// Objects and arrays become nested `Y.Map`/`Y.Array` instead of plain JSON values.
        #[serde(default)]
        shared: bool,
    },
    MapDelete {
        path: Vec<Step>,
        key: String,
    },
    ArrayInsert {
        path: Vec<Step>,
        index: u32,
        values: Vec<Value>,
        #[serde(default)]
        shared: bool,
    },
    ArrayDelete {
        path: Vec<Step>,
        index: u32,
        length: u32,
    },
    TextInsert {
        path: Vec<Step>,
        index: u32,
        text: String,
        #[serde(default)]
        attributes: Option<serde_json::Map<String, Value>>,
    },
    TextDelete {
        path: Vec<Step>,
        index: u32,
        length: u32,
    },
}

/// One step of a path: a root name or map key, or an array index.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Step {
    Key(String),
    Index(u32),
}

/// Why a batch was refused: the op at `index` (0-based) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("op {index}: {message}")]
pub struct OpError {
    pub index: usize,
    pub message: String,
}

fn at(index: usize, message: impl Into<String>) -> OpError {
    OpError {
        index,
        message: message.into(),
    }
}

/// Parse each op on its own, so an unknown op or a bad field names its index.
pub fn parse(values: &[Value]) -> Result<Vec<Op>, OpError> {
    if values.is_empty() {
        return Err(at(0, "ops is empty"));
    }
    if values.len() > MAX_OPS {
        return Err(at(MAX_OPS, format!("at most {MAX_OPS} ops per request")));
    }
    values
        .iter()
        .enumerate()
        .map(|(i, value)| Op::deserialize(value).map_err(|e| at(i, e.to_string())))
        .collect()
}

/// A copy of the document at `state`, to edit as Yjs client `client_id`.
pub fn scratch(state: &[u8], client_id: u64) -> Option<Doc> {
    let doc = crate::crdt::sync::new_doc_as(client_id);
    crate::crdt::sync::apply_update(&doc, state, usize::MAX).ok()?;
    Some(doc)
}

/// Apply `ops` to `doc` in one transaction and return its update (empty
/// when the ops changed nothing). `max_bytes` bounds the update.
pub fn apply(doc: &Doc, ops: &[Op], max_bytes: usize) -> Result<Vec<u8>, OpError> {
    let last = ops.len().saturating_sub(1);
    crate::crdt::sync::contained(|| {
        let mut txn = doc.transact_mut();
        let mut budget = max_bytes;
        for (index, op) in ops.iter().enumerate() {
            let cost = op_size(op);
            if cost > budget {
                return Err(at(
                    index,
                    format!("the ops add more than the {max_bytes}-byte update limit"),
                ));
            }
            budget -= cost;
            apply_one(&mut txn, op).map_err(|message| at(index, message))?;
        }
        let update = txn.encode_update_v1();
        if update.len() > max_bytes {
            return Err(at(
                last,
                format!("the ops add more than the {max_bytes}-byte update limit"),
            ));
        }
        Ok(update)
    })
    .unwrap_or_else(|| Err(at(last, "the ops could not be applied to this document")))
}

/// Roughly what an op adds to the update: its values as JSON.
fn op_size(op: &Op) -> usize {
    let json = |v: &Value| serde_json::to_string(v).map_or(0, |s| s.len());
    match op {
        Op::MapSet { key, value, .. } => key.len() + json(value),
        Op::ArrayInsert { values, .. } => values.iter().map(json).sum(),
        Op::TextInsert { text, attributes, .. } => {
            text.len() + attributes.as_ref().map_or(0, |a| json(&Value::Object(a.clone())))
        }
        Op::MapDelete { key, .. } => key.len(),
        Op::ArrayDelete { .. } | Op::TextDelete { .. } => 0,
    }
}

/// The shared type an op works on.
enum Target {
    Map(MapRef),
    Array(ArrayRef),
    Text(TextRef),
}

impl Target {
    fn kind(&self) -> &'static str {
        match self {
            Self::Map(_) => "a map",
            Self::Array(_) => "an array",
            Self::Text(_) => "a text",
        }
    }
}

fn apply_one(txn: &mut TransactionMut, op: &Op) -> Result<(), String> {
    match op {
        Op::MapSet {
            path,
            key,
            value,
            shared,
        } => {
            let map = map_at(txn, path)?;
            map.insert(txn, key.as_str(), to_in(value, *shared));
        }
        Op::MapDelete { path, key } => {
            let map = map_at(txn, path)?;
            if map.remove(txn, key).is_none() {
                return Err(format!("the map has no key {key:?}"));
            }
        }
        Op::ArrayInsert {
            path,
            index,
            values,
            shared,
        } => {
            let array = array_at(txn, path)?;
            check_range(*index, 0, array.len(txn), "array")?;
            for (offset, value) in values.iter().enumerate() {
                array.insert(txn, index + offset as u32, to_in(value, *shared));
            }
        }
        Op::ArrayDelete { path, index, length } => {
            let array = array_at(txn, path)?;
            check_range(*index, *length, array.len(txn), "array")?;
            if *length == 0 {
                return Err("length must be at least 1".into());
            }
            array.remove_range(txn, *index, *length);
        }
        Op::TextInsert {
            path,
            index,
            text: chunk,
            attributes,
        } => {
            let text = text_at(txn, path)?;
            check_range(*index, 0, text.len(txn), "text")?;
            if chunk.is_empty() {
                return Err("text must not be empty".into());
            }
            match attributes {
                Some(attributes) if !attributes.is_empty() => {
                    let attrs: HashMap<Arc<str>, Any> = attributes
                        .iter()
                        .map(|(k, v)| (Arc::from(k.as_str()), to_any(v)))
                        .collect();
                    text.insert_with_attributes(txn, *index, chunk, attrs);
                }
                _ => text.insert(txn, *index, chunk),
            }
        }
        Op::TextDelete { path, index, length } => {
            let text = text_at(txn, path)?;
            check_range(*index, *length, text.len(txn), "text")?;
            if *length == 0 {
                return Err("length must be at least 1".into());
            }
            text.remove_range(txn, *index, *length);
        }
    }
    Ok(())
}

/// `index..index + length` within a sequence of `len` (UTF-16 units for texts).
fn check_range(index: u32, length: u32, len: u32, what: &str) -> Result<(), String> {
    match index.checked_add(length) {
        Some(end) if end <= len => Ok(()),
        _ => Err(format!(
            "index {index}{} is out of range: the {what} has length {len}",
            if length > 0 {
                format!(" + length {length}")
            } else {
                String::new()
            }
        )),
    }
}

fn map_at(txn: &mut TransactionMut, path: &[Step]) -> Result<MapRef, String> {
    match resolve(txn, path, RootKind::Map)? {
        Target::Map(map) => Ok(map),
        other => Err(format!("the path leads to {}, not a map", other.kind())),
    }
}

fn array_at(txn: &mut TransactionMut, path: &[Step]) -> Result<ArrayRef, String> {
    match resolve(txn, path, RootKind::Array)? {
        Target::Array(array) => Ok(array),
        other => Err(format!("the path leads to {}, not an array", other.kind())),
    }
}

fn text_at(txn: &mut TransactionMut, path: &[Step]) -> Result<TextRef, String> {
    match resolve(txn, path, RootKind::Text)? {
        Target::Text(text) => Ok(text),
        other => Err(format!("the path leads to {}, not a text", other.kind())),
    }
}

/// Follow `path` from its root. A root is created as `root_kind` when the
/// path is just the root; an existing root must already show that kind
/// (or none yet), and one reached through further steps must show one.
fn resolve(txn: &mut TransactionMut, path: &[Step], root_kind: RootKind) -> Result<Target, String> {
    let Some(Step::Key(root)) = path.first() else {
        return Err("path must start with a root name".into());
    };
    let told = root_branch(txn, root).and_then(|branch| told_kind(&branch));
    let kind = match (told, path.len()) {
        (Some(kind), _) => kind,
        (None, 1) => root_kind,
        (None, _) => return Err(format!("the document has no root {root:?} to go into")),
    };
    if path.len() == 1 && kind != root_kind {
        return Err(format!(
            "root {root:?} is {}, not {}",
            with_article(kind),
            with_article(root_kind)
        ));
    }
    let mut target = match kind {
        RootKind::Map => Target::Map(txn.get_or_insert_map(root.as_str())),
        RootKind::Array => Target::Array(txn.get_or_insert_array(root.as_str())),
        RootKind::Text => Target::Text(txn.get_or_insert_text(root.as_str())),
        RootKind::Xml => return Err(format!("root {root:?} is an XML fragment: ops cannot edit it")),
    };
    for (depth, step) in path.iter().enumerate().skip(1) {
        let next = match (&target, step) {
            (Target::Map(map), Step::Key(key)) => map.get(txn, key),
            (Target::Array(array), Step::Index(index)) => array.get(txn, *index),
            (Target::Map(_), Step::Index(_)) => {
                return Err(format!(
                    "path step {depth}: a map is entered with a key (a string)"
                ));
            }
            (Target::Array(_), Step::Key(_)) => {
                return Err(format!(
                    "path step {depth}: an array is entered with an index (a number)"
                ));
            }
            (Target::Text(_), _) => return Err(format!("path step {depth}: a text has nothing inside")),
        };
        target = match next {
            Some(Out::YMap(map)) => Target::Map(map),
            Some(Out::YArray(array)) => Target::Array(array),
            Some(Out::YText(text)) => Target::Text(text),
            Some(_) => {
                return Err(format!(
                    "path step {depth}: the value there is not a shared map, array or text"
                ));
            }
            None => return Err(format!("path step {depth}: nothing there")),
        };
    }
    Ok(target)
}

/// `a map`, `an array`, `a text`, `an xml fragment`.
fn with_article(kind: RootKind) -> &'static str {
    match kind {
        RootKind::Map => "a map",
        RootKind::Array => "an array",
        RootKind::Text => "a text",
        RootKind::Xml => "an XML fragment",
    }
}

/// A JSON value as Yjs content: plain, or with objects and arrays as nested shared types.
fn to_in(value: &Value, shared: bool) -> In {
    match value {
        Value::Object(entries) if shared => In::Map(
            entries
                .iter()
                .map(|(k, v)| (k.as_str(), to_in(v, true)))
                .collect::<MapPrelim>(),
        ),
        Value::Array(items) if shared => {
            In::Array(items.iter().map(|v| to_in(v, true)).collect::<ArrayPrelim>())
        }
        other => In::Any(to_any(other)),
    }
}

/// A JSON value as a Yjs primitive: numbers as JavaScript numbers (never a
/// BigInt, which a JavaScript client could not put in JSON).
pub fn to_any(value: &Value) -> Any {
    match value {
        Value::Null => Any::Null,
        Value::Bool(b) => Any::Bool(*b),
        Value::Number(n) => Any::Number(match n.as_i64() {
            Some(i) if (Number::I64_MIN_SAFE_INTEGER..=Number::I64_MAX_SAFE_INTEGER).contains(&i) => {
                Number::Int(i)
            }
            _ => Number::try_i64(n.as_f64().unwrap_or(f64::NAN)),
        }),
        Value::String(s) => Any::String(s.as_str().into()),
        Value::Array(items) => Any::Array(items.iter().map(to_any).collect()),
        Value::Object(entries) => Any::Map(Arc::new(
            entries.iter().map(|(k, v)| (k.clone(), to_any(v))).collect(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use yrs::{ReadTxn, StateVector};

    use super::*;
    use crate::crdt::json::render;

    fn run(doc: &Doc, ops: Value) -> Result<Vec<u8>, OpError> {
        let ops = parse(ops.as_array().unwrap())?;
        apply(doc, &ops, 1 << 20)
    }

    fn content(doc: &Doc) -> Value {
        Value::Object(render(doc, &HashMap::new(), None).unwrap())
    }

    #[test]
    fn a_batch_builds_nested_types_and_edits_text() {
        let doc = scratch(&[0, 0], 7).unwrap();
        run(
            &doc,
            json!([
                {"op": "map_set", "path": ["shapes"], "key": "n1", "value": {"x": 1, "tags": ["a"]}, "shared": true},
                {"op": "array_insert", "path": ["shapes", "n1", "tags"], "index": 1, "values": ["b", {"plain": true}]},
                {"op": "map_set", "path": ["shapes"], "key": "n2", "value": {"x": 2}},
                {"op": "map_delete", "path": ["shapes"], "key": "n2"},
                {"op": "text_insert", "path": ["body"], "index": 0, "text": "hello", "attributes": {"bold": true}},
                {"op": "text_delete", "path": ["body"], "index": 1, "length": 3},
            ]),
        )
        .unwrap();
        assert_eq!(
            content(&doc),
            json!({"shapes": {"n1": {"x": 1, "tags": ["a", "b", {"plain": true}]}}, "body": "ho"})
        );
        assert!(
            doc.transact()
                .state_vector()
                .contains_client(&yrs::ClientID::new(7))
        );
    }

    #[test]
    fn a_bad_op_names_its_index_and_the_update_is_never_encoded() {
        let doc = scratch(&[0, 0], 7).unwrap();
        run(
            &doc,
            json!([{"op": "text_insert", "path": ["t"], "index": 0, "text": "abc"}]),
        )
        .unwrap();
        let cases = [
            (
                json!([{"op": "map_set", "path": ["m"], "key": "k", "value": 1}, {"op": "explode", "path": ["m"]}]),
                1,
            ),
            (
                json!([{"op": "map_set", "path": ["t"], "key": "k", "value": 1}]),
                0,
            ),
            (
                json!([{"op": "text_insert", "path": ["t"], "index": 4, "text": "x"}]),
                0,
            ),
            (
                json!([{"op": "text_delete", "path": ["t"], "index": 2, "length": 2}]),
                0,
            ),
            (json!([{"op": "map_set", "path": [], "key": "k", "value": 1}]), 0),
            (
                json!([{"op": "array_insert", "path": ["m", "x"], "index": 0, "values": [1]}]),
                0,
            ),
            (json!([{"op": "map_delete", "path": ["m"], "key": "never"}]), 0),
            (json!([]), 0),
        ];
        for (ops, index) in cases {
            let error = run(&doc, ops.clone()).expect_err(&ops.to_string());
            assert_eq!(error.index, index, "{ops}: {error}");
        }
        let big = "x".repeat(100);
        let ops = parse(&[json!({"op": "text_insert", "path": ["t"], "index": 0, "text": big})]).unwrap();
        assert_eq!(apply(&doc, &ops, 50).unwrap_err().index, 0);
        let _ = doc.transact().encode_state_as_update_v1(&StateVector::default());
    }

    #[test]
    fn an_index_inside_a_surrogate_pair_is_refused_or_applied_but_never_panics() {
        let doc = scratch(&[0, 0], 9).unwrap();
        run(
            &doc,
            json!([{"op": "text_insert", "path": ["t"], "index": 0, "text": "a😀b"}]),
        )
        .unwrap();
        // UTF-16 units: a=1, 😀=2, b=1.
        for index in 0..=4 {
            let outcome = run(
                &doc,
                json!([{"op": "text_insert", "path": ["t"], "index": index, "text": "x"}]),
            );
            if let Err(error) = outcome {
                assert_eq!(error.index, 0, "{error}");
            }
        }
        let out_of_range = run(
            &doc,
            json!([{"op": "text_insert", "path": ["t"], "index": 100, "text": "x"}]),
        );
        assert!(out_of_range.is_err());
        let rendered = content(&doc);
        assert!(rendered["t"].as_str().unwrap().contains('b'));
    }
}
