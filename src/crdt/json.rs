//! A Yjs document as JSON, exactly as the npm `yjs` package renders it:
//! `Y.Map` -> object (`getMap(name).toJSON()`), `Y.Array` -> array, `Y.Text`
//! -> its string, XML types -> their XML string (`toString()`), nested
//! shared types recursively. Two deliberate differences, because JSON cannot
//! carry the JavaScript values: binaries render as base64 strings and
//! subdocuments as `{"guid": ..}`. Pure: a document in, a JSON value out.
//!
//! A Yjs update does not say what kind a root is: a document decoded from
//! stored updates has every root untyped. The kind is told from what the
//! root's items hold ([`infer_kind`]); a caller that knows its schema
//! overrides it.

use std::{collections::HashMap, sync::Arc};

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use serde_json::{Map as JsonMap, Value};
use yrs::{
    Any, Array, ArrayRef, Doc, GetString, Map, MapRef, Out, ReadTxn, Text, TextRef, Transact, XmlElementRef,
    XmlFragment, XmlFragmentRef, XmlOut, XmlTextRef,
    any::Number,
    branch::{Branch, BranchPtr},
    types::TypeRef,
};

/// How deep nested shared types are rendered; deeper ones render as `null`.
/// The validator bounds nesting far below this, so it only guards the stack.
const MAX_DEPTH: usize = 256;

/// The kind of a root shared type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootKind {
    Map,
    Array,
    Text,
    Xml,
}

impl RootKind {
    /// The names `?types=` uses: `map`, `array`, `text`, `xml`.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "map" => Self::Map,
            "array" => Self::Array,
            "text" => Self::Text,
            "xml" | "xml_fragment" => Self::Xml,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Map => "map",
            Self::Array => "array",
            Self::Text => "text",
            Self::Xml => "xml",
        }
    }
}

/// The kind a branch was created as, or the one its content shows: text
/// chunks, formats and embeds only exist in texts, XML nodes only in XML
/// types, other sequence items only in arrays, keys only in maps. A root
/// whose every item was deleted (and collected) shows nothing: it is a text.
pub fn infer_kind(branch: &Branch) -> RootKind {
    told_kind(branch).unwrap_or(RootKind::Text)
}

/// The kind a branch was created as or its content shows; `None` when
/// nothing tells (no items, or only deleted ones).
pub fn told_kind(branch: &Branch) -> Option<RootKind> {
    match branch.type_ref() {
        TypeRef::Map | TypeRef::XmlHook => return Some(RootKind::Map),
        TypeRef::Array => return Some(RootKind::Array),
        TypeRef::Text => return Some(RootKind::Text),
        TypeRef::XmlFragment | TypeRef::XmlElement(_) | TypeRef::XmlText => return Some(RootKind::Xml),
        _ => {}
    }
    let summary = branch.content_summary();
    Some(if summary.strings || summary.formats || summary.embeds {
        RootKind::Text
    } else if summary.xml_nodes {
        RootKind::Xml
    } else if summary.values {
        RootKind::Array
    } else if summary.map_entries > 0 {
        RootKind::Map
    } else {
        return None;
    })
}

/// The document's roots with their kinds (`overrides` first), by name.
pub fn root_kinds<T: ReadTxn>(txn: &T, overrides: &HashMap<String, RootKind>) -> Vec<(Arc<str>, RootKind)> {
    let mut roots: Vec<(Arc<str>, RootKind)> = txn
        .root_refs()
        .map(|(name, out)| {
            let kind = overrides
                .get(name)
                .copied()
                .or_else(|| branch_of(&out).map(|b| infer_kind(&b)))
                .unwrap_or(RootKind::Text);
            (Arc::from(name), kind)
        })
        .collect();
    roots.sort_by(|a, b| a.0.cmp(&b.0));
    roots
}

/// Every root of `doc` (or only `only`) rendered as JSON. `None` when
/// `only` names no root of the document.
pub fn render(
    doc: &Doc,
    overrides: &HashMap<String, RootKind>,
    only: Option<&str>,
) -> Option<JsonMap<String, Value>> {
    let txn = doc.transact();
    let mut content = JsonMap::new();
    for (name, kind) in root_kinds(&txn, overrides) {
        if only.is_some_and(|only| only != &*name) {
            continue;
        }
        let Some(branch) = root_branch(&txn, &name) else {
            continue;
        };
        content.insert(name.to_string(), render_root(&txn, branch, kind));
    }
    (only.is_none() || !content.is_empty()).then_some(content)
}

