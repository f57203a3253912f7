//! Fan-out between gateway instances through Redis (optional).
//!
//! Without `REDIS_URL` the bus is a no-op and the gateway is single-instance.
//! With it, every presence event and document update of a room is published
//! as an [`Envelope`] on `{prefix}:doc:{document_id}`; every instance
//! pattern-subscribes to all documents and applies events for the rooms it
//! holds, skipping its own (envelopes carry the instance id). Publishing is a
//! `try_send` into a bounded queue drained by one task in pipelines, so the
//! per-message path never waits on Redis.
//!
//! Cross-instance state kept in Redis:
//! - `{prefix}:presence:{document_id}`: hash connection_id -> [`RemoteEntry`],
//!   read to seed a room's mirror of remote members and by REST presence
//!   (cursor moves are written to it coalesced, once per flush interval).
//! - `{prefix}:instance:{id}`: heartbeat key with a TTL. An instance whose key
//!   has been missing for a whole TTL (as seen by a survivor) is dead: its
//!   sessions are ended in the database and its members leave with `timeout`.
//!
//! When Redis is down, local fan-out goes on; the outage is logged once, the
//! subscriber reconnects with backoff, and then every open room republishes
//! its members, reloads its remote members and resyncs its document from the
//! database, so nothing published during the gap is lost for good.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU8, Ordering},
    },
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use futures_util::StreamExt;
use redis::{AsyncCommands, aio::ConnectionManager};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    app::AppState,
    model::ids::DocumentId,
    model::presence::EditingStopReason,
    model::presence::LeaveReason,
    model::presence::Presence,
    rooms::room::{RemoteMember, Room},
};

/// Events queued for Redis before new ones are dropped (and counted).
const OUTBOUND_QUEUE: usize = 64 * 1024;
const MAX_BACKOFF: Duration = Duration::from_secs(5);

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
pub enum BusEvent {
    /// `yjs`: the member is a y-websocket client (see [`crate::rooms::room::RemoteMember`]).
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
}

/// The wire format on a document channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub instance: String,
    pub document_id: String,
    pub event: BusEvent,
}

/// A member as stored in the presence hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoteEntry {
    pub instance: String,
    pub presence: Presence,
    #[serde(default)]
    pub yjs: bool,
}

impl RemoteEntry {
    fn into_member(self) -> RemoteMember {
        RemoteMember::new(self.instance.into(), self.presence, self.yjs)
    }
}

/// Redis connectivity, for `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisState {
    Disabled,
    Ok,
    Down,
}

impl RedisState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::Ok => "ok",
            Self::Down => "down",
        }
    }
}

/// The bus handle every publisher holds: cheap to clone, no-op without Redis.
#[derive(Clone, Default)]
pub struct Bus(Option<Arc<RedisBus>>);

pub struct RedisBus {
    client: redis::Client,
    prefix: String,
    instance_id: Arc<str>,
    outbound: mpsc::Sender<(DocumentId, BusEvent)>,
    receiver: Mutex<Option<mpsc::Receiver<(DocumentId, BusEvent)>>>,
    /// Shared by the publisher and REST reads; `None` while Redis is unreachable.
    manager: Mutex<Option<ConnectionManager>>,
    state: AtomicU8,
}

impl Bus {
    pub fn disabled() -> Self {
        Self(None)
    }

    /// A bus on `url` (not connected yet: [`run`] connects and reconnects).
    pub fn redis(url: &str, prefix: &str, instance_id: Arc<str>) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        let (outbound, receiver) = mpsc::channel(OUTBOUND_QUEUE);
        Ok(Self(Some(Arc::new(RedisBus {
            client,
            prefix: prefix.to_owned(),
            instance_id,
            outbound,
            receiver: Mutex::new(Some(receiver)),
            manager: Mutex::new(None),
            state: AtomicU8::new(2),
        }))))
    }

    pub fn is_enabled(&self) -> bool {
        self.0.is_some()
    }

    pub fn state(&self) -> RedisState {
        match &self.0 {
            None => RedisState::Disabled,
            Some(bus) if bus.state.load(Ordering::Relaxed) == 1 => RedisState::Ok,
            Some(_) => RedisState::Down,
        }
    }

    /// Queue an event for the other instances. Never waits.
    pub fn publish(&self, document_id: &DocumentId, event: BusEvent) {
        if let Some(bus) = &self.0
            && bus.outbound.try_send((document_id.clone(), event)).is_err()
        {
            tracing::debug!(%document_id, "bus queue full; event dropped");
        }
    }

    /// Members of `document_id` on other live instances (REST presence for a
    /// document this instance has no room for).
    pub async fn remote_members(&self, document_id: &DocumentId) -> Vec<Presence> {
        let Some(bus) = &self.0 else { return Vec::new() };
        bus.load_remote(document_id)
            .await
            .into_iter()
            .map(|entry| entry.presence)
            .collect()
    }

    /// Seed a room's mirror of remote members once, when it is first joined here.
    pub async fn seed_room(&self, room: &Room) {
        let Some(bus) = &self.0 else { return };
        if room.remote_seeded.swap(true, Ordering::AcqRel) {
            return;
        }
        // Boxed: a Redis round trip's future would otherwise be part of every session's.
        let entries = Box::pin(bus.load_remote(&room.id)).await;
        room.state()
            .seed_remote(entries.into_iter().map(RemoteEntry::into_member));
    }
}

