//! The merged state of a document up to `last_seq`.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "document_snapshots")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub document_id: String,
    /// A yrs v1 update holding the whole document as of `last_seq`.
    pub state: Vec<u8>,
    /// Highest `document_updates.seq` folded in. Also the optimistic
    /// concurrency token: compaction only replaces the snapshot it read.
    pub last_seq: i64,
    pub updated_at: DateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}
