//! `webhook_outbox`: the SQL of webhook deliveries. Events are queued in
//! the transaction of the change that causes them (an update batch, a
//! presence flush, a version), so a committed change always has its event
//! and a rolled-back one never does. `document.updated` is debounced in the
//! table itself: edits within `--webhook-debounce` merge into the one
//! pending row, which no instance delivers before its `available_at`.
//!
//! Claims lease the head of each (target, order key) queue: a row is taken
//! only when no earlier row of its queue is still pending, so deliveries of
//! one document are in order; on PostgreSQL `FOR UPDATE SKIP LOCKED` lets
//! several instances claim at once without taking the same row.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use anyhow::Context;
use chrono::{DateTime, TimeDelta, Utc};
use entity::webhook_outbox;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseConnection, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, Statement,
    sea_query::{Expr, ExprTrait},
};
use serde_json::Value;
use uuid::Uuid;

use crate::model::ids::DocumentId;

/// Where events go.
#[derive(Debug, Clone)]
pub struct Hooks {
    pub targets: Vec<String>,
    /// `document.updated` at most once per document per this.
    pub debounce: Duration,
}

/// One event to queue.
#[derive(Debug, Clone)]
pub struct Event {
    pub event_type: &'static str,
    /// `doc:<id>` or `user:<id>`.
    pub order_key: String,
    pub data: Value,
}

impl Event {
    pub fn document(event_type: &'static str, document_id: &DocumentId, data: Value) -> Self {
        Self {
            event_type,
            order_key: format!("doc:{document_id}"),
            data,
        }
    }

    pub fn user(event_type: &'static str, user_id: &str, data: Value) -> Self {
        Self {
            event_type,
            order_key: format!("user:{user_id}"),
            data,
        }
    }
}

fn row(
    target: &str,
    event_id: Uuid,
    event: &Event,
    now: DateTime<Utc>,
    available_at: DateTime<Utc>,
) -> webhook_outbox::ActiveModel {
    use sea_orm::ActiveValue::{NotSet, Set};
    webhook_outbox::ActiveModel {
        seq: NotSet,
        event_id: Set(event_id),
        target: Set(target.to_owned()),
        event_type: Set(event.event_type.to_owned()),
        order_key: Set(event.order_key.clone()),
        data: Set(event.data.to_string()),
        created_at: Set(now),
        available_at: Set(available_at),
        status: Set("pending".into()),
        attempts: Set(0),
        last_error: Set(None),
        claimed_until: Set(None),
        claimed_by: Set(None),
    }
}

/// Queue `event` for every target (one event id for all).
pub async fn enqueue<C: ConnectionTrait>(db: &C, hooks: &Hooks, event: &Event) -> anyhow::Result<()> {
    enqueue_all(db, hooks, std::slice::from_ref(event)).await
}

/// Queue several events, in order.
pub async fn enqueue_all<C: ConnectionTrait>(db: &C, hooks: &Hooks, events: &[Event]) -> anyhow::Result<()> {
    if events.is_empty() || hooks.targets.is_empty() {
        return Ok(());
    }
    let now = Utc::now();
    let rows: Vec<_> = events
        .iter()
        .flat_map(|event| {
            let id = Uuid::now_v7();
            hooks
                .targets
                .iter()
                .map(move |target| row(target, id, event, now, now))
        })
        .collect();
    for chunk in rows.chunks(100) {
        webhook_outbox::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(db)
            .await
            .context("queue webhook events")?;
    }
    Ok(())
}