fn encode_b64(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

impl RedisBus {
    fn channel(&self, document_id: &str) -> String {
        format!("{}:doc:{}", self.prefix, document_id)
    }

    fn presence_key(&self, document_id: &str) -> String {
        format!("{}:presence:{}", self.prefix, document_id)
    }

    fn instance_key(&self, instance: &str) -> String {
        format!("{}:instance:{}", self.prefix, instance)
    }

    fn set_state(&self, up: bool) -> bool {
        let previous = self.state.swap(if up { 1 } else { 2 }, Ordering::Relaxed);
        previous != if up { 1 } else { 2 }
    }

    /// The shared connection, created on demand.
    async fn connection(&self) -> Option<ConnectionManager> {
        if let Some(manager) = self.manager.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Some(manager);
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        match self.client.get_connection_manager_with_config(config).await {
            Ok(manager) => {
                *self.manager.lock().unwrap_or_else(|e| e.into_inner()) = Some(manager.clone());
                Some(manager)
            }
            Err(_) => None,
        }
    }

    /// Entries of other instances in a document's presence hash.
    async fn load_remote(&self, document_id: &DocumentId) -> Vec<RemoteEntry> {
        let Some(mut connection) = self.connection().await else {
            return Vec::new();
        };
        let raw: HashMap<String, String> = connection
            .hgetall(self.presence_key(document_id.as_str()))
            .await
            .unwrap_or_default();
        let entries: Vec<RemoteEntry> = raw
            .values()
            .filter_map(|value| serde_json::from_str::<RemoteEntry>(value).ok())
            .filter(|entry| *entry.instance != *self.instance_id)
            .collect();
        // Entries of instances whose heartbeat is gone are ghosts: leave them out.
        let instances: HashSet<&str> = entries.iter().map(|e| e.instance.as_str()).collect();
        let mut alive = HashSet::new();
        for instance in instances {
            let exists: bool = connection
                .exists(self.instance_key(instance))
                .await
                .unwrap_or(true);
            if exists {
                alive.insert(instance.to_owned());
            }
        }
        entries
            .into_iter()
            .filter(|e| alive.contains(&e.instance))
            .collect()
    }
}

/// Run the bus: the publisher (with heartbeat, coalesced presence writes and
/// dead-instance detection) and the subscriber, until `stop`.
pub async fn run(state: AppState, stop: CancellationToken) {
    let Some(bus) = state.bus.0.clone() else { return };
    let Some(receiver) = bus.receiver.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return;
    };
    tokio::join!(
        publisher(state.clone(), bus.clone(), receiver, stop.clone()),
        subscriber(state, bus, stop)
    );
}

async fn publisher(
    state: AppState,
    bus: Arc<RedisBus>,
    mut receiver: mpsc::Receiver<(DocumentId, BusEvent)>,
    stop: CancellationToken,
) {
    let mut batch = Vec::new();
    let mut dirty: HashMap<(DocumentId, Uuid), String> = HashMap::new();
    let mut flush = tokio::time::interval(state.config.presence_flush_interval);
    let mut heartbeat = tokio::time::interval(state.config.instance_ttl / 3);
    let mut missing_since: HashMap<String, Instant> = HashMap::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            received = receiver.recv_many(&mut batch, 512) => {
                if received == 0 {
                    break;
                }
                publish_batch(&bus, &mut batch, &mut dirty).await;
            }
            _ = flush.tick() => flush_presence(&bus, &mut dirty).await,
            _ = heartbeat.tick() => {
                beat(&bus, &state).await;
                find_dead_instances(&state, &bus, &mut missing_since).await;
            }
        }
    }
    // Leaving: our members are gone from every hash, our heartbeat with them.
    if let Some(mut connection) = bus.connection().await {
        let _: Result<(), _> = connection.del(bus.instance_key(&bus.instance_id)).await;
    }
}

