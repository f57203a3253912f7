//! Durable documents: an append-only update log, snapshots, compaction, and
//! the group-commit persister that acknowledges updates once committed.
//!
//! One persister task owns all writes of updates: it takes everything that
//! queued while its previous commit ran and commits it in one transaction
//! (group commit), so durability costs one transaction per batch, not per
//! keystroke. A failed commit is retried; nothing queued is dropped. An
//! update is acknowledged only after its commit reached the database (on the
//! dedicated write connection of [`Writes`]); while commits fail, every
//! sender is told at once that its update is not durable yet (socket:
//! `document_unavailable`; REST: 503), and the ack follows the commit that
//! succeeds once the database recovers.
//! Loading is the snapshot plus every remaining update row in seq order
//! (whatever its seq: rows are deleted only by the compaction that folded
//! them, so a row committed late by another instance is never skipped).

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use anyhow::Context;
use chrono::Utc;
use entity::{document_authors, document_snapshots, document_updates};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait,
    sea_query::{Expr, OnConflict},
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    model::{
        ids::DocumentId,
        log::{BoxFuture, DocumentLog, LogCounters, LogSlot, LogWrite, StoredDocument, WriteEvent},
    },
    storage::durability::Writes,
};

/// Rows per INSERT statement.
const ROWS_PER_STATEMENT: usize = 200;
/// Updates committed in one transaction at most.
const MAX_BATCH: usize = 2000;
/// Longest pause between attempts at a failing commit: also how long after the
/// database recovers the queued updates may wait for their commit.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What a compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compaction {
    Folded {
        updates: u64,
        bytes: u64,
    },
    NothingToDo,
    /// Another compaction (another instance) replaced the snapshot first; try later.
    Conflict,
}

/// Database access for documents.
#[derive(Clone)]
pub struct DocumentStore {
    db: DatabaseConnection,
    /// Where appends are committed, and whether that works.
    pub writes: Arc<Writes>,
}

impl DocumentStore {
    pub fn new(db: DatabaseConnection, writes: Arc<Writes>) -> Self {
        Self { db, writes }
    }

    #[tracing::instrument(skip(self), fields(document_id = %document_id))]
    pub async fn load(&self, document_id: &DocumentId) -> anyhow::Result<StoredDocument> {
        let snapshot = document_snapshots::Entity::find_by_id(document_id.as_str())
            .one(&self.db)
            .await
            .context("read snapshot")?;
        let updates: Vec<Vec<u8>> = document_updates::Entity::find()
            .select_only()
            .column(document_updates::Column::Update)
            .filter(document_updates::Column::DocumentId.eq(document_id.as_str()))
            .order_by_asc(document_updates::Column::Seq)
            .into_tuple()
            .all(&self.db)
            .await
            .context("read updates")?;
        let update_bytes = updates.iter().map(|u| u.len() as u64).sum();
        let authors: Vec<(i64, String)> = document_authors::Entity::find()
            .select_only()
            .column(document_authors::Column::ClientId)
            .column(document_authors::Column::UserId)
            .filter(document_authors::Column::DocumentId.eq(document_id.as_str()))
            .into_tuple()
            .all(&self.db)
            .await
            .context("read client id authors")?;
        Ok(StoredDocument {
            snapshot: snapshot.map(|s| s.state),
            updates,
            update_bytes,
            authors: authors
                .into_iter()
                .map(|(client, user)| (client as u64, user))
                .collect(),
        })
    }

    /// Append updates (of any documents) in one transaction, on the write
    /// connection: `Ok` only once the commit reached the database.
    pub async fn append(&self, batch: &Batch) -> anyhow::Result<()> {
        self.writes.write(async |db| append_on(db, batch).await).await
    }

    /// Number of update rows not yet folded into the snapshot.
    pub async fn updates_since_snapshot(&self, document_id: &DocumentId) -> anyhow::Result<u64> {
        use sea_orm::PaginatorTrait;
        document_updates::Entity::find()
            .filter(document_updates::Column::DocumentId.eq(document_id.as_str()))
            .count(&self.db)
            .await
            .context("count updates")
    }

