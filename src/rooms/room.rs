//! One document room: its members and their presence, and fan-out to them.
//!
//! Pure state plus non-blocking sends: every method runs under the room's
//! mutex without awaiting, serializes a broadcast once and pushes the shared
//! bytes into each member's bounded outbox. A member whose outbox is full is
//! marked too slow (its session closes it); the others are not held up.

use std::{
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Instant,
};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{
    model::ids::DocumentId,
    model::ids::MessageId,
    model::presence::EditingStopReason,
    model::presence::LeaveReason,
    model::presence::Presence,
    protocol::json::ServerMessage,
    rooms::latest::{LatestKey, Stream},
    rooms::member::{Member, MemberKind, RemoteMember},
    rooms::outbox::Outgoing,
    rooms::presence_change::stream_of,
};

pub use super::presence_change::PresenceChange;

/// A sync step 2 answer shared by the peers that asked with the same state vector.
#[derive(Debug, Clone)]
pub struct SharedDiff {
    pub state_vector: Arc<[u8]>,
    pub raw: bytes::Bytes,
    pub base64: bytes::Bytes,
}

/// Members of a room, what they last said about themselves, and the document.
pub struct RoomState {
    pub(super) members: Vec<Member>,
    /// When the last member left; rooms are unloaded a grace period later.
    pub(super) empty_since: Option<Instant>,
    /// The shared document; `None` until loaded from storage (or after a
    /// failed apply dropped it for a reload).
    pub doc: Option<yrs::Doc>,
    /// `doc` encoded whole (the answer to an empty state vector), and its
    /// base64 for JSON clients, shared by every joiner until the document
    /// changes: a join storm on a large document then encodes it once, not
    /// once per client, and every joiner's reply shares these bytes. Every
    /// path that applies to or replaces `doc` clears them (`doc_changed`).
    pub(super) full_state: Option<bytes::Bytes>,
    pub(super) full_state_base64: Option<bytes::Bytes>,
    /// The last sync step 2 computed for a non-empty state vector, shared by
    /// every peer that asks with the same one until the document changes: a
    /// client repeating `sync_step1` pins one encoding, not one per request.
    pub(super) last_diff: Option<SharedDiff>,
    /// Yjs client id -> the user who first added items under it. Only that
    /// user may add more: nobody can forge or collide with another user's
    /// items, and the server knows who wrote what.
    pub(super) authors: std::collections::HashMap<u64, Arc<str>>,
    /// Latest awareness state of every Yjs client in the room.
    pub awareness: crate::crdt::awareness::AwarenessStates,
    /// Members connected to other instances (with their instance), mirrored
    /// from the bus.
    pub(super) remote: Vec<RemoteMember>,
    /// Updates from other instances that arrived while the document loaded.
    pub pending_remote_updates: Vec<Vec<u8>>,
    /// Remote members that left recently, so a slower read of the presence
    /// hash cannot bring them back as ghosts.
    pub(super) recently_left: Vec<(Uuid, Instant)>,
    /// Least time between two relays of one member's cursor (or selection):
    /// `--presence-max-hz`; `None` relays every change.
    pub presence_interval: Option<std::time::Duration>,
}

impl std::fmt::Debug for RoomState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomState")
            .field("members", &self.members.len())
            .field("doc_loaded", &self.doc.is_some())
            .finish()
    }
}

impl Default for RoomState {
    fn default() -> Self {
        // A new room counts as empty from its creation, so a room whose only
        // join failed is still unloaded.
        Self {
            members: Vec::new(),
            empty_since: Some(Instant::now()),
            doc: None,
            full_state: None,
            full_state_base64: None,
            last_diff: None,
            authors: Default::default(),
            awareness: Default::default(),
            remote: Vec::new(),
            pending_remote_updates: Vec::new(),
            recently_left: Vec::new(),
            presence_interval: None,
        }
    }
}

impl RoomState {
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn empty_since(&self) -> Option<Instant> {
        self.empty_since
    }

    /// Everyone present: local members, then members on other instances.
    pub fn presence_list(&self) -> Vec<Presence> {
        self.members
            .iter()
            .map(|m| m.presence.clone())
            .chain(self.remote.iter().map(|r| r.presence.clone()))
            .collect()
    }

