//! Resume on another instance: a client whose socket dropped from instance
//! A reconnects to B with its resume token. B does not know the token, so
//! it publishes a [`Claim`] on the control channel; A, holding the parked
//! session, hands it over ([`Handover`]: the session record and its
//! presence in each document), turns its members into remote ones and
//! forgets it, all without a leave. B makes the members local (a `Joined`
//! that every instance takes as a move, not a join) and sends the client a
//! fresh `presence_list` per document: A's queued messages are not needed.

use std::{sync::Arc, time::Duration};

use tokio::sync::oneshot;
use uuid::Uuid;

pub use crate::cluster::claims::{Claim, Handover, Moved};
use crate::{
    cluster::{
        bus::{Bus, RedisBus},
        revoke::{Control, publish},
    },
    model::presence::LeaveReason,
    rooms::{events::RoomEvent, hub::Hub},
};

/// How long a claim waits for some instance's handover. Longer than the
/// parked task's own handover wait, so a session handed over is not lost
/// to a claimant that already gave up (see [`handed_over`]).
const CLAIM_WAIT: Duration = Duration::from_secs(3);

/// Ask the other instances for the session parked under `token`; none
/// without Redis, for a token no instance holds (or another user's), or if
/// no answer came in time.
pub async fn claim_elsewhere(bus: &Bus, token: &str, user_id: &str) -> Option<Moved> {
    let redis = bus.redis_side()?;
    let request_id = Uuid::new_v4();
    let (answer, answered) = oneshot::channel();
    redis.claims.lock().insert(request_id, answer);
    let claim = Claim {
        request_id,
        token: token.to_owned(),
        user_id: user_id.to_owned(),
    };
    let moved = if publish(&redis, Control::Claim(claim)).await {
        tokio::time::timeout(CLAIM_WAIT, answered)
            .await
            .ok()
            .and_then(Result::ok)
    } else {
        None
    };
    redis.claims.lock().remove(&request_id);
    moved
}

/// Another instance's claim: if the session is parked here, and the
/// user's, hand it over to `claimant` and let go of it silently.
pub(crate) async fn hand_over(hub: &Hub, redis: &RedisBus, claimant: &str, claim: Claim) {
    let Some(parked) = hub.parking.claim(&claim.token, &claim.user_id).await else {
        return;
    };
    let instance: Arc<str> = claimant.into();
    let connection_id = parked.record.connection_id;
    let documents = parked
        .rooms
        .iter()
        .filter_map(|room| {
            let presence = room.state().detach(connection_id, instance.clone())?;
            Some((room.id.clone(), presence))
        })
        .collect();
    hub.unregister(parked.record.session_id);
    tracing::info!(session_id = %parked.record.session_id, to = claimant, "parked session moved to another instance");
    let handover = Handover {
        request_id: claim.request_id,
        to_instance: claimant.to_owned(),
        record: parked.record,
        documents,
    };
    publish(redis, Control::Handover(handover)).await;
}

/// A handover on the control channel: to this instance's waiting claim, if
/// it is ours. One that came too late (the claimant already started a new
/// session) ends the moved session everywhere, so it leaves no ghost.
pub(crate) fn handed_over(redis: &RedisBus, handover: Handover) {
    if *handover.to_instance != *redis.instance_id {
        return;
    }
    let waiting = redis.claims.lock().remove(&handover.request_id);
    let moved = Moved {
        record: handover.record,
        documents: handover.documents,
    };
    let moved = match waiting {
        Some(answer) => match answer.send(moved) {
            Ok(()) => return,
            Err(moved) => moved,
        },
        None => moved,
    };
    tracing::warn!(session_id = %moved.record.session_id, "a session handed over too late; ending it");
    for (document_id, presence) in moved.documents {
        redis.publish_event(
            &document_id,
            RoomEvent::Left {
                connection_id: presence.connection_id,
                user_id: presence.user_id.to_string(),
                reason: LeaveReason::Disconnected,
            },
        );
    }
}
