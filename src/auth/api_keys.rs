//! API keys for agents and backends: `tk_` followed by 32 random bytes
//! (unpadded base64url), stored only as their SHA-256, and verified into an
//! [`Identity`] wherever a token is accepted.
//!
//! A plain (unkeyed, unsalted) hash is enough: a key carries 256 random bits,
//! so its hash cannot be reversed by guessing, and it must be a pure function
//! of the key for the lookup to be one indexed query.
//!
//! Verification happens per connection and per REST call, never per
//! message, and is kept cheap under load and under attack:
//! - a string that is not shaped like a key is refused before any lookup;
//! - the rows of keys seen are cached ([`CACHE_CAPACITY`] entries for
//!   [`CACHE_TTL`]) and hashes the table does not hold are cached apart
//!   ([`NEGATIVE_CAPACITY`] for [`NEGATIVE_TTL`]), so a flood of made-up
//!   keys can neither evict real ones nor repeat a query per attempt;
//! - at most [`MAX_LOOKUPS_IN_FLIGHT`] lookups run at once and a waiting one
//!   re-reads the cache first: a burst of requests with one key costs one
//!   query, and distinct unknown keys cannot take the whole pool;
//! - `last_used_at` is written only when a key's row is (re)loaded and was
//!   last recorded more than [`LAST_USED_INTERVAL`] ago, in a background
//!   write that is skipped (not queued) while [`MAX_TOUCHES_IN_FLIGHT`] run.
//!
//! A cached row is checked for revocation and expiry at each use. A revoke
//! through [`ApiKeys::revoke`] drops the entry in this process at once;
//! another instance drops it when told through [`ApiKeys::invalidate`], and
//! otherwise re-reads the row within [`CACHE_TTL`].

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use entity::api_keys;
use sea_orm::DatabaseConnection;
use sha2::{Digest, Sha256};
use tokio::{sync::Semaphore, time::Instant};
use uuid::Uuid;

use super::{API_KEY_USER_PREFIX, AuthError, Identity, Role};
use crate::{
    config::Secret,
    model::ids::DocumentId,
    storage::api_keys::{self as store, NewApiKey},
};

pub use crate::storage::api_keys::RevokeOutcome;

/// Every key starts with this; the verifier routes on it.
mod ttl_cache;
use ttl_cache::TtlCache;

pub const KEY_PREFIX: &str = "tk_";
/// Random bytes in a key.
const KEY_BYTES: usize = 32;
/// Length of [`KEY_BYTES`] in unpadded base64url.
const KEY_ENCODED_LEN: usize = 43;
/// Most keys whose rows are cached; beyond it the oldest entry goes.
pub const CACHE_CAPACITY: usize = 10_000;
/// How long a cached row is trusted: the longest a revoke made on another
/// instance goes unseen here when no invalidation arrives.
pub const CACHE_TTL: Duration = Duration::from_secs(30);
/// Most unknown hashes remembered; kept apart from [`CACHE_CAPACITY`] so
/// unknown keys never push out known ones.
pub const NEGATIVE_CAPACITY: usize = 10_000;
/// How long an unknown hash is answered without a query. Short: a key is
/// unknown before it is created only if someone guessed it.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// Database lookups running at once; more wait for a permit.
const MAX_LOOKUPS_IN_FLIGHT: usize = 4;
/// `last_used_at` is written at most once per this interval per key.
pub const LAST_USED_INTERVAL: Duration = Duration::from_secs(60);
/// Background `last_used_at` writes at once; a touch beyond them is dropped
/// (the next reload of the key retries), so they cannot pile up.
const MAX_TOUCHES_IN_FLIGHT: usize = 2;
/// Longest key name, as for a token's display name.
const MAX_NAME_BYTES: usize = 256;

/// What `tandem apikey create` asks for.
#[derive(Debug, Clone)]
pub struct KeySpec {
    /// Display name of the connections the key opens.
    pub name: String,
    /// Document ids or `prefix*` patterns; `None` means every document.
    pub docs: Option<Vec<String>>,
    pub role: Role,
    /// `None`: valid until revoked.
    pub ttl: Option<Duration>,
}

/// A key just created: the stored row and the key itself, which exists
/// nowhere else and is shown once.
#[derive(Debug)]
pub struct CreatedKey {
    pub row: api_keys::Model,
    pub key: Secret,
}

