//! Several clients edit, exchange updates and send them to the server, mixed
//! with raw and mutated updates; the server's document is then snapshotted,
//! reloaded and compared with a fresh apply of what it accepted.
//!
//! The input is a script (see `Script`): each step is an edit by one of
//! three yrs clients (text insert/delete/format/embed, map and array values
//! of every kind, nested types, XML), a client-to-client sync, the delivery
//! of a client's queued updates to the server (one by one or merged), a
//! mutation of an update already sent, or raw bytes from the input.
//!
//! Properties:
//! - the server never reports a contained panic, and never refuses a real
//!   client update as malformed or rejected;
//! - `full_state`, `snapshot` and `text` answer after everything;
//! - snapshot -> load equals the live server document, and so does a fresh
//!   document that applies the accepted updates in the same order;
//! - when only real client updates were accepted, all of them, the server
//!   holds exactly what the clients hold once they have synced each other.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem::{crdt::sync::{self, SyncError}, crdt::validate};
use tandem_fuzz::{MAX_PENDING, assert_same, content, fingerprint, has_root, tolerant};
use yrs::{
    Any, Array, ArrayPrelim, ArrayRef, Doc, Map, MapPrelim, MapRef, OffsetKind, Options, Out,
    ReadTxn, Text, TextPrelim, TextRef, Transact, Update, WriteTxn, XmlElementPrelim, XmlFragment,
    XmlFragmentRef, XmlTextPrelim, updates::decoder::Decode,
};

const CLIENT_IDS: [u64; 3] = [0x1111, 0x2222, (1 << 53) - 1];
const NO_UPDATES: [&[u8]; 0] = [];

/// The fuzz input read as a sequence of small numbers; zeros once exhausted.
struct Script<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Script<'a> {
    fn done(&self) -> bool {
        self.pos >= self.bytes.len()
    }
    fn u8(&mut self) -> u8 {
        let byte = self.bytes.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        byte
    }
    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | (u16::from(self.u8()) << 8)
    }
    fn below(&mut self, n: u32) -> u32 {
        if n == 0 { 0 } else { u32::from(self.u16()) % n }
    }
    fn take(&mut self, len: usize) -> &'a [u8] {
        let start = self.pos.min(self.bytes.len());
        let end = (start + len).min(self.bytes.len());
        self.pos = start + len;
        &self.bytes[start..end]
    }
    /// A short string over an alphabet with 1-, 2-, 3- and 4-byte characters.
    fn string(&mut self) -> String {
        const ALPHABET: [&str; 8] = ["a", "b", " ", "\n", "é", "€", "😀", "xyz"];
        let len = self.u8() % 6 + 1;
        (0..len).map(|_| ALPHABET[usize::from(self.u8() % 8)]).collect()
    }
    fn key(&mut self) -> &'static str {
        ["a", "b", "c", "nested", ""][usize::from(self.u8() % 5)]
    }
    fn any(&mut self, depth: u8) -> Any {
        match self.u8() % 11 {
            0 => Any::Null,
            1 => Any::Undefined,
            2 => Any::Bool(self.u8() & 1 == 1),
            3 => Any::from(f64::from(self.u16()) / 7.0),
            4 => Any::from(i64::from(self.u16()) - 30_000),
            5 => Any::from(self.string()),
            6 => {
                let len = usize::from(self.u8() % 8);
                Any::from(self.take(len).to_vec())
            }
            7 if depth < 3 => Any::from(vec![self.any(depth + 1), self.any(depth + 1)]),
            8 if depth < 3 => Any::from(std::collections::HashMap::from([
                (self.key().to_string(), self.any(depth + 1)),
                (self.key().to_string(), self.any(depth + 1)),
            ])),
            9 => Any::from(f64::NAN),
            _ => Any::from(-0.0f64),
        }
    }
}

/// `at` moved down to the nearest offset (UTF-16) that is not inside a
/// surrogate pair. A yrs (or yjs) client editing inside a pair splits it
/// into two U+FFFD in its own document without sending that change
/// (`fuzz/regressions/multi_client_reload-surrogate-split-differs`): a
/// client-local loss, not a server fault, so the simulated clients avoid it.
fn snap<T: ReadTxn>(text: &TextRef, txn: &T, at: u32) -> u32 {
    let mut offset = 0u32;
    for chunk in text.diff(txn, |_| ()) {
        let units: Vec<u16> = match &chunk.insert {
            Out::Any(Any::String(s)) => s.encode_utf16().collect(),
            _ => vec![0],
        };
        for (i, unit) in units.iter().enumerate() {
            let here = offset + i as u32;
            if here == at {
                // Inside a pair when this is its low half.
                return if (0xdc00..0xe000).contains(unit) && i > 0 { at - 1 } else { at };
            }
        }
        offset += units.len() as u32;
    }
    at
}

