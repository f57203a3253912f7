//! Document editing: docs × editors, each inserting a few characters of a
//! shared Y.Text at a fixed rate. Measures relay latency (an edit's author
//! to the other editors), ack latency where the protocol acks (tandem JSON:
//! after the commit; Hocuspocus: its sync status, after applying), bytes the
//! server wrote to storage, and at the end checks convergence: every client
//! of a document holds the same text and state vector, with every edit in it.
//!
//! An edit's send time is found without a marker in the text: every edit of
//! a client inserts exactly [`EDIT_CHARS`] characters, so the first clock of
//! its update tells which edit it is, and the author's Yjs client id tells
//! who made it (`id_base + slot`).

use std::{
    collections::VecDeque,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use rand::Rng;
use tokio::time::MissedTickBehavior;
use yrs::{
    Assoc, Doc, GetString, IndexedSequence, ReadTxn, StateVector, StickyIndex, Text, Transact, Update,
    updates::decoder::Decode,
};

use crate::{
    common::{Common, connect_all},
    decode::update_origin,
    procstat::{CpuMark, Proc, RssSampler},
    report::{Report, round2, samples},
    scrape,
    timing::{SendTable, Stats, Window, micros_of, now_us, record},
    wire::{Client, Event, Protocol},
};

/// Characters per edit; also the clock step between one client's edits.
const EDIT_CHARS: u64 = 4;
/// The shared text's name, as in tandem's docs and y-websocket demos.
const TEXT: &str = "content";

#[derive(Debug, Clone)]
pub struct EditingParams {
    pub docs: usize,
    pub editors: usize,
    /// Edits per second per editor.
    pub rate: f64,
    pub warmup: Duration,
    pub duration: Duration,
    /// After the last edit, how long to wait for everything to arrive.
    pub settle: Duration,
    /// tandem's SQLite file, to report bytes written to storage per second.
    pub db_path: Option<PathBuf>,
    /// Keep each text at about this many characters: once it is that long,
    /// every edit also deletes [`EDIT_CHARS`] characters (in the same
    /// update), so a long run edits documents of a steady size (the soak).
    pub max_text: Option<u32>,
    /// Type like a person: each editor inserts at its own cursor (after its
    /// last edit) and, with `max_text`, deletes its own oldest characters, so
    /// a document's history stays a few runs per editor however long the
    /// run. Without it, edits go to random places (a worst case for the
    /// CRDT's history: it grows by an item or two per edit).
    pub typing: bool,
}

/// What an editor holds at the end.
struct Final {
    stats: Stats,
    doc: usize,
    text: String,
    state_vector: StateVector,
    edits: u64,
}

pub async fn run(common: &Common, params: EditingParams) -> Report {
    let mut report = Report::new("editing", common.target.protocol.name(), &common.label);
    report.set("docs", params.docs);
    report.set("editors", params.editors);
    report.set("rate_hz", params.rate);
    report.set("duration_s", params.duration.as_secs_f64());
    let mut totals = Stats::default();
    if !common.target.protocol.has_documents() {
        totals.error("this protocol has no documents");
        report.set("errors", totals.errors);
        return report;
    }
    let docs = common.room_docs("e", params.docs, &mut totals).await;
    let identities = common.room_identities(&docs, params.docs * params.editors, params.editors);
    let (clients, _) = connect_all(common, identities, true, &mut totals).await;
    report.set("connections", clients.iter().filter(|c| c.is_some()).count());

    let max_edits = (params.rate * (params.warmup + params.duration).as_secs_f64()) as u64 + 64;
    let table = Arc::new(SendTable::new((max_edits as usize) * clients.len()));
    let window = Window::after(params.warmup, params.duration);
    let stop_at = window.end + params.settle;
    let storage_before = params.db_path.as_deref().map(storage_bytes);
    let mut tasks = tokio::task::JoinSet::new();
    for (slot, client) in clients.into_iter().enumerate() {
        let Some((client, handshake)) = client else {
            continue;
        };
        let editor = Editor {
            slot: slot as u64,
            doc_index: slot / params.editors,
            id_base: common.id_base,
            max_edits,
            table: table.clone(),
            window,
            stop_at,
            rate: params.rate,
            max_text: params.max_text,
            typing: params.typing,
            editors: params.editors as u32,
        };
        tasks.spawn(editor.run(client, handshake.step2));
    }

    let rss = common.server.map(RssSampler::start);
    tokio::time::sleep_until(window.start.into()).await;
    let server_cpu = common.server.map(CpuMark::now);
    let loadgen_cpu = CpuMark::now(Proc::Myself);
    let storage_start = params.db_path.as_deref().map(storage_bytes).or(storage_before);
    let counters_start = scrape::start(common.metrics_url.as_deref()).await;
    tokio::time::sleep_until(window.end.into()).await;
    scrape::finish(
        &mut report,
        common.metrics_url.as_deref(),
        counters_start,
        window.seconds(),
    )
    .await;
    if let (Some(process), Some(cpu), Some(rss)) = (common.server, &server_cpu, &rss) {
        report.resources(Some((process, cpu, rss)), &loadgen_cpu);
    } else {
        report.resources(None, &loadgen_cpu);
    }
    if let (Some(path), Some(start)) = (params.db_path.as_deref(), storage_start) {
        let grown = storage_bytes(path).saturating_sub(start);
        report.set("storage_bytes_per_s", round2(grown as f64 / window.seconds()));
    }

    let mut finals = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(result) => {
                totals.merge(&result.stats);
                finals.push(result);
            }
            Err(error) => totals.error(format!("editor task failed: {error}")),
        }
    }
    let seconds = window.seconds();
    report.set("edits_per_s", round2(totals.sent as f64 / seconds));
    report.set("delivered_per_s", round2(totals.delivered as f64 / seconds));
    report.histogram("relay", &totals.latency);
    report.histogram("ack", &totals.ack);
    report.set(
        "ack_meaning",
        match common.target.protocol {
            Protocol::TandemJson => "committed to the database",
            Protocol::Hocuspocus => "applied in memory (sync status)",
            _ => "none (the protocol has no acks)",
        },
    );

    // Convergence: per document, every editor's text and state vector agree,
    // and the text holds every edit that was made.
    let mut converged = 0;
    let mut problems = Vec::new();
    for doc in 0..params.docs {
        let editors: Vec<&Final> = finals.iter().filter(|f| f.doc == doc).collect();
        let Some(first) = editors.first() else { continue };
        let edits: u64 = editors.iter().map(|f| f.edits).sum();
        let same = editors
            .iter()
            .all(|f| f.text == first.text && f.state_vector == first.state_vector);
        // Bounded texts lose characters to deletes (concurrent ones may
        // overlap): there, identical is the test.
        let complete = params.max_text.is_some() || first.text.len() as u64 == edits * EDIT_CHARS;
        if same && complete {
            converged += 1;
        } else if problems.len() < 3 {
            problems.push(format!(
                "doc {doc}: identical={same} complete={complete} ({} of {} chars)",
                first.text.len(),
                edits * EDIT_CHARS
            ));
        }
    }
    report.set("converged_docs", converged);
    report.set("converged", converged == params.docs);
    report.set("convergence_problems", samples(&problems));
    report.set("errors", totals.errors);
    report.set("disconnects", totals.disconnects);
    report.set("error_samples", samples(&totals.error_samples));
    report
}

