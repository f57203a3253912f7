//! One row per (document, session): who is in which document, and where.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "document_presence")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub document_id: String,
    pub user_id: String,
    pub session_id: Uuid,
    pub is_active: bool,
    pub is_editing: bool,
    pub cursor_line: Option<i64>,
    pub cursor_column: Option<i64>,
    pub selection_start_line: Option<i64>,
    pub selection_start_column: Option<i64>,
    pub selection_end_line: Option<i64>,
    pub selection_end_column: Option<i64>,
    pub joined_at: DateTimeUtc,
    pub last_seen_at: DateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}