/// A range `[at, at + n)` with both ends moved off surrogate pairs.
fn snap_range<T: ReadTxn>(text: &TextRef, txn: &T, at: u32, n: u32) -> (u32, u32) {
    let start = snap(text, txn, at);
    let end = snap(text, txn, at + n);
    (start, end.saturating_sub(start))
}

/// One update as delivered to the server.
struct Delivery {
    bytes: Vec<u8>,
    /// Made by a real yrs client (not raw or mutated bytes).
    real: bool,
}

struct Client {
    doc: Doc,
    text: TextRef,
    map: MapRef,
    array: ArrayRef,
    xml: XmlFragmentRef,
    /// Updates made (or received) and not yet sent to the server.
    outbox: Vec<Vec<u8>>,
}

impl Client {
    fn new(id: u64) -> Self {
        let doc = Doc::with_options(Options {
            offset_kind: OffsetKind::Utf16,
            ..Options::with_client_id(yrs::ClientID::new(id))
        });
        let (text, map, array, xml) = {
            let mut txn = doc.transact_mut();
            (
                txn.get_or_insert_text("content"),
                txn.get_or_insert_map("map"),
                txn.get_or_insert_array("array"),
                txn.get_or_insert_xml_fragment("xml"),
            )
        };
        Self {
            doc,
            text,
            map,
            array,
            xml,
            outbox: Vec::new(),
        }
    }

    /// One edit driven by the script, as its own transaction.
    fn edit(&mut self, op: u8, s: &mut Script<'_>) {
        let mut txn = self.doc.transact_mut();
        match op {
            0 => {
                let at = snap(&self.text, &txn, s.below(self.text.len(&txn) + 1));
                let chunk = s.string();
                self.text.insert(&mut txn, at, &chunk);
            }
            1 => {
                let len = self.text.len(&txn);
                let at = s.below(len);
                let n = s.below(len - at.min(len)).max(1).min(len - at.min(len));
                let (at, n) = snap_range(&self.text, &txn, at, n);
                if n > 0 {
                    self.text.remove_range(&mut txn, at, n);
                }
            }
            2 => {
                let len = self.text.len(&txn);
                let at = snap(&self.text, &txn, s.below(len + 1));
                match s.u8() % 3 {
                    0 => {
                        let n = s.below(len - at.min(len) + 1);
                        let (at, n) = snap_range(&self.text, &txn, at, n);
                        let value = if s.u8() & 1 == 0 { Any::Bool(true) } else { Any::Null };
                        let attrs = [(std::sync::Arc::from("bold"), value)].into_iter().collect();
                        self.text.format(&mut txn, at, n, attrs);
                    }
                    1 => {
                        // A string embed reads back from `diff` like text,
                        // which `snap` would count unit by unit: wrap it.
                        let value = match s.any(0) {
                            Any::String(text) => Any::from(vec![Any::String(text)]),
                            value => value,
                        };
                        self.text.insert_embed(&mut txn, at, value);
                    }
                    _ => {
                        let chunk = s.string();
                        let attrs = [(std::sync::Arc::from("italic"), Any::Bool(true))].into_iter().collect();
                        self.text.insert_with_attributes(&mut txn, at, &chunk, attrs);
                    }
                }
            }
            3 => {
                let key = s.key();
                match s.u8() % 5 {
                    0 => {
                        self.map.insert(&mut txn, key, MapPrelim::from([("x", s.any(0))]));
                    }
                    1 => {
                        self.map.insert(&mut txn, key, ArrayPrelim::from([s.any(0), s.any(0)]));
                    }
                    2 => {
                        self.map.insert(&mut txn, key, TextPrelim::new(s.string()));
                    }
                    _ => {
                        let value = s.any(0);
                        self.map.insert(&mut txn, key, value);
                    }
                }
            }
            4 => {
                let key = s.key();
                match self.map.get(&txn, key) {
                    Some(Out::YMap(nested)) => {
                        let (k, v) = (s.key(), s.any(0));
                        nested.insert(&mut txn, k, v);
                    }
                    Some(Out::YArray(nested)) => {
                        let at = s.below(nested.len(&txn) + 1);
                        let v = s.any(0);
                        nested.insert(&mut txn, at, v);
                    }
                    Some(Out::YText(nested)) => {
                        let at = snap(&nested, &txn, s.below(nested.len(&txn) + 1));
                        let chunk = s.string();
                        nested.insert(&mut txn, at, &chunk);
                    }
                    _ => {
                        self.map.remove(&mut txn, key);
                    }
                }
            }
            5 => {
                let at = s.below(self.array.len(&txn) + 1);
                match s.u8() % 4 {
                    0 => {
                        self.array.insert(&mut txn, at, MapPrelim::from([("k", s.any(0))]));
                    }
                    1 => {
                        self.array.insert(&mut txn, at, ArrayPrelim::from([s.any(0)]));
                    }
                    _ => {
                        let value = s.any(0);
                        self.array.insert(&mut txn, at, value);
                    }
                }
            }
            6 => {
                let len = self.array.len(&txn);
                if len > 0 {
                    let at = s.below(len);
                    let n = s.below(len - at).max(1);
                    self.array.remove_range(&mut txn, at, n);
                }
            }
            _ => {
                let len = self.xml.len(&txn);
                let at = s.below(len + 1);
                match s.u8() % 3 {
                    0 => {
                        self.xml.insert(&mut txn, at, XmlElementPrelim::empty("p"));
                    }
                    1 => {
                        self.xml.insert(&mut txn, at, XmlTextPrelim::new(s.string()));
                    }
                    _ => {
                        if len > 0 {
                            let n = s.below(len - at.min(len - 1)).max(1);
                            self.xml.remove_range(&mut txn, at.min(len - 1), n);
                        }
                    }
                }
            }
        }
        let update = txn.encode_update_v1();
        drop(txn);
        self.outbox.push(update);
    }