/// The database file plus its write-ahead log.
fn storage_bytes(path: &std::path::Path) -> u64 {
    let size = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    size(path.to_path_buf()) + size(PathBuf::from(wal))
}

struct Editor {
    slot: u64,
    doc_index: usize,
    id_base: u64,
    max_edits: u64,
    table: Arc<SendTable>,
    window: Window,
    stop_at: Instant,
    rate: f64,
    max_text: Option<u32>,
    typing: bool,
    editors: u32,
}

/// Where a typing editor's text is: after its last edit, and its oldest
/// character still there.
#[derive(Default)]
struct Typist {
    cursor: Option<StickyIndex>,
    oldest: Option<StickyIndex>,
    live: u32,
}

impl Editor {
    /// One edit of a typing editor: delete its own oldest characters once it
    /// holds its share of `max_text`, then insert at its cursor.
    fn type_chunk(
        &self,
        typist: &mut Typist,
        text: &yrs::TextRef,
        txn: &mut yrs::TransactionMut,
        chunk: &str,
    ) {
        let share = self
            .max_text
            .map(|max| (max / self.editors.max(1)).max(2 * EDIT_CHARS as u32));
        if share.is_some_and(|share| typist.live >= share)
            && let Some(oldest) = typist.oldest.as_ref().and_then(|s| s.get_offset(txn))
        {
            text.remove_range(txn, oldest.index, EDIT_CHARS as u32);
            typist.live -= EDIT_CHARS as u32;
            typist.oldest = text.sticky_index(txn, oldest.index, Assoc::After);
        }
        let at = typist
            .cursor
            .as_ref()
            .and_then(|c| c.get_offset(txn))
            .map_or_else(|| text.len(txn), |offset| offset.index);
        text.insert(txn, at, chunk);
        if typist.oldest.is_none() {
            typist.oldest = text.sticky_index(txn, at, Assoc::After);
        }
        typist.live += EDIT_CHARS as u32;
        typist.cursor = text.sticky_index(txn, at + EDIT_CHARS as u32, Assoc::Before);
    }