    /// Connections of `user_id` in the room, here and on other instances.
    pub fn devices_of(&self, user_id: &str) -> usize {
        self.members
            .iter()
            .filter(|m| *m.presence.user_id == *user_id)
            .count()
            + self
                .remote
                .iter()
                .filter(|r| *r.presence.user_id == *user_id)
                .count()
    }

    pub fn contains(&self, connection_id: Uuid) -> bool {
        self.members
            .iter()
            .any(|m| m.presence.connection_id == connection_id)
    }

    pub(super) fn member_mut(&mut self, connection_id: Uuid) -> Option<&mut Member> {
        self.members
            .iter_mut()
            .find(|m| m.presence.connection_id == connection_id)
    }

    /// Add a member, tell the others, and welcome the joiner. A JSON joiner
    /// gets `presence_list` (echoing `id`), then `sync_step1` and the current
    /// awareness states; a y-websocket joiner gets sync step 1 and the
    /// awareness states (JSON members included) as binary frames. Done under
    /// the room lock, so the welcome comes before any broadcast to the joiner.
    pub fn join(
        &mut self,
        document_id: &DocumentId,
        member: Member,
        id: Option<&MessageId>,
    ) -> Vec<Presence> {
        let joined = ServerMessage::UserJoined {
            document_id,
            user: &member.presence,
            first_device: self.devices_of(&member.presence.user_id) == 0,
        }
        .encode();
        self.broadcast(&joined, None);
        if member.kind == MemberKind::Json {
            self.publish_json_member_awareness(member.awareness_entry());
        }
        self.members.push(member);
        self.empty_since = None;
        let users = self.presence_list();
        let Some(joiner) = self.members.last() else {
            return users;
        };
        let state_vector = self.doc.as_ref().map(crate::crdt::sync::state_vector);
        match joiner.kind {
            MemberKind::Json => {
                joiner.outbox.text(
                    ServerMessage::PresenceList {
                        id,
                        document_id,
                        users: &users,
                        resync: false,
                    }
                    .encode(),
                );
                if let Some(state_vector) = &state_vector {
                    joiner.outbox.text(
                        ServerMessage::SyncStep1 {
                            document_id,
                            state_vector: crate::protocol::json::Base64(state_vector),
                        }
                        .encode(),
                    );
                }
                if let Some(states) = self.awareness.snapshot() {
                    joiner.outbox.text(
                        ServerMessage::Awareness {
                            document_id,
                            update: crate::protocol::json::Base64(&states),
                            user_id: None,
                        }
                        .encode(),
                    );
                }
            }
            MemberKind::Yjs => {
                if let Some(state_vector) = &state_vector {
                    joiner.outbox.push(Outgoing::Binary(
                        crate::protocol::yjs::sync_step1(state_vector).into(),
                    ));
                }
                if let Some(states) = self.binary_awareness_snapshot() {
                    joiner
                        .outbox
                        .push(Outgoing::Binary(crate::protocol::yjs::awareness(&states).into()));
                }
            }
        }
        users
    }

    /// Every awareness state for a y-websocket client that asked (query-awareness).
    pub fn awareness_for_yjs(&self) -> Option<Vec<u8>> {
        self.binary_awareness_snapshot()
    }

    /// No ghost cursors: the awareness states `connection_id` owned go
    /// with it, for every member at once, in each member's format.
    pub(super) fn remove_awareness_of(&mut self, document_id: &DocumentId, connection_id: Uuid) {
        if let Some(removal) = self.awareness.remove_owner(connection_id) {
            let removed = ServerMessage::Awareness {
                document_id,
                update: crate::protocol::json::Base64(&removal),
                user_id: None,
            }
            .encode();
            self.broadcast(&removed, None);
            self.broadcast_binary(&crate::protocol::yjs::awareness(&removal).into(), None);
        }
    }

