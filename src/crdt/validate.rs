//! A strict validating decoder for Yjs v1 updates and state vectors, run on
//! every client-supplied byte string before yrs sees it.
//!
//! yrs trusts its input: its block store links items through raw pointers,
//! keeps clocks as `u32` (wrapping larger varints) and folds client ids into
//! 53 bits. A crafted update whose ids wrap, whose item names itself or a
//! later item of its own client as origin, or whose values nest without end
//! can make it loop forever, corrupt a document for good or crash the process
//! outside any `catch_unwind`. This module reads the whole update the way
//! lib0/yjs would, with the same integer and length limits, and refuses it
//! unless every struct is consistent:
//! - every unsigned varint fits in 53 bits (lib0's `Integer out of Range`);
//!   clocks and lengths fit in 31 bits, so no yrs clock can ever wrap;
//! - a client appears at most once, its structs are contiguous and non-empty;
//! - an item's origin and right origin differ, and one of its own client's
//!   must precede it; a parent is a root name or an item id;
//! - content kinds, type kinds, strings (UTF-8), JSON and `Any` values are
//!   what yjs decodes, `Any`/JSON nesting is bounded, nothing trails.
//!
//! [`UpdateShape::waiting_bytes`] then tells, against a document's state
//! vector, how many bytes of the update would wait for missing dependencies,
//! so the pending bound is enforced before anything is applied.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, HashSet},
};

pub use super::lib0::Invalid;
pub use super::lib0::{MAX_CLOCK, MAX_NESTING, MAX_SAFE_INTEGER};
use super::lib0::{Reader, Result};

