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

use crate::{
    model::{ids::DocumentId, log::StoredDocument},
    storage::durability::Writes,
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

/// What one group commit writes: update rows, and the client-id claims they make.
pub struct Batch {
    pub updates: Vec<(DocumentId, Arc<[u8]>)>,
    /// (document, Yjs client id, user): written in the same transaction as
    /// the updates, so a claim is exactly as durable as the items it covers.
    pub authors: Vec<(DocumentId, u64, Arc<str>)>,
}
