//! Whether the database really takes writes, and the connection that
//! acknowledged updates are committed on.
//!
//! An acknowledgement promises durability, so the writes it waits on run on
//! their own single connection ([`Writes::write`]): after any failure that
//! connection is closed and a fresh one opened for the next attempt, since a
//! failed COMMIT can leave it inside a transaction (later "commits" would be
//! savepoint releases that never reach the disk) and SQLite reopens a file it
//! may not write read-only. A SQLite file deleted or replaced while running
//! keeps taking writes into an unlinked inode, so each commit also checks
//! that the path still names the file opened at start-up.
//!
//! The same state answers `/health`: failing while the persister's last
//! commit failed, while the file is gone, or while a real probe write (at
//! most one a second, cached) fails. `SELECT 1` alone answers from a full
//! disk.

use std::{
    os::unix::fs::MetadataExt,
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::Context;
use chrono::Utc;
use entity::health_probes;
use sea_orm::{DatabaseConnection, EntityTrait, IntoActiveModel, TransactionTrait, sea_query::OnConflict};
use tokio::sync::Mutex;

/// How long a probe result stands before `/health` writes again.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Why the database cannot be trusted with a write.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("the SQLite file {path:?} was deleted while open; writes go nowhere")]
    FileDeleted { path: PathBuf },
    #[error("the SQLite file {path:?} was replaced while open; writes go to the old file")]
    FileReplaced { path: PathBuf },
}

/// The SQLite file as opened at start-up: device and inode of its path.
#[derive(Debug)]
struct SqliteFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SqliteFile {
    /// The file behind a `sqlite:` URL; `None` for PostgreSQL and in-memory databases.
    fn from_url(url: &str) -> Option<Self> {
        use std::str::FromStr;
        if !url.starts_with("sqlite:") || crate::storage::db::is_in_memory(url) {
            return None;
        }
        let options = sea_orm::sqlx::sqlite::SqliteConnectOptions::from_str(url).ok()?;
        let path = options.get_filename().to_path_buf();
        let meta = std::fs::metadata(&path).ok()?;
        Some(Self {
            path,
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// One `stat`: cheap enough for every group commit and health check.
    fn check(&self) -> Result<(), StorageError> {
        match std::fs::metadata(&self.path) {
            Ok(meta) if meta.dev() == self.dev && meta.ino() == self.ino => Ok(()),
            Ok(_) => Err(StorageError::FileReplaced {
                path: self.path.clone(),
            }),
            Err(_) => Err(StorageError::FileDeleted {
                path: self.path.clone(),
            }),
        }
    }
}

/// What `/health` reports about the database's writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteHealth {
    Ok,
    /// Commits fail (or go to a deleted file): nothing is acknowledged.
    Failing,
}

/// The connection acknowledged writes go through, and whether they succeed.
pub struct Writes {
    url: String,
    instance_id: String,
    /// The shared pool, used instead of a dedicated connection for an
    /// in-memory SQLite database (a second connection would be another database).
    shared: Option<DatabaseConnection>,
    /// The dedicated connection; `None` after a failure until the next write opens one.
    connection: Mutex<Option<DatabaseConnection>>,
    file: Option<SqliteFile>,
    /// The persister's last commit failed.
    commits_failing: AtomicBool,
    /// The file check failed (logged once per episode).
    file_lost: AtomicBool,
    /// The last probe: when, and whether it committed.
    probe: Mutex<Option<(Instant, bool)>>,
}

impl Writes {
    /// `shared` is the application pool; call after migrations, so the SQLite file exists.
    pub fn new(url: &str, instance_id: &str, shared: &DatabaseConnection) -> Self {
        Self {
            url: url.to_owned(),
            instance_id: instance_id.to_owned(),
            shared: crate::storage::db::is_in_memory(url).then(|| shared.clone()),
            connection: Mutex::new(None),
            file: SqliteFile::from_url(url),
            commits_failing: AtomicBool::new(false),
            file_lost: AtomicBool::new(false),
            probe: Mutex::new(None),
        }
    }

    /// Run `work` (which commits its own transaction) on the dedicated
    /// connection. Succeeds only if the commit reached the database file this
    /// instance opened; after a failure the connection is replaced.
    pub async fn write<T>(
        &self,
        work: impl AsyncFnOnce(&DatabaseConnection) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        self.check_file()?;
        if let Some(shared) = &self.shared {
            return work(shared).await;
        }
        let mut slot = self.connection.lock().await;
        let connection = match slot.as_ref() {
            Some(connection) => connection.clone(),
            None => {
                let connection = crate::storage::db::connect_writer(&self.url)
                    .await
                    .context("open the write connection")?;
                *slot = Some(connection.clone());
                connection
            }
        };
        match work(&connection).await {
            Ok(value) => {
                // Checked after the commit too: a file deleted meanwhile took it into nowhere.
                self.check_file()?;
                Ok(value)
            }
            Err(error) => {
                slot.take();
                if let Err(close) = connection.close().await {
                    tracing::debug!(error = %close, "closing the failed write connection");
                }
                Err(error)
            }
        }
    }

    fn check_file(&self) -> Result<(), StorageError> {
        let Some(file) = &self.file else { return Ok(()) };
        match file.check() {
            Ok(()) => {
                if self.file_lost.swap(false, Ordering::AcqRel) {
                    tracing::info!(path = %file.path.display(), "the SQLite file is back");
                }
                Ok(())
            }
            Err(error) => {
                if !self.file_lost.swap(true, Ordering::AcqRel) {
                    tracing::error!(%error, "the database file is gone: nothing is acknowledged until a restart");
                }
                Err(error)
            }
        }
    }

    /// Record the outcome of a commit of document updates.
    pub fn commit_outcome(&self, committed: bool) {
        self.commits_failing.store(!committed, Ordering::Release);
    }

    /// Whether the last commit of document updates failed.
    pub fn commits_failing(&self) -> bool {
        self.commits_failing.load(Ordering::Acquire)
    }

    /// The database's write health: the persister's state, the file, and a
    /// real write probed at most once per `PROBE_INTERVAL`.
    pub async fn health(&self) -> WriteHealth {
        let file_ok = self.check_file().is_ok();
        let probe_ok = {
            let mut probe = self.probe.lock().await;
            match *probe {
                Some((at, ok)) if at.elapsed() < PROBE_INTERVAL => ok,
                _ => {
                    let ok = match self
                        .write(async |db| probe_write(db, &self.instance_id).await)
                        .await
                    {
                        Ok(()) => true,
                        Err(error) => {
                            tracing::warn!(
                                error = format!("{error:#}"),
                                "health check: the database refuses writes"
                            );
                            false
                        }
                    };
                    *probe = Some((Instant::now(), ok));
                    ok
                }
            }
        };
        if file_ok && probe_ok && !self.commits_failing() {
            WriteHealth::Ok
        } else {
            WriteHealth::Failing
        }
    }
}

/// Upsert this instance's probe row in its own transaction.
async fn probe_write(db: &DatabaseConnection, instance_id: &str) -> anyhow::Result<()> {
    let txn = db.begin().await.context("begin health probe")?;
    let row = health_probes::Model {
        instance_id: instance_id.to_owned(),
        checked_at: Utc::now(),
    }
    .into_active_model();
    health_probes::Entity::insert(row)
        .on_conflict(
            OnConflict::column(health_probes::Column::InstanceId)
                .update_column(health_probes::Column::CheckedAt)
                .to_owned(),
        )
        .exec_without_returning(&txn)
        .await
        .context("write health probe")?;
    txn.commit().await.context("commit health probe")?;
    Ok(())
}
