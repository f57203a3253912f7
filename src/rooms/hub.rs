//! The hub: every open room and every local connection of this instance.
//!
//! Lock order is hub (rooms map) before room; neither is held across an
//! `.await`. Joins and leaves go through the hub so a room is never removed
//! while someone is joining it; presence messages go straight to the room the
//! session already holds.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    model::ids::DocumentId,
    model::ids::MessageId,
    model::presence::LeaveReason,
    model::presence::{Presence, PresenceEvent, PresenceSink},
    model::revocation::{Credential, DenyEntry, DenyList, Revocation},
    rooms::events::{Publish, RemoteChange, RoomEvent},
    rooms::{
        member::Member,
        room::{PresenceChange, Room},
    },
};

/// A local connection as the hub sees it: enough to end it from outside.
#[derive(Debug, Clone)]
pub struct ConnectionHandle {
    pub session_id: Uuid,
    pub connection_id: Uuid,
    pub user_id: Arc<str>,
    /// Fired to end the session from outside (stale cleanup).
    pub end: CancellationToken,
    /// Milliseconds since the hub started when the client was last heard from.
    pub last_heard_ms: Arc<AtomicU64>,
    /// `json` or `yjs`; [`PARKED`] while its session waits to be resumed.
    pub protocol: &'static str,
    /// Revocations addressed to this connection.
    pub revoke: Arc<RevokeSignal>,
    /// The credential it holds now (a refresh replaces it), for the deny list.
    pub credential: Arc<Mutex<Credential>>,
    /// Its send queue, for messages to the user rather than to a room
    /// (`direct`); `None` for `/yjs` connections, which speak no JSON.
    pub outbox: Option<crate::rooms::outbox::Outbox>,
}

