//! Fan-out between gateway instances through Redis (optional).
//!
//! Without `REDIS_URL` the bus is a no-op and the gateway is single-instance.
//! With it, every presence event and document update of a room is published
//! as an [`Envelope`] on `{prefix}:doc:{document_id}`; an instance subscribes
//! to the channel of each document while its room is open there
//! ([`crate::cluster::subscriptions`]) and applies those events, skipping its
//! own (envelopes carry the instance id). Messages to a user (`Direct`) go on
//! `{prefix}:direct`, which every instance hears. Publishing is a
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
    time::Duration,
};

use redis::{AsyncCommands, aio::ConnectionManager};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    model::{ids::DocumentId, presence::Presence},
    rooms::{
        events::{Publish, RoomEvent},
        member::RemoteMember,
        room::Room,
    },
};

/// Events queued for Redis before new ones are dropped (and counted).
const OUTBOUND_QUEUE: usize = 64 * 1024;

/// The wire format on a document channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub instance: String,
    pub document_id: String,
    pub event: RoomEvent,
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
    pub(crate) fn into_member(self) -> RemoteMember {
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
    pub(crate) client: redis::Client,
    pub(crate) prefix: String,
    pub(crate) instance_id: Arc<str>,
    outbound: mpsc::Sender<(DocumentId, RoomEvent)>,
    receiver: Mutex<Option<Outbound>>,
    /// Shared by the publisher and REST reads; `None` while Redis is unreachable.
    pub(crate) manager: Mutex<Option<ConnectionManager>>,
    state: AtomicU8,
    /// When the subscriber last reconnected after losing Redis (`None`
    /// before any outage): heartbeat keys lost with a Redis restart are not
    /// judged until every instance had time to beat again.
    pub(crate) subscribed_at: Mutex<Option<std::time::Instant>>,
    /// This instance's claims of sessions parked elsewhere, waiting for
    /// their handover (see [`crate::cluster::resume`]).
    pub(crate) claims: crate::cluster::claims::Claims,
    /// The document channels of the rooms open here.
    pub(crate) subscriptions: crate::cluster::subscriptions::Subscriptions,
}

/// The queue of events waiting for the publisher.
pub(crate) type Outbound = mpsc::Receiver<(DocumentId, RoomEvent)>;

/// The intervals the bus keeps.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How often coalesced presence-hash writes go out.
    pub presence_flush_interval: Duration,
    /// An instance whose heartbeat key is missing this long is dead.
    pub instance_ttl: Duration,
}

impl Bus {
    pub fn disabled() -> Self {
        Self(None)
    }