    /// Receive everything `from` has that this client lacks.
    fn receive(&mut self, from: &Doc) {
        let sv = self.doc.transact().state_vector();
        let missing = from.transact().encode_state_as_update_v1(&sv);
        let update = Update::decode_v1(&missing).expect("a yrs client's own diff decodes");
        let mut txn = self.doc.transact_mut();
        txn.apply_update(update).expect("a yrs client's own diff applies");
        let relayed = txn.encode_update_v1();
        drop(txn);
        self.outbox.push(relayed);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut s = Script { bytes: data, pos: 0 };
    let mut clients: Vec<Client> = CLIENT_IDS.iter().map(|&id| Client::new(id)).collect();
    let mut sent: Vec<Delivery> = Vec::new();
    let mut steps = 0;
    while !s.done() && steps < 64 {
        steps += 1;
        let op = s.u8() % 14;
        let c = usize::from(s.u8() % 3);
        let dump = std::env::var_os("FUZZ_DUMP").is_some();
        let fffd_before: Vec<usize> = if dump {
            clients.iter().map(|c| sync::text(&c.doc, "content").unwrap_or_default().matches('\u{fffd}').count()).collect()
        } else {
            Vec::new()
        };
        match op {
            0..=7 => {
                // Client-side yrs panics are not the server's concern; stop
                // the script there rather than report them.
                let client = &mut clients[c];
                if tolerant(|| client.edit(op, &mut s)).is_err() {
                    return;
                }
            }
            8 => {
                let other = (c + 1 + usize::from(s.u8() % 2)) % 3;
                let from = clients[other].doc.clone();
                let client = &mut clients[c];
                if tolerant(|| client.receive(&from)).is_err() {
                    return;
                }
            }
            9 => {
                let outbox = std::mem::take(&mut clients[c].outbox);
                sent.extend(outbox.into_iter().map(|bytes| Delivery { bytes, real: true }));
            }
            10 => {
                let outbox = std::mem::take(&mut clients[c].outbox);
                if !outbox.is_empty() {
                    let merged = yrs::merge_updates_v1(outbox.iter().map(Vec::as_slice)).expect("real updates merge");
                    sent.push(Delivery {
                        bytes: merged,
                        real: true,
                    });
                }
            }
            11 if !sent.is_empty() => {
                // A real update with one byte changed, or cut short.
                let mut bytes = sent[s.below(sent.len() as u32) as usize].bytes.clone();
                let at = s.below(bytes.len() as u32) as usize;
                match s.u8() % 4 {
                    0 => bytes.truncate(at),
                    1 => bytes.insert(at, s.u8()),
                    _ => {
                        if let Some(byte) = bytes.get_mut(at) {
                            *byte = s.u8();
                        }
                    }
                }
                sent.push(Delivery { bytes, real: false });
            }
            _ => {
                let len = usize::from(s.u16() % 4096);
                let bytes = s.take(len).to_vec();
                sent.push(Delivery { bytes, real: false });
            }
        }
        if dump {
            for (i, client) in clients.iter().enumerate() {
                let now = sync::text(&client.doc, "content").unwrap_or_default().matches('\u{fffd}').count();
                if now != fffd_before[i] {
                    eprintln!("step {steps}: op {op} by client {c} left client {i} with {now} U+FFFD (was {})", fffd_before[i]);
                }
            }
        }
    }
    // Everything still queued reaches the server at the end.
    for client in &mut clients {
        let outbox = std::mem::take(&mut client.outbox);
        sent.extend(outbox.into_iter().map(|bytes| Delivery { bytes, real: true }));
    }

    let mut server = sync::new_doc();
    let mut accepted: Vec<&[u8]> = Vec::new();
    let (mut foreign, mut real_refused) = (false, false);
    let dump = std::env::var_os("FUZZ_DUMP").is_some();
    for delivery in &sent {
        // Raw and mutated bytes come from another user, so, as the gateway's
        // client-id ownership does, they may not add structs under the real
        // clients' ids (finding 10: forged content under a real client's
        // next ids made its own later update fail).
        let outcome = sync::apply_update_admitting(&server, &delivery.bytes, MAX_PENDING, |clients| {
            match clients.iter().find(|client| !delivery.real && CLIENT_IDS.contains(client)) {
                Some(&client) => Err(SyncError::ForeignClient(client)),
                None => Ok(()),
            }
        });
        if dump {
            // Port a finding into a unit test: every delivery and its outcome.
            let hex: String = delivery.bytes.iter().map(|b| format!("{b:02x}")).collect();
            eprintln!("delivery real={} {hex} -> {outcome:?}", delivery.real);
        }
        match outcome {
            Ok(applied) => {
                accepted.push(&delivery.bytes);
                if !delivery.real && !applied.empty {
                    foreign = true;
                }
            }
            Err(SyncError::Panicked) => panic!(
                "yrs panicked applying a validated update ({} bytes: {:02x?})",
                delivery.bytes.len(),
                delivery.bytes
            ),
            Err(SyncError::PendingOverflow) => real_refused |= delivery.real,
            Err(SyncError::PartlyApplied(error)) => {
                assert!(!delivery.real, "yrs stopped midway in a real client update: {error}");
                // The room drops its copy and reloads what was stored.
                let (reloaded, skipped) = sync::load(None, accepted.iter().copied());
                assert_eq!(skipped, 0, "an accepted update does not load again");
                server = reloaded;
            }
            Err(error) => {
                assert!(
                    !delivery.real,
                    "a real client update was refused: {error}\n{:02x?}",
                    delivery.bytes
                );
                assert!(
                    validate::inspect_update(&delivery.bytes).is_err()
                        || !matches!(error, SyncError::BadUpdate(_)),
                    "validate accepted an update yrs cannot decode: {:02x?}",
                    delivery.bytes
                );
            }
        }
    }

    let state = sync::full_state(&server).expect("full_state of the server document");
    assert!(validate::inspect_update(&state).is_ok(), "our own full state fails our validator");
    if has_root(&server, "content") {
        sync::text(&server, "content").expect("text of an existing root");
    }
    let snapshot = sync::snapshot(&server).expect("snapshot of the server document");
    assert!(validate::inspect_update(&snapshot).is_ok(), "our own snapshot fails our validator");

    let (reloaded, skipped) = sync::load(Some(&snapshot), NO_UPDATES);
    assert_eq!(skipped, 0, "the snapshot does not load");
    assert_same("server vs snapshot -> load", &server, &reloaded);

    let (fresh, skipped) = sync::load(None, accepted.iter().copied());
    assert_eq!(skipped, 0, "an accepted update does not load again");
    assert_same("server vs fresh apply of the accepted updates", &server, &fresh);

    if !foreign && !real_refused {
        // Every client learns everything; the server must hold the same.
        let synced = tolerant(|| {
            for _ in 0..2 {
                for c in 0..3 {
                    for other in 0..3 {
                        if c != other {
                            let from = clients[other].doc.clone();
                            clients[c].receive(&from);
                        }
                    }
                }
            }
        });
        if synced.is_err() {
            return;
        }
        // Syncing makes changes of its own (yrs cleans up formatting
        // attributes left with nothing between them): the server gets them too.
        for client in &mut clients {
            for update in std::mem::take(&mut client.outbox) {
                let applied = sync::apply_update(&server, &update, MAX_PENDING);
                assert!(applied.is_ok(), "a real client update was refused: {applied:?}\n{update:02x?}");
            }
        }
        let print = fingerprint(&server);
        assert!(
            !print.pending_structs && !print.pending_deletes,
            "the server still waits after every real update arrived"
        );
        let expected = content(&clients[0].doc);
        let (sv, texts, state) = content(&server);
        assert_eq!(sv, expected.0, "server and clients disagree on the state vector");
        assert_eq!(state, expected.2, "server and clients hold different blocks");
        // The clients define roots the server learns only when something is in them.
        for (name, text) in &texts {
            assert_eq!(Some(text), expected.1.get(name), "server and clients disagree on root {name:?}");
        }
    }
});