/// Record edits of a document by `editors`: merged into the pending,
/// not-yet-due `document.updated` of each target, or queued as a new one
/// due after the debounce.
pub async fn document_edited<C: ConnectionTrait>(
    db: &C,
    hooks: &Hooks,
    document_id: &DocumentId,
    editors: &BTreeSet<Arc<str>>,
    state_vector: Option<&[u8]>,
) -> anyhow::Result<()> {
    use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
    let now = Utc::now();
    let order_key = format!("doc:{document_id}");
    let sv = state_vector.map(|sv| BASE64.encode(sv));
    let mut new_event: Option<(Uuid, Event)> = None;
    for target in &hooks.targets {
        let open: Option<(i64, String)> = webhook_outbox::Entity::find()
            .select_only()
            .column(webhook_outbox::Column::Seq)
            .column(webhook_outbox::Column::Data)
            .filter(webhook_outbox::Column::Target.eq(target.as_str()))
            .filter(webhook_outbox::Column::OrderKey.eq(order_key.as_str()))
            .filter(webhook_outbox::Column::EventType.eq("document.updated"))
            .filter(webhook_outbox::Column::Status.eq("pending"))
            .filter(webhook_outbox::Column::Attempts.eq(0))
            .filter(webhook_outbox::Column::ClaimedUntil.is_null())
            .filter(webhook_outbox::Column::AvailableAt.gt(now))
            .order_by_desc(webhook_outbox::Column::Seq)
            .into_tuple()
            .one(db)
            .await
            .context("find the pending document.updated")?;
        if let Some((seq, data)) = open {
            let mut data: Value = serde_json::from_str(&data).unwrap_or_else(|_| serde_json::json!({}));
            let mut users: BTreeSet<String> = data["user_ids"]
                .as_array()
                .map(|ids| ids.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
                .unwrap_or_default();
            users.extend(editors.iter().map(|u| u.to_string()));
            data["user_ids"] = serde_json::json!(users);
            if let Some(sv) = &sv {
                data["state_vector"] = Value::String(sv.clone());
            }
            // Only while still unclaimed and not due: else a new event follows.
            let merged = webhook_outbox::Entity::update_many()
                .col_expr(webhook_outbox::Column::Data, Expr::value(data.to_string()))
                .filter(webhook_outbox::Column::Seq.eq(seq))
                .filter(webhook_outbox::Column::ClaimedUntil.is_null())
                .filter(webhook_outbox::Column::AvailableAt.gt(now))
                .exec(db)
                .await
                .context("merge into the pending document.updated")?;
            if merged.rows_affected == 1 {
                continue;
            }
        }
        let (id, event) = new_event.get_or_insert_with(|| {
            let data = serde_json::json!({
                "document_id": document_id.as_str(),
                "user_ids": editors.iter().map(|u| u.to_string()).collect::<Vec<_>>(),
                "state_vector": sv,
            });
            (
                Uuid::now_v7(),
                Event::document("document.updated", document_id, data),
            )
        });
        let due = now + TimeDelta::from_std(hooks.debounce).unwrap_or_default();
        row(target, *id, event, now, due)
            .insert(db)
            .await
            .context("queue document.updated")?;
    }
    Ok(())
}

/// Lease up to `limit` due deliveries for `lease`, each the head of its
/// (target, order key) queue.
pub async fn claim(
    db: &DatabaseConnection,
    instance: &str,
    lease: Duration,
    limit: u64,
) -> anyhow::Result<Vec<webhook_outbox::Model>> {
    let now = Utc::now();
    let until = now + TimeDelta::from_std(lease).unwrap_or_default();
    let backend = db.get_database_backend();
    let (sql, values): (&str, Vec<sea_orm::Value>) = match backend {
        DatabaseBackend::Postgres => (
            "UPDATE webhook_outbox SET claimed_until = $1, claimed_by = $2 \
             WHERE seq IN (SELECT o.seq FROM webhook_outbox o \
               WHERE o.status = 'pending' AND o.available_at <= $3 \
                 AND (o.claimed_until IS NULL OR o.claimed_until < $3) \
                 AND NOT EXISTS (SELECT 1 FROM webhook_outbox p WHERE p.target = o.target \
                   AND p.order_key = o.order_key AND p.status = 'pending' AND p.seq < o.seq) \
               ORDER BY o.seq LIMIT $4 FOR UPDATE SKIP LOCKED) \
             RETURNING *",
            vec![until.into(), instance.into(), now.into(), (limit as i64).into()],
        ),
        _ => (
            "UPDATE webhook_outbox SET claimed_until = ?, claimed_by = ? \
             WHERE seq IN (SELECT o.seq FROM webhook_outbox o \
               WHERE o.status = 'pending' AND o.available_at <= ? \
                 AND (o.claimed_until IS NULL OR o.claimed_until < ?) \
                 AND NOT EXISTS (SELECT 1 FROM webhook_outbox p WHERE p.target = o.target \
                   AND p.order_key = o.order_key AND p.status = 'pending' AND p.seq < o.seq) \
               ORDER BY o.seq LIMIT ?) \
             RETURNING *",
            vec![
                until.into(),
                instance.into(),
                now.into(),
                now.into(),
                (limit as i64).into(),
            ],
        ),
    };
    let mut rows = webhook_outbox::Entity::find()
        .from_raw_sql(Statement::from_sql_and_values(backend, sql, values))
        .all(db)
        .await
        .context("claim webhook deliveries")?;
    rows.sort_by_key(|r| r.seq);
    Ok(rows)
}

/// A delivery succeeded: it is done.
pub async fn delivered(db: &DatabaseConnection, seq: i64) -> anyhow::Result<()> {
    webhook_outbox::Entity::delete_by_id(seq)
        .exec(db)
        .await
        .context("delete delivered webhook")?;
    Ok(())
}

/// A delivery failed: retry at `retry_at`, or give up (`failed`) when `None`.
pub async fn attempt_failed(
    db: &DatabaseConnection,
    seq: i64,
    error: &str,
    retry_at: Option<DateTime<Utc>>,
) -> anyhow::Result<()> {
    let mut update = webhook_outbox::Entity::update_many()
        .col_expr(
            webhook_outbox::Column::Attempts,
            Expr::col(webhook_outbox::Column::Attempts).add(1),
        )
        .col_expr(
            webhook_outbox::Column::LastError,
            Expr::value(error.chars().take(500).collect::<String>()),
        )
        .col_expr(
            webhook_outbox::Column::ClaimedUntil,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .col_expr(
            webhook_outbox::Column::ClaimedBy,
            Expr::value(Option::<String>::None),
        );
    update = match retry_at {
        Some(at) => update.col_expr(webhook_outbox::Column::AvailableAt, Expr::value(at)),
        None => update.col_expr(webhook_outbox::Column::Status, Expr::value("failed")),
    };
    update
        .filter(webhook_outbox::Column::Seq.eq(seq))
        .exec(db)
        .await
        .context("record webhook failure")?;
    Ok(())
}

/// Deliveries not yet made (pending, oldest first) and given up (failed, newest first).
pub async fn outstanding(
    db: &DatabaseConnection,
    limit: u64,
) -> anyhow::Result<(Vec<webhook_outbox::Model>, Vec<webhook_outbox::Model>)> {
    let pending = webhook_outbox::Entity::find()
        .filter(webhook_outbox::Column::Status.eq("pending"))
        .order_by_asc(webhook_outbox::Column::Seq)
        .limit(limit)
        .all(db)
        .await
        .context("list pending webhooks")?;
    let failed = webhook_outbox::Entity::find()
        .filter(webhook_outbox::Column::Status.eq("failed"))
        .order_by_desc(webhook_outbox::Column::Seq)
        .limit(limit)
        .all(db)
        .await
        .context("list failed webhooks")?;
    Ok((pending, failed))
}

/// How many deliveries are pending and how many failed for good.
pub async fn counts(db: &DatabaseConnection) -> anyhow::Result<(u64, u64)> {
    use sea_orm::PaginatorTrait;
    let pending = webhook_outbox::Entity::find()
        .filter(webhook_outbox::Column::Status.eq("pending"))
        .count(db)
        .await
        .context("count pending webhooks")?;
    let failed = webhook_outbox::Entity::find()
        .filter(webhook_outbox::Column::Status.eq("failed"))
        .count(db)
        .await
        .context("count failed webhooks")?;
    Ok((pending, failed))
}
