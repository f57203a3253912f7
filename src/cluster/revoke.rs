//! Revocation on every instance: the connections a revocation targets are
//! closed (4005) or leave its document wherever they are, and the deny
//! entries for what was closed reach every instance, now and later.
//!
//! The instance that takes the admin call applies it to its own connections,
//! then publishes it on `{prefix}:control`; each other instance applies it to
//! its own and publishes the deny entries it made (only the instance holding
//! a session knows its token's fingerprint). Deny entries are also kept in
//! Redis (`{prefix}:deny:<hash>`, expiring with the entry), so an instance
//! started later, or back from a Redis outage, loads them.
//!
//! The control channel also carries backends' direct messages to a user
//! (`POST /api/v1/users/{id}/messages`): they concern no room, so they
//! cannot ride a document's channel.

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use crate::{
    auth::Verifier,
    cluster::bus::{Bus, RedisBus},
    model::revocation::{DenyEntry, Revocation},
    rooms::hub::Hub,
};

/// A message on the control channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    Revoke {
        revocation: Revocation,
    },
    Deny {
        entries: Vec<DenyEntry>,
    },
    /// An app event for every connection of a user, from a backend (REST).
    Direct {
        to_user_id: String,
        event: String,
        data: String,
        from_user_id: String,
    },
    /// A reconnecting client's resume token this instance does not know:
    /// whichever instance parked that session hands it over.
    Claim(crate::cluster::claims::Claim),
    /// The answer to a [`Control::Claim`], for `to_instance` only.
    Handover(crate::cluster::claims::Handover),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ControlEnvelope {
    pub instance: String,
    pub control: Control,
}

/// Apply `revocation` to this instance: its connections, its deny list and
/// a revoked API key's cache entry. Returns how many connections it
/// targeted here and the deny entries made.
pub fn apply_here(hub: &Hub, verifier: &Verifier, revocation: &Revocation) -> (usize, Vec<DenyEntry>) {
    // Revocations are rare admin actions: a good moment to drop lapsed entries.
    verifier.deny_list().prune(jsonwebtoken::get_current_timestamp());
    let (targeted, entries) = hub.revoke(revocation);
    metrics::counter!("tandem_revocations_total").increment(1);
    for entry in &entries {
        verifier.deny_list().add(entry);
    }
    if revocation.document_id.is_none()
        && let Some(user_id) = &revocation.user_id
        && let (Some(key_id), Some(api_keys)) = (
            user_id.strip_prefix(crate::auth::API_KEY_USER_PREFIX),
            verifier.api_keys(),
        )
    {
        api_keys.invalidate(key_id);
    }
    (targeted, entries)
}

/// Revoke on every instance. Returns the connections targeted here and
/// whether the revocation was published to the others.
pub async fn revoke_everywhere(
    hub: &Hub,
    verifier: &Verifier,
    bus: &Bus,
    revocation: Revocation,
) -> (usize, bool) {
    let (targeted, entries) = apply_here(hub, verifier, &revocation);
    let Some(redis) = bus.redis_side() else {
        return (targeted, false);
    };
    let published = publish(&redis, Control::Revoke { revocation }).await;
    share_entries(&redis, entries).await;
    (targeted, published)
}

/// A backend's direct message to `to_user_id`, for the other instances;
/// whether it was published.
pub async fn publish_direct(
    bus: &Bus,
    to_user_id: &str,
    event: &str,
    data: &str,
    from_user_id: &str,
) -> bool {
    let Some(redis) = bus.redis_side() else {
        return false;
    };
    publish(
        &redis,
        Control::Direct {
            to_user_id: to_user_id.to_owned(),
            event: event.to_owned(),
            data: data.to_owned(),
            from_user_id: from_user_id.to_owned(),
        },
    )
    .await
}