/// One root rendered as the kind given.
pub fn render_root<T: ReadTxn>(txn: &T, branch: BranchPtr, kind: RootKind) -> Value {
    match kind {
        RootKind::Map => map_json(txn, &MapRef::from(branch), 0),
        RootKind::Array => array_json(txn, &ArrayRef::from(branch), 0),
        RootKind::Text => Value::String(TextRef::from(branch).get_string(txn)),
        RootKind::Xml => Value::String(fragment_string(txn, &XmlFragmentRef::from(branch), 0)),
    }
}

/// The branch of the root named `name`.
pub fn root_branch<T: ReadTxn>(txn: &T, name: &str) -> Option<BranchPtr> {
    txn.root_refs()
        .find(|(root, _)| *root == name)
        .and_then(|(_, out)| branch_of(&out))
}

/// The branch behind a shared type.
pub fn branch_of(out: &Out) -> Option<BranchPtr> {
    Some(match out {
        Out::YText(t) => ptr(t),
        Out::YArray(a) => ptr(a),
        Out::YMap(m) => ptr(m),
        Out::YXmlElement(x) => ptr(x),
        Out::YXmlFragment(x) => ptr(x),
        Out::YXmlText(x) => ptr(x),
        Out::UndefinedRef(b) => *b,
        _ => return None,
    })
}

/// The branch of any shared type reference.
pub fn ptr(shared: &impl AsRef<Branch>) -> BranchPtr {
    BranchPtr::from(AsRef::<Branch>::as_ref(shared))
}

/// A nested value as `toJSON()` gives it; `None` is JavaScript's `undefined`.
pub fn out_json<T: ReadTxn>(txn: &T, out: &Out, depth: usize) -> Option<Value> {
    if depth > MAX_DEPTH {
        return Some(Value::Null);
    }
    Some(match out {
        Out::Any(any) => return any_json(any),
        Out::YMap(map) => map_json(txn, map, depth + 1),
        Out::YArray(array) => array_json(txn, array, depth + 1),
        Out::YText(text) => Value::String(text.get_string(txn)),
        Out::YXmlText(text) => Value::String(xml_text_string(txn, text)),
        Out::YXmlElement(element) => Value::String(element_string(txn, element, depth + 1)),
        Out::YXmlFragment(fragment) => Value::String(fragment_string(txn, fragment, depth + 1)),
        Out::YDoc(doc) => serde_json::json!({ "guid": doc.guid().to_string() }),
        Out::UndefinedRef(branch) => render_root(txn, *branch, infer_kind(branch)),
        #[allow(unreachable_patterns)]
        _ => Value::Null,
    })
}

fn map_json<T: ReadTxn>(txn: &T, map: &MapRef, depth: usize) -> Value {
    let mut object = JsonMap::new();
    for (key, value) in map.iter(txn) {
        // `JSON.stringify` drops keys whose value is `undefined`.
        if let Some(value) = out_json(txn, &value, depth) {
            object.insert(key.to_owned(), value);
        }
    }
    Value::Object(object)
}

fn array_json<T: ReadTxn>(txn: &T, array: &ArrayRef, depth: usize) -> Value {
    Value::Array(
        array
            .iter(txn)
            .map(|value| out_json(txn, &value, depth).unwrap_or(Value::Null))
            .collect(),
    )
}

/// A primitive value as `JSON.stringify` writes it; `None` for `undefined`.
pub fn any_json(any: &Any) -> Option<Value> {
    Some(match any {
        Any::Undefined => return None,
        Any::Null => Value::Null,
        Any::Bool(b) => Value::Bool(*b),
        Any::Number(Number::Int(n)) => Value::from(*n),
        Any::Number(Number::Float(n)) => number_json(*n),
        Any::String(s) => Value::String(s.to_string()),
        Any::Buffer(bytes) => Value::String(BASE64.encode(bytes)),
        Any::Array(items) => Value::Array(items.iter().map(|a| any_json(a).unwrap_or(Value::Null)).collect()),
        Any::Map(entries) => Value::Object(
            entries
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), any_json(v)?)))
                .collect(),
        ),
    })
}

/// A JavaScript number: integral values without a fraction (`1`, not
/// `1.0`), NaN and the infinities as `null` (as `JSON.stringify` does).
fn number_json(n: f64) -> Value {
    if n.is_finite() && n.fract() == 0.0 && n.abs() <= Number::F64_MAX_SAFE_INTEGER {
        Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
    }
}

