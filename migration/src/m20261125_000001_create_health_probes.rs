//! `health_probes`: one row per instance, rewritten by `/health` (at most once
//! a second) to prove the database still takes a real write and commit.
//! `SELECT 1` answers from a database whose disk is full or whose file was
//! deleted; only a committed write shows that acknowledged updates can land.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(HealthProbes::Table)
                    .if_not_exists()
                    .col(string_len(HealthProbes::InstanceId, 128).primary_key())
                    .col(timestamp_with_time_zone(HealthProbes::CheckedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(HealthProbes::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum HealthProbes {
    Table,
    InstanceId,
    CheckedAt,
}
