//! Fan-out from a room to its members' queues: JSON broadcasts (shared
//! bytes), latest-wins presence streams (see [`crate::rooms::latest`]),
//! binary frames for `/yjs` members, and the synthesized awareness that
//! shows JSON members to them. Every method runs under the room's lock and
//! never waits.

use std::sync::Arc;

use uuid::Uuid;

use super::{
    latest::{LatestKey, Stream},
    member::{Member, MemberKind, synthesized_awareness},
    outbox::Outgoing,
    room::RoomState,
};
use crate::{model::ids::DocumentId, protocol::json::Encoded};

/// Messages pushed to members' outboxes by broadcasts
/// (`tandem_fanout_deliveries_total`). A cached handle: one atomic add per
/// broadcast, no registry lookup on the hot path. Resolved on first use,
/// after the application installed its recorder.
static DELIVERIES: std::sync::LazyLock<metrics::Counter> =
    std::sync::LazyLock::new(|| metrics::counter!("tandem_fanout_deliveries_total"));

impl RoomState {
    /// Send a JSON message to every JSON member except `except`.
    /// Returns how many members it was queued for.
    pub fn broadcast(&self, text: &Encoded, except: Option<Uuid>) -> usize {
        let mut delivered = 0;
        for member in &self.members {
            if member.kind == MemberKind::Json && Some(member.presence.connection_id) != except {
                delivered += usize::from(member.outbox.text(text.clone()));
            }
        }
        DELIVERIES.increment(delivered as u64);
        delivered
    }

    /// [`Self::broadcast`] for one member's presence stream: in a reader's
    /// queue, a still-unsent message of the same stream is replaced by this
    /// one (latest wins, see [`crate::rooms::latest`]).
    pub fn broadcast_latest(&self, text: &Encoded, key: &LatestKey) -> usize {
        let mut delivered = 0;
        for member in &self.members {
            if member.kind == MemberKind::Json && member.presence.connection_id != key.sender {
                delivered += usize::from(member.outbox.push_latest(key, Outgoing::Text(text.clone())));
            }
        }
        DELIVERIES.increment(delivered as u64);
        delivered
    }

    /// Send a binary frame to every y-websocket member except `except`.
    pub fn broadcast_binary(&self, bytes: &Arc<[u8]>, except: Option<Uuid>) {
        let mut delivered = 0;
        for member in &self.members {
            if member.kind == MemberKind::Yjs && Some(member.presence.connection_id) != except {
                member.outbox.push(Outgoing::Binary(bytes.clone()));
                delivered += 1;
            }
        }
        DELIVERIES.increment(delivered);
    }

    pub(super) fn has_yjs_members(&self) -> bool {
        self.members.iter().any(|m| m.kind == MemberKind::Yjs)
    }

    /// Tell y-websocket members about a JSON member's presence (or its removal).
    pub(super) fn publish_json_member_awareness(&self, entry: crate::crdt::awareness::AwarenessEntry) {
        if self.has_yjs_members() {
            let frame: Arc<[u8]> =
                crate::protocol::yjs::awareness(&crate::crdt::awareness::encode(&[entry])).into();
            self.broadcast_binary(&frame, None);
        }
    }

    /// [`Self::publish_json_member_awareness`] for a cursor or selection
    /// move: latest wins in slow `/yjs` readers' queues.
    pub(super) fn publish_json_member_awareness_latest(
        &self,
        document_id: &DocumentId,
        sender: Uuid,
        entry: crate::crdt::awareness::AwarenessEntry,
    ) {
        let frame: Arc<[u8]> =
            crate::protocol::yjs::awareness(&crate::crdt::awareness::encode(&[entry])).into();
        let key = LatestKey {
            sender,
            document: document_id.clone(),
            stream: Stream::Awareness,
        };
        let mut delivered = 0;
        for member in &self.members {
            if member.kind == MemberKind::Yjs {
                delivered += usize::from(member.outbox.push_latest(&key, Outgoing::Binary(frame.clone())));
            }
        }
        DELIVERIES.increment(delivered as u64);
    }

    /// Every awareness state a y-websocket newcomer should see: the real
    /// ones plus one per JSON member.
    pub(super) fn binary_awareness_snapshot(&self) -> Option<Vec<u8>> {
        let mut entries: Vec<_> = self
            .members
            .iter()
            .filter(|m| m.kind == MemberKind::Json)
            .map(Member::awareness_entry)
            .collect();
        entries.extend(
            self.remote
                .iter()
                .filter(|r| !r.yjs)
                .map(|r| synthesized_awareness(&r.presence, r.awareness_clock)),
        );
        if let Some(real) = self.awareness.snapshot() {
            entries.extend(crate::crdt::awareness::decode(&real).unwrap_or_default());
        }
        (!entries.is_empty()).then(|| crate::crdt::awareness::encode(&entries))
    }
}