    /// Remove a member and tell the others why.
    pub fn leave(
        &mut self,
        document_id: &DocumentId,
        connection_id: Uuid,
        reason: LeaveReason,
    ) -> Option<Member> {
        let index = self
            .members
            .iter()
            .position(|m| m.presence.connection_id == connection_id)?;
        let member = self.members.swap_remove(index);
        self.remove_awareness_of(document_id, connection_id);
        if member.kind == MemberKind::Json {
            self.publish_json_member_awareness(member.awareness_removal());
        }
        let left = ServerMessage::UserLeft {
            document_id,
            user_id: &member.presence.user_id,
            connection_id,
            reason,
            last_device: self.devices_of(&member.presence.user_id) == 0,
        }
        .encode();
        self.broadcast(&left, None);
        if self.members.is_empty() {
            self.empty_since = Some(Instant::now());
        }
        Some(member)
    }

    /// Apply a presence change from `connection_id` and broadcast it to the
    /// others, or, for a cursor or selection within `presence_interval` of
    /// the last one relayed, keep it for the trailing edge. Returns the
    /// member's presence after the change and whether it was relayed now.
    pub fn change_presence(
        &mut self,
        document_id: &DocumentId,
        connection_id: Uuid,
        change: PresenceChange,
        now: DateTime<Utc>,
    ) -> Option<(Presence, MemberKind, bool)> {
        let instant = Instant::now();
        let interval = self.presence_interval;
        let member = self.member_mut(connection_id)?;
        if let Some(stream) = stream_of(change)
            && !member.relay_due(stream, interval, instant)
        {
            // Too soon after the last relay: keep it for the trailing edge.
            member.defer(change, now, instant);
            return Some((member.presence.clone(), member.kind, false));
        }
        if let Some(stream) = stream_of(change) {
            member.relaying(stream, instant);
        }
        let presence = &mut member.presence;
        presence.last_seen_at = now;
        let message = match change {
            PresenceChange::Cursor(cursor) => {
                presence.cursor = Some(cursor);
                member.last_editing_activity = instant;
                Some(ServerMessage::CursorMove {
                    document_id,
                    user_id: &presence.user_id,
                    connection_id,
                    cursor,
                })
            }
            PresenceChange::Selection(selection) => {
                presence.selection = selection;
                member.last_editing_activity = instant;
                Some(ServerMessage::SelectionChange {
                    document_id,
                    user_id: &presence.user_id,
                    connection_id,
                    selection,
                })
            }
            PresenceChange::EditingStart => {
                member.last_editing_activity = instant;
                let was_editing = std::mem::replace(&mut presence.is_editing, true);
                (!was_editing).then_some(ServerMessage::EditingStart {
                    document_id,
                    user_id: &presence.user_id,
                    connection_id,
                })
            }
            PresenceChange::EditingStop(reason) => {
                let was_editing = std::mem::replace(&mut presence.is_editing, false);
                was_editing.then_some(ServerMessage::EditingStop {
                    document_id,
                    user_id: &presence.user_id,
                    connection_id,
                    reason,
                })
            }
            PresenceChange::Activity => {
                member.last_editing_activity = instant;
                None
            }
        };
        let stream = match change {
            PresenceChange::Cursor(_) => Some(Stream::Cursor),
            PresenceChange::Selection(_) => Some(Stream::Selection),
            _ => None,
        };
        let encoded = message.map(|m| m.encode());
        let presence = member.presence.clone();
        let kind = member.kind;
        let changed_json_member = encoded.is_some() && member.kind == MemberKind::Json;
        if changed_json_member {
            member.awareness_clock = member.awareness_clock.wrapping_add(1);
        }
        // Building the synthesized awareness state costs more than the whole
        // JSON fan-out, so only do it when a y-websocket member will read it.
        let awareness = (changed_json_member && self.has_yjs_members())
            .then(|| self.member_mut(connection_id).map(|m| m.awareness_entry()))
            .flatten();
        match (encoded, stream) {
            (Some(encoded), Some(stream)) => {
                let key = LatestKey {
                    sender: connection_id,
                    document: document_id.clone(),
                    stream,
                };
                self.broadcast_latest(&encoded, &key);
            }
            (Some(encoded), None) => {
                self.broadcast(&encoded, Some(connection_id));
            }
            (None, _) => {}
        }
        if let Some(entry) = awareness {
            if stream.is_some() {
                self.publish_json_member_awareness_latest(document_id, connection_id, entry);
            } else {
                self.publish_json_member_awareness(entry);
            }
        }
        Some((presence, kind, true))
    }

