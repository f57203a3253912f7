//! One webhook delivery: an event for one target URL, pending until a 2xx.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_outbox")]
pub struct Model {
    /// Delivery order.
    #[sea_orm(primary_key)]
    pub seq: i64,
    /// The event's id, the same for every target: receivers de-duplicate by it.
    pub event_id: Uuid,
    pub target: String,
    /// `document.updated`, `presence.joined`, ...
    pub event_type: String,
    /// `doc:<id>` or `user:<id>`: one key's deliveries to one target are in order.
    pub order_key: String,
    /// The event's `data`, JSON.
    #[sea_orm(column_type = "Text")]
    pub data: String,
    pub created_at: DateTimeUtc,
    /// Not delivered before (debounce, retry backoff).
    pub available_at: DateTimeUtc,
    /// `pending`, or `failed` (gave up after `--webhook-max-age`); delivered rows are deleted.
    pub status: String,
    pub attempts: i32,
    #[sea_orm(column_type = "Text")]
    pub last_error: Option<String>,
    /// An instance is delivering it until then.
    pub claimed_until: Option<DateTimeUtc>,
    pub claimed_by: Option<String>,
}

impl ActiveModelBehavior for ActiveModel {}
