//! One API key of an agent or backend: its hash, never the key itself.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    /// UUIDv7; the key's user id is `apikey:<id>`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// Shown as the display name of the connections the key opens.
    pub name: String,
    /// Lowercase hex SHA-256 of the whole key; the only trace of the key kept.
    #[sea_orm(unique)]
    pub key_hash: String,
    /// JSON array of document ids / `prefix*` patterns; `None` = every document.
    #[sea_orm(column_type = "Text")]
    pub docs: Option<String>,
    /// `editor`, `viewer` or `admin`.
    pub role: String,
    pub created_at: DateTimeUtc,
    /// `None`: valid until revoked.
    pub expires_at: Option<DateTimeUtc>,
    pub revoked_at: Option<DateTimeUtc>,
    /// Written behind, at most about once a minute per key.
    pub last_used_at: Option<DateTimeUtc>,
}

impl ActiveModelBehavior for ActiveModel {}
