//! `api_keys`: credentials for agents and backends (`tandem apikey create`).
//!
//! Only a key's SHA-256 is stored: the key itself is shown once and never
//! kept. Indexes, each for a query the gateway runs:
//! - the primary key `id`: `tandem apikey revoke ID`, and the `last_used_at` touch.
//! - `idx_api_keys_key_hash` unique on `key_hash`: verifying a presented key
//!   is one lookup by its hash; unique because two rows with one hash would
//!   be one credential with two meanings.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .if_not_exists()
                    .col(uuid(ApiKeys::Id).primary_key())
                    .col(string_len(ApiKeys::Name, 256))
                    // Lowercase hex of the SHA-256 of the whole key (`tk_...`).
                    .col(string_len(ApiKeys::KeyHash, 64))
                    // A JSON array of document ids / `prefix*` patterns; NULL = every document.
                    .col(text_null(ApiKeys::Docs))
                    .col(string_len(ApiKeys::Role, 16))
                    .col(timestamp_with_time_zone(ApiKeys::CreatedAt))
                    .col(timestamp_with_time_zone_null(ApiKeys::ExpiresAt))
                    .col(timestamp_with_time_zone_null(ApiKeys::RevokedAt))
                    .col(timestamp_with_time_zone_null(ApiKeys::LastUsedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_api_keys_key_hash")
                    .table(ApiKeys::Table)
                    .col(ApiKeys::KeyHash)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ApiKeys::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    Name,
    KeyHash,
    Docs,
    Role,
    CreatedAt,
    ExpiresAt,
    RevokedAt,
    LastUsedAt,
}
