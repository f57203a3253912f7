//! Append-only log of yrs v1 updates not yet folded into a snapshot.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "document_updates")]
pub struct Model {
    /// Global, increasing sequence: unique across instances without
    /// coordination, and the order updates are replayed in.
    #[sea_orm(primary_key)]
    pub seq: i64,
    pub document_id: String,
    pub update: Vec<u8>,
    pub created_at: DateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}
