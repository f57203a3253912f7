//! Presence: who is in a document, on which device, and where their cursor is.
//!
//! [`Presence`] is the wire shape (also the REST shape); [`SessionRecord`] is
//! what a connection knows about its session. Both are written behind to the
//! database through [`PresenceSink`], which storage implements.

use std::sync::Arc;

use chrono::{DateTime, Utc};
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

/// Everything known about one connection's session, kept by its task and
/// written behind to `user_sessions`. Serialized only to move a parked
/// session to the instance its client reconnected to.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// How often this session was resumed after its socket dropped.
    pub resumed_count: u32,
}

impl SessionRecord {
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
    /// The member's token expired without a refresh.
    Expired,
    /// Revoked by an admin, or its token no longer allows the document.
    Revoked,
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

/// Where presence and session records are written behind (storage's
/// write-behind buffer). Never waits: it records the latest state of a row.
pub trait PresenceSink: Send + Sync {
    /// The latest state of a member's presence row; `urgent` flushes at once.
    fn presence(&self, document_id: &DocumentId, presence: &Presence, is_active: bool, urgent: bool);

    /// A member joined or left (webhooks): written with its presence row.
    fn presence_event(&self, document_id: &DocumentId, presence: &Presence, change: PresenceEvent) {
        let _ = (document_id, presence, change);
    }
}

/// A join or a leave, as webhooks report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceEvent {
    /// `first_device`: the user had no other device in the document.
    Joined { first_device: bool },
    /// `last_device`: the user has no other device left in it.
    Left { last_device: bool, reason: LeaveReason },
}

/// A fresh presence for `user` on a new connection (tests of the layers
/// above build members from it).
#[cfg(test)]
pub(crate) fn test_presence(user: &str) -> Presence {
    let now = Utc::now();
    Presence {
        user_id: user.into(),
        name: None,
        session_id: Uuid::now_v7(),
        connection_id: Uuid::now_v7(),
        device_type: DeviceType::Desktop,
        is_editing: false,
        cursor: None,
        selection: None,
        joined_at: now,
        last_seen_at: now,
    }
}