    async fn run(self, mut client: Client, step2: Option<Vec<u8>>) -> Final {
        let mut stats = Stats::default();
        let doc = Doc::with_client_id(self.id_base + self.slot);
        let text = doc.get_or_insert_text(TEXT);
        if let Some(update) = step2 {
            apply(&doc, &update, &mut stats);
        }
        let period = Duration::from_secs_f64(1.0 / self.rate);
        let phase = period.mul_f64(rand::rng().random::<f64>());
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + phase, period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let stop = tokio::time::sleep_until(self.stop_at.into());
        tokio::pin!(stop);
        let mut pending_acks: VecDeque<(u64, Instant)> = VecDeque::new();
        let mut edits: u64 = 0;
        let mut typist = Typist::default();
        let mut events = Vec::new();
        let letter = b'a' + (self.slot % 26) as u8;
        let chunk: String = std::iter::repeat_n(letter as char, EDIT_CHARS as usize).collect();
        loop {
            tokio::select! {
                frame = client.recv() => {
                    let frame = match frame {
                        Some(Ok(frame)) => frame,
                        Some(Err(error)) => { stats.disconnect(format!("receive failed: {error}")); break; }
                        None => { stats.disconnect("closed by server"); break; }
                    };
                    client.decode(&frame, false, &mut events);
                    let now = Instant::now();
                    for event in events.drain(..) {
                        match event {
                            Event::Update(update) => {
                                self.measure_relay(&update, now, &mut stats);
                                apply(&doc, &update, &mut stats);
                            }
                            Event::Step2(update) => apply(&doc, &update, &mut stats),
                            Event::ServerStep1(state_vector) => {
                                let diff = match StateVector::decode_v1(&state_vector) {
                                    Ok(sv) => doc.transact().encode_state_as_update_v1(&sv),
                                    Err(_) => { stats.error("undecodable server state vector"); continue; }
                                };
                                if let Err(error) = client.send_step2(&diff).await {
                                    stats.disconnect(format!("{error:#}"));
                                }
                            }
                            Event::Ack(id) => ack(&mut pending_acks, id, now, self.window, &mut stats),
                            Event::SyncStatus(true) => {
                                if let Some((id, _)) = pending_acks.front() {
                                    let id = *id;
                                    ack(&mut pending_acks, id, now, self.window, &mut stats);
                                }
                            }
                            Event::Error(error) => stats.error(error),
                            _ => {}
                        }
                    }
                }
                _ = ticker.tick(), if edits < self.max_edits => {
                    let now = Instant::now();
                    if now >= self.window.end {
                        edits = self.max_edits.max(edits);
                        continue;
                    }
                    let update = if self.typing {
                        let mut txn = doc.transact_mut();
                        self.type_chunk(&mut typist, &text, &mut txn, &chunk);
                        txn.encode_update_v1()
                    } else {
                        let mut txn = doc.transact_mut();
                        let mut length = text.len(&txn);
                        if self.max_text.is_some_and(|max| length >= max.max(EDIT_CHARS as u32)) {
                            let from = rand::rng().random_range(0..=length - EDIT_CHARS as u32);
                            text.remove_range(&mut txn, from, EDIT_CHARS as u32);
                            length -= EDIT_CHARS as u32;
                        }
                        let at = rand::rng().random_range(0..=length);
                        text.insert(&mut txn, at, &chunk);
                        txn.encode_update_v1()
                    };
                    let edit = edits;
                    self.table.record(self.key(edit), now_us());
                    let ack_id = client.protocol == Protocol::TandemJson || client.protocol == Protocol::Hocuspocus;
                    if ack_id {
                        pending_acks.push_back((edit, now));
                    }
                    if let Err(error) = client.send_update(&update, ack_id.then_some(edit)).await {
                        stats.disconnect(format!("{error:#}"));
                        break;
                    }
                    edits += 1;
                    if self.window.contains(now) {
                        stats.sent += 1;
                    }
                }
                _ = &mut stop => break,
            }
        }
        client.close().await;
        let txn = doc.transact();
        let text = text.get_string(&txn);
        let own = txn
            .state_vector()
            .get(&yrs::block::ClientID::new(self.id_base + self.slot));
        Final {
            stats,
            doc: self.doc_index,
            text,
            state_vector: txn.state_vector(),
            edits: u64::from(own) / EDIT_CHARS,
        }
    }