    /// Fold the document's update rows into its snapshot, in one transaction.
    #[tracing::instrument(skip(self), fields(document_id = %document_id))]
    pub async fn compact(&self, document_id: &DocumentId) -> anyhow::Result<Compaction> {
        // Read outside the write transaction: a SQLite transaction that reads
        // first and writes later cannot upgrade once the persister committed
        // in between (SQLITE_BUSY, no retry). The snapshot replacement below is
        // conditional on the snapshot read here, and exactly the rows read are
        // deleted, so a concurrent compaction or append is never lost.
        let snapshot = document_snapshots::Entity::find_by_id(document_id.as_str())
            .one(&self.db)
            .await
            .context("read snapshot")?;
        let rows: Vec<(i64, Vec<u8>)> = document_updates::Entity::find()
            .select_only()
            .column(document_updates::Column::Seq)
            .column(document_updates::Column::Update)
            .filter(document_updates::Column::DocumentId.eq(document_id.as_str()))
            .order_by_asc(document_updates::Column::Seq)
            .into_tuple()
            .all(&self.db)
            .await
            .context("read updates")?;
        if rows.is_empty() {
            return Ok(Compaction::NothingToDo);
        }
        let bytes: u64 = rows.iter().map(|(_, u)| u.len() as u64).sum();
        let max_seq = rows.iter().map(|(seq, _)| *seq).max().unwrap_or_default();
        let previous = snapshot.as_ref().map(|s| s.state.clone());
        let updates: Vec<Vec<u8>> = rows.iter().map(|(_, u)| u.clone()).collect();
        let merged = tokio::task::spawn_blocking(move || {
            let (doc, skipped) = crate::crdt::sync::load(previous.as_deref(), updates);
            (crate::crdt::sync::snapshot(&doc), skipped)
        })
        .await
        .context("merge updates")?;
        let merged = (
            merged
                .0
                .context("yrs could not encode the merged document; its log is kept as it is")?,
            merged.1,
        );
        if merged.1 > 0 {
            tracing::error!(
                skipped = merged.1,
                "compaction skipped undecodable stored updates"
            );
        }
        let now = Utc::now();
        let txn = self.db.begin().await.context("begin compaction")?;
        match snapshot {
            Some(old) => {
                let result = document_snapshots::Entity::update_many()
                    .col_expr(document_snapshots::Column::State, Expr::value(merged.0))
                    .col_expr(
                        document_snapshots::Column::LastSeq,
                        Expr::value(max_seq.max(old.last_seq)),
                    )
                    .col_expr(document_snapshots::Column::UpdatedAt, Expr::value(now))
                    .filter(document_snapshots::Column::DocumentId.eq(document_id.as_str()))
                    .filter(document_snapshots::Column::LastSeq.eq(old.last_seq))
                    .exec(&txn)
                    .await
                    .context("replace snapshot")?;
                if result.rows_affected != 1 {
                    return Ok(Compaction::Conflict);
                }
            }
            None => {
                let inserted = document_snapshots::Model {
                    document_id: document_id.as_str().to_owned(),
                    state: merged.0,
                    last_seq: max_seq,
                    updated_at: now,
                }
                .into_active_model()
                .reset_all()
                .insert(&txn)
                .await;
                if inserted.is_err() {
                    return Ok(Compaction::Conflict);
                }
            }
        }
        // Delete exactly the rows folded in: a row another instance commits
        // meanwhile (even with a lower seq) stays and is replayed on load.
        let seqs: Vec<i64> = rows.iter().map(|(seq, _)| *seq).collect();
        for chunk in seqs.chunks(500) {
            document_updates::Entity::delete_many()
                .filter(document_updates::Column::Seq.is_in(chunk.iter().copied()))
                .exec(&txn)
                .await
                .context("delete folded updates")?;
        }
        txn.commit().await.context("commit compaction")?;
        Ok(Compaction::Folded {
            updates: rows.len() as u64,
            bytes,
        })
    }
}

/// One transaction of inserts, committed.
async fn append_on(db: &DatabaseConnection, batch: &Batch) -> anyhow::Result<()> {
    let now = Utc::now();
    let txn = db.begin().await.context("begin update batch")?;
    for chunk in batch.updates.chunks(ROWS_PER_STATEMENT) {
        let rows = chunk
            .iter()
            .map(|(document_id, update)| document_updates::ActiveModel {
                seq: sea_orm::ActiveValue::NotSet,
                document_id: sea_orm::ActiveValue::Set(document_id.as_str().to_owned()),
                update: sea_orm::ActiveValue::Set(update.to_vec()),
                created_at: sea_orm::ActiveValue::Set(now),
            });
        document_updates::Entity::insert_many(rows)
            .exec_without_returning(&txn)
            .await
            .context("insert updates")?;
    }
    for chunk in batch.authors.chunks(ROWS_PER_STATEMENT) {
        let rows = chunk
            .iter()
            .map(|(document_id, client, user)| document_authors::ActiveModel {
                document_id: sea_orm::ActiveValue::Set(document_id.as_str().to_owned()),
                // Client ids are validated to at most 2^53 - 1.
                client_id: sea_orm::ActiveValue::Set(*client as i64),
                user_id: sea_orm::ActiveValue::Set(user.to_string()),
                created_at: sea_orm::ActiveValue::Set(now),
            });
        // Another instance may have recorded the same claim: the first one stands.
        document_authors::Entity::insert_many(rows)
            .on_conflict(
                OnConflict::columns([
                    document_authors::Column::DocumentId,
                    document_authors::Column::ClientId,
                ])
                .do_nothing()
                .to_owned(),
            )
            .try_insert()
            .exec_without_returning(&txn)
            .await
            .context("insert client id authors")?;
    }
    txn.commit().await.context("commit update batch")?;
    Ok(())
}

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
            let outcome = store.append(&rows).await;
            store.writes.commit_outcome(outcome.is_ok());
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
    }
}

/// What one group commit writes: update rows, and the client-id claims they make.
pub struct Batch {
    pub updates: Vec<(DocumentId, Arc<[u8]>)>,
    /// (document, Yjs client id, user): written in the same transaction as
    /// the updates, so a claim is exactly as durable as the items it covers.
    pub authors: Vec<(DocumentId, u64, Arc<str>)>,
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
            }
            Ok(Compaction::NothingToDo) => {
                room.stored_updates.store(0, Ordering::Relaxed);
                room.stored_bytes.store(0, Ordering::Relaxed);
            }
            Ok(Compaction::Conflict) => {
                tracing::debug!(%document_id, "compaction raced another; will retry")
            }
            Err(error) => {
                tracing::warn!(%document_id, error = format!("{error:#}"), "compaction failed")
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
