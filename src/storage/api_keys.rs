//! Every SQL statement about API keys: create, list, revoke, the lookup a
//! verification makes (by the key's hash), and the rate-limited
//! `last_used_at` touch.
//!
//! A key's `docs` are kept as a JSON array in a text column, so one schema
//! serves SQLite and PostgreSQL; encoding and decoding stay in this file.

use anyhow::Context;
use chrono::{DateTime, Utc};
use entity::api_keys;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    sea_query::Expr,
};
use uuid::Uuid;

/// A key to store; the key itself is not among its fields.
#[derive(Debug, Clone)]
pub struct NewApiKey<'a> {
    pub id: Uuid,
    pub name: &'a str,
    /// Lowercase hex SHA-256 of the key.
    pub key_hash: &'a str,
    /// `None`: every document.
    pub docs: Option<&'a [String]>,
    pub role: &'a str,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// What `revoke` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// The key was live (or expired) and is now revoked.
    Revoked,
    /// The key had been revoked before; its `revoked_at` is kept.
    AlreadyRevoked,
    /// No key has this id.
    NotFound,
}

pub async fn insert(db: &DatabaseConnection, key: NewApiKey<'_>) -> anyhow::Result<api_keys::Model> {
    let docs = key
        .docs
        .map(serde_json::to_string)
        .transpose()
        .context("encode the key's document patterns")?;
    let row = api_keys::ActiveModel {
        id: Set(key.id),
        name: Set(key.name.to_owned()),
        key_hash: Set(key.key_hash.to_owned()),
        docs: Set(docs),
        role: Set(key.role.to_owned()),
        created_at: Set(key.created_at),
        expires_at: Set(key.expires_at),
        revoked_at: Set(None),
        last_used_at: Set(None),
    };
    api_keys::Entity::insert(row)
        .exec_with_returning(db)
        .await
        .context("insert an API key")
}

/// Every key, oldest first (ids are UUIDv7).
pub async fn list(db: &DatabaseConnection) -> anyhow::Result<Vec<api_keys::Model>> {
    api_keys::Entity::find()
        .order_by_asc(api_keys::Column::Id)
        .all(db)
        .await
        .context("list API keys")
}

/// The key whose hash is `key_hash`, revoked and expired ones included (the
/// caller tells those apart from unknown keys).
pub async fn find_by_hash(
    db: &DatabaseConnection,
    key_hash: &str,
) -> anyhow::Result<Option<api_keys::Model>> {
    api_keys::Entity::find()
        .filter(api_keys::Column::KeyHash.eq(key_hash))
        .one(db)
        .await
        .context("look up an API key by its hash")
}

/// Set `revoked_at` of key `id` to `at`, unless it was revoked already.
pub async fn revoke(db: &DatabaseConnection, id: Uuid, at: DateTime<Utc>) -> anyhow::Result<RevokeOutcome> {
    let result = api_keys::Entity::update_many()
        .col_expr(api_keys::Column::RevokedAt, Expr::value(at))
        .filter(api_keys::Column::Id.eq(id))
        .filter(api_keys::Column::RevokedAt.is_null())
        .exec(db)
        .await
        .context("revoke an API key")?;
    if result.rows_affected > 0 {
        return Ok(RevokeOutcome::Revoked);
    }
    let exists = api_keys::Entity::find_by_id(id)
        .one(db)
        .await
        .context("look up an API key by id")?
        .is_some();
    Ok(if exists {
        RevokeOutcome::AlreadyRevoked
    } else {
        RevokeOutcome::NotFound
    })
}

/// Record that key `id` was used at `now`, unless that was already recorded
/// less than `min_interval` ago. The condition is in the statement, so
/// several instances touching the same key still write it about once per
/// interval. Returns whether the row was written.
pub async fn touch_last_used(
    db: &DatabaseConnection,
    id: Uuid,
    now: DateTime<Utc>,
    min_interval: std::time::Duration,
) -> anyhow::Result<bool> {
    let interval = chrono::Duration::from_std(min_interval).context("last-used interval out of range")?;
    let result = api_keys::Entity::update_many()
        .col_expr(api_keys::Column::LastUsedAt, Expr::value(now))
        .filter(api_keys::Column::Id.eq(id))
        .filter(
            Condition::any()
                .add(api_keys::Column::LastUsedAt.is_null())
                .add(api_keys::Column::LastUsedAt.lt(now - interval)),
        )
        .exec(db)
        .await
        .context("record when an API key was last used")?;
    Ok(result.rows_affected > 0)
}

/// The document patterns of a stored key; `None` means every document.
pub fn decode_docs(row: &api_keys::Model) -> anyhow::Result<Option<Vec<String>>> {
    row.docs
        .as_deref()
        .map(serde_json::from_str::<Vec<String>>)
        .transpose()
        .with_context(|| format!("API key {}: docs is not a JSON array of strings", row.id))
}