impl ConnectionHandle {
    fn credential(&self) -> Credential {
        self.credential.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// What revocations ask of one connection; its read loop listens.
#[derive(Debug, Default)]
pub struct RevokeSignal {
    /// Fired: close the connection with 4005.
    pub all: CancellationToken,
    documents: Mutex<Vec<DocumentId>>,
    /// Woken when documents were added (a permit is kept if nobody waits).
    pub documents_added: tokio::sync::Notify,
}

impl RevokeSignal {
    /// Ask the connection to leave `document_id` (it may not have joined it).
    pub fn revoke_document(&self, document_id: DocumentId) {
        self.documents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(document_id);
        self.documents_added.notify_one();
    }

    pub fn take_documents(&self) -> Vec<DocumentId> {
        std::mem::take(&mut *self.documents.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Counters for `/stats` and `/health`.
#[derive(Debug, Default)]
pub struct Counters {
    pub messages_processed: AtomicU64,
    pub messages_rejected: AtomicU64,
    pub connections_opened: AtomicU64,
}

/// Every room and local connection.
pub struct Hub {
    rooms: Mutex<HashMap<DocumentId, Arc<Room>>>,
    connections: Mutex<HashMap<Uuid, ConnectionHandle>>,
    /// Presence rows, written behind (the database's write-behind buffer).
    presence_rows: Arc<dyn PresenceSink>,
    /// Events for other instances (the cluster bus, or nothing).
    pub cluster: Arc<dyn Publish>,
    pub counters: Counters,
    started: Instant,
    /// Least time between relays of one member's cursor or selection.
    presence_interval: Option<Duration>,
    /// Rooms with presence held back for its trailing edge.
    deferred: Mutex<std::collections::HashSet<DocumentId>>,
    /// Sessions whose socket dropped, waiting to be resumed.
    pub parking: crate::rooms::parking::Parking,
}

/// The protocol a parked session's handle shows (it has no socket).
pub const PARKED: &str = "parked";

impl Hub {
    pub fn new(presence_rows: Arc<dyn PresenceSink>, cluster: Arc<dyn Publish>) -> Self {
        Self {
            rooms: Mutex::new(HashMap::new()),
            connections: Mutex::new(HashMap::new()),
            presence_rows,
            cluster,
            counters: Counters::default(),
            started: Instant::now(),
            presence_interval: None,
            deferred: Mutex::default(),
            parking: Default::default(),
        }
    }

    /// Relay each member's cursor and selection at most `hz` times a second
    /// (the last change in every interval is always relayed).
    pub fn with_presence_max_hz(mut self, hz: u32) -> Self {
        self.presence_interval = (hz > 0).then(|| Duration::from_secs(1) / hz);
        self
    }

    /// How often [`Hub::relay_deferred_presence`] should run.
    pub fn presence_tick(&self) -> Option<Duration> {
        self.presence_interval
            .map(|interval| (interval / 2).max(Duration::from_millis(1)))
    }

    fn deferred_rooms(&self) -> MutexGuard<'_, std::collections::HashSet<DocumentId>> {
        self.deferred.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The trailing edge: relay the held-back cursors and selections whose
    /// interval has passed, here and to the other instances.
    pub fn relay_deferred_presence(&self) {
        let ids: Vec<DocumentId> = self.deferred_rooms().drain().collect();
        for id in ids {
            let Some(room) = self.room(&id) else { continue };
            let (relayed, still_waiting) = room.state().relay_deferred(&id, Instant::now());
            if still_waiting {
                self.deferred_rooms().insert(id.clone());
            }
            for (presence, change, yjs) in relayed {
                self.cluster.publish(
                    &id,
                    RoomEvent::Presence {
                        presence,
                        change,
                        yjs,
                    },
                );
            }
        }
    }

    fn rooms(&self) -> MutexGuard<'_, HashMap<DocumentId, Arc<Room>>> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn connections(&self) -> MutexGuard<'_, HashMap<Uuid, ConnectionHandle>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Milliseconds since this hub started: a cheap monotonic clock for liveness.
    pub fn clock_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn register(&self, handle: ConnectionHandle) {
        self.counters.connections_opened.fetch_add(1, Ordering::Relaxed);
        self.connections().insert(handle.session_id, handle);
    }

    /// Queue `text` for every local JSON connection of `user_id`; how many.
    pub fn send_to_user(&self, user_id: &str, text: &crate::protocol::json::Encoded) -> usize {
        let outboxes: Vec<crate::rooms::outbox::Outbox> = self
            .connections()
            .values()
            .filter(|c| *c.user_id == *user_id)
            .filter_map(|c| c.outbox.clone())
            .collect();
        outboxes.iter().filter(|outbox| outbox.text(text.clone())).count()
    }

    /// The session's socket is gone and it waits to be resumed: it no
    /// longer counts as a connection, though its queue still fills.
    pub fn mark_parked(&self, session_id: Uuid) {
        if let Some(handle) = self.connections().get_mut(&session_id) {
            handle.protocol = PARKED;
        }
    }

    pub fn unregister(&self, session_id: Uuid) {
        self.connections().remove(&session_id);
    }

    pub fn connection(&self, session_id: Uuid) -> Option<ConnectionHandle> {
        self.connections().get(&session_id).cloned()
    }

    /// Apply `revocation` to the local connections it targets: close them,
    /// or have them leave its document. Returns how many it targeted here
    /// and the deny entries for what it closed.
    pub fn revoke(&self, revocation: &Revocation) -> (usize, Vec<DenyEntry>) {
        let document = revocation
            .document_id
            .as_deref()
            .and_then(|id| DocumentId::parse(id).ok());
        let targeted: Vec<ConnectionHandle> = self
            .connections()
            .values()
            .filter(|handle| revocation.matches(&handle.user_id, handle.session_id))
            .cloned()
            .collect();
        let credentials: Vec<Credential> = targeted.iter().map(ConnectionHandle::credential).collect();
        for handle in &targeted {
            match &document {
                Some(document_id) => handle.revoke.revoke_document(document_id.clone()),
                None => handle.revoke.all.cancel(),
            }
        }
        (targeted.len(), revocation.deny_entries(&credentials))
    }

    /// Close (4005) the local connections whose credential `deny` now
    /// refuses: after deny entries arrived that this instance missed (it was
    /// away from Redis, or the connection registered meanwhile).
    pub fn close_denied(&self, deny: &DenyList, now: u64) -> usize {
        let denied: Vec<ConnectionHandle> = self
            .connections()
            .values()
            .filter(|handle| deny.denies(&handle.user_id, &handle.credential(), now))
            .cloned()
            .collect();
        for handle in &denied {
            handle.revoke.all.cancel();
        }
        denied.len()
    }

    /// Open local connections per protocol (`json`, `yjs`).
    pub fn connections_by_protocol(&self) -> HashMap<&'static str, usize> {
        let mut counts = HashMap::new();
        for handle in self.connections().values() {
            *counts.entry(handle.protocol).or_insert(0) += 1;
        }
        counts
    }

    /// Open connections (parked sessions are not).
    pub fn connection_count(&self) -> usize {
        self.connections()
            .values()
            .filter(|handle| handle.protocol != PARKED)
            .count()
    }

    /// The room for `document_id`, created if needed, with a join registered
    /// so it is not unloaded until [`Hub::finish_join`] or [`Hub::abort_join`].
    pub fn begin_join(&self, document_id: &DocumentId) -> Arc<Room> {
        let mut rooms = self.rooms();
        let room = rooms
            .entry(document_id.clone())
            .or_insert_with(|| {
                let room = Room::new(document_id.clone());
                room.state().presence_interval = self.presence_interval;
                Arc::new(room)
            })
            .clone();
        room.begin_join();
        room
    }

    /// Add the member to a room obtained from [`Hub::begin_join`] and send it
    /// its welcome (see [`crate::rooms::room::RoomState::join`]); returns everyone present.
    pub fn finish_join(&self, room: &Room, member: Member, id: Option<&MessageId>) -> Vec<Presence> {
        let joined = member.presence.clone();
        let yjs = member.kind == crate::rooms::member::MemberKind::Yjs;
        self.cluster.publish(
            &room.id,
            RoomEvent::Joined {
                presence: member.presence.clone(),
                yjs,
            },
        );
        let (list, first_device) = {
            let mut state = room.state();
            let first_device = state.devices_of(&joined.user_id) == 0;
            (state.join(&room.id, member, id), first_device)
        };
        room.end_join();
        self.presence_rows.presence(&room.id, &joined, true, true);
        self.presence_rows
            .presence_event(&room.id, &joined, PresenceEvent::Joined { first_device });
        list
    }

    /// Add a member that moved here from another instance (a resume) to a
    /// room obtained from [`Hub::begin_join`]: nobody is told it joined,
    /// and the other instances learn where it is now.
    pub fn attach(&self, room: &Room, member: Member) {
        let presence = member.presence.clone();
        self.cluster.publish(
            &room.id,
            RoomEvent::Joined {
                presence: presence.clone(),
                yjs: false,
            },
        );
        room.state().attach(member);
        room.end_join();
        self.presence_rows.presence(&room.id, &presence, true, true);
    }

    pub fn abort_join(&self, room: &Room) {
        room.end_join();
    }

    /// Remove a member from a room and record it; returns its last presence.
    pub fn leave(&self, room: &Room, connection_id: Uuid, reason: LeaveReason) -> Option<Presence> {
        let (member, last_device) = {
            let mut state = room.state();
            let member = state.leave(&room.id, connection_id, reason)?;
            let last_device = state.devices_of(&member.presence.user_id) == 0;
            (member, last_device)
        };
        let mut presence = member.presence;
        presence.last_seen_at = Utc::now();
        self.cluster.publish(
            &room.id,
            RoomEvent::Left {
                connection_id,
                user_id: presence.user_id.to_string(),
                reason,
            },
        );
        self.presence_rows.presence(&room.id, &presence, false, true);
        self.presence_rows
            .presence_event(&room.id, &presence, PresenceEvent::Left { last_device, reason });
        Some(presence)
    }

    /// Apply a presence change and write it behind (coalesced).
    pub fn update_presence(&self, room: &Room, connection_id: Uuid, change: PresenceChange) -> bool {
        let urgent = matches!(
            change,
            PresenceChange::EditingStart | PresenceChange::EditingStop(_)
        );
        let presence = room
            .state()
            .change_presence(&room.id, connection_id, change, Utc::now());
        match presence {
            Some((presence, _, false)) => {
                // Held back by --presence-max-hz: relayed (and published) on
                // the trailing edge; the row follows as ever.
                self.presence_rows.presence(&room.id, &presence, true, urgent);
                self.deferred_rooms().insert(room.id.clone());
                true
            }
            Some((presence, kind, true)) => {
                let yjs = kind == crate::rooms::member::MemberKind::Yjs;
                let remote = match change {
                    PresenceChange::Cursor(_) => Some(RemoteChange::Cursor),
                    PresenceChange::Selection(_) => Some(RemoteChange::Selection),
                    PresenceChange::EditingStart => Some(RemoteChange::EditingStart),
                    PresenceChange::EditingStop(reason) => Some(RemoteChange::EditingStop(reason)),
                    PresenceChange::Activity => None,
                };
                if let Some(change) = remote {
                    self.presence_rows.presence(&room.id, &presence, true, urgent);
                    self.cluster.publish(
                        &room.id,
                        RoomEvent::Presence {
                            presence,
                            change,
                            yjs,
                        },
                    );
                }
                true
            }
            None => false,
        }
    }

    pub fn room(&self, document_id: &DocumentId) -> Option<Arc<Room>> {
        self.rooms().get(document_id).cloned()
    }

    pub fn rooms_snapshot(&self) -> Vec<Arc<Room>> {
        self.rooms().values().cloned().collect()
    }

    /// Stop editing for idle members in every room, telling everyone.
    pub fn expire_editing(&self, timeout: Duration) {
        let now = Utc::now();
        for room in self.rooms_snapshot() {
            let stopped = room.state().expire_editing(&room.id, timeout, now);
            for presence in stopped {
                self.presence_rows.presence(&room.id, &presence, true, true);
                let change = RemoteChange::EditingStop(crate::model::presence::EditingStopReason::Idle);
                self.cluster.publish(
                    &room.id,
                    RoomEvent::Presence {
                        presence,
                        change,
                        yjs: false,
                    },
                );
            }
        }
    }

    /// Drop the room of `document_id` at once if nobody is in it or joining
    /// and nothing in it is unsaved: a REST read loads a document without
    /// leaving a room (and the document) in memory for the grace period.
    pub fn release_if_idle(&self, document_id: &DocumentId) -> bool {
        let mut rooms = self.rooms();
        let Some(room) = rooms.get(document_id) else {
            return false;
        };
        let idle = room.state().is_empty() && !room.has_joiners() && room.is_settled();
        if idle {
            rooms.remove(document_id);
            self.cluster.unsubscribe(document_id);
        }
        idle
    }

    /// Drop rooms empty for longer than `grace`, unless someone is joining or
    /// the room says it cannot be unloaded yet.
    pub fn unload_idle_rooms(&self, grace: Duration, can_unload: impl Fn(&Room) -> bool) -> usize {
        let mut rooms = self.rooms();
        let before = rooms.len();
        rooms.retain(|_, room| {
            let idle = {
                let state = room.state();
                state.is_empty() && state.empty_since().is_some_and(|since| since.elapsed() >= grace)
            };
            let unload = idle && !room.has_joiners() && can_unload(room);
            if unload {
                self.cluster.unsubscribe(&room.id);
            }
            !unload
        });
        before - rooms.len()
    }
}