    /// A bus on `url` (not connected yet: [`crate::cluster::delivery::run`] connects and reconnects).
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
            subscribed_at: Mutex::new(None),
            claims: Default::default(),
            subscriptions: Default::default(),
        }))))
    }

    /// The Redis side, when configured.
    pub(crate) fn redis_side(&self) -> Option<Arc<RedisBus>> {
        self.0.clone()
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

    /// The Redis side and the queue its publisher drains, once (`None`
    /// without Redis, or when already taken).
    pub(crate) fn take_outbound(&self) -> Option<(Arc<RedisBus>, Outbound)> {
        let bus = self.0.clone()?;
        let receiver = bus.receiver.lock().unwrap_or_else(|e| e.into_inner()).take()?;
        Some((bus, receiver))
    }

    /// Queue an event for the other instances. Never waits.
    pub fn publish(&self, document_id: &DocumentId, event: RoomEvent) {
        if let Some(bus) = &self.0 {
            bus.publish_event(document_id, event);
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

impl RedisBus {
    pub(crate) fn channel(&self, document_id: &str) -> String {
        format!("{}:doc:{}", self.prefix, document_id)
    }

    /// The channel of messages to users, which every instance hears.
    pub(crate) fn direct_channel(&self) -> String {
        format!("{}:direct", self.prefix)
    }

    /// The channel of control messages (revocations) between instances.
    /// Queue an event for the other instances. Never waits.
    pub(crate) fn publish_event(&self, document_id: &DocumentId, event: RoomEvent) {
        if self.outbound.try_send((document_id.clone(), event)).is_err() {
            tracing::debug!(%document_id, "bus queue full; event dropped");
        }
    }

    pub(crate) fn control_channel(&self) -> String {
        format!("{}:control", self.prefix)
    }

    pub(crate) fn presence_key(&self, document_id: &str) -> String {
        format!("{}:presence:{}", self.prefix, document_id)
    }

    pub(crate) fn instance_key(&self, instance: &str) -> String {
        format!("{}:instance:{}", self.prefix, instance)
    }

    pub(crate) fn set_state(&self, up: bool) -> bool {
        let previous = self.state.swap(if up { 1 } else { 2 }, Ordering::Relaxed);
        previous != if up { 1 } else { 2 }
    }

    /// The shared connection, created on demand.
    pub(crate) async fn connection(&self) -> Option<ConnectionManager> {
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
    pub(crate) async fn load_remote(&self, document_id: &DocumentId) -> Vec<RemoteEntry> {
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

/// Drain the outbound queue into Redis in pipelines, coalesce presence-hash
/// writes per flush interval and keep this instance's heartbeat, until `stop`.
pub(crate) async fn publisher(
    bus: Arc<RedisBus>,
    mut receiver: Outbound,
    timing: Timing,
    stop: CancellationToken,
) {
    let mut batch = Vec::new();
    let mut dirty: HashMap<(DocumentId, Uuid), String> = HashMap::new();
    let mut flush = tokio::time::interval(timing.presence_flush_interval);
    let mut heartbeat = tokio::time::interval(timing.instance_ttl / 3);
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
            _ = heartbeat.tick() => beat(&bus, timing.instance_ttl).await,
        }
    }
    // Leaving: our members are gone from every hash, our heartbeat with them.
    if let Some(mut connection) = bus.connection().await {
        let _: Result<(), _> = connection.del(bus.instance_key(&bus.instance_id)).await;
    }
}

async fn publish_batch(
    bus: &RedisBus,
    batch: &mut Vec<(DocumentId, RoomEvent)>,
    dirty: &mut HashMap<(DocumentId, Uuid), String>,
) {
    let mut pipe = redis::pipe();
    let mut published = 0u64;
    for (document_id, event) in batch.drain(..) {
        let key = bus.presence_key(document_id.as_str());
        match &event {
            RoomEvent::Joined { presence, yjs } => {
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
            RoomEvent::Left { connection_id, .. } => {
                pipe.hdel(&key, connection_id.to_string()).ignore();
                dirty.remove(&(document_id.clone(), *connection_id));
            }
            RoomEvent::Presence { presence, yjs, .. } => {
                let entry = RemoteEntry {
                    instance: bus.instance_id.to_string(),
                    presence: presence.clone(),
                    yjs: *yjs,
                };
                if let Ok(value) = serde_json::to_string(&entry) {
                    dirty.insert((document_id.clone(), presence.connection_id), value);
                }
            }
            RoomEvent::Update { .. }
            | RoomEvent::Awareness { .. }
            | RoomEvent::Broadcast { .. }
            | RoomEvent::Direct { .. } => {}
        }
        let envelope = Envelope {
            instance: bus.instance_id.to_string(),
            document_id: document_id.to_string(),
            event,
        };
        let channel = match &envelope.event {
            // For a user wherever they are connected, not for a room.
            RoomEvent::Direct { .. } => bus.direct_channel(),
            _ => bus.channel(document_id.as_str()),
        };
        if let Ok(payload) = serde_json::to_string(&envelope) {
            pipe.publish(channel, payload).ignore();
            published += 1;
        }
    }
    if execute(bus, pipe).await {
        metrics::counter!("tandem_redis_messages_published_total").increment(published);
    }
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

/// Run `pipe`; whether Redis took it.
pub(crate) async fn execute(bus: &RedisBus, pipe: redis::Pipeline) -> bool {
    let Some(mut connection) = bus.connection().await else {
        if bus.set_state(false) {
            tracing::warn!("redis is unreachable: serving local clients only until it is back");
        }
        return false;
    };
    match pipe.query_async::<()>(&mut connection).await {
        Ok(()) => true,
        Err(error) => {
            if bus.set_state(false) {
                tracing::warn!(%error, "redis is unreachable: serving local clients only until it is back");
            }
            false
        }
    }
}

/// Refresh this instance's heartbeat key (it expires after `instance_ttl`).
pub(crate) async fn beat(bus: &RedisBus, instance_ttl: Duration) {
    let ttl = instance_ttl.as_secs().max(1);
    let mut pipe = redis::pipe();
    pipe.set_ex(
        bus.instance_key(&bus.instance_id),
        chrono::Utc::now().timestamp_millis(),
        ttl,
    )
    .ignore();
    execute(bus, pipe).await;
}

impl Publish for Bus {
    fn publish(&self, document_id: &DocumentId, event: RoomEvent) {
        Bus::publish(self, document_id, event);
    }

    fn subscribe<'a>(&'a self, document_id: &'a DocumentId) -> crate::model::log::BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Some(bus) = &self.0 {
                bus.subscriptions.want(bus.channel(document_id.as_str())).await;
            }
        })
    }

    fn unsubscribe(&self, document_id: &DocumentId) {
        if let Some(bus) = &self.0 {
            bus.subscriptions.unwant(&bus.channel(document_id.as_str()));
        }
    }
}
