//! One version of a document: the whole document as one Yjs update.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "document_versions")]
pub struct Model {
    /// UUIDv7: versions sort by creation.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub document_id: String,
    pub label: Option<String>,
    /// Saved by the gateway (after quiet time, at compaction, before a
    /// restore); only these are pruned past `--keep-versions`.
    pub automatic: bool,
    pub created_at: DateTimeUtc,
    /// The user whose request or edit caused it.
    pub created_by: String,
    /// A Yjs v1 update holding the whole document.
    pub state: Vec<u8>,
    pub state_vector: Vec<u8>,
}

impl ActiveModelBehavior for ActiveModel {}
