//! Write-behind of sessions and presence to the database.
//!
//! The per-message path only records the latest state of a row in memory;
//! this worker upserts whatever changed, one transaction per flush. A row is
//! written at most once per flush, whatever the cursor rate, so memory is
//! bounded by the number of rows, not by the number of messages. Changes
//! that matter to others (sessions opening and closing, joins, leaves) are
//! marked urgent and flushed at once; cursor and selection moves wait for the
//! interval. A failed flush keeps its rows and retries with backoff: nothing
//! is dropped on `database is locked` or an outage.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use anyhow::Context;
use entity::{document_presence, user_sessions};
use sea_orm::{
    ActiveModelTrait, DatabaseConnection, EntityTrait, IntoActiveModel, TransactionTrait,
    sea_query::OnConflict,
};
use tokio::sync::{Notify, watch};

use crate::model::{
    ids::DocumentId,
    presence::{Cursor, Presence, PresenceEvent, PresenceSink, SessionRecord},
};
use crate::storage::webhooks::{Event, Hooks};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Rows per INSERT statement: far below SQLite's and PostgreSQL's parameter limits.
const ROWS_PER_STATEMENT: usize = 100;
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Pending {
    sessions: HashMap<Uuid, user_sessions::Model>,
    presence: HashMap<(String, Uuid), document_presence::Model>,
    /// Webhook events of the changes above, written in the same transaction.
    events: Vec<Event>,
    /// Increases with every change; a flush covers all changes up to the
    /// generation it took.
    generation: u64,
    urgent: bool,
}

/// Latest-state buffer of rows to write, plus its flushing worker.
pub struct WriteBehind {
    db: DatabaseConnection,
    pending: Mutex<Pending>,
    wake: Notify,
    flushed: watch::Sender<u64>,
    /// Webhook targets; `None`: no events are recorded.
    hooks: Option<Hooks>,
}

impl WriteBehind {
    pub fn new(db: DatabaseConnection) -> Self {
        Self {
            db,
            pending: Mutex::new(Pending::default()),
            wake: Notify::new(),
            flushed: watch::Sender::new(0),
            hooks: None,
        }
    }

    /// Record webhook events for `hooks` with the rows.
    pub fn with_hooks(mut self, hooks: Option<Hooks>) -> Self {
        self.hooks = hooks;
        self
    }

    /// Queue a webhook event with the rows of its change (urgent).
    pub fn event(&self, event: Event) {
        if self.hooks.is_some() {
            self.with_pending(true, |pending| pending.events.push(event));
        }
    }

    /// The end of a session, with its `session.ended` event.
    pub fn session_ended(&self, row: user_sessions::Model, reason: Option<&str>) {
        let event = self.hooks.is_some().then(|| {
            Event::user(
                "session.ended",
                &row.user_id,
                serde_json::json!({
                    "user_id": row.user_id,
                    "session_id": row.id.to_string(),
                    "device_type": row.device_type,
                    "reason": reason,
                }),
            )
        });
        self.with_pending(true, |pending| {
            pending.sessions.insert(row.id, row);
            pending.events.extend(event);
        });
    }