async fn publish_batch(
    bus: &RedisBus,
    batch: &mut Vec<(DocumentId, BusEvent)>,
    dirty: &mut HashMap<(DocumentId, Uuid), String>,
) {
    let mut pipe = redis::pipe();
    for (document_id, event) in batch.drain(..) {
        let key = bus.presence_key(document_id.as_str());
        match &event {
            BusEvent::Joined { presence, yjs } => {
                let entry = RemoteEntry {
                    instance: bus.instance_id.to_string(),
                    presence: presence.clone(),
                    yjs: *yjs,
                };
                if let Ok(value) = serde_json::to_string(&entry) {
                    pipe.hset(&key, presence.connection_id.to_string(), value)
                        .ignore();
                }
                dirty.remove(&(document_id.clone(), presence.connection_id));
            }
            BusEvent::Left { connection_id, .. } => {
                pipe.hdel(&key, connection_id.to_string()).ignore();
                dirty.remove(&(document_id.clone(), *connection_id));
            }
            BusEvent::Presence { presence, yjs, .. } => {
                let entry = RemoteEntry {
                    instance: bus.instance_id.to_string(),
                    presence: presence.clone(),
                    yjs: *yjs,
                };
                if let Ok(value) = serde_json::to_string(&entry) {
                    dirty.insert((document_id.clone(), presence.connection_id), value);
                }
            }
            BusEvent::Update { .. } | BusEvent::Awareness { .. } => {}
        }
        let envelope = Envelope {
            instance: bus.instance_id.to_string(),
            document_id: document_id.to_string(),
            event,
        };
        if let Ok(payload) = serde_json::to_string(&envelope) {
            pipe.publish(bus.channel(document_id.as_str()), payload).ignore();
        }
    }
    execute(bus, pipe).await;
}

async fn flush_presence(bus: &RedisBus, dirty: &mut HashMap<(DocumentId, Uuid), String>) {
    if dirty.is_empty() {
        return;
    }
    let mut pipe = redis::pipe();
    for ((document_id, connection_id), value) in dirty.drain() {
        pipe.hset(
            bus.presence_key(document_id.as_str()),
            connection_id.to_string(),
            value,
        )
        .ignore();
    }
    execute(bus, pipe).await;
}

async fn execute(bus: &RedisBus, pipe: redis::Pipeline) {
    let Some(mut connection) = bus.connection().await else {
        if bus.set_state(false) {
            tracing::warn!("redis is unreachable: serving local clients only until it is back");
        }
        return;
    };
    if let Err(error) = pipe.query_async::<()>(&mut connection).await
        && bus.set_state(false)
    {
        tracing::warn!(%error, "redis is unreachable: serving local clients only until it is back");
    }
}

async fn beat(bus: &RedisBus, state: &AppState) {
    let ttl = state.config.instance_ttl.as_secs().max(1);
    let mut pipe = redis::pipe();
    pipe.set_ex(
        bus.instance_key(&bus.instance_id),
        chrono::Utc::now().timestamp_millis(),
        ttl,
    )
    .ignore();
    execute(bus, pipe).await;
}

/// Instances with active sessions in the database but no heartbeat for a whole TTL are dead.
async fn find_dead_instances(state: &AppState, bus: &RedisBus, missing_since: &mut HashMap<String, Instant>) {
    use entity::user_sessions;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
    let Some(mut connection) = bus.connection().await else {
        return;
    };
    let mut candidates: HashSet<String> = user_sessions::Entity::find()
        .select_only()
        .column(user_sessions::Column::InstanceId)
        .distinct()
        .filter(user_sessions::Column::IsActive.eq(true))
        .filter(user_sessions::Column::InstanceId.ne(bus.instance_id.to_string()))
        .into_tuple::<String>()
        .all(&state.db)
        .await
        .unwrap_or_default()
        .into_iter()
        .collect();
    for room in state.hub.rooms_snapshot() {
        candidates.extend(room.state().remote_instances().map(|i| i.to_string()));
    }
    for instance in candidates {
        let Ok(exists) = connection.exists::<_, bool>(bus.instance_key(&instance)).await else {
            return; // Redis went away mid-check: decide nothing.
        };
        if exists {
            missing_since.remove(&instance);
            continue;
        }
        let since = *missing_since.entry(instance.clone()).or_insert_with(Instant::now);
        if since.elapsed() < state.config.instance_ttl {
            continue;
        }
        missing_since.remove(&instance);
        tracing::warn!(%instance, "instance stopped beating: ending its sessions");
        if let Err(error) = crate::storage::cleanup::deactivate_instance(&state.db, &instance).await {
            tracing::warn!(
                error = format!("{error:#}"),
                "could not deactivate a dead instance's sessions"
            );
        }
        for room in state.hub.rooms_snapshot() {
            let gone = room.state().remove_instance(&room.id, &instance);
            if !gone.is_empty() {
                let mut pipe = redis::pipe();
                for presence in gone {
                    pipe.hdel(
                        bus.presence_key(room.id.as_str()),
                        presence.connection_id.to_string(),
                    )
                    .ignore();
                }
                execute(bus, pipe).await;
            }
        }
    }
}

