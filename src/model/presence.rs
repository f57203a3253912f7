//! Presence: who is in a document, on which device, and where their cursor is.
//!
//! [`Presence`] is the wire shape (also the REST shape); the conversions here
//! turn live state into the rows written behind to `user_sessions` and
//! `document_presence`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use entity::{document_presence, user_sessions};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::{device::DeviceType, ids::DocumentId};

/// One member of a document: one user on one connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Presence {
    pub user_id: Arc<str>,
    pub name: Option<Arc<str>>,
    pub session_id: Uuid,
    pub connection_id: Uuid,
    pub device_type: DeviceType,
    pub is_editing: bool,
    pub cursor: Option<Cursor>,
    pub selection: Option<Selection>,
    pub joined_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
}

impl Presence {
    /// The `document_presence` row for this member.
    pub fn to_row(&self, document_id: &DocumentId, is_active: bool) -> document_presence::Model {
        let (cursor_line, cursor_column) = split(self.cursor);
        let (start_line, start_column) = split(self.selection.map(|s| s.start));
        let (end_line, end_column) = split(self.selection.map(|s| s.end));
        document_presence::Model {
            // The upsert key is (document_id, session_id); this id is used only
            // when the row is first inserted.
            id: Uuid::now_v7(),
            document_id: document_id.as_str().to_owned(),
            user_id: self.user_id.to_string(),
            session_id: self.session_id,
            is_active,
            is_editing: is_active && self.is_editing,
            cursor_line,
            cursor_column,
            selection_start_line: start_line,
            selection_start_column: start_column,
            selection_end_line: end_line,
            selection_end_column: end_column,
            joined_at: self.joined_at,
            last_seen_at: self.last_seen_at,
        }
    }
}

fn split(cursor: Option<Cursor>) -> (Option<i64>, Option<i64>) {
    match cursor {
        Some(cursor) => (Some(i64::from(cursor.line)), Some(i64::from(cursor.column))),
        None => (None, None),
    }
}

/// Everything known about one connection's session, kept by its task and
/// written behind to `user_sessions`.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub session_id: Uuid,
    pub connection_id: Uuid,
    pub user_id: Arc<str>,
    pub name: Option<Arc<str>>,
    pub user_agent: Option<String>,
    pub ip_address: Option<String>,
    pub device_type: DeviceType,
    pub current_document_id: Option<DocumentId>,
    pub instance_id: Arc<str>,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub disconnected_at: Option<DateTime<Utc>>,
}

impl SessionRecord {
    pub fn to_row(&self) -> user_sessions::Model {
        user_sessions::Model {
            id: self.session_id,
            user_id: self.user_id.to_string(),
            user_name: self.name.as_deref().map(str::to_owned),
            connection_id: self.connection_id,
            is_active: self.disconnected_at.is_none(),
            user_agent: self.user_agent.clone(),
            ip_address: self.ip_address.clone(),
            device_type: self.device_type.as_str().to_owned(),
            current_document_id: self.current_document_id.as_ref().map(|d| d.as_str().to_owned()),
            instance_id: self.instance_id.to_string(),
            created_at: self.created_at,
            last_seen_at: self.last_seen_at,
            disconnected_at: self.disconnected_at,
        }
    }

    /// The presence entry this session has in a document it just joined.
    pub fn presence(&self, now: DateTime<Utc>) -> Presence {
        Presence {
            user_id: self.user_id.clone(),
            name: self.name.clone(),
            session_id: self.session_id,
            connection_id: self.connection_id,
            device_type: self.device_type,
            is_editing: false,
            cursor: None,
            selection: None,
            joined_at: now,
            last_seen_at: now,
        }
    }
}

/// Largest cursor line or column accepted.
pub const MAX_COORDINATE: i64 = 10_000_000;

/// A caret position. Both coordinates are zero-based and bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub line: u32,
    pub column: u32,
}

/// A selected range; `start` may come after `end` (a backwards selection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    pub start: Cursor,
    pub end: Cursor,
}

/// Why a member left a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    Left,
    Disconnected,
    Timeout,
}

/// Why editing stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EditingStopReason {
    /// The client said so.
    Client,
    /// No editing activity within the idle timeout.
    Idle,
}
