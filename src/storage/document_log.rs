//! The document tables: an append-only update log, snapshots, compaction,
//! and the client-id authors, read and written with SeaORM. The queue and the
//! group commit in front of the appends are in [`super::persister`].
//! Loading is the snapshot plus every remaining update row in seq order
//! (whatever its seq: rows are deleted only by the compaction that folded
//! them, so a row committed late by another instance is never skipped).

use std::sync::Arc;

use anyhow::Context;
use chrono::Utc;
use entity::{document_authors, document_snapshots, document_updates};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait,
    sea_query::{Expr, OnConflict},
};

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    model::{
        ids::DocumentId,
        log::{PriorState, StoredDocument},
    },
    storage::{
        durability::Writes,
        versions::{self, NewVersion},
        webhooks::{self, Hooks},
    },
};

/// Rows per INSERT statement.
const ROWS_PER_STATEMENT: usize = 200;

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
    pub history: Arc<HistoryPolicy>,
}

/// What is kept besides the log: versions, and webhook events.
#[derive(Debug, Clone, Default)]
pub struct HistoryPolicy {
    /// Automatic versions kept per document (`--keep-versions`).
    pub keep_versions: u64,
    /// Compactions save a version first.
    pub version_on_compaction: bool,
    pub hooks: Option<Hooks>,
}

impl DocumentStore {
    pub fn new(db: DatabaseConnection, writes: Arc<Writes>) -> Self {
        Self {
            db,
            writes,
            history: Arc::new(HistoryPolicy {
                keep_versions: 100,
                ..HistoryPolicy::default()
            }),
        }
    }

    pub fn with_history(mut self, history: HistoryPolicy) -> Self {
        self.history = Arc::new(history);
        self
    }

    /// The database, for the versions API.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    #[tracing::instrument(skip(self), fields(document_id = %document_id))]
    pub async fn load(&self, document_id: &DocumentId) -> anyhow::Result<StoredDocument> {
        let snapshot = document_snapshots::Entity::find_by_id(document_id.as_str())
            .one(&self.db)
            .await
            .context("read snapshot")?;
        let rows: Vec<(Vec<u8>, chrono::DateTime<Utc>)> = document_updates::Entity::find()
            .select_only()
            .column(document_updates::Column::Update)
            .column(document_updates::Column::CreatedAt)
            .filter(document_updates::Column::DocumentId.eq(document_id.as_str()))
            .order_by_asc(document_updates::Column::Seq)
            .into_tuple()
            .all(&self.db)
            .await
            .context("read updates")?;
        let last_edit_ms = rows
            .iter()
            .map(|(_, at)| at.timestamp_millis())
            .max()
            .or_else(|| snapshot.as_ref().map(|s| s.updated_at.timestamp_millis()));
        let updates: Vec<Vec<u8>> = rows.into_iter().map(|(update, _)| update).collect();
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
            last_edit_ms,
            authors: authors
                .into_iter()
                .map(|(client, user)| (client as u64, user))
                .collect(),
        })
    }

    /// Append updates (of any documents) in one transaction, on the write
    /// connection: `Ok` only once the commit reached the database.
    pub async fn append(&self, batch: &Batch) -> anyhow::Result<()> {
        let history = &self.history;
        self.writes
            .write(async |db| append_on(db, batch, history).await)
            .await
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
            let state_vector = crate::crdt::sync::state_vector(&doc);
            (crate::crdt::sync::snapshot(&doc), skipped, state_vector)
        })
        .await
        .context("merge updates")?;
        let state_vector = merged.2;
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
        if self.history.version_on_compaction {
            // The document as compacted, kept as an automatic version in
            // the compaction's transaction.
            let version = NewVersion {
                document_id,
                label: None,
                automatic: true,
                created_by: "tandem",
                state: merged.0.clone(),
                state_vector,
            };
            let history = &self.history;
            versions::save(&txn, version, history.keep_versions, history.hooks.as_ref()).await?;
        }
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
async fn append_on(db: &DatabaseConnection, batch: &Batch, history: &HistoryPolicy) -> anyhow::Result<()> {
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
    // Versions of the state before an edit that ended a quiet period: in the
    // edit's transaction, so a version exists exactly when its edit does.
    for (document_id, editor, prior) in &batch.versions {
        let version = NewVersion {
            document_id,
            label: None,
            automatic: true,
            created_by: editor,
            state: prior.state.to_vec(),
            state_vector: prior.state_vector.clone(),
        };
        versions::save(&txn, version, history.keep_versions, history.hooks.as_ref()).await?;
    }
    if let Some(hooks) = &history.hooks {
        for (document_id, (editors, state_vector)) in &batch.edits {
            webhooks::document_edited(&txn, hooks, document_id, editors, state_vector.as_deref()).await?;
        }
    }
    txn.commit().await.context("commit update batch")?;
    Ok(())
}

/// What one group commit writes: update rows, and the client-id claims they make.
pub struct Batch {
    pub updates: Vec<(DocumentId, Arc<[u8]>)>,
    /// (document, Yjs client id, user): written in the same transaction as
    /// the updates, so a claim is exactly as durable as the items it covers.
    pub authors: Vec<(DocumentId, u64, Arc<str>)>,
    /// Automatic versions: (document, the editor whose edit ended the quiet, the state before it).
    pub versions: Vec<(DocumentId, Arc<str>, PriorState)>,
    /// Per document: who edited in this batch, and the state vector after its last update.
    pub edits: BTreeMap<DocumentId, Edits>,
}

/// Who edited a document in one batch, and its state vector after the batch.
pub type Edits = (BTreeSet<Arc<str>>, Option<Vec<u8>>);