/// An id that an item depends on: it must be integrated first.
type Dependency = (u64, u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StructKind {
    Item,
    Gc,
    Skip,
}

/// One struct of an update, as far as integration order is concerned.
#[derive(Debug, Clone)]
struct Struct {
    clock: u64,
    len: u64,
    kind: StructKind,
    /// Origin, right origin and parent id, where present.
    deps: [Option<Dependency>; 3],
    /// Encoded size, for the pending bound.
    bytes: usize,
}

/// The structs of one client in an update.
#[derive(Debug, Clone)]
struct Section {
    client: u64,
    structs: Vec<Struct>,
}

/// One range of the delete set.
#[derive(Debug, Clone, Copy)]
struct DeleteRange {
    client: u64,
    end: u64,
    bytes: usize,
}

/// A validated update: what it inserts and deletes, and what it depends on.
#[derive(Debug, Clone, Default)]
pub struct UpdateShape {
    sections: Vec<Section>,
    deletes: Vec<DeleteRange>,
}

impl UpdateShape {
    /// The update carries nothing: no structs and no deletions.
    pub fn is_empty(&self) -> bool {
        self.sections.iter().all(|s| s.structs.is_empty()) && self.deletes.is_empty()
    }

    /// Client ids under which the update inserts structs.
    pub fn clients(&self) -> impl Iterator<Item = u64> + '_ {
        self.sections
            .iter()
            .filter(|s| !s.structs.is_empty())
            .map(|s| s.client)
    }

    /// Client ids under which the update adds structs that a document with
    /// state vector `known` does not have yet: the update authors them.
    pub fn new_clients(&self, known: impl Fn(u64) -> u64) -> Vec<u64> {
        self.sections
            .iter()
            .filter(|section| {
                let have = known(section.client);
                section
                    .structs
                    .iter()
                    .any(|s| s.kind == StructKind::Item && s.clock + s.len > have)
            })
            .map(|section| section.client)
            .collect()
    }

    /// Bytes of this update that would wait for missing dependencies when
    /// applied to a document whose state vector is `known` (client -> clock).
    /// Exact for what the update itself provides; it does not count on
    /// updates already waiting in the document, so it never underestimates.
    pub fn waiting_bytes(&self, known: impl Fn(u64) -> u64) -> usize {
        self.simulate(known).0
    }

    /// Whether a struct of this update would wait for a missing dependency
    /// while it starts below the clock the document (state vector `known`)
    /// already has for its client. No real client sends that: the struct's
    /// first unit is already integrated, so its dependencies are present.
    /// yrs (like yjs) checks the struct's own dependencies before slicing
    /// it, so it waits; but any merge (`merge_updates_v1`, hence
    /// `sync::snapshot`) slices it at the known clock into a piece whose
    /// only dependency is the unit before it, which integrates at once: the
    /// reloaded document holds what the live one keeps waiting
    /// (`fuzz/regressions/update_apply-pending-overlap-integrates-on-reload`).
    pub fn waits_over_known_clocks(&self, known: impl Fn(u64) -> u64) -> bool {
        self.simulate(known).1
    }

    /// [`Self::waiting_bytes`] and [`Self::waits_over_known_clocks`] from
    /// one walk.
    pub fn waiting(&self, known: impl Fn(u64) -> u64) -> (usize, bool) {
        self.simulate(known)
    }

    /// Integrate the update's structs against `known` as yrs would: the
    /// bytes left waiting, and whether a waiting struct overlaps known clocks.
    fn simulate(&self, known: impl Fn(u64) -> u64) -> (usize, bool) {
        let mut overlapping = false;
        let mut state: HashMap<u64, u64> = HashMap::new();
        let clock_of = |state: &HashMap<u64, u64>, client: u64| -> u64 {
            state.get(&client).copied().unwrap_or_else(|| known(client))
        };
        let mut cursor = vec![0usize; self.sections.len()];
        let mut waiters: HashMap<u64, BinaryHeap<Reverse<(u64, usize)>>> = HashMap::new();
        let mut work: Vec<usize> = (0..self.sections.len()).collect();
        while let Some(index) = work.pop() {
            let section = &self.sections[index];
            let client = section.client;
            let before = clock_of(&state, client);
            let mut current = before;
            while let Some(item) = section.structs.get(cursor[index]) {
                if item.clock + item.len <= current {
                    cursor[index] += 1;
                    continue;
                }
                if item.clock > current || item.kind == StructKind::Skip {
                    // A gap in this client's own clocks: nothing in this
                    // update can fill it.
                    break;
                }
                let blocked = item.deps.iter().flatten().find(|(dep_client, dep_clock)| {
                    let have = if *dep_client == client {
                        current
                    } else {
                        clock_of(&state, *dep_client)
                    };
                    *dep_clock >= have
                });
                if let Some(&(dep_client, dep_clock)) = blocked {
                    overlapping |= item.clock < current;
                    if dep_client != client {
                        waiters
                            .entry(dep_client)
                            .or_default()
                            .push(Reverse((dep_clock, index)));
                    }
                    break;
                }
                current = item.clock + item.len;
                cursor[index] += 1;
            }
            if current > before {
                state.insert(client, current);
                if let Some(heap) = waiters.get_mut(&client) {
                    while let Some(&Reverse((clock, waiter))) = heap.peek() {
                        if clock >= current {
                            break;
                        }
                        heap.pop();
                        work.push(waiter);
                    }
                }
            }
        }
        let structs: usize = self
            .sections
            .iter()
            .zip(&cursor)
            .flat_map(|(section, &at)| section.structs[at.min(section.structs.len())..].iter())
            .filter(|s| s.kind != StructKind::Skip)
            .map(|s| s.bytes)
            .sum();
        let deletes: usize = self
            .deletes
            .iter()
            .filter(|range| range.end > clock_of(&state, range.client))
            .map(|range| range.bytes)
            .sum();
        (structs + deletes, overlapping)
    }
}