/// Publish a revocation of `user_id` from outside a gateway (the CLI
/// revoking an API key): every running instance applies it.
pub async fn publish_from_outside(redis_url: &str, prefix: &str, user_id: String) -> anyhow::Result<()> {
    let client = redis::Client::open(redis_url)?;
    let mut connection = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        client.get_multiplexed_async_connection(),
    )
    .await??;
    let envelope = ControlEnvelope {
        instance: "cli".into(),
        control: Control::Revoke {
            revocation: Revocation {
                user_id: Some(user_id),
                session_id: None,
                document_id: None,
                at: jsonwebtoken::get_current_timestamp(),
            },
        },
    };
    connection
        .publish::<_, _, i64>(format!("{prefix}:control"), serde_json::to_string(&envelope)?)
        .await?;
    Ok(())
}

/// Another instance's control message.
pub(crate) async fn receive(hub: &Hub, verifier: &Verifier, redis: &RedisBus, envelope: ControlEnvelope) {
    if *envelope.instance == *redis.instance_id {
        return;
    }
    match envelope.control {
        Control::Revoke { revocation } => {
            let (_, entries) = apply_here(hub, verifier, &revocation);
            share_entries(redis, entries).await;
        }
        Control::Direct {
            to_user_id,
            event,
            data,
            from_user_id,
        } => {
            if let Ok(data) = crate::protocol::json::AppData::parse(&data, usize::MAX) {
                let from = crate::rooms::app_messages::Sender {
                    user_id: &from_user_id,
                    connection_id: None,
                };
                crate::rooms::app_messages::direct_here(hub, &to_user_id, &event, &data, from);
            }
        }
        // Handled by `cluster::resume`, which `delivery` hands them to.
        Control::Claim(_) | Control::Handover(_) => {}
        Control::Deny { entries } => {
            for entry in &entries {
                verifier.deny_list().add(entry);
            }
            // A session's connection registered here after the revocation
            // passed (it raced the upgrade) is closed now.
            hub.close_denied(verifier.deny_list(), jsonwebtoken::get_current_timestamp());
        }
    }
}

/// Store `entries` in Redis and tell the other instances.
async fn share_entries(redis: &RedisBus, entries: Vec<DenyEntry>) {
    if entries.is_empty() {
        return;
    }
    store(redis, &entries).await;
    publish(redis, Control::Deny { entries }).await;
}

/// Send `control` to the other instances; whether Redis took it.
pub(crate) async fn publish(redis: &RedisBus, control: Control) -> bool {
    let envelope = ControlEnvelope {
        instance: redis.instance_id.to_string(),
        control,
    };
    let (Ok(payload), Some(mut connection)) = (serde_json::to_string(&envelope), redis.connection().await)
    else {
        return false;
    };
    connection
        .publish::<_, _, i64>(redis.control_channel(), payload)
        .await
        .is_ok()
}

async fn store(redis: &RedisBus, entries: &[DenyEntry]) {
    let Some(mut connection) = redis.connection().await else {
        return;
    };
    let now = jsonwebtoken::get_current_timestamp();
    for entry in entries {
        let Ok(value) = serde_json::to_string(entry) else {
            continue;
        };
        let ttl = entry.until.saturating_sub(now);
        if ttl == 0 {
            continue;
        }
        let key = format!("{}:deny:{}", redis.prefix, fingerprint(&value));
        if let Err(error) = connection.set_ex::<_, _, ()>(key, value, ttl).await {
            tracing::warn!(%error, "could not store a deny entry in redis");
        }
    }
}

/// Load every deny entry kept in Redis (at start and after an outage).
pub(crate) async fn load(redis: &RedisBus, verifier: &Verifier) {
    let Some(mut connection) = redis.connection().await else {
        return;
    };
    let pattern = format!("{}:deny:*", redis.prefix);
    let keys: Vec<String> = match connection.scan_match::<_, String>(&pattern).await {
        Ok(iter) => {
            use futures_util::StreamExt;
            iter.filter_map(|key| async move { key.ok() }).collect().await
        }
        Err(_) => return,
    };
    for key in keys {
        if let Ok(Some(value)) = connection.get::<_, Option<String>>(&key).await
            && let Ok(entry) = serde_json::from_str::<DenyEntry>(&value)
        {
            verifier.deny_list().add(&entry);
        }
    }
}

fn fingerprint(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
