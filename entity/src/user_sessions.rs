//! One row per WebSocket connection (JSON or y-websocket), alive or ended.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "user_sessions")]
pub struct Model {
    /// The session id handed to the client in `connected`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// `sub` of the JWT that opened the connection.
    pub user_id: String,
    /// Display name from the JWT `name` claim, if any.
    pub user_name: Option<String>,
    /// Unique per socket; a user on three devices has three.
    #[sea_orm(unique)]
    pub connection_id: Uuid,
    pub is_active: bool,
    /// Truncated to a bounded length before it is stored.
    pub user_agent: Option<String>,
    pub ip_address: Option<String>,
    /// mobile / tablet / desktop / bot / other.
    pub device_type: String,
    /// The document this session joined last and is still in, if any.
    pub current_document_id: Option<String>,
    /// The gateway process that holds the socket.
    pub instance_id: String,
    pub created_at: DateTimeUtc,
    pub last_seen_at: DateTimeUtc,
    pub disconnected_at: Option<DateTimeUtc>,
    /// How often the session was resumed after its socket dropped.
    pub resumed_count: i32,
}

impl ActiveModelBehavior for ActiveModel {}