/// Read and check a whole v1 update.
pub fn inspect_update(bytes: &[u8]) -> Result<UpdateShape> {
    let mut r = Reader::new(bytes);
    let mut shape = UpdateShape::default();
    let mut seen = HashSet::new();
    // Each client section holds at least its struct count, client id and clock.
    let clients = r.count(3)?;
    for _ in 0..clients {
        let count = r.count(2)?;
        let client = r.client()?;
        if !seen.insert(client) {
            return r.fail("a client appears twice");
        }
        let mut clock = r.clock()?;
        let mut structs = Vec::with_capacity(count);
        for _ in 0..count {
            let start = r.pos;
            let (kind, len, deps) = read_struct(&mut r, client, clock)?;
            if len == 0 {
                return r.fail("empty struct");
            }
            if clock + len > MAX_CLOCK {
                return r.fail("clock out of range");
            }
            structs.push(Struct {
                clock,
                len,
                kind,
                deps,
                bytes: r.pos - start,
            });
            clock += len;
        }
        shape.sections.push(Section { client, structs });
    }
    let clients = r.count(2)?;
    for _ in 0..clients {
        let client = r.client()?;
        let ranges = r.count(2)?;
        for _ in 0..ranges {
            let start = r.pos;
            let clock = r.clock()?;
            let len = r.clock()?;
            if len == 0 || clock + len > MAX_CLOCK {
                return r.fail("delete range out of range");
            }
            shape.deletes.push(DeleteRange {
                client,
                end: clock + len,
                bytes: r.pos - start,
            });
        }
    }
    if r.remaining() != 0 {
        return r.fail("trailing bytes after the update");
    }
    Ok(shape)
}

/// Read one struct at `clock` of `client`: its kind, length and dependencies.
fn read_struct(
    r: &mut Reader<'_>,
    client: u64,
    clock: u64,
) -> Result<(StructKind, u64, [Option<Dependency>; 3])> {
    let info = r.u8()?;
    let content = info & 0x1f;
    match content {
        // yjs writes these two without flag bits. yrs recognises them only
        // as the exact byte and would read flagged ones as items: the two
        // decoders would disagree on every byte that follows.
        0 | 10 if info != content => return r.fail("flag bits on a GC or skip struct"),
        0 => return Ok((StructKind::Gc, r.var_uint()?, [None; 3])),
        10 => return Ok((StructKind::Skip, r.var_uint()?, [None; 3])),
        _ => {}
    }
    let mut deps = [None; 3];
    let read_id = |r: &mut Reader<'_>| -> Result<Dependency> {
        let id = (r.client()?, r.clock()?);
        // An item's origins existed when it was made: one of its own
        // client's must come before it (yrs would link it to itself).
        if id.0 == client && id.1 >= clock {
            return r.fail("an item depends on itself or a later item");
        }
        Ok(id)
    };
    if info & 0x80 != 0 {
        deps[0] = Some(read_id(r)?);
    }
    if info & 0x40 != 0 {
        deps[1] = Some(read_id(r)?);
        if deps[0] == deps[1] {
            return r.fail("origin and right origin are the same item");
        }
    }
    if info & 0xc0 == 0 {
        match r.var_uint()? {
            1 => {
                r.string()?;
            }
            0 => deps[2] = Some(read_id(r)?),
            _ => return r.fail("bad parent info"),
        }
        if info & 0x20 != 0 {
            r.string()?;
        }
    }
    let len = match content {
        1 => r.var_uint()?,
        2 => {
            let count = r.count(1)?;
            for _ in 0..count {
                r.json()?;
            }
            count as u64
        }
        3 => {
            r.byte_array()?;
            1
        }
        4 => r.string()?.encode_utf16().count() as u64,
        5 => {
            r.json_value()?;
            1
        }
        6 => {
            r.string()?;
            r.json_value()?;
            1
        }
        7 => {
            match r.u8()? {
                0 | 1 | 2 | 4 | 6 => {}
                3 => {
                    r.string()?;
                }
                // yjs reads an XmlHook's key, yrs does not: refused rather
                // than let the two decoders part ways.
                5 => return r.fail("XmlHook shared types are not supported"),
                _ => return r.fail("unknown shared type"),
            }
            1
        }
        8 => {
            let count = r.count(1)?;
            for _ in 0..count {
                r.any(0)?;
            }
            count as u64
        }
        9 => {
            r.string()?;
            r.any(0)?;
            1
        }
        _ => return r.fail("unknown content type"),
    };
    Ok((StructKind::Item, len, deps))
}

