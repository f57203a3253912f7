//! Delivery of other instances' events into this instance's rooms, and the
//! cluster's liveness: the Redis subscriber, dead-instance detection (an
//! instance whose heartbeat key stays missing for a whole TTL is dead: its
//! sessions end and its members leave with `timeout`), and the resync after a
//! Redis outage (republish our members, reload the others', bring every open
//! document up to date with the database).

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use futures_util::StreamExt;
use redis::AsyncCommands;
use sea_orm::DatabaseConnection;
use tokio_util::sync::CancellationToken;

use crate::{
    cluster::bus::{Bus, Envelope, RedisBus, RemoteEntry, Timing, beat, execute, publisher},
    cluster::revoke::{Control, ControlEnvelope},
    model::{ids::DocumentId, presence::Presence},
    rooms::{documents::Documents, events::RoomEvent, hub::Hub, member::RemoteMember},
};

const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What delivery needs: the rooms to deliver into, the documents to resync,
/// the database to end a dead instance's sessions in, and the bus's timing.
#[derive(Clone)]
pub struct Delivery {
    pub hub: Arc<Hub>,
    pub docs: Arc<Documents>,
    pub db: DatabaseConnection,
    pub timing: Timing,
    /// Control messages (revocations) apply to its deny list and API keys.
    pub verifier: Arc<crate::auth::Verifier>,
    /// Webhook targets told of a dead instance's sessions ending.
    pub hooks: Option<crate::storage::webhooks::Hooks>,
}

/// Run the cluster until `stop`: the publisher (heartbeat, coalesced presence
/// writes), dead-instance detection and the subscriber. Nothing without Redis.
pub async fn run(bus: Bus, delivery: Delivery, stop: CancellationToken) {
    let Some((redis, receiver)) = bus.take_outbound() else {
        return;
    };
    tokio::join!(
        publisher(redis.clone(), receiver, delivery.timing, stop.clone()),
        watch_instances(delivery.clone(), redis.clone(), stop.clone()),
        subscriber(delivery, redis, stop)
    );
}

/// Check the other instances' heartbeats three times per TTL.
async fn watch_instances(state: Delivery, bus: Arc<RedisBus>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(state.timing.instance_ttl / 3);
    let mut missing: HashMap<String, u32> = HashMap::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => find_dead_instances(&state, &bus, &mut missing).await,
        }
    }
}

/// Checks in a row an instance's heartbeat key must be missing before it is
/// dead. The key's own TTL already is the grace for a slow beat; the second
/// check (a beat interval later) covers a Redis that restarted empty, after
/// which every live instance beats again within one interval.
const MISSING_CHECKS: u32 = 2;

