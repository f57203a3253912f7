//! The group-commit persister in front of the document log, and the
//! [`DocumentLog`] rooms write through.
//!
//! One persister task owns all writes of updates: it takes everything that
//! queued while its previous commit ran and commits it in one transaction
//! (group commit), so durability costs one transaction per batch, not per
//! keystroke. A failed commit is retried; nothing queued is dropped. An
//! update is acknowledged only after its commit reached the database (on the
//! dedicated write connection of [`Writes`]); while commits fail, every
//! sender is told at once that its update is not durable yet, and told again
//! when the commit that succeeds once the database recovers lands. It also
//! starts compactions when a document's log has grown past the policy.

use std::{
    collections::BTreeMap,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use tokio::sync::{mpsc, oneshot};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    model::{
        ids::DocumentId,
        log::{BoxFuture, DocumentLog, LogCounters, LogSlot, LogWrite, StoredDocument, WriteEvent},
    },
    storage::{
        document_log::{Batch, Compaction, DocumentStore},
        durability::Writes,
    },
};

/// Updates committed in one transaction at most.
const MAX_BATCH: usize = 2000;
/// Longest pause between attempts at a failing commit: also how long after the
/// database recovers the queued updates may wait for their commit.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// When to compact a document.
#[derive(Debug, Clone, Copy)]
pub struct CompactionPolicy {
    pub after_updates: u64,
    pub after_bytes: u64,
}

/// The queue in front of the persister.
#[derive(Clone)]
pub struct Persister {
    queue: mpsc::Sender<Queued>,
    writes: Arc<Writes>,
}

impl Persister {
    /// Reserve room in the queue before an update is applied, so an update
    /// is never applied in memory without a place in the durable queue.
    pub fn try_reserve(&self) -> Option<Reservation<'_>> {
        let permit = self.queue.try_reserve().ok()?;
        Some(Reservation {
            permit,
            writes: &self.writes,
        })
    }
}

/// A place in the persister's queue.
pub struct Reservation<'a> {
    permit: mpsc::Permit<'a, Queued>,
    writes: &'a Writes,
}

impl Reservation<'_> {
    /// Queue the write. While commits fail its sender is told at once rather
    /// than left waiting in silence (the persister, retrying, cannot tell it).
    pub fn send(self, mut write: LogWrite) {
        let told = self.writes.commits_failing();
        if told {
            (write.notify)(WriteEvent::NotDurableYet);
        }
        self.permit.send(Queued { write, told });
    }
}

/// A write in the persister's queue.
struct Queued {
    write: LogWrite,
    /// Its sender was told it is not durable yet (told once, acked once).
    told: bool,
}

impl Queued {
    fn tell_not_durable_yet(&mut self) {
        if !self.told {
            (self.write.notify)(WriteEvent::NotDurableYet);
            self.told = true;
        }
    }
}

/// Start the persister: returns its queue and the task to run.
pub fn persister(
    store: DocumentStore,
    capacity: usize,
    policy: CompactionPolicy,
    tracker: TaskTracker,
    stop: CancellationToken,
) -> (Persister, impl std::future::Future<Output = ()>) {
    let (queue, receiver) = mpsc::channel(capacity);
    let writes = store.writes.clone();
    (
        Persister { queue, writes },
        run_persister(store, receiver, policy, tracker, stop),
    )
}

/// Attempts at one batch after shutdown began before it is given up (and logged).
const ATTEMPTS_AFTER_STOP: u32 = 50;

