//! `document_authors`: which user writes under each Yjs client id of a document.
//!
//! A client id belongs to the first user who adds items under it; the row is
//! written in the same transaction as that update, so a claim is exactly as
//! durable as the items it covers. The primary key `(document_id, client_id)`
//! is also the lookup a document load makes.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(DocumentAuthors::Table)
                    .if_not_exists()
                    .col(string_len(DocumentAuthors::DocumentId, 256))
                    .col(big_integer(DocumentAuthors::ClientId))
                    .col(string_len(DocumentAuthors::UserId, 256))
                    .col(timestamp_with_time_zone(DocumentAuthors::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(DocumentAuthors::DocumentId)
                            .col(DocumentAuthors::ClientId),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(DocumentAuthors::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum DocumentAuthors {
    Table,
    DocumentId,
    ClientId,
    UserId,
    CreatedAt,
}
