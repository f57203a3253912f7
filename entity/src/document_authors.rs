//! The user who writes under each Yjs client id of a document.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "document_authors")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub document_id: String,
    /// The Yjs client id (at most 2^53 - 1, so it fits a signed 64-bit column).
    #[sea_orm(primary_key, auto_increment = false)]
    pub client_id: i64,
    pub user_id: String,
    pub created_at: DateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}