    /// Stop editing for members idle longer than `timeout`; returns who stopped.
    pub fn expire_editing(
        &mut self,
        document_id: &DocumentId,
        timeout: std::time::Duration,
        now: DateTime<Utc>,
    ) -> Vec<Presence> {
        let mut stopped = Vec::new();
        let mut awareness = Vec::new();
        for member in &mut self.members {
            if member.presence.is_editing && member.last_editing_activity.elapsed() >= timeout {
                member.presence.is_editing = false;
                member.presence.last_seen_at = now;
                stopped.push(member.presence.clone());
                if member.kind == MemberKind::Json {
                    member.awareness_clock = member.awareness_clock.wrapping_add(1);
                    awareness.push(member.awareness_entry());
                }
            }
        }
        for entry in awareness {
            self.publish_json_member_awareness(entry);
        }
        for presence in &stopped {
            // Everyone is told, the idle member included: its own UI shows editing too.
            let message = ServerMessage::EditingStop {
                document_id,
                user_id: &presence.user_id,
                connection_id: presence.connection_id,
                reason: EditingStopReason::Idle,
            }
            .encode();
            self.broadcast(&message, None);
        }
        stopped
    }
}

/// A document room.
#[derive(Debug)]
pub struct Room {
    pub id: DocumentId,
    state: Mutex<RoomState>,
    /// Joins in progress; a room with joiners is never unloaded.
    joining: AtomicUsize,
    /// Single flight for loading the document from storage.
    pub load_lock: tokio::sync::Mutex<()>,
    /// The document's standing with the log: writes in flight, rows since
    /// the snapshot, compaction (shared with the writer).
    pub log: Arc<crate::model::log::LogCounters>,
    /// The mirror of members on other instances was seeded from Redis.
    pub remote_seeded: AtomicBool,
    /// Edits the server builds itself (REST ops, restores), one at a time,
    /// with the Yjs client id minted for each user (see `documents::edits`).
    pub server_edits: tokio::sync::Mutex<std::collections::HashMap<Arc<str>, u64>>,
}

impl Room {
    pub fn new(id: DocumentId) -> Self {
        Self {
            id,
            state: Mutex::new(RoomState::default()),
            joining: AtomicUsize::new(0),
            load_lock: tokio::sync::Mutex::new(()),
            log: Default::default(),
            remote_seeded: AtomicBool::new(false),
            server_edits: Default::default(),
        }
    }

    /// Nothing in flight: the room may be unloaded without losing anything.
    pub fn is_settled(&self) -> bool {
        self.log.is_settled()
    }

