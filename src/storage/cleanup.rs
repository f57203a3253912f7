//! Stale-session cleanup: the scheduled sweep and whole-instance deactivation.
//!
//! A session whose `last_seen_at` is older than the TTL is dead, whoever
//! held it: a live session refreshes its row at least once per heartbeat
//! interval, so only sessions of a crashed (kill -9) process or a lost client
//! fall behind. Local sessions that are still heard from are never ended by a
//! lagging row; local ones that are silent are closed through their own task,
//! which tells their rooms `user_left` with reason `timeout`.

use anyhow::Context;
use chrono::Utc;
use entity::{document_presence, user_sessions};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QuerySelect,
    TransactionTrait,
    sea_query::{Expr, Query},
};
use uuid::Uuid;

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    /// Sessions of other (or dead) processes marked inactive.
    pub deactivated: u64,
    /// Local sessions closed because they went silent (counted by the caller).
    pub closed_local: u64,
    /// Presence rows deactivated because their session is inactive.
    pub presence_deactivated: u64,
    /// Inactive sessions past retention deleted.
    pub purged: u64,
}

/// How long sessions live in the database.
#[derive(Debug, Clone)]
pub struct SweepPolicy {
    /// A session not heard from for this long is stale.
    pub session_ttl: std::time::Duration,
    /// Inactive sessions are deleted after this long.
    pub retention: std::time::Duration,
    /// Webhook targets told of the sessions (and presence) the sweep ends.
    pub hooks: Option<crate::storage::webhooks::Hooks>,
}

/// One pass of the stale-session sweep. `settle_local` is asked about each
/// stale session: it returns true for a session of this process (which it
/// deals with itself: a row that only lags is left alone, a silent session is
/// closed through its own task); every other stale session is dead and is
/// deactivated here with its presence rows.
pub async fn sweep(
    db: &DatabaseConnection,
    policy: SweepPolicy,
    mut settle_local: impl FnMut(Uuid) -> bool,
) -> anyhow::Result<SweepReport> {
    let now = Utc::now();
    let ttl = chrono::Duration::from_std(policy.session_ttl).context("session TTL out of range")?;
    let cutoff = now - ttl;
    let mut report = SweepReport::default();

    let stale: Vec<Uuid> = user_sessions::Entity::find()
        .select_only()
        .column(user_sessions::Column::Id)
        .filter(user_sessions::Column::IsActive.eq(true))
        .filter(user_sessions::Column::LastSeenAt.lt(cutoff))
        .into_tuple()
        .all(db)
        .await
        .context("find stale sessions")?;

    let dead: Vec<Uuid> = stale.into_iter().filter(|id| !settle_local(*id)).collect();
    // Sessions and their presence rows change together: nobody sees an
    // ended session that is still present in a document.
    let txn = db.begin().await.context("begin sweep")?;
    let mut ended = Vec::new();
    for chunk in dead.chunks(500) {
        let result = user_sessions::Entity::update_many()
            .col_expr(user_sessions::Column::IsActive, Expr::value(false))
            .col_expr(user_sessions::Column::DisconnectedAt, Expr::value(now))
            .col_expr(
                user_sessions::Column::CurrentDocumentId,
                Expr::value(Option::<String>::None),
            )
            .filter(user_sessions::Column::Id.is_in(chunk.iter().copied()))
            .filter(user_sessions::Column::IsActive.eq(true))
            .filter(user_sessions::Column::LastSeenAt.lt(cutoff))
            .exec_with_returning(&txn)
            .await
            .context("deactivate stale sessions")?;
        report.deactivated += result.len() as u64;
        ended.extend(result);
    }
    let presence = deactivate_orphan_presence(&txn).await?;
    report.presence_deactivated = presence.len() as u64;
    if let Some(hooks) = &policy.hooks {
        // A crashed process's members and sessions end here: the same
        // events as a live leave, in the transaction that ends them.
        let events = swept_events(&ended, &presence);
        crate::storage::webhooks::enqueue_all(&txn, hooks, &events).await?;
    }
    txn.commit().await.context("commit sweep")?;
    if report.deactivated > 0 {
        tracing::info!(sessions = report.deactivated, "deactivated stale sessions");
        metrics::counter!("tandem_sessions_swept_total", "reason" => "stale").increment(report.deactivated);
    }

    let retention = chrono::Duration::from_std(policy.retention).unwrap_or(chrono::Duration::MAX);
    if let Some(purge_before) = now.checked_sub_signed(retention) {
        let result = user_sessions::Entity::delete_many()
            .filter(user_sessions::Column::IsActive.eq(false))
            .filter(user_sessions::Column::LastSeenAt.lt(purge_before))
            .exec(db)
            .await
            .context("purge old sessions")?;
        report.purged = result.rows_affected;
    }
    Ok(report)
}

