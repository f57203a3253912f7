//! A room's members: local ones (a connection in a document, JSON or
//! y-websocket) and the mirror of those on other instances, plus how a JSON
//! member's presence looks to y-websocket clients (a synthesized awareness
//! state with a stable client id and colour).

use std::{sync::Arc, time::Instant};

use uuid::Uuid;

use crate::{
    model::presence::Presence,
    rooms::{
        latest::Stream,
        outbox::Outbox,
        presence_change::{PresenceChange, stream_index, stream_of},
    },
};

/// Which protocol a member speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberKind {
    /// The JSON protocol on `/ws`.
    Json,
    /// The y-websocket binary protocol on `/yjs/{document_id}`.
    Yjs,
}

/// The clock of a JSON member's first synthesized awareness state.
/// y-protocols applies a state of a client it has not seen only if its clock
/// is above 0 (`currClock < clock` with `currClock` 0 for a stranger): a state
/// at clock 0 was ignored, and the member stayed invisible to y-websocket
/// clients until it first moved.
pub const FIRST_AWARENESS_CLOCK: u32 = 1;

/// A member of a room: one connection in one document.
#[derive(Debug)]
pub struct Member {
    pub presence: Presence,
    pub outbox: Outbox,
    /// Last editing_start, cursor, selection or update while editing.
    pub last_editing_activity: Instant,
    pub kind: MemberKind,
    /// Clock of the awareness state y-websocket members see for a JSON member.
    pub awareness_clock: u32,
    /// When its cursor and its selection were last relayed, and whether a
    /// newer one waits for the trailing edge (see [`crate::rooms::throttle`]),
    /// by [`stream_index`].
    pub relayed: [Option<Instant>; 2],
    pub deferred: [bool; 2],
}

impl Member {
    /// Whether its `stream` may be relayed at `now` under `interval`
    /// (`--presence-max-hz`).
    pub fn relay_due(&self, stream: Stream, interval: Option<std::time::Duration>, now: Instant) -> bool {
        match (interval, self.relayed[stream_index(stream)]) {
            (Some(interval), Some(last)) => now.duration_since(last) >= interval,
            _ => true,
        }
    }

    /// Apply a held-back change to its presence and mark it waiting for
    /// the trailing edge.
    pub fn defer(&mut self, change: PresenceChange, now: chrono::DateTime<chrono::Utc>, instant: Instant) {
        match change {
            PresenceChange::Cursor(cursor) => self.presence.cursor = Some(cursor),
            PresenceChange::Selection(selection) => self.presence.selection = selection,
            _ => return,
        }
        self.presence.last_seen_at = now;
        self.last_editing_activity = instant;
        if let Some(stream) = stream_of(change) {
            self.deferred[stream_index(stream)] = true;
        }
    }

    /// Its `stream` is being relayed now.
    pub fn relaying(&mut self, stream: Stream, now: Instant) {
        self.relayed[stream_index(stream)] = Some(now);
        self.deferred[stream_index(stream)] = false;
    }

    pub fn new(presence: Presence, outbox: Outbox, kind: MemberKind) -> Self {
        Self {
            presence,
            outbox,
            last_editing_activity: Instant::now(),
            kind,
            awareness_clock: FIRST_AWARENESS_CLOCK,
            relayed: [None; 2],
            deferred: [false; 2],
        }
    }

    /// The awareness client id under which y-websocket members see this JSON member.
    pub fn awareness_client_id(&self) -> u64 {
        awareness_client_id(self.presence.connection_id)
    }

    pub(super) fn awareness_entry(&self) -> crate::crdt::awareness::AwarenessEntry {
        synthesized_awareness(&self.presence, self.awareness_clock)
    }

    pub(super) fn awareness_removal(&self) -> crate::crdt::awareness::AwarenessEntry {
        synthesized_removal(self.presence.connection_id, self.awareness_clock)
    }
}

/// The awareness client id of a JSON member: derived from its connection id,
/// within Yjs's 53 bits, the same on every instance.
pub fn awareness_client_id(connection_id: Uuid) -> u64 {
    let bytes = connection_id.as_bytes();
    let mut id = [0u8; 8];
    id.copy_from_slice(&bytes[8..16]);
    u64::from_le_bytes(id) & ((1 << 53) - 1)
}

/// A JSON member's presence as an awareness entry, in the shape y-websocket
/// front ends read: `{ user: { name, color, id }, cursor, selection, editing }`.
pub(super) fn synthesized_awareness(
    presence: &Presence,
    clock: u32,
) -> crate::crdt::awareness::AwarenessEntry {
    let state = serde_json::json!({
        "user": {
            "name": presence.name.as_deref().unwrap_or(&presence.user_id),
            "color": user_color(&presence.user_id),
            "id": &*presence.user_id,
        },
        "cursor": presence.cursor,
        "selection": presence.selection,
        "editing": presence.is_editing,
        "connection_id": presence.connection_id,
    });
    crate::crdt::awareness::AwarenessEntry {
        client_id: awareness_client_id(presence.connection_id),
        clock,
        json: state.to_string().into(),
    }
}

pub(super) fn synthesized_removal(connection_id: Uuid, clock: u32) -> crate::crdt::awareness::AwarenessEntry {
    crate::crdt::awareness::AwarenessEntry {
        client_id: awareness_client_id(connection_id),
        clock: clock.wrapping_add(1),
        json: "null".into(),
    }
}

/// A member connected to another instance, mirrored from the bus.
#[derive(Debug, Clone)]
pub struct RemoteMember {
    pub instance: Arc<str>,
    pub presence: Presence,
    /// A y-websocket client (its awareness is real and arrives by the bus);
    /// otherwise a JSON client, shown to local y-websocket members as a
    /// synthesized awareness state.
    pub yjs: bool,
    pub(super) awareness_clock: u32,
}

impl RemoteMember {
    pub fn new(instance: Arc<str>, presence: Presence, yjs: bool) -> Self {
        Self {
            instance,
            presence,
            yjs,
            awareness_clock: FIRST_AWARENESS_CLOCK,
        }
    }
}

/// A stable colour per user, so every client draws a user's cursor alike.
pub fn user_color(user_id: &str) -> String {
    let hash = user_id.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });
    let hue = (hash % 360) as f64;
    // HSL(hue, 65%, 45%) to RGB.
    let (s, l) = (0.65, 0.45);
    let c = (1.0 - (2.0 * l - 1.0f64).abs()) * s;
    let x = c * (1.0 - ((hue / 60.0) % 2.0 - 1.0).abs());
    let m = l - c / 2.0;
    let (r, g, b) = match (hue / 60.0) as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let byte = |v: f64| ((v + m) * 255.0).round() as u8;
    format!("#{:02x}{:02x}{:02x}", byte(r), byte(g), byte(b))
}