    /// Lock the room state. Never held across an `.await`.
    pub fn state(&self) -> MutexGuard<'_, RoomState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn begin_join(&self) {
        self.joining.fetch_add(1, Ordering::SeqCst);
    }

    pub fn end_join(&self) {
        self.joining.fetch_sub(1, Ordering::SeqCst);
    }

    pub fn has_joiners(&self) -> bool {
        self.joining.load(Ordering::SeqCst) > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::presence::Cursor;
    use crate::rooms::outbox::{Outbox, QueuedBytes};
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    fn member(user: &str, capacity: usize) -> (Member, mpsc::Receiver<Outgoing>, CancellationToken) {
        let (tx, rx) = mpsc::channel(capacity);
        let overflow = CancellationToken::new();
        let presence = crate::model::presence::test_presence(user);
        (
            Member::new(
                presence,
                Outbox::new(tx, overflow.clone(), Arc::new(QueuedBytes::new(usize::MAX))),
                MemberKind::Json,
            ),
            rx,
            overflow,
        )
    }

    fn texts(rx: &mut mpsc::Receiver<Outgoing>) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        while let Ok(Outgoing::Text(text)) = rx.try_recv() {
            out.push(serde_json::from_str(&text).unwrap());
        }
        out
    }

    #[test]
    fn join_tells_others_and_lists_everyone() {
        let doc = DocumentId::parse("d").unwrap();
        let mut room = RoomState::default();
        let (alice, mut alice_rx, _) = member("alice", 8);
        let (bob, mut bob_rx, _) = member("bob", 8);
        assert_eq!(room.join(&doc, alice, None).len(), 1);
        let list = room.join(&doc, bob, None);
        assert_eq!(list.len(), 2);
        let seen = texts(&mut alice_rx);
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0]["type"], "presence_list");
        assert_eq!(seen[1]["type"], "user_joined");
        assert_eq!(seen[1]["user"]["user_id"], "bob");
        let welcome = texts(&mut bob_rx);
        assert_eq!(
            welcome.len(),
            1,
            "the joiner gets its list, not a user_joined about itself"
        );
        assert_eq!(welcome[0]["users"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn cursor_moves_reach_others_but_not_the_sender() {
        let doc = DocumentId::parse("d").unwrap();
        let mut room = RoomState::default();
        let (alice, mut alice_rx, _) = member("alice", 8);
        let alice_id = alice.presence.connection_id;
        let (bob, mut bob_rx, _) = member("bob", 8);
        room.join(&doc, alice, None);
        room.join(&doc, bob, None);
        texts(&mut alice_rx);
        texts(&mut bob_rx);
        let presence = room
            .change_presence(
                &doc,
                alice_id,
                PresenceChange::Cursor(Cursor { line: 3, column: 4 }),
                Utc::now(),
            )
            .unwrap();
        assert_eq!(presence.0.cursor, Some(Cursor { line: 3, column: 4 }));
        assert!(texts(&mut alice_rx).is_empty());
        let seen = texts(&mut bob_rx);
        assert_eq!(seen[0]["type"], "cursor_move");
        assert_eq!(seen[0]["connection_id"], alice_id.to_string());
    }

    #[test]
    fn a_cursor_move_reaches_a_json_member_as_text_and_a_yjs_member_as_awareness() {
        let doc = DocumentId::parse("d").unwrap();
        let mut room = RoomState::default();
        let (alice, _alice_rx, _) = member("alice", 8);
        let alice_id = alice.presence.connection_id;
        let (bob, mut bob_rx, _) = member("bob", 8);
        let (mut carol, mut carol_rx, _) = member("carol", 8);
        carol.kind = MemberKind::Yjs;
        room.join(&doc, alice, None);
        room.join(&doc, bob, None);
        room.join(&doc, carol, None);
        texts(&mut bob_rx);
        while carol_rx.try_recv().is_ok() {}
        room.change_presence(
            &doc,
            alice_id,
            PresenceChange::Cursor(Cursor { line: 7, column: 2 }),
            Utc::now(),
        );
        let seen = texts(&mut bob_rx);
        assert_eq!((seen.len(), seen[0]["type"].as_str()), (1, Some("cursor_move")));
        // The y-websocket member gets no JSON: one awareness frame, whose
        // state for alice carries the cursor.
        let Ok(Outgoing::Binary(frame)) = carol_rx.try_recv() else {
            panic!("a y-websocket member must get a binary awareness frame");
        };
        assert!(carol_rx.try_recv().is_err(), "one frame per move");
        let crate::protocol::yjs::Inbound::Awareness(update) = crate::protocol::yjs::decode(&frame).unwrap()
        else {
            panic!("not an awareness frame");
        };
        let entries = crate::crdt::awareness::decode(&update).unwrap();
        let state: serde_json::Value = serde_json::from_str(&entries[0].json).unwrap();
        assert_eq!(state["cursor"], serde_json::json!({"line": 7, "column": 2}));
        assert_eq!(state["user"]["id"], "alice");
        assert_eq!(state["connection_id"], alice_id.to_string());
    }

    #[test]
    fn a_full_outbox_marks_only_that_member_slow() {
        let doc = DocumentId::parse("d").unwrap();
        let mut room = RoomState::default();
        let (alice, _alice_rx, _) = member("alice", 64);
        let alice_id = alice.presence.connection_id;
        let (slow, _slow_rx, slow_overflow) = member("slow", 1);
        let (fast, mut fast_rx, fast_overflow) = member("fast", 64);
        let fast_pending = fast.outbox.latest();
        room.join(&doc, slow, None);
        room.join(&doc, fast, None);
        room.join(&doc, alice, None);
        for line in 0..10 {
            room.change_presence(
                &doc,
                alice_id,
                PresenceChange::Cursor(Cursor { line, column: 0 }),
                Utc::now(),
            );
        }
        assert!(
            slow_overflow.is_cancelled(),
            "its queue is full of other messages"
        );
        assert!(!fast_overflow.is_cancelled());
        let mut seen = Vec::new();
        while let Ok(message) = fast_rx.try_recv() {
            let message = match message {
                Outgoing::Latest(slot) => fast_pending.take(&slot).unwrap(),
                other => other,
            };
            let Outgoing::Text(text) = message else {
                panic!("text expected")
            };
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            seen.push((
                value["type"].as_str().unwrap().to_owned(),
                value["cursor"]["line"].as_u64(),
            ));
        }
        assert_eq!(
            seen,
            [
                ("presence_list".to_owned(), None),
                ("user_joined".to_owned(), None),
                ("cursor_move".to_owned(), Some(9)),
            ],
            "its list, alice joining, and alice's latest cursor: the older ones, still queued, were replaced"
        );
    }

    #[test]
    fn queued_bytes_are_bounded_but_an_empty_queue_takes_any_one_message() {
        let bytes = QueuedBytes::new(100);
        assert!(
            bytes.reserve(150),
            "an empty queue takes a message over the bound"
        );
        assert!(!bytes.reserve(1));
        bytes.release(150);
        assert!(bytes.reserve(60));
        assert!(bytes.reserve(40));
        assert!(!bytes.reserve(1));
        assert_eq!(bytes.queued(), 100);
    }

    #[test]
    fn an_outbox_over_its_byte_bound_is_marked_slow() {
        let (tx, _rx) = mpsc::channel(64);
        let overflow = CancellationToken::new();
        let outbox = Outbox::new(tx, overflow.clone(), Arc::new(QueuedBytes::new(1000)));
        let shared: Arc<[u8]> = vec![0u8; 600].into();
        assert!(outbox.push(Outgoing::Binary(shared.clone())));
        assert!(!overflow.is_cancelled());
        assert!(
            !outbox.push(Outgoing::Binary(shared)),
            "the same shared bytes count again"
        );
        assert!(overflow.is_cancelled());
    }

    #[test]
    fn idle_editing_expires_and_everyone_is_told() {
        let doc = DocumentId::parse("d").unwrap();
        let mut room = RoomState::default();
        let (alice, mut alice_rx, _) = member("alice", 8);
        let alice_id = alice.presence.connection_id;
        room.join(&doc, alice, None);
        room.change_presence(&doc, alice_id, PresenceChange::EditingStart, Utc::now());
        assert!(
            room.expire_editing(&doc, std::time::Duration::from_secs(60), Utc::now())
                .is_empty()
        );
        let stopped = room.expire_editing(&doc, std::time::Duration::ZERO, Utc::now());
        assert_eq!(stopped.len(), 1);
        assert!(!stopped[0].is_editing);
        let seen = texts(&mut alice_rx);
        assert_eq!(seen.last().unwrap()["type"], "editing_stop");
        assert_eq!(seen.last().unwrap()["reason"], "idle");
    }

    #[test]
    fn leave_tells_the_rest_and_marks_the_room_empty() {
        let doc = DocumentId::parse("d").unwrap();
        let mut room = RoomState::default();
        let (alice, _, _) = member("alice", 8);
        let alice_id = alice.presence.connection_id;
        let (bob, mut bob_rx, _) = member("bob", 8);
        let bob_id = bob.presence.connection_id;
        room.join(&doc, bob, None);
        room.join(&doc, alice, None);
        room.leave(&doc, alice_id, LeaveReason::Timeout).unwrap();
        let seen = texts(&mut bob_rx);
        assert_eq!(seen.last().unwrap()["type"], "user_left");
        assert_eq!(seen.last().unwrap()["reason"], "timeout");
        assert!(room.empty_since().is_none());
        room.leave(&doc, bob_id, LeaveReason::Left).unwrap();
        assert!(room.is_empty() && room.empty_since().is_some());
    }
}
