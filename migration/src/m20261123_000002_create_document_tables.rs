//! `document_updates` (append-only log) and `document_snapshots` (compacted state).
//!
//! Indexes:
//! - `document_updates.seq` is the primary key: a global auto-increment, so two
//!   instances appending to one document never collide.
//! - `idx_document_updates_doc_seq (document_id, seq)`: loading a document replays
//!   its remaining updates in seq order, and compaction counts and folds them.
//! - `document_snapshots.document_id` is the primary key: one snapshot per document.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(DocumentUpdates::Table)
                    .if_not_exists()
                    .col(big_pk_auto(DocumentUpdates::Seq))
                    .col(string_len(DocumentUpdates::DocumentId, 256))
                    .col(blob(DocumentUpdates::Update))
                    .col(timestamp_with_time_zone(DocumentUpdates::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_document_updates_doc_seq")
                    .table(DocumentUpdates::Table)
                    .col(DocumentUpdates::DocumentId)
                    .col(DocumentUpdates::Seq)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(DocumentSnapshots::Table)
                    .if_not_exists()
                    .col(string_len(DocumentSnapshots::DocumentId, 256).primary_key())
                    .col(blob(DocumentSnapshots::State))
                    .col(big_integer(DocumentSnapshots::LastSeq))
                    .col(timestamp_with_time_zone(DocumentSnapshots::UpdatedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(DocumentSnapshots::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(DocumentUpdates::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum DocumentUpdates {
    Table,
    Seq,
    DocumentId,
    Update,
    CreatedAt,
}

#[derive(DeriveIden)]
enum DocumentSnapshots {
    Table,
    DocumentId,
    State,
    LastSeq,
    UpdatedAt,
}