    fn with_pending(&self, urgent: bool, change: impl FnOnce(&mut Pending)) -> u64 {
        let generation = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            change(&mut pending);
            pending.generation += 1;
            pending.urgent |= urgent;
            pending.generation
        };
        if urgent {
            self.wake.notify_one();
        }
        generation
    }

    /// Record the latest state of a session row. Returns the change's generation.
    pub fn session(&self, row: user_sessions::Model, urgent: bool) -> u64 {
        self.with_pending(urgent, |pending| {
            pending.sessions.insert(row.id, row);
        })
    }

    /// Record the latest state of a presence row. Returns the change's generation.
    pub fn presence(&self, row: document_presence::Model, urgent: bool) -> u64 {
        self.with_pending(urgent, |pending| {
            let key = (row.document_id.clone(), row.session_id);
            pending.presence.insert(key, row);
        })
    }

    /// Wait until the change of `generation` (and everything before it) is committed.
    pub async fn wait_flushed(&self, generation: u64) {
        let mut flushed = self.flushed.subscribe();
        // The sender lives as long as `self`; an error cannot happen while we hold `&self`.
        let _ = flushed.wait_for(|done| *done >= generation).await;
    }

    /// Rows waiting to be written (for stats and tests).
    pub fn backlog(&self) -> usize {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.sessions.len() + pending.presence.len() + pending.events.len()
    }

    /// Flush on every interval and whenever something urgent arrives, until
    /// `stop` fires; then flush what is left.
    pub async fn run(&self, interval: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut backoff = Duration::ZERO;
        let mut failing = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
                _ = self.wake.notified() => {}
            }
            if !backoff.is_zero() {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
            }
            match self.flush().await {
                Ok(()) => {
                    if failing {
                        tracing::info!("presence writes to the database recovered");
                    }
                    failing = false;
                    backoff = Duration::ZERO;
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(
                            error = format!("{error:#}"),
                            "presence write failed; keeping rows and retrying"
                        );
                    }
                    failing = true;
                    backoff = (backoff * 2).clamp(Duration::from_millis(50), MAX_BACKOFF);
                    self.wake.notify_one();
                }
            }
        }
        // Final flush, retried briefly: graceful shutdown loses nothing the database can take.
        for attempt in 0..20 {
            match self.flush().await {
                Ok(()) if self.backlog() == 0 => return,
                Ok(()) => continue,
                Err(error) => {
                    tracing::warn!(
                        attempt,
                        error = format!("{error:#}"),
                        "final presence flush failed"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        tracing::error!(
            rows = self.backlog(),
            "shutting down with unwritten presence rows"
        );
    }

    /// Write everything pending in one transaction.
    pub async fn flush(&self) -> anyhow::Result<()> {
        let (sessions, presence, events, generation) = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.urgent = false;
            (
                std::mem::take(&mut pending.sessions),
                std::mem::take(&mut pending.presence),
                std::mem::take(&mut pending.events),
                pending.generation,
            )
        };
        if sessions.is_empty() && presence.is_empty() && events.is_empty() {
            self.flushed.send_replace(generation);
            return Ok(());
        }
        match self.write(&sessions, &presence, &events).await {
            Ok(()) => {
                metrics::counter!("tandem_presence_rows_written_total").increment(presence.len() as u64);
                metrics::counter!("tandem_session_rows_written_total").increment(sessions.len() as u64);
                self.flushed.send_replace(generation);
                Ok(())
            }
            Err(error) => {
                // Put the rows back unless a newer state arrived meanwhile.
                let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                for (key, row) in sessions {
                    pending.sessions.entry(key).or_insert(row);
                }
                for (key, row) in presence {
                    pending.presence.entry(key).or_insert(row);
                }
                // Events keep their order: the failed ones go first.
                let newer = std::mem::replace(&mut pending.events, events);
                pending.events.extend(newer);
                Err(error)
            }
        }
    }

    async fn write(
        &self,
        sessions: &HashMap<Uuid, user_sessions::Model>,
        presence: &HashMap<(String, Uuid), document_presence::Model>,
        events: &[Event],
    ) -> anyhow::Result<()> {
        use document_presence::Column as P;
        use user_sessions::Column as S;
        let txn = self.db.begin().await.context("begin presence flush")?;
        let session_rows: Vec<_> = sessions.values().cloned().collect();
        for chunk in session_rows.chunks(ROWS_PER_STATEMENT) {
            let models = chunk
                .iter()
                .cloned()
                .map(|row| row.into_active_model().reset_all());
            user_sessions::Entity::insert_many(models)
                .on_conflict(
                    OnConflict::column(S::Id)
                        .update_columns([
                            S::UserName,
                            S::IsActive,
                            S::UserAgent,
                            S::IpAddress,
                            S::DeviceType,
                            S::CurrentDocumentId,
                            S::InstanceId,
                            S::LastSeenAt,
                            S::DisconnectedAt,
                            S::ResumedCount,
                        ])
                        .to_owned(),
                )
                .exec_without_returning(&txn)
                .await
                .context("upsert user_sessions")?;
        }
        let presence_rows: Vec<_> = presence.values().cloned().collect();
        for chunk in presence_rows.chunks(ROWS_PER_STATEMENT) {
            let models = chunk
                .iter()
                .cloned()
                .map(|row| row.into_active_model().reset_all());
            document_presence::Entity::insert_many(models)
                .on_conflict(
                    OnConflict::columns([P::DocumentId, P::SessionId])
                        .update_columns([
                            P::UserId,
                            P::IsActive,
                            P::IsEditing,
                            P::CursorLine,
                            P::CursorColumn,
                            P::SelectionStartLine,
                            P::SelectionStartColumn,
                            P::SelectionEndLine,
                            P::SelectionEndColumn,
                            P::JoinedAt,
                            P::LastSeenAt,
                        ])
                        .to_owned(),
                )
                .exec_without_returning(&txn)
                .await
                .context("upsert document_presence")?;
        }
        if let Some(hooks) = &self.hooks {
            crate::storage::webhooks::enqueue_all(&txn, hooks, events).await?;
        }
        txn.commit().await.context("commit presence flush")?;
        Ok(())
    }
}

/// The `document_presence` row of a member.
pub fn presence_row(
    presence: &Presence,
    document_id: &DocumentId,
    is_active: bool,
) -> document_presence::Model {
    let this = presence;
    let (cursor_line, cursor_column) = split(this.cursor);
    let (start_line, start_column) = split(this.selection.map(|s| s.start));
    let (end_line, end_column) = split(this.selection.map(|s| s.end));
    document_presence::Model {
        // The upsert key is (document_id, session_id); this id is used only
        // when the row is first inserted.
        id: Uuid::now_v7(),
        document_id: document_id.as_str().to_owned(),
        user_id: this.user_id.to_string(),
        session_id: this.session_id,
        is_active,
        is_editing: is_active && this.is_editing,
        cursor_line,
        cursor_column,
        selection_start_line: start_line,
        selection_start_column: start_column,
        selection_end_line: end_line,
        selection_end_column: end_column,
        joined_at: this.joined_at,
        last_seen_at: this.last_seen_at,
    }
}

fn split(cursor: Option<Cursor>) -> (Option<i64>, Option<i64>) {
    match cursor {
        Some(cursor) => (Some(i64::from(cursor.line)), Some(i64::from(cursor.column))),
        None => (None, None),
    }
}

/// The `user_sessions` row of a session.
pub fn session_row(record: &SessionRecord) -> user_sessions::Model {
    user_sessions::Model {
        id: record.session_id,
        user_id: record.user_id.to_string(),
        user_name: record.name.as_deref().map(str::to_owned),
        connection_id: record.connection_id,
        is_active: record.disconnected_at.is_none(),
        user_agent: record.user_agent.clone(),
        ip_address: record.ip_address.clone(),
        device_type: record.device_type.as_str().to_owned(),
        current_document_id: record.current_document_id.as_ref().map(|d| d.as_str().to_owned()),
        instance_id: record.instance_id.to_string(),
        created_at: record.created_at,
        last_seen_at: record.last_seen_at,
        disconnected_at: record.disconnected_at,
        resumed_count: i32::try_from(record.resumed_count).unwrap_or(i32::MAX),
    }
}

impl PresenceSink for WriteBehind {
    fn presence(&self, document_id: &DocumentId, presence: &Presence, is_active: bool, urgent: bool) {
        WriteBehind::presence(self, presence_row(presence, document_id, is_active), urgent);
    }

    fn presence_event(&self, document_id: &DocumentId, presence: &Presence, change: PresenceEvent) {
        if self.hooks.is_none() {
            return;
        }
        let mut data = serde_json::json!({
            "document_id": document_id.as_str(),
            "user_id": &*presence.user_id,
            "session_id": presence.session_id.to_string(),
            "connection_id": presence.connection_id.to_string(),
            "device_type": presence.device_type.as_str(),
        });
        let kind = match change {
            PresenceEvent::Joined { first_device } => {
                data["first_device"] = first_device.into();
                "presence.joined"
            }
            PresenceEvent::Left { last_device, reason } => {
                data["last_device"] = last_device.into();
                data["reason"] = serde_json::to_value(reason).unwrap_or_default();
                "presence.left"
            }
        };
        // With the member's presence row, so both land in one commit.
        let row = presence_row(
            presence,
            document_id,
            matches!(change, PresenceEvent::Joined { .. }),
        );
        self.with_pending(true, |pending| {
            pending
                .presence
                .insert((row.document_id.clone(), row.session_id), row);
            pending.events.push(Event::document(kind, document_id, data));
        });
    }
}

#[cfg(test)]
mod tests {
    //! Coalescing and retries, on a real SQLite file.
    use std::sync::Arc;

    use chrono::{TimeDelta, Utc};
    use sea_orm::{Database, DatabaseConnection, EntityTrait, PaginatorTrait};

    use super::*;
    use crate::model::device::DeviceType;

    async fn database(migrated: bool) -> (tempfile::TempDir, DatabaseConnection) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let db = if migrated {
            crate::storage::db::connect_and_migrate(&url).await.unwrap()
        } else {
            Database::connect(url.as_str()).await.unwrap()
        };
        (dir, db)
    }

    fn record() -> SessionRecord {
        let now = Utc::now();
        SessionRecord {
            session_id: Uuid::now_v7(),
            connection_id: Uuid::now_v7(),
            user_id: Arc::from("alice"),
            name: None,
            user_agent: None,
            ip_address: None,
            device_type: DeviceType::Desktop,
            current_document_id: None,
            instance_id: Arc::from("test"),
            created_at: now,
            last_seen_at: now,
            disconnected_at: None,
            resumed_count: 0,
        }
    }

    fn doc() -> DocumentId {
        DocumentId::parse("doc").unwrap()
    }

    #[tokio::test]
    async fn a_thousand_cursor_moves_become_one_row_holding_the_last() {
        let (_dir, db) = database(true).await;
        let writer = WriteBehind::new(db.clone());
        let session = record();
        writer.session(session_row(&session), true);
        let mut presence = session.presence(Utc::now());
        for column in 0..1000 {
            presence.cursor = Some(Cursor { line: 1, column });
            writer.presence(presence_row(&presence, &doc(), true), false);
        }
        assert_eq!(writer.backlog(), 2, "one session row and one presence row wait");
        writer.flush().await.unwrap();
        assert_eq!(writer.backlog(), 0);
        let rows = document_presence::Entity::find().all(&db).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].cursor_line, rows[0].cursor_column), (Some(1), Some(999)));
    }

    #[tokio::test]
    async fn an_urgent_change_is_written_without_waiting_for_the_interval() {
        let (_dir, db) = database(true).await;
        let writer = Arc::new(WriteBehind::new(db.clone()));
        let stop = CancellationToken::new();
        let worker = tokio::spawn({
            let (writer, stop) = (writer.clone(), stop.clone());
            // An interval no test would wait for: only urgency can flush.
            async move { writer.run(Duration::from_secs(3600), stop).await }
        });
        // The worker's first tick fires at once; let it pass.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let session = record();
        let generation = writer.session(session_row(&session), true);
        tokio::time::timeout(Duration::from_secs(30), writer.wait_flushed(generation))
            .await
            .expect("an urgent change must not wait for the interval");
        assert_eq!(user_sessions::Entity::find().count(&db).await.unwrap(), 1);
        // A non-urgent change waits for the interval, or for shutdown's
        // final flush, which loses nothing.
        let mut presence = session.presence(Utc::now());
        presence.cursor = Some(Cursor { line: 2, column: 3 });
        writer.presence(presence_row(&presence, &doc(), true), false);
        assert_eq!(writer.backlog(), 1);
        stop.cancel();
        worker.await.unwrap();
        assert_eq!(writer.backlog(), 0);
        assert_eq!(document_presence::Entity::find().count(&db).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_failed_flush_keeps_its_rows_and_the_newest_state_is_written() {
        // No tables yet: every write fails, as during an outage.
        let (dir, db) = database(false).await;
        let writer = WriteBehind::new(db.clone());
        let mut session = record();
        writer.session(session_row(&session), true);
        assert!(writer.flush().await.is_err());
        assert_eq!(writer.backlog(), 1, "a failed flush must keep its rows");
        session.last_seen_at += TimeDelta::seconds(5);
        writer.session(session_row(&session), false);
        assert_eq!(writer.backlog(), 1, "still one row per session");
        // The database comes back.
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let _migrated = crate::storage::db::connect_and_migrate(&url).await.unwrap();
        writer.flush().await.unwrap();
        let row = user_sessions::Entity::find_by_id(session.session_id)
            .one(&db)
            .await
            .unwrap()
            .expect("the kept row was written");
        assert_eq!(row.last_seen_at, session.last_seen_at);
    }
}