async fn subscriber(state: AppState, bus: Arc<RedisBus>, stop: CancellationToken) {
    let pattern = format!("{}:doc:*", bus.prefix);
    let mut backoff = Duration::from_millis(100);
    let mut first = true;
    loop {
        let connected = tokio::select! {
            _ = stop.cancelled() => return,
            pubsub = bus.client.get_async_pubsub() => pubsub,
        };
        let mut pubsub = match connected {
            Ok(pubsub) => pubsub,
            Err(error) => {
                if bus.set_state(false) {
                    tracing::warn!(%error, "redis is unreachable: serving local clients only until it is back");
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if pubsub.psubscribe(&pattern).await.is_err() {
            continue;
        }
        backoff = Duration::from_millis(100);
        let recovered = bus.set_state(true);
        // A fresh connection for publishing too: the old one may be half dead.
        *bus.manager.lock().unwrap_or_else(|e| e.into_inner()) = None;
        beat(&bus, &state).await;
        if recovered && !first {
            tracing::info!("redis is back: resyncing open rooms");
            resync(&state, &bus).await;
        }
        first = false;
        let mut messages = pubsub.into_on_message();
        loop {
            let message = tokio::select! {
                _ = stop.cancelled() => return,
                message = messages.next() => message,
            };
            let Some(message) = message else { break };
            match serde_json::from_slice::<Envelope>(message.get_payload_bytes()) {
                Ok(envelope) if *envelope.instance != *bus.instance_id => deliver(&state, envelope).await,
                Ok(_) => {}
                Err(error) => tracing::debug!(%error, "ignored a malformed bus message"),
            }
        }
        if bus.set_state(false) {
            tracing::warn!("lost the redis subscription: serving local clients only until it is back");
        }
    }
}

/// Apply another instance's event to the local room, if there is one.
async fn deliver(state: &AppState, envelope: Envelope) {
    let Ok(document_id) = DocumentId::parse(&envelope.document_id) else {
        return;
    };
    let Some(room) = state.hub.room(&document_id) else {
        return;
    };
    let instance: Arc<str> = envelope.instance.into();
    match envelope.event {
        BusEvent::Joined { presence, yjs } => {
            room.state()
                .remote_join(&document_id, RemoteMember::new(instance, presence, yjs));
        }
        BusEvent::Left {
            connection_id,
            user_id,
            reason,
        } => {
            room.state()
                .remote_leave(&document_id, connection_id, &user_id, reason);
        }
        BusEvent::Presence {
            presence,
            change,
            yjs,
        } => {
            room.state()
                .remote_presence(&document_id, RemoteMember::new(instance, presence, yjs), change);
        }
        BusEvent::Update { update, user_id } => {
            if let Ok(bytes) = BASE64.decode(update) {
                state.docs.apply_remote_update(&room, &user_id, bytes);
            }
        }
        BusEvent::Awareness {
            update,
            user_id,
            connection_id,
        } => {
            if let Ok(bytes) = BASE64.decode(update) {
                let _ = state
                    .docs
                    .apply_remote_awareness(&room, connection_id, &user_id, &bytes);
            }
        }
    }
}

/// After a Redis outage: republish our members, reload the others', and
/// bring every open document up to date with the database.
async fn resync(state: &AppState, bus: &RedisBus) {
    for room in state.hub.rooms_snapshot() {
        let local: Vec<(Presence, bool)> = room
            .state()
            .members()
            .iter()
            .map(|m| (m.presence.clone(), m.kind == crate::rooms::room::MemberKind::Yjs))
            .collect();
        let mut pipe = redis::pipe();
        for (presence, yjs) in local {
            let entry = RemoteEntry {
                instance: bus.instance_id.to_string(),
                presence,
                yjs,
            };
            if let Ok(value) = serde_json::to_string(&entry) {
                pipe.hset(
                    bus.presence_key(room.id.as_str()),
                    entry.presence.connection_id.to_string(),
                    value,
                )
                .ignore();
            }
        }
        execute(bus, pipe).await;
        let entries = bus.load_remote(&room.id).await;
        room.state()
            .replace_remote(&room.id, entries.into_iter().map(RemoteEntry::into_member));
        if let Err(error) = state.docs.resync_from_storage(&room).await {
            tracing::warn!(document_id = %room.id, error = format!("{:#}", anyhow::Error::from(error)), "resync after redis outage failed");
        }
    }
}

/// Event helpers for publishers.
pub fn update_event(update: &[u8], user_id: &str) -> BusEvent {
    BusEvent::Update {
        update: encode_b64(update),
        user_id: user_id.to_owned(),
    }
}

pub fn awareness_event(update: &[u8], user_id: &str, connection_id: Uuid) -> BusEvent {
    BusEvent::Awareness {
        update: encode_b64(update),
        user_id: user_id.to_owned(),
        connection_id,
    }
}