/// Why managing keys failed (verification fails with [`AuthError`]).
#[derive(Debug, thiserror::Error)]
pub enum ApiKeyError {
    #[error("invalid key name: {0}")]
    InvalidName(&'static str),
    #[error("invalid document pattern {pattern:?}: {reason}")]
    InvalidPattern { pattern: String, reason: &'static str },
    #[error("invalid TTL: {0}")]
    InvalidTtl(&'static str),
    #[error("no API key has id {0:?}")]
    NotFound(String),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// SHA-256 of a whole key (`tk_...`): what is stored and what the caches hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    pub fn of(key: &str) -> Self {
        Self(Sha256::digest(key.as_bytes()).into())
    }

    /// Lowercase hex, as stored in `api_keys.key_hash`.
    pub fn to_hex(self) -> String {
        use std::fmt::Write;
        self.0.iter().fold(String::with_capacity(64), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
    }
}

/// A new key from the operating system's random source.
pub fn generate_key() -> anyhow::Result<Secret> {
    let mut bytes = [0u8; KEY_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("read random bytes from the OS: {e}"))?;
    Ok(Secret::new(format!(
        "{KEY_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(bytes)
    )))
}

/// The hash of `key` if it has the shape of a key, so that garbage is
/// refused without a lookup. Only the canonical encoding is accepted: one
/// key, one string.
pub fn parse_key(key: &str) -> Result<KeyHash, AuthError> {
    let body = key
        .strip_prefix(KEY_PREFIX)
        .ok_or_else(|| AuthError::Malformed("not an API key".into()))?;
    if body.len() != KEY_ENCODED_LEN || URL_SAFE_NO_PAD.decode(body).is_err() {
        return Err(AuthError::Malformed(format!(
            "an API key is {KEY_PREFIX} followed by {KEY_ENCODED_LEN} base64url characters"
        )));
    }
    Ok(KeyHash::of(key))
}

/// A key's row as verification needs it.
#[derive(Debug)]
struct StoredKey {
    id: Uuid,
    /// `apikey:<id>`.
    user_id: Arc<str>,
    name: Arc<str>,
    role: Role,
    docs: Option<Vec<String>>,
    expires_at: Option<DateTime<Utc>>,
    revoked: bool,
}

impl StoredKey {
    fn from_row(row: &api_keys::Model) -> anyhow::Result<Self> {
        Ok(Self {
            id: row.id,
            user_id: format!("{API_KEY_USER_PREFIX}{}", row.id).into(),
            name: row.name.as_str().into(),
            role: row.role.parse().map_err(anyhow::Error::msg)?,
            docs: store::decode_docs(row)?,
            expires_at: row.expires_at,
            revoked: row.revoked_at.is_some(),
        })
    }

    /// The identity this key grants at `now`, if it still grants one.
    fn identity(&self, now: DateTime<Utc>) -> Result<Identity, AuthError> {
        if self.revoked {
            return Err(AuthError::Revoked);
        }
        if self.expires_at.is_some_and(|at| at <= now) {
            return Err(AuthError::Expired);
        }
        Ok(Identity::new(
            self.user_id.clone(),
            Some(self.name.clone()),
            self.role,
            self.docs.clone(),
            self.expires_at
                .map(|at| u64::try_from(at.timestamp()).unwrap_or(0)),
        ))
    }
}

/// Creates, lists, revokes and verifies API keys; shared by every request.
pub struct ApiKeys {
    db: DatabaseConnection,
    /// Never held across an `.await`.
    caches: Mutex<Caches>,
    /// Bounds the lookups in flight ([`MAX_LOOKUPS_IN_FLIGHT`]).
    lookups: Semaphore,
    /// Bounds the background `last_used_at` writes ([`MAX_TOUCHES_IN_FLIGHT`]).
    touches: Arc<Semaphore>,
}

struct Caches {
    known: TtlCache<Arc<StoredKey>>,
    unknown: TtlCache<()>,
    /// Bumped by every invalidation: a lookup that started before one does
    /// not cache the row it read, which may predate the revoke.
    generation: u64,
}

impl ApiKeys {
    pub fn new(db: DatabaseConnection) -> Self {
        Self {
            db,
            caches: Mutex::new(Caches {
                known: TtlCache::new(CACHE_CAPACITY, CACHE_TTL),
                unknown: TtlCache::new(NEGATIVE_CAPACITY, NEGATIVE_TTL),
                generation: 0,
            }),
            lookups: Semaphore::new(MAX_LOOKUPS_IN_FLIGHT),
            touches: Arc::new(Semaphore::new(MAX_TOUCHES_IN_FLIGHT)),
        }
    }

    /// Store a new key and return it; only its hash is kept.
    #[tracing::instrument(skip_all, fields(name = %spec.name))]
    pub async fn create(&self, spec: KeySpec) -> Result<CreatedKey, ApiKeyError> {
        validate_name(&spec.name)?;
        for pattern in spec.docs.iter().flatten() {
            validate_pattern(pattern)?;
        }
        let created_at = Utc::now();
        let expires_at = match spec.ttl {
            None => None,
            Some(ttl) if ttl.is_zero() => return Err(ApiKeyError::InvalidTtl("must be positive")),
            Some(ttl) => Some(
                chrono::Duration::from_std(ttl)
                    .ok()
                    .and_then(|ttl| created_at.checked_add_signed(ttl))
                    .ok_or(ApiKeyError::InvalidTtl("too long"))?,
            ),
        };
        let key = generate_key()?;
        let hash = KeyHash::of(key.expose());
        let row = store::insert(
            &self.db,
            NewApiKey {
                id: Uuid::now_v7(),
                name: &spec.name,
                key_hash: &hash.to_hex(),
                docs: spec.docs.as_deref(),
                role: spec.role.as_str(),
                created_at,
                expires_at,
            },
        )
        .await?;
        // Only a guess could have put it there, but a created key must work at once.
        self.lock().unknown.remove(&hash);
        tracing::info!(key_id = %row.id, "API key created");
        Ok(CreatedKey { row, key })
    }

    /// Every key, oldest first.
    pub async fn list(&self) -> Result<Vec<api_keys::Model>, ApiKeyError> {
        Ok(store::list(&self.db).await?)
    }

    /// Revoke key `id` (or `apikey:<id>`): it stops working in this process
    /// at once. Revoking a revoked key keeps its first `revoked_at`.
    #[tracing::instrument(skip(self))]
    pub async fn revoke(&self, id: &str) -> Result<RevokeOutcome, ApiKeyError> {
        let key_id = parse_id(id).ok_or_else(|| ApiKeyError::NotFound(id.to_owned()))?;
        let outcome = store::revoke(&self.db, key_id, Utc::now()).await?;
        self.invalidate(id);
        match outcome {
            RevokeOutcome::NotFound => Err(ApiKeyError::NotFound(id.to_owned())),
            RevokeOutcome::Revoked => {
                tracing::info!(key_id = %key_id, "API key revoked");
                Ok(outcome)
            }
            RevokeOutcome::AlreadyRevoked => Ok(outcome),
        }
    }

    /// Forget what this process cached about key `id` (as `apikey list`
    /// prints it, or the user id `apikey:<id>`), so its next use re-reads
    /// the row. [`ApiKeys::revoke`] calls it; call it too when another
    /// instance announces a revoke, so the key stops working here at once
    /// instead of within [`CACHE_TTL`]. Connections the key already opened
    /// are not closed by this.
    pub fn invalidate(&self, id: &str) {
        let key_id = parse_id(id);
        let mut caches = self.lock();
        caches.generation = caches.generation.wrapping_add(1);
        if let Some(key_id) = key_id {
            caches.known.retain(|key| key.id != key_id);
        }
    }

    /// Check a key (`tk_...`) and return the identity it grants.
    pub async fn verify(&self, key: &str) -> Result<Identity, AuthError> {
        let hash = parse_key(key)?;
        if let Some(cached) = self.cached(&hash) {
            return cached;
        }
        let _permit = self.lookups.acquire().await.map_err(|_| AuthError::Unavailable)?;
        // A lookup that waited may find its key loaded by the one before it.
        if let Some(cached) = self.cached(&hash) {
            return cached;
        }
        let generation = self.lock().generation;
        let row = store::find_by_hash(&self.db, &hash.to_hex())
            .await
            .map_err(|error| {
                tracing::warn!(error = format!("{error:#}"), "API key lookup failed");
                AuthError::Unavailable
            })?;
        let now = Utc::now();
        let Some(row) = row else {
            self.lock().unknown.insert(hash, (), Instant::now());
            return Err(AuthError::UnknownApiKey);
        };
        let stored = Arc::new(StoredKey::from_row(&row).map_err(|error| {
            tracing::error!(key_id = %row.id, error = format!("{error:#}"), "unreadable API key row");
            AuthError::Unavailable
        })?);
        {
            let mut caches = self.lock();
            if caches.generation == generation {
                caches.known.insert(hash, stored.clone(), Instant::now());
            }
        }
        let identity = stored.identity(now)?;
        self.touch_if_due(&row, now);
        Ok(identity)
    }

    /// The answer the caches hold for `hash`, if any.
    fn cached(&self, hash: &KeyHash) -> Option<Result<Identity, AuthError>> {
        let now = Instant::now();
        let caches = self.lock();
        if let Some(key) = caches.known.get(hash, now) {
            return Some(key.identity(Utc::now()));
        }
        caches
            .unknown
            .get(hash, now)
            .map(|()| Err(AuthError::UnknownApiKey))
    }

    /// Record the use of a just-loaded key if its `last_used_at` is older
    /// than [`LAST_USED_INTERVAL`]: in the background, and not at all while
    /// [`MAX_TOUCHES_IN_FLIGHT`] writes are running.
    fn touch_if_due(&self, row: &api_keys::Model, now: DateTime<Utc>) {
        let interval = chrono::Duration::from_std(LAST_USED_INTERVAL).unwrap_or(chrono::Duration::MAX);
        if row.last_used_at.is_some_and(|at| now - at < interval) {
            return;
        }
        let Ok(permit) = self.touches.clone().try_acquire_owned() else {
            return;
        };
        let (db, key_id) = (self.db.clone(), row.id);
        tokio::spawn(async move {
            if let Err(error) = store::touch_last_used(&db, key_id, now, LAST_USED_INTERVAL).await {
                tracing::warn!(key_id = %key_id, error = format!("{error:#}"), "could not record API key use");
            }
            drop(permit);
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Caches> {
        // The caches hold no invariant a panic could break halfway.
        self.caches.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A key id as printed by `apikey list`, or as the user id `apikey:<id>`.
/// The user id (`apikey:<id>`) of the key `id` names, however it is spelled
/// (with or without the prefix, any UUID form), as connections carry it.
pub fn key_user_id(id: &str) -> Option<String> {
    parse_id(id).map(|id| format!("{API_KEY_USER_PREFIX}{id}"))
}

fn parse_id(id: &str) -> Option<Uuid> {
    Uuid::parse_str(id.strip_prefix(API_KEY_USER_PREFIX).unwrap_or(id)).ok()
}

fn validate_name(name: &str) -> Result<(), ApiKeyError> {
    if name.trim().is_empty() {
        return Err(ApiKeyError::InvalidName("must not be empty"));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(ApiKeyError::InvalidName("must be at most 256 bytes"));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiKeyError::InvalidName("must not contain control characters"));
    }
    Ok(())
}

/// A document id, `prefix*`, or `*` (every document), as in a token's `docs`.
fn validate_pattern(pattern: &str) -> Result<(), ApiKeyError> {
    let invalid = |reason| ApiKeyError::InvalidPattern {
        pattern: pattern.to_owned(),
        reason,
    };
    match pattern.strip_suffix('*') {
        Some("") => Ok(()),
        Some(prefix) => DocumentId::parse(prefix).map(drop).map_err(|e| invalid(e.0)),
        None => DocumentId::parse(pattern).map(drop).map_err(|e| invalid(e.0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(n: u32) -> KeyHash {
        KeyHash::of(&n.to_string())
    }

    #[test]
    fn generated_keys_are_prefixed_random_and_parse() {
        let a = generate_key().unwrap();
        let b = generate_key().unwrap();
        assert_ne!(a.expose(), b.expose());
        for key in [&a, &b] {
            let key = key.expose();
            assert!(key.starts_with("tk_"), "{key}");
            assert_eq!(key.len(), KEY_PREFIX.len() + KEY_ENCODED_LEN);
            assert_eq!(URL_SAFE_NO_PAD.decode(&key[3..]).unwrap().len(), KEY_BYTES);
            assert_eq!(parse_key(key).unwrap(), KeyHash::of(key));
        }
    }

    #[test]
    fn the_hash_is_sha256_in_lowercase_hex() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            KeyHash::of("abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn strings_not_shaped_like_keys_are_refused_without_a_lookup() {
        let good = generate_key().unwrap();
        let good = good.expose();
        for bad in [
            "",
            "tk_",
            "tk_short",
            "xx_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            &format!("{good}A"),
            &good[..good.len() - 1],
            // `+` and `/` are base64, not base64url; `=` is padding.
            &format!("{}+", &good[..good.len() - 1]),
            &format!("{}=", &good[..good.len() - 1]),
            // Non-canonical: the last character carries bits beyond 32 bytes.
            "tk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB",
        ] {
            assert!(matches!(parse_key(bad), Err(AuthError::Malformed(_))), "{bad:?}");
        }
        assert!(parse_key("tk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").is_ok());
    }

    #[test]
    fn names_and_patterns_are_validated() {
        assert!(validate_name("ci bot").is_ok());
        assert!(validate_name(" ").is_err());
        assert!(validate_name("a\nb").is_err());
        assert!(validate_name(&"x".repeat(257)).is_err());
        for good in ["*", "team-*", "readme"] {
            assert!(validate_pattern(good).is_ok(), "{good}");
        }
        for bad in ["", "a\u{7}*", &"x".repeat(300)] {
            assert!(validate_pattern(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_cache_never_holds_more_than_its_capacity() {
        let now = Instant::now();
        let mut cache = TtlCache::new(100, Duration::from_secs(30));
        for n in 0..10_000 {
            cache.insert(hash(n), n, now);
            assert!(cache.len() <= 100);
            assert!(cache.order.len() <= 200);
        }
        // The oldest went first; the newest are all there.
        assert_eq!(cache.get(&hash(0), now), None);
        assert_eq!(cache.get(&hash(9_999), now), Some(&9_999));
        assert_eq!(cache.get(&hash(9_900), now), Some(&9_900));
        assert_eq!(cache.get(&hash(9_899), now), None);
    }

    #[test]
    fn replacing_one_key_over_and_over_keeps_the_queue_bounded() {
        let now = Instant::now();
        let mut cache = TtlCache::new(10, Duration::from_secs(30));
        for n in 0..1_000 {
            cache.insert(hash(1), n, now);
            assert!(cache.order.len() <= 20);
        }
        assert_eq!(cache.get(&hash(1), now), Some(&999));
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_the_ttl_and_expired_ones_go_first() {
        let mut cache = TtlCache::new(2, Duration::from_secs(30));
        cache.insert(hash(1), 1, Instant::now());
        tokio::time::advance(Duration::from_secs(20)).await;
        cache.insert(hash(2), 2, Instant::now());
        assert_eq!(cache.get(&hash(1), Instant::now()), Some(&1));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(cache.get(&hash(1), Instant::now()), None, "expired at 30 s");
        assert_eq!(cache.get(&hash(2), Instant::now()), Some(&2));
        cache.insert(hash(3), 3, Instant::now());
        assert_eq!(cache.len(), 2, "the expired entry made room");
        assert_eq!(cache.get(&hash(2), Instant::now()), Some(&2));
    }

    #[test]
    fn retain_and_remove_drop_entries_and_leave_the_rest() {
        let now = Instant::now();
        let mut cache = TtlCache::new(10, Duration::from_secs(30));
        for n in 0..5 {
            cache.insert(hash(n), n, now);
        }
        cache.retain(|value| *value != 3);
        cache.remove(&hash(0));
        assert_eq!(cache.get(&hash(3), now), None);
        assert_eq!(cache.get(&hash(0), now), None);
        assert_eq!(cache.len(), 3);
        // A removed key inserted again is not dropped by its stale queue pair.
        cache.insert(hash(3), 33, now + Duration::from_secs(1));
        // Nine more fill it: the oldest live entries (1, 2, 4) go, and the
        // stale triple of the first 3 is skipped, not taken for the new one.
        let later = now + Duration::from_secs(1);
        for n in 10..19 {
            cache.insert(hash(n), n, later);
        }
        assert_eq!(cache.get(&hash(3), later), Some(&33));
        assert_eq!(cache.get(&hash(4), later), None);
        assert_eq!(cache.len(), 10);
    }

    #[test]
    fn a_key_grants_its_identity_until_revoked_or_expired() {
        let now = Utc::now();
        let mut key = StoredKey {
            id: Uuid::now_v7(),
            user_id: "apikey:1".into(),
            name: "bot".into(),
            role: Role::Viewer,
            docs: Some(vec!["team-*".into()]),
            expires_at: Some(now + chrono::Duration::seconds(60)),
            revoked: false,
        };
        let identity = key.identity(now).unwrap();
        assert_eq!(
            (&*identity.user_id, identity.name.as_deref()),
            ("apikey:1", Some("bot"))
        );
        assert!(!identity.may_write());
        assert!(identity.may_access(&DocumentId::parse("team-1").unwrap()));
        assert!(!identity.may_access(&DocumentId::parse("other").unwrap()));
        assert_eq!(
            identity.expires_at,
            Some((now + chrono::Duration::seconds(60)).timestamp() as u64)
        );
        assert_eq!(
            key.identity(now + chrono::Duration::seconds(60)).unwrap_err(),
            AuthError::Expired
        );
        key.revoked = true;
        assert_eq!(key.identity(now).unwrap_err(), AuthError::Revoked);
    }
}
