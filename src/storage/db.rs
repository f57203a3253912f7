//! Database connection: SQLite (embedded default) or PostgreSQL, migrated at start-up.

use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};

/// How long SQLite waits for a lock before reporting `database is locked`.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a shared SQLite connection is reused. SQLite silently reopens a
/// file it may not write read-only; recycling bounds how long such a
/// connection (opened during a fault) keeps failing the writers that share
/// the pool after the fault cleared. Opening a SQLite connection is cheap.
const SQLITE_MAX_LIFETIME: Duration = Duration::from_secs(60);

/// Which pool to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pool {
    /// Everything but the document log: reads, presence, sweeps, compaction.
    Shared,
    /// One connection for committing acknowledged updates, replaced after a failure.
    Writer,
}

/// Connect to `url` and apply pending migrations.
pub async fn connect_and_migrate(url: &str) -> Result<DatabaseConnection, DbErr> {
    let db = connect(url, Pool::Shared).await?;
    Migrator::up(&db, None).await?;
    Ok(db)
}

/// A pool of one connection for the commits that acknowledgements wait on:
/// its owner drops it after any failure and opens a fresh one.
pub async fn connect_writer(url: &str) -> Result<DatabaseConnection, DbErr> {
    connect(url, Pool::Writer).await
}

/// Whether `url` names an in-memory SQLite database (one per connection, so
/// it can only ever be used through one pool).
pub fn is_in_memory(url: &str) -> bool {
    url.starts_with("sqlite:") && (url.contains(":memory:") || url.contains("mode=memory"))
}

async fn connect(url: &str, pool: Pool) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .sqlx_logging(false)
        .connect_timeout(Duration::from_secs(10));
    if url.starts_with("sqlite:") {
        use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
        // WAL lets readers run beside the writer; FULL makes a committed
        // (acknowledged) update survive a crash of the machine, not only of the
        // process. Group commit keeps that to one fsync per batch.
        options
            .max_connections(if pool == Pool::Writer { 1 } else { 4 })
            .max_lifetime(SQLITE_MAX_LIFETIME)
            .map_sqlx_sqlite_opts(|opts| {
                opts.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(SQLITE_BUSY_TIMEOUT)
                    .foreign_keys(true)
                    .create_if_missing(true)
            })
            .map_sqlx_sqlite_pool_opts(|pool| {
                pool.after_release(|conn, _| Box::pin(outside_transaction(conn)))
            });
    } else {
        let (max, min) = match pool {
            Pool::Shared => (16, 1),
            Pool::Writer => (1, 0),
        };
        options
            .max_connections(max)
            .min_connections(min)
            .map_sqlx_postgres_pool_opts(|pool| {
                pool.after_release(|conn, _| Box::pin(outside_transaction(conn)))
            });
    }
    Database::connect(options).await
}

/// Keep a connection returned to the pool only if it is outside any
/// transaction. After a failed COMMIT (SQLite: `disk I/O error` on an
/// unwritable or full disk) the driver still counts the transaction as open
/// and so turns the next `BEGIN` on that connection into a SAVEPOINT, whose
/// RELEASE commits nothing: what was then acknowledged was rolled back when
/// the connection closed. Discarding the connection (closing rolls back) is
/// the only safe reuse.
async fn outside_transaction<C: sea_orm::sqlx::Connection>(
    conn: &mut C,
) -> Result<bool, sea_orm::sqlx::Error> {
    // The rollback a dropped transaction queued runs before this round trip
    // (SQLite: same worker queue), so the depth read afterwards is current.
    conn.ping().await?;
    if conn.is_in_transaction() {
        tracing::warn!("a database connection was left inside a transaction; discarding it");
        return Ok(false);
    }
    Ok(true)
}