/// Instances with active sessions in the database whose heartbeat key
/// expired (missing at [`MISSING_CHECKS`] checks in a row) are dead.
async fn find_dead_instances(state: &Delivery, bus: &RedisBus, missing: &mut HashMap<String, u32>) {
    // Right after Redis came back (it may have restarted empty, heartbeat
    // keys and all) the others may not have beaten yet: judge nobody until
    // they had a TTL plus the longest reconnect backoff to do so.
    let settled = bus
        .subscribed_at
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .is_none_or(|at| at.elapsed() >= state.timing.instance_ttl + MAX_BACKOFF);
    if !settled {
        missing.clear();
        return;
    }
    let Some(mut connection) = bus.connection().await else {
        return;
    };
    let mut candidates: HashSet<String> =
        crate::storage::cleanup::instances_with_active_sessions(&state.db, &bus.instance_id)
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
            missing.remove(&instance);
            continue;
        }
        let checks = missing.entry(instance.clone()).or_insert(0);
        *checks += 1;
        if *checks < MISSING_CHECKS {
            continue;
        }
        missing.remove(&instance);
        tracing::warn!(%instance, "instance stopped beating: ending its sessions");
        if let Err(error) =
            crate::storage::cleanup::deactivate_instance(&state.db, &instance, state.hooks.as_ref()).await
        {
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

async fn subscriber(state: Delivery, bus: Arc<RedisBus>, stop: CancellationToken) {
    let control_channel = bus.control_channel();
    let direct_channel = bus.direct_channel();
    let mut backoff = Duration::from_millis(100);
    let mut first = true;
    loop {
        let connected = tokio::select! {
            _ = stop.cancelled() => return,
            pubsub = bus.client.get_async_pubsub() => pubsub,
        };
        let pubsub = match connected {
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
        let (mut sink, mut messages) = pubsub.split();
        if sink
            .subscribe(&[&control_channel, &direct_channel])
            .await
            .is_err()
            || !bus.subscriptions.connected(sink).await
        {
            bus.subscriptions.disconnected();
            continue;
        }
        // Revocations made while this instance was away or not yet started.
        crate::cluster::revoke::load(&bus, &state.verifier).await;
        let closed = state
            .hub
            .close_denied(state.verifier.deny_list(), jsonwebtoken::get_current_timestamp());
        if closed > 0 {
            tracing::info!(closed, "closed connections revoked while this instance was away");
        }
        backoff = Duration::from_millis(100);
        let recovered = bus.set_state(true);
        if !first {
            *bus.subscribed_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::time::Instant::now());
        }
        // A fresh connection for publishing too: the old one may be half dead.
        *bus.manager.lock().unwrap_or_else(|e| e.into_inner()) = None;
        beat(&bus, state.timing.instance_ttl).await;
        if recovered && !first {
            tracing::info!("redis is back: resyncing open rooms");
            resync(&state, &bus).await;
        }
        first = false;
        loop {
            let message = tokio::select! {
                _ = stop.cancelled() => return,
                message = messages.next() => message,
            };
            let Some(message) = message else { break };
            if message.get_channel_name() == control_channel {
                match serde_json::from_slice::<ControlEnvelope>(message.get_payload_bytes()) {
                    Ok(envelope) if *envelope.instance == *bus.instance_id => {}
                    Ok(ControlEnvelope {
                        instance,
                        control: Control::Claim(claim),
                    }) => crate::cluster::resume::hand_over(&state.hub, &bus, &instance, claim).await,
                    Ok(ControlEnvelope {
                        control: Control::Handover(handover),
                        ..
                    }) => crate::cluster::resume::handed_over(&bus, handover),
                    Ok(envelope) => {
                        crate::cluster::revoke::receive(&state.hub, &state.verifier, &bus, envelope).await;
                    }
                    Err(error) => tracing::debug!(%error, "ignored a malformed control message"),
                }
                continue;
            }
            metrics::counter!("tandem_redis_messages_received_total").increment(1);
            let channel = message.get_channel_name();
            if channel != direct_channel && !bus.subscriptions.is_wanted(channel) {
                // The room unloaded here: stop hearing its document.
                bus.subscriptions.drop_unwanted(channel).await;
                continue;
            }
            match serde_json::from_slice::<Envelope>(message.get_payload_bytes()) {
                Ok(envelope) if *envelope.instance != *bus.instance_id => deliver(&state, envelope).await,
                Ok(_) => {}
                Err(error) => tracing::debug!(%error, "ignored a malformed bus message"),
            }
        }
        bus.subscriptions.disconnected();
        if bus.set_state(false) {
            tracing::warn!("lost the redis subscription: serving local clients only until it is back");
        }
    }
}

/// Apply another instance's event to the local room, if there is one.
async fn deliver(state: &Delivery, envelope: Envelope) {
    let Ok(document_id) = DocumentId::parse(&envelope.document_id) else {
        return;
    };
    if let RoomEvent::Direct {
        to_user_id,
        event,
        data,
        from_user_id,
        from_connection_id,
    } = &envelope.event
    {
        // For a user, not a room: delivered whether or not the room is open here.
        if let Ok(data) = crate::protocol::json::AppData::parse(data, usize::MAX) {
            let from = crate::rooms::app_messages::Sender {
                user_id: from_user_id,
                connection_id: *from_connection_id,
            };
            crate::rooms::app_messages::direct_here(&state.hub, to_user_id, event, &data, from);
        }
        return;
    }
    let Some(room) = state.hub.room(&document_id) else {
        return;
    };
    let instance: Arc<str> = envelope.instance.into();
    match envelope.event {
        RoomEvent::Joined { presence, yjs } => {
            room.state()
                .remote_join(&document_id, RemoteMember::new(instance, presence, yjs));
        }
        RoomEvent::Left {
            connection_id,
            user_id,
            reason,
        } => {
            room.state()
                .remote_leave(&document_id, connection_id, &user_id, reason);
        }
        RoomEvent::Presence {
            presence,
            change,
            yjs,
        } => {
            room.state()
                .remote_presence(&document_id, RemoteMember::new(instance, presence, yjs), change);
        }
        RoomEvent::Update { update, user_id } => {
            if let Ok(bytes) = BASE64.decode(update) {
                state.docs.apply_remote_update(&room, &user_id, bytes);
            }
        }
        RoomEvent::Awareness {
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
        RoomEvent::Broadcast {
            event,
            data,
            user_id,
            connection_id,
        } => {
            // Checked by its origin; parsed again because nothing from the
            // bus is trusted blindly (no size limit: the origin applied its own).
            if let Ok(data) = crate::protocol::json::AppData::parse(&data, usize::MAX) {
                crate::rooms::app_messages::broadcast_here(&room, &event, &data, &user_id, connection_id);
            }
        }
        RoomEvent::Direct { .. } => {}
    }
}

/// After a Redis outage: republish our members, reload the others', and
/// bring every open document up to date with the database.
async fn resync(state: &Delivery, bus: &RedisBus) {
    for room in state.hub.rooms_snapshot() {
        let local: Vec<(Presence, bool)> = room
            .state()
            .members()
            .iter()
            .map(|m| {
                (
                    m.presence.clone(),
                    m.kind == crate::rooms::member::MemberKind::Yjs,
                )
            })
            .collect();
        let mut pipe = redis::pipe();
        for (presence, yjs) in local {
            // Announce as well as store: an instance that reloaded the hash
            // before this one republished would otherwise never hear of
            // these members (joins are idempotent for those that did).
            let announce = Envelope {
                instance: bus.instance_id.to_string(),
                document_id: room.id.to_string(),
                event: RoomEvent::Joined {
                    presence: presence.clone(),
                    yjs,
                },
            };
            if let Ok(message) = serde_json::to_string(&announce) {
                pipe.publish(bus.channel(room.id.as_str()), message).ignore();
            }
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