/// `String(value)` in JavaScript, for XML attribute values.
fn js_string(any: &Any) -> String {
    match any {
        Any::Undefined => "undefined".into(),
        Any::Null => "null".into(),
        Any::Bool(b) => b.to_string(),
        Any::Number(Number::Int(n)) => n.to_string(),
        Any::Number(Number::Float(n)) => match number_json(*n) {
            Value::Null if n.is_nan() => "NaN".into(),
            Value::Null if *n > 0.0 => "Infinity".into(),
            Value::Null => "-Infinity".into(),
            other => other.to_string(),
        },
        Any::String(s) => s.to_string(),
        Any::Array(items) => items
            .iter()
            .map(|item| match item {
                Any::Null | Any::Undefined => String::new(),
                other => js_string(other),
            })
            .collect::<Vec<_>>()
            .join(","),
        Any::Buffer(bytes) => bytes.iter().map(u8::to_string).collect::<Vec<_>>().join(","),
        Any::Map(_) => "[object Object]".into(),
    }
}

/// `String(value)` for any value an XML attribute or a delta insert holds.
fn out_js_string<T: ReadTxn>(txn: &T, out: &Out, depth: usize) -> String {
    match out {
        Out::Any(any) => js_string(any),
        Out::YText(text) => text.get_string(txn),
        Out::YXmlText(text) => xml_text_string(txn, text),
        Out::YXmlElement(element) => element_string(txn, element, depth + 1),
        Out::YXmlFragment(fragment) => fragment_string(txn, fragment, depth + 1),
        Out::YArray(array) => array
            .iter(txn)
            .map(|v| out_js_string(txn, &v, depth + 1))
            .collect::<Vec<_>>()
            .join(","),
        _ => "[object Object]".into(),
    }
}

/// JavaScript's `<` on strings: UTF-16 code unit order.
fn js_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

/// `Y.XmlFragment#toString()`: its children, concatenated.
fn fragment_string<T: ReadTxn, F: XmlFragment>(txn: &T, fragment: &F, depth: usize) -> String {
    if depth > MAX_DEPTH {
        return String::new();
    }
    fragment
        .children(txn)
        .map(|child| match child {
            XmlOut::Element(element) => element_string(txn, &element, depth + 1),
            XmlOut::Fragment(fragment) => fragment_string(txn, &fragment, depth + 1),
            XmlOut::Text(text) => xml_text_string(txn, &text),
        })
        .collect()
}

/// `Y.XmlElement#toString()`: `<name k="v" ...>children</name>`, the name
/// lowercased and the attributes sorted by key.
fn element_string<T: ReadTxn>(txn: &T, element: &XmlElementRef, depth: usize) -> String {
    use yrs::types::xml::Xml;
    let name = element.try_tag().map(|t| t.to_lowercase()).unwrap_or_default();
    let mut attributes: Vec<(String, String)> = element
        .attributes(txn)
        .map(|(key, value)| (key.to_owned(), out_js_string(txn, &value, depth)))
        .collect();
    attributes.sort_by(|a, b| js_order(&a.0, &b.0));
    let mut out = format!("<{name}");
    for (key, value) in attributes {
        out.push_str(&format!(" {key}=\"{value}\""));
    }
    out.push('>');
    out.push_str(&fragment_string(txn, element, depth));
    out.push_str(&format!("</{name}>"));
    out
}