/// `presence.left` for each presence row and `session.ended` for each
/// session the sweep ended (reason `timeout`: nothing heard within the TTL).
fn swept_events(
    sessions: &[user_sessions::Model],
    presence: &[document_presence::Model],
) -> Vec<crate::storage::webhooks::Event> {
    use crate::storage::webhooks::Event;
    let mut events = Vec::new();
    for row in presence {
        let Ok(document_id) = crate::model::ids::DocumentId::parse(&row.document_id) else {
            continue;
        };
        // The sweep ends every session of the user it finds dead; whether
        // the user has another live device elsewhere is not known here.
        let data = serde_json::json!({
            "document_id": row.document_id,
            "user_id": row.user_id,
            "session_id": row.session_id.to_string(),
            "reason": "timeout",
            "last_device": serde_json::Value::Null,
        });
        events.push(Event::document("presence.left", &document_id, data));
    }
    for row in sessions {
        let data = serde_json::json!({
            "user_id": row.user_id,
            "session_id": row.id.to_string(),
            "device_type": row.device_type,
            "reason": "timeout",
        });
        events.push(Event::user("session.ended", &row.user_id, data));
    }
    events
}

/// Deactivate presence rows whose session is no longer active; returns them.
async fn deactivate_orphan_presence(
    db: &impl ConnectionTrait,
) -> anyhow::Result<Vec<document_presence::Model>> {
    let inactive_sessions = Query::select()
        .column(user_sessions::Column::Id)
        .from(user_sessions::Entity)
        .and_where(user_sessions::Column::IsActive.eq(false))
        .to_owned();
    let result = document_presence::Entity::update_many()
        .col_expr(document_presence::Column::IsActive, Expr::value(false))
        .col_expr(document_presence::Column::IsEditing, Expr::value(false))
        .filter(document_presence::Column::IsActive.eq(true))
        .filter(document_presence::Column::SessionId.in_subquery(inactive_sessions))
        .exec_with_returning(db)
        .await
        .context("deactivate orphaned presence")?;
    Ok(result)
}

/// Mark every session (and presence row) of one instance inactive: at start-up
/// for the leftovers of a previous process with the same instance id, and at
/// shutdown after the sessions have closed.
/// Instances other than `except` that have active sessions in the database.
pub async fn instances_with_active_sessions(
    db: &DatabaseConnection,
    except: &str,
) -> anyhow::Result<Vec<String>> {
    user_sessions::Entity::find()
        .select_only()
        .column(user_sessions::Column::InstanceId)
        .distinct()
        .filter(user_sessions::Column::IsActive.eq(true))
        .filter(user_sessions::Column::InstanceId.ne(except))
        .into_tuple::<String>()
        .all(db)
        .await
        .context("list instances with active sessions")
}

pub async fn deactivate_instance(
    db: &DatabaseConnection,
    instance_id: &str,
    hooks: Option<&crate::storage::webhooks::Hooks>,
) -> anyhow::Result<u64> {
    let now = Utc::now();
    let txn = db.begin().await.context("begin instance deactivation")?;
    let result = user_sessions::Entity::update_many()
        .col_expr(user_sessions::Column::IsActive, Expr::value(false))
        .col_expr(user_sessions::Column::DisconnectedAt, Expr::value(now))
        .col_expr(
            user_sessions::Column::CurrentDocumentId,
            Expr::value(Option::<String>::None),
        )
        .filter(user_sessions::Column::InstanceId.eq(instance_id))
        .filter(user_sessions::Column::IsActive.eq(true))
        .exec_with_returning(&txn)
        .await
        .context("deactivate instance sessions")?;
    let presence = deactivate_orphan_presence(&txn).await?;
    if let Some(hooks) = hooks {
        crate::storage::webhooks::enqueue_all(&txn, hooks, &swept_events(&result, &presence)).await?;
    }
    txn.commit().await.context("commit instance deactivation")?;
    metrics::counter!("tandem_sessions_swept_total", "reason" => "dead_instance")
        .increment(result.len() as u64);
    Ok(result.len() as u64)
}