    fn key(&self, edit: u64) -> u64 {
        self.slot * self.max_edits + edit
    }

    /// Relay latency of another editor's edit sent inside the window.
    fn measure_relay(&self, update: &[u8], now: Instant, stats: &mut Stats) {
        let Some((client, clock)) = update_origin(update) else {
            return;
        };
        let Some(slot) = client.checked_sub(self.id_base) else {
            return;
        };
        if slot == self.slot || slot >= u64::MAX / self.max_edits.max(1) {
            return;
        }
        let edit = clock / EDIT_CHARS;
        if edit >= self.max_edits {
            return;
        }
        if let Some(sent) = self.table.lookup(slot * self.max_edits + edit)
            && self.window.contains_us(sent)
        {
            stats.delivered += 1;
            record(&mut stats.latency, micros_of(now).saturating_sub(sent));
        }
    }
}

fn apply(doc: &Doc, update: &[u8], stats: &mut Stats) {
    match Update::decode_v1(update) {
        Ok(update) => {
            if let Err(error) = doc.transact_mut().apply_update(update) {
                stats.error(format!("update did not apply: {error}"));
            }
        }
        Err(error) => stats.error(format!("undecodable update: {error}")),
    }
}

/// Acks arrive in send order: everything before `id` was acked or lost.
fn ack(pending: &mut VecDeque<(u64, Instant)>, id: u64, now: Instant, window: Window, stats: &mut Stats) {
    while let Some(&(waiting, sent)) = pending.front() {
        if waiting > id {
            break;
        }
        pending.pop_front();
        if waiting == id {
            if window.contains(sent) {
                record(&mut stats.ack, (now - sent).as_micros() as u64);
            }
            break;
        }
    }
}
