//! `document_versions`: named and automatic versions of a document, each the
//! whole document as one Yjs update (self-contained: compaction of the
//! update log never touches what a version needs).
//!
//! Indexes, each for a query the gateway runs:
//! - the primary key `id` (UUIDv7, so time-ordered): reading one version.
//! - `idx_document_versions_doc_id (document_id, id)`: listing a document's
//!   versions newest first, a page at a time, and pruning its oldest
//!   automatic ones.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(DocumentVersions::Table)
                    .if_not_exists()
                    .col(uuid(DocumentVersions::Id).primary_key())
                    .col(string_len(DocumentVersions::DocumentId, 256))
                    .col(string_len_null(DocumentVersions::Label, 256))
                    // Saved by the gateway (quiet time, compaction, before a restore), not by a user's request.
                    .col(boolean(DocumentVersions::Automatic))
                    .col(timestamp_with_time_zone(DocumentVersions::CreatedAt))
                    .col(string_len(DocumentVersions::CreatedBy, 256))
                    .col(blob(DocumentVersions::State))
                    .col(blob(DocumentVersions::StateVector))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_document_versions_doc_id")
                    .table(DocumentVersions::Table)
                    .col(DocumentVersions::DocumentId)
                    .col(DocumentVersions::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(DocumentVersions::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum DocumentVersions {
    Table,
    Id,
    DocumentId,
    Label,
    Automatic,
    CreatedAt,
    CreatedBy,
    State,
    StateVector,
}
