//! What a room tells other instances, and the narrow handle it tells them
//! through. Rooms only know [`Publish`]; the cluster layer implements it (the
//! Redis bus) and delivers other instances' [`RoomEvent`]s back into rooms.

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::{
    ids::DocumentId,
    presence::{EditingStopReason, LeaveReason, Presence},
};

/// Where a room's events go to reach other instances. Never waits: an
/// implementation queues or drops. Single-instance: [`NoCluster`].
pub trait Publish: Send + Sync {
    fn publish(&self, document_id: &DocumentId, event: RoomEvent);

    /// Start hearing other instances' events of `document_id` (its room is
    /// loading here); done once the subscription is confirmed.
    fn subscribe<'a>(&'a self, document_id: &'a DocumentId) -> crate::model::log::BoxFuture<'a, ()> {
        let _ = document_id;
        Box::pin(std::future::ready(()))
    }

    /// `document_id`'s room unloaded here: its events are no longer needed.
    fn unsubscribe(&self, document_id: &DocumentId) {
        let _ = document_id;
    }
}

/// No other instances: events go nowhere.
pub struct NoCluster;

impl Publish for NoCluster {
    fn publish(&self, _document_id: &DocumentId, _event: RoomEvent) {}
}

/// Which presence message a change produces on the receiving side.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoteChange {
    Cursor,
    Selection,
    EditingStart,
    EditingStop(EditingStopReason),
}

/// What one instance tells the others about a room.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RoomEvent {
    /// `yjs`: the member is a y-websocket client (see [`crate::rooms::member::RemoteMember`]).
    Joined {
        presence: Presence,
        #[serde(default)]
        yjs: bool,
    },
    Left {
        connection_id: Uuid,
        user_id: String,
        reason: LeaveReason,
    },
    Presence {
        presence: Presence,
        change: RemoteChange,
        #[serde(default)]
        yjs: bool,
    },
    /// A v1 update, already applied and persisted by its origin.
    Update { update: String, user_id: String },
    Awareness {
        update: String,
        user_id: String,
        connection_id: Uuid,
    },
    /// An app event for the room's JSON members; `data` is its JSON text.
    Broadcast {
        event: String,
        data: String,
        user_id: String,
        connection_id: Option<Uuid>,
    },
    /// An app event for every connection of `to_user_id`, wherever it is
    /// (sent on a document both users are in).
    Direct {
        to_user_id: String,
        event: String,
        data: String,
        from_user_id: String,
        from_connection_id: Option<Uuid>,
    },
}

/// An applied and persisted update, for other instances.
pub fn update_event(update: &[u8], user_id: &str) -> RoomEvent {
    RoomEvent::Update {
        update: BASE64.encode(update),
        user_id: user_id.to_owned(),
    }
}

/// An awareness update, for other instances.
pub fn awareness_event(update: &[u8], user_id: &str, connection_id: Uuid) -> RoomEvent {
    RoomEvent::Awareness {
        update: BASE64.encode(update),
        user_id: user_id.to_owned(),
        connection_id,
    }
}