/// Read and check a v1 state vector.
pub fn inspect_state_vector(bytes: &[u8]) -> Result<()> {
    let mut r = Reader::new(bytes);
    let entries = r.count(2)?;
    for _ in 0..entries {
        r.client()?;
        r.clock()?;
    }
    if r.remaining() != 0 {
        return r.fail("trailing bytes after the state vector");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::lib0::json_is_valid;
    use yrs::{
        Any, Array, Doc, GetString, Map, ReadTxn, StateVector, Text, Transact, updates::encoder::Encode,
    };

    fn full(doc: &Doc) -> Vec<u8> {
        doc.transact().encode_state_as_update_v1(&StateVector::default())
    }

    use crate::crdt::craft::var;

    /// An update of one client with one string item under root `text`.
    fn one_string(client: u128, clock: u128, origin: Option<(u128, u128)>, text: &str) -> Vec<u8> {
        crate::crdt::craft::string_item(client, clock, origin, "text", text)
    }

    #[test]
    fn real_updates_of_every_kind_are_accepted() {
        let doc = Doc::with_client_id(42);
        let text = doc.get_or_insert_text("text");
        let map = doc.get_or_insert_map("map");
        let array = doc.get_or_insert_array("array");
        {
            let mut txn = doc.transact_mut();
            text.insert(&mut txn, 0, "héllo wörld 🎉");
            text.remove_range(&mut txn, 0, 1);
            map.insert(&mut txn, "n", 1.5);
            map.insert(&mut txn, "s", "x");
            map.insert(&mut txn, "b", Any::Buffer(vec![1u8, 2, 3].into()));
            array.insert(
                &mut txn,
                0,
                Any::from(vec![Any::from("a"), Any::Null, Any::Bool(true)]),
            );
            array.insert(&mut txn, 1, yrs::MapPrelim::default());
        }
        let update = full(&doc);
        let shape = inspect_update(&update).unwrap();
        assert!(!shape.is_empty());
        assert_eq!(shape.clients().collect::<Vec<_>>(), vec![42]);
        assert_eq!(shape.waiting_bytes(|_| 0), 0);
        let _ = text.get_string(&doc.transact());
        inspect_state_vector(&doc.transact().state_vector().encode_v1()).unwrap();
        inspect_update(&yrs::Update::new().encode_v1()).unwrap();
    }

    #[test]
    fn integers_clocks_and_ids_beyond_the_limits_are_refused() {
        assert!(inspect_update(&one_string(7, 0, None, "ok")).is_ok());
        // Client id 2^53 - 1 is the largest lib0 reads exactly; 2^53 is out.
        assert!(inspect_update(&one_string(MAX_SAFE_INTEGER as u128, 0, None, "ok")).is_ok());
        assert!(inspect_update(&one_string(1 << 53, 0, None, "ok")).is_err());
        assert!(inspect_update(&one_string(1 << 70, 0, None, "ok")).is_err());
        for clock in [1u128 << 31, 1 << 32, 1 << 53, 1 << 65] {
            assert!(
                inspect_update(&one_string(7, clock, None, "ok")).is_err(),
                "{clock}"
            );
        }
        assert!(inspect_update(&one_string(7, MAX_CLOCK as u128 - 1, None, "ok")).is_err());
    }

    #[test]
    fn items_that_depend_on_themselves_or_later_items_are_refused() {
        assert!(inspect_update(&one_string(7, 5, Some((7, 5)), "x")).is_err());
        assert!(inspect_update(&one_string(7, 5, Some((7, 9)), "x")).is_err());
        assert!(inspect_update(&one_string(7, 5, Some((7, 4)), "x")).is_ok());
        assert!(inspect_update(&one_string(7, 5, Some((8, 9)), "x")).is_ok());
    }

    #[test]
    fn truncations_and_trailing_bytes_are_refused() {
        let update = one_string(7, 0, None, "hello");
        for len in 0..update.len() {
            assert!(inspect_update(&update[..len]).is_err(), "prefix of {len}");
        }
        let mut longer = update.clone();
        longer.push(0);
        assert!(inspect_update(&longer).is_err());
    }

    #[test]
    fn shapes_yrs_reads_differently_from_yjs_are_refused() {
        // Found by the update_apply fuzz target (fuzz/regressions/).
        let gc_with_flags = [0x01, 0x01, 0x6d, 0xb6, 0xca, 0x0b, 0xc0, 0x6c, 0x00];
        assert_eq!(
            inspect_update(&gc_with_flags).unwrap_err().reason,
            "flag bits on a GC or skip struct"
        );
        let xml_hook = [
            0x01, 0x01, 0x6a, 0x0b, 0x87, 0x6a, 0x0a, 0x05, 0x04, b'h', b'o', b'o', b'k', 0x00,
        ];
        assert!(inspect_update(&xml_hook).is_err());
    }

    #[test]
    fn deeply_nested_values_are_refused() {
        let mut out = Vec::new();
        var(&mut out, 1);
        var(&mut out, 1);
        var(&mut out, 7);
        var(&mut out, 0);
        out.push(0x08);
        var(&mut out, 1);
        var(&mut out, 1);
        out.extend_from_slice(b"a");
        var(&mut out, 1);
        for _ in 0..10_000 {
            out.push(117);
            var(&mut out, 1);
        }
        out.push(126);
        var(&mut out, 0);
        let error = inspect_update(&out).unwrap_err();
        assert_eq!(error.reason, "value nests too deep");
        assert!(!json_is_valid(&"[".repeat(100)));
        assert!(json_is_valid(r#"{"a":[1,2,{"b":"[[[["}]}"#));
    }

    #[test]
    fn waiting_bytes_follow_dependencies_inside_and_outside_the_update() {
        let a = Doc::with_client_id(1);
        let text = a.get_or_insert_text("text");
        text.insert(&mut a.transact_mut(), 0, "base");
        let base_sv = a.transact().state_vector();
        text.insert(&mut a.transact_mut(), 4, " more");
        let later = a.transact().encode_state_as_update_v1(&base_sv);

        let shape = inspect_update(&later).unwrap();
        // Against an empty document the second edit waits (a gap in client 1).
        let waiting = shape.waiting_bytes(|_| 0);
        assert!(
            waiting > 0 && waiting < later.len(),
            "{waiting} of {}",
            later.len()
        );
        // Against one that has the base, nothing waits.
        assert_eq!(
            shape.waiting_bytes(|c| u64::from(base_sv.get(&yrs::ClientID::new(c)))),
            0
        );

        // Another client's edit on top of client 1's: waits unless both arrive.
        let b = Doc::with_client_id(2);
        yrs::Transact::transact_mut(&b)
            .apply_update(yrs::Update::decode_v1(&full(&a)).unwrap())
            .unwrap();
        let btext = b.get_or_insert_text("text");
        let sv = b.transact().state_vector();
        btext.insert(&mut b.transact_mut(), 9, "!");
        let from_b = b.transact().encode_state_as_update_v1(&sv);
        let alone = inspect_update(&from_b).unwrap();
        assert!(alone.waiting_bytes(|_| 0) > 0);
        let merged = yrs::merge_updates_v1([full(&a).as_slice(), from_b.as_slice()]).unwrap();
        assert_eq!(inspect_update(&merged).unwrap().waiting_bytes(|_| 0), 0);
    }

    /// `fuzz/regressions/update_apply-pending-overlap-integrates-on-reload`:
    /// client 1, clock 0, deleted content of length 12,679 under parent
    /// 0:103 (missing). Against a document holding client 1 up to 50 it
    /// would wait while overlapping known clocks: any merge slices it at 50
    /// into a piece with origin 1:49 that no longer waits.
    #[test]
    fn a_waiting_struct_that_overlaps_known_clocks_is_flagged() {
        let update = [0x01, 0x01, 0x01, 0x00, 0x01, 0x00, 0x00, 0x67, 0x87, 0x63, 0x00];
        let shape = inspect_update(&update).unwrap();
        let has_50 = |c: u64| if c == 1 { 50 } else { 0 };
        assert!(shape.waiting_bytes(has_50) > 0);
        assert!(shape.waits_over_known_clocks(has_50));
        // Starting exactly at the known clock it only waits, as any update may.
        assert!(shape.waiting_bytes(|_| 0) > 0);
        assert!(!shape.waits_over_known_clocks(|_| 0));
        // Real updates that extend a document never do.
        let a = Doc::with_client_id(1);
        let text = a.get_or_insert_text("text");
        text.insert(&mut a.transact_mut(), 0, "base");
        let sv = a.transact().state_vector();
        text.insert(&mut a.transact_mut(), 2, "-mid-");
        let everything = inspect_update(&full(&a)).unwrap();
        let known = |c: u64| u64::from(sv.get(&yrs::ClientID::new(c)));
        assert!(!everything.waits_over_known_clocks(known));
    }

    /// An update of client 7 holding one item at clock 0 at the start of root
    /// `root`, with content kind `content` and its encoded `body`.
    fn root_item(content: u8, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for value in [1, 1, 7, 0] {
            var(&mut out, value);
        }
        out.push(content);
        var(&mut out, 1);
        var(&mut out, 4);
        out.extend_from_slice(b"root");
        out.extend_from_slice(body);
        var(&mut out, 0);
        out
    }

    fn lib0_string(text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        var(&mut out, text.len() as u128);
        out.extend_from_slice(text.as_bytes());
        out
    }

    /// Finding 18 (`fuzz/regressions/multi_client_reload-validated-update-yrs-cannot-decode`):
    /// embed and format values are parsed into yrs `Any` values, which hold
    /// no infinite number and no `undefined`; a JSON text that only parses
    /// as such passed the validator and then failed in yrs.
    #[test]
    fn embedded_json_values_yrs_cannot_hold_are_refused() {
        for value in ["1e999", "-2129e4285714285716", "undefined", "[1,undefined]"] {
            let embed = root_item(5, &lib0_string(value));
            let mut format = lib0_string("bold");
            format.extend(lib0_string(value));
            let format = root_item(6, &format);
            for update in [embed, format] {
                assert!(inspect_update(&update).is_err(), "{value} accepted");
                assert!(yrs::Update::decode_v1(&update).is_err(), "{value} decoded by yrs");
            }
        }
        for value in ["2129.4285714285716", "{\"a\":[1,null,\"x\"]}", "-0", "1e308"] {
            let update = root_item(5, &lib0_string(value));
            assert!(inspect_update(&update).is_ok(), "{value} refused");
            assert!(
                yrs::Update::decode_v1(&update).is_ok(),
                "{value} not decoded by yrs"
            );
        }
    }

    /// A JSON content (kind 2, what yjs before v13 wrote into arrays) holds
    /// as many strings as its count says, `undefined` among them. yrs read
    /// one string more than that, so an update accepted here could fail to
    /// decode, or decode into other items than yjs reads (tandem patch in
    /// `vendor/yrs`).
    #[test]
    fn json_contents_decode_alike_in_yrs_and_yjs() {
        let mut body = Vec::new();
        var(&mut body, 2);
        body.extend(lib0_string("1"));
        body.extend(lib0_string("undefined"));
        let update = root_item(2, &body);
        let shape = inspect_update(&update).unwrap();
        assert_eq!(shape.sections[0].structs[0].len, 2);
        let decoded = yrs::Update::decode_v1(&update).expect("yrs decodes a JSON content");
        let doc = Doc::new();
        doc.transact_mut().apply_update(decoded).unwrap();
        let array = doc.get_or_insert_array("root");
        assert_eq!(array.len(&doc.transact()), 2);
        assert_eq!(full(&doc), update, "re-encodes to the same bytes");
    }

    use yrs::updates::decoder::Decode;
}