async fn run_persister(
    store: DocumentStore,
    mut receiver: mpsc::Receiver<Queued>,
    policy: CompactionPolicy,
    tracker: TaskTracker,
    stop: CancellationToken,
) {
    let mut batch: Vec<Queued> = Vec::new();
    let mut closed = false;
    loop {
        // On stop, refuse new updates but commit everything already queued.
        let received = tokio::select! {
            received = receiver.recv_many(&mut batch, MAX_BATCH) => received,
            _ = stop.cancelled(), if !closed => {
                receiver.close();
                closed = true;
                continue;
            }
        };
        if received == 0 {
            break;
        }
        let mut rows = rows_of(&batch);
        let mut backoff = Duration::from_millis(20);
        let mut attempts = 0u32;
        let committed = loop {
            let started = std::time::Instant::now();
            let outcome = store.append(&rows).await;
            store.writes.commit_outcome(outcome.is_ok());
            metrics::histogram!("tandem_commit_seconds").record(started.elapsed().as_secs_f64());
            if outcome.is_err() {
                metrics::counter!("tandem_database_errors_total").increment(1);
            } else {
                metrics::counter!("tandem_updates_stored_total").increment(rows.updates.len() as u64);
            }
            match outcome {
                Ok(()) => break true,
                Err(error) => {
                    attempts += 1;
                    // Everything queued before the failure was known waits
                    // behind this batch: take it in (one transaction commits
                    // it all on recovery) and tell every sender now.
                    while batch.len() < MAX_BATCH {
                        match receiver.try_recv() {
                            Ok(queued) => batch.push(queued),
                            Err(_) => break,
                        }
                    }
                    if batch.len() != rows.updates.len() {
                        rows = rows_of(&batch);
                    }
                    batch.iter_mut().for_each(Queued::tell_not_durable_yet);
                    if stop.is_cancelled() && attempts > ATTEMPTS_AFTER_STOP {
                        tracing::error!(
                            error = format!("{error:#}"),
                            updates = rows.updates.len(),
                            "giving up on unacknowledged updates at shutdown"
                        );
                        break false;
                    }
                    if attempts == 1 || attempts.is_power_of_two() {
                        tracing::error!(
                            error = format!("{error:#}"),
                            updates = rows.updates.len(),
                            attempts,
                            "committing document updates failed; nothing is acknowledged until a commit succeeds"
                        );
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        };
        if committed && attempts > 0 {
            tracing::info!(
                updates = rows.updates.len(),
                attempts,
                "committing document updates recovered"
            );
        }
        for Queued { mut write, .. } in batch.drain(..) {
            let counters = &write.counters;
            counters.unpersisted.fetch_sub(1, Ordering::AcqRel);
            if !committed {
                (write.notify)(WriteEvent::GaveUp);
                continue;
            }
            counters.stored_updates.fetch_add(1, Ordering::Relaxed);
            counters
                .stored_bytes
                .fetch_add(write.update.len() as u64, Ordering::Relaxed);
            (write.notify)(WriteEvent::Committed);
            maybe_compact(&store, &write.document_id, &write.counters, policy, &tracker);
        }
    }
}

/// The rows a batch inserts.
fn rows_of(batch: &[Queued]) -> Batch {
    Batch {
        updates: batch
            .iter()
            .map(|q| (q.write.document_id.clone(), q.write.update.clone()))
            .collect(),
        authors: batch
            .iter()
            .flat_map(|q| {
                q.write
                    .authors
                    .iter()
                    .map(|(client, user)| (q.write.document_id.clone(), *client, user.clone()))
            })
            .collect(),
        versions: batch
            .iter()
            .filter_map(|q| {
                let prior = q.write.version_before.clone()?;
                Some((q.write.document_id.clone(), q.write.editor.clone(), prior))
            })
            .collect(),
        edits: batch.iter().fold(BTreeMap::new(), |mut edits, q| {
            let entry: &mut crate::storage::document_log::Edits =
                edits.entry(q.write.document_id.clone()).or_default();
            entry.0.insert(q.write.editor.clone());
            if q.write.state_vector_after.is_some() {
                entry.1.clone_from(&q.write.state_vector_after);
            }
            edits
        }),
    }
}

/// Attempts after a compaction that conflicted or failed.
const COMPACTION_RETRIES: u32 = 4;

/// Compact off the per-message path when a document's log has grown past the policy.
fn maybe_compact(
    store: &DocumentStore,
    document_id: &DocumentId,
    counters: &Arc<LogCounters>,
    policy: CompactionPolicy,
    tracker: &TaskTracker,
) {
    let room = counters;
    let updates = room.stored_updates.load(Ordering::Relaxed);
    let bytes = room.stored_bytes.load(Ordering::Relaxed);
    if updates <= policy.after_updates && bytes <= policy.after_bytes {
        return;
    }
    if room.compacting.swap(true, Ordering::AcqRel) {
        return;
    }
    let store = store.clone();
    let room = room.clone();
    let document_id = document_id.clone();
    tracker.spawn(async move {
        // A conflict or a failure (a busy database) is retried a few times:
        // the next trigger may be far away if the document goes quiet.
        let mut outcome = store.compact(&document_id).await;
        for attempt in 0..COMPACTION_RETRIES {
            if matches!(outcome, Ok(Compaction::Folded { .. } | Compaction::NothingToDo)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            outcome = store.compact(&document_id).await;
        }
        match outcome {
            Ok(Compaction::Folded { updates, bytes }) => {
                room.stored_updates.fetch_sub(
                    updates.min(room.stored_updates.load(Ordering::Relaxed)),
                    Ordering::Relaxed,
                );
                room.stored_bytes.fetch_sub(
                    bytes.min(room.stored_bytes.load(Ordering::Relaxed)),
                    Ordering::Relaxed,
                );
                tracing::info!(%document_id, updates, bytes, "compacted document");
                metrics::counter!("tandem_compactions_total", "result" => "folded").increment(1);
            }
            Ok(Compaction::NothingToDo) => {
                room.stored_updates.store(0, Ordering::Relaxed);
                room.stored_bytes.store(0, Ordering::Relaxed);
            }
            Ok(Compaction::Conflict) => {
                tracing::debug!(%document_id, "compaction raced another; will retry")
            }
            Err(error) => {
                tracing::warn!(%document_id, error = format!("{error:#}"), "compaction failed");
                metrics::counter!("tandem_compactions_total", "result" => "failed").increment(1);
            }
        }
        room.compacting.store(false, Ordering::Release);
    });
}

/// Cancel-safe helper for callers that await a commit with a deadline.
pub async fn wait_durable(done: oneshot::Receiver<()>, stop: &CancellationToken) -> bool {
    tokio::select! {
        result = done => result.is_ok(),
        _ = stop.cancelled() => false,
    }
}

/// The database behind the [`DocumentLog`] trait: loads from the store, writes
/// through the group-commit persister.
pub struct Log {
    pub store: DocumentStore,
    pub persister: Persister,
}

impl DocumentLog for Log {
    fn load<'a>(&'a self, document_id: &'a DocumentId) -> BoxFuture<'a, anyhow::Result<StoredDocument>> {
        Box::pin(self.store.load(document_id))
    }

    fn try_reserve(&self) -> Option<LogSlot<'_>> {
        let reservation = self.persister.try_reserve()?;
        Some(LogSlot::new(move |write| reservation.send(write)))
    }
}