/// `Y.XmlText#toString()`: each formatted run wrapped in one element per
/// attribute (sorted by name), whose own attributes are the attribute's
/// value's keys (sorted).
fn xml_text_string<T: ReadTxn>(txn: &T, text: &XmlTextRef) -> String {
    let mut out = String::new();
    for chunk in text.diff(txn, yrs::types::text::YChange::identity) {
        let mut nodes: Vec<(String, Vec<(String, String)>)> = chunk
            .attributes
            .iter()
            .flat_map(|attrs| attrs.iter())
            .map(|(name, value)| {
                let mut attrs: Vec<(String, String)> = match value {
                    Any::Map(entries) => entries.iter().map(|(k, v)| (k.clone(), js_string(v))).collect(),
                    _ => Vec::new(),
                };
                attrs.sort_by(|a, b| js_order(&a.0, &b.0));
                (name.to_string(), attrs)
            })
            .collect();
        nodes.sort_by(|a, b| js_order(&a.0, &b.0));
        for (name, attrs) in &nodes {
            out.push('<');
            out.push_str(name);
            for (key, value) in attrs {
                out.push_str(&format!(" {key}=\"{value}\""));
            }
            out.push('>');
        }
        match &chunk.insert {
            Out::Any(Any::String(s)) => out.push_str(s),
            other => out.push_str(&out_js_string(txn, other, 0)),
        }
        for (name, _) in nodes.iter().rev() {
            out.push_str(&format!("</{name}>"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    //! Shapes rendered from documents decoded from updates (untyped roots),
    //! as a server holds them. The equality with npm `yjs` itself is tested
    //! in `tests/node/json-reads.mjs`.

    use serde_json::json;
    use yrs::{
        ArrayPrelim, MapPrelim, StateVector, TextPrelim, Update, WriteTxn, Xml, XmlElementPrelim,
        XmlTextPrelim, updates::decoder::Decode,
    };

    use super::*;

    /// What the server sees: `doc`'s state decoded into a fresh document.
    fn as_stored(doc: &Doc) -> Doc {
        let update = doc.transact().encode_state_as_update_v1(&StateVector::default());
        let stored = crate::crdt::sync::new_doc();
        stored
            .transact_mut()
            .apply_update(Update::decode_v1(&update).unwrap())
            .unwrap();
        stored
    }

    fn rendered(doc: &Doc) -> Value {
        Value::Object(render(&as_stored(doc), &HashMap::new(), None).unwrap())
    }

    #[test]
    fn roots_of_every_kind_are_told_from_their_content() {
        let doc = Doc::with_client_id(1);
        {
            let mut txn = doc.transact_mut();
            let shapes = txn.get_or_insert_map("shapes");
            shapes.insert(&mut txn, "n1", MapPrelim::from([("x", 1.0), ("y", 2.5)]));
            shapes.insert(&mut txn, "plain", json_any(json!({"a": [1, "b", null]})));
            shapes.insert(&mut txn, "gone", "soon");
            shapes.remove(&mut txn, "gone");
            let list = txn.get_or_insert_array("list");
            list.push_back(&mut txn, 1.0);
            list.push_back(&mut txn, ArrayPrelim::from([true, false]));
            list.push_back(&mut txn, TextPrelim::new("nested"));
            list.push_back(&mut txn, Any::Buffer(Arc::from(&[1u8, 2, 3][..])));
            let body = txn.get_or_insert_text("body");
            body.insert(&mut txn, 0, "hello world");
            body.format(&mut txn, 0, 5, HashMap::from([("bold".into(), Any::Bool(true))]));
            body.remove_range(&mut txn, 5, 6);
            let xml = txn.get_or_insert_xml_fragment("prosemirror");
            let p = xml.push_back(&mut txn, XmlElementPrelim::empty("Paragraph"));
            p.insert_attribute(&mut txn, "z", "1");
            p.insert_attribute(&mut txn, "a", "2");
            let t = p.push_back(&mut txn, XmlTextPrelim::new("hi"));
            t.format(&mut txn, 0, 2, HashMap::from([("em".into(), Any::Bool(true))]));
        }
        assert_eq!(
            rendered(&doc),
            json!({
                "shapes": {"n1": {"x": 1, "y": 2.5}, "plain": {"a": [1, "b", null]}},
                "list": [1, [true, false], "nested", "AQID"],
                "body": "hello",
                "prosemirror": "<paragraph a=\"2\" z=\"1\"><em>hi</em></paragraph>",
            })
        );
    }

    #[test]
    fn overrides_and_one_root() {
        let doc = Doc::with_client_id(1);
        {
            let mut txn = doc.transact_mut();
            let text = txn.get_or_insert_text("t");
            text.insert(&mut txn, 0, "gone");
            text.remove_range(&mut txn, 0, 4);
            txn.get_or_insert_map("m").insert(&mut txn, "k", "v");
        }
        let stored = as_stored(&doc);
        let all = render(&stored, &HashMap::new(), None).unwrap();
        assert_eq!(Value::Object(all), json!({"t": "", "m": {"k": "v"}}));
        let typed = HashMap::from([("t".to_owned(), RootKind::Array)]);
        let one = render(&stored, &typed, Some("t")).unwrap();
        assert_eq!(Value::Object(one), json!({"t": []}));
        assert!(render(&stored, &HashMap::new(), Some("missing")).is_none());
    }

    fn json_any(value: Value) -> Any {
        serde_json::from_value(value).unwrap()
    }
}
