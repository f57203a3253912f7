//! `webhook_outbox`: webhook deliveries, one row per event and target URL,
//! written in the same transaction as the change that causes the event, and
//! delivered at least once, in order per (target, order key). A delivered
//! row is deleted; one that kept failing for `--webhook-max-age` stays as
//! `failed` for the operator (`GET /api/v1/admin/webhooks`).
//!
//! Indexes, each for a query the gateway runs:
//! - the primary key `seq` (auto-increment): the delivery order.
//! - `idx_webhook_outbox_due (status, available_at)`: finding due deliveries.
//! - `idx_webhook_outbox_order (target, order_key, seq)`: whether an earlier
//!   delivery of the same document (or user) to the same target is still
//!   pending, and merging debounced `document.updated` events.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(WebhookOutbox::Table)
                    .if_not_exists()
                    .col(big_pk_auto(WebhookOutbox::Seq))
                    // The event's id (UUIDv7): the same for every target, for de-duplication.
                    .col(uuid(WebhookOutbox::EventId))
                    .col(string_len(WebhookOutbox::Target, 2048))
                    .col(string_len(WebhookOutbox::EventType, 64))
                    // `doc:<document id>` or `user:<user id>`: deliveries with one key are in order.
                    .col(string_len(WebhookOutbox::OrderKey, 512))
                    .col(text(WebhookOutbox::Data))
                    .col(timestamp_with_time_zone(WebhookOutbox::CreatedAt))
                    .col(timestamp_with_time_zone(WebhookOutbox::AvailableAt))
                    // pending or failed.
                    .col(string_len(WebhookOutbox::Status, 16))
                    .col(integer(WebhookOutbox::Attempts))
                    .col(text_null(WebhookOutbox::LastError))
                    .col(timestamp_with_time_zone_null(WebhookOutbox::ClaimedUntil))
                    .col(string_len_null(WebhookOutbox::ClaimedBy, 64))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_webhook_outbox_due")
                    .table(WebhookOutbox::Table)
                    .col(WebhookOutbox::Status)
                    .col(WebhookOutbox::AvailableAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_webhook_outbox_order")
                    .table(WebhookOutbox::Table)
                    .col(WebhookOutbox::Target)
                    .col(WebhookOutbox::OrderKey)
                    .col(WebhookOutbox::Seq)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(WebhookOutbox::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum WebhookOutbox {
    Table,
    Seq,
    EventId,
    Target,
    EventType,
    OrderKey,
    Data,
    CreatedAt,
    AvailableAt,
    Status,
    Attempts,
    LastError,
    ClaimedUntil,
    ClaimedBy,
}
