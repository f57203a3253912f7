//! An ack always means durable, even when the disk fails. Real faults against
//! the real server: SQLite files made immutable (`chattr +i`), a full tmpfs
//! that is later grown, the SQLite file deleted while running, PostgreSQL
//! turned read-only and PostgreSQL backends killed mid-commit.
//!
//! What must hold: no update is acked before a commit that reached the
//! database; while writes fail, every sender is told (`document_unavailable`,
//! REST 503) and `/health` answers 503 with `database: "failing"`; when the
//! fault clears, the queued updates commit and are acked without help; and a
//! restart finds every acked update.
//!
//! The faults need root (chattr, mount): where that is not permitted the test
//! prints a NOTE and skips. CI runs as root.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

/// How long a fault is held while the client watches for (wrong) acks.
const FAULT_WINDOW: Duration = Duration::from_secs(3);

fn run(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// The SQLite database file of a `sqlite://PATH?mode=rwc` URL, with its WAL and shared-memory files.
fn sqlite_files(url: &str) -> Vec<PathBuf> {
    let path = url.trim_start_matches("sqlite://");
    let path = path.split('?').next().unwrap_or(path);
    ["", "-wal", "-shm"]
        .iter()
        .map(|suffix| PathBuf::from(format!("{path}{suffix}")))
        .collect()
}

/// Files made immutable (`chattr +i`) until dropped: every write fails with EPERM.
struct Immutable(Vec<PathBuf>);

impl Immutable {
    fn set(paths: &[PathBuf]) -> Option<Self> {
        let mut done = Immutable(Vec::new());
        for path in paths.iter().filter(|p| p.exists()) {
            if !run("chattr", &["+i", &path.display().to_string()]) {
                return None;
            }
            done.0.push(path.clone());
        }
        (!done.0.is_empty()).then_some(done)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for path in &self.0 {
            run("chattr", &["-i", &path.display().to_string()]);
        }
    }
}

/// A small tmpfs mounted on a temp dir, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().ok()?;
        let target = dir.path().display().to_string();
        run(
            "mount",
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", &target],
        )
        .then_some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn resize(&self, size: &str) {
        let target = self.dir.path().display().to_string();
        assert!(
            run("mount", &["-o", &format!("remount,size={size}"), &target]),
            "grow the tmpfs"
        );
    }

    /// Write a filler file until the file system is full.
    fn fill(&self) {
        use std::io::Write;
        let mut file = std::fs::File::create(self.path().join("filler")).expect("filler file");
        let block = [0xA5u8; 4096];
        while file.write_all(&block).is_ok() {}
        let _ = file.sync_all();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a server task that has not finished yet may still hold a file open.
        run("umount", &["-l", &self.dir.path().display().to_string()]);
    }
}

/// Whether `chattr +i` works here (root, and a file system that supports it).
fn may_chattr() -> bool {
    let Ok(dir) = tempfile::tempdir() else {
        return false;
    };
    let probe = dir.path().join("probe");
    if std::fs::write(&probe, b"x").is_err() {
        return false;
    }
    let probe = probe.display().to_string();
    let permitted = run("chattr", &["+i", &probe]);
    run("chattr", &["-i", &probe]);
    permitted
}

/// Send `count` updates of `peer` (each a few hundred bytes), ids `{prefix}{i}`; returns the ids.
async fn send_updates(client: &mut Client, peer: &YPeer, prefix: &str, count: usize) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for i in 0..count {
        let id = format!("{prefix}{i}");
        let text = format!("[{id}:{}]", "x".repeat(300));
        let update = peer.insert(peer.text().chars().count() as u32, &text);
        client
            .send(json!({"type": "sync_update", "document_id": "doc", "update": b64::encode(&update), "id": id}))
            .await;
        ids.insert(id);
        // Spread over several group commits.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ids
}

/// What a client hears about its updates within `window`.
#[derive(Debug, Default)]
struct Heard {
    acks: BTreeSet<String>,
    unavailable: BTreeSet<String>,
}

async fn listen(client: &mut Client, window: Duration) -> Heard {
    let until = tokio::time::Instant::now() + window;
    let mut heard = Heard::default();
    while let Ok(Some(message)) = tokio::time::timeout_at(until, client.stream.next()).await {
        let Ok(Message::Text(text)) = message else {
            continue;
        };
        let value: Value = serde_json::from_str(&text).expect("server sent invalid JSON");
        let id = value["id"].as_str().unwrap_or_default().to_owned();
        match value["type"].as_str() {
            Some("ack") => {
                heard.acks.insert(id);
            }
            Some("error") if value["code"] == "document_unavailable" => {
                heard.unavailable.insert(id);
            }
            _ => {}
        }
    }
    heard
}

/// Read until every id in `ids` is acked, or fail after `within`.
async fn await_acks(client: &mut Client, ids: &BTreeSet<String>, within: Duration) {
    let deadline = Instant::now() + within;
    let mut missing = ids.clone();
    while !missing.is_empty() {
        assert!(
            Instant::now() < deadline,
            "not acked after the fault cleared: {missing:?}"
        );
        let heard = listen(client, Duration::from_millis(200)).await;
        for id in heard.acks {
            missing.remove(&id);
        }
    }
}

/// `/health` until it reports `database` as `expected` (with 503 unless `ok`).
async fn await_health(app: &TestApp, expected: &str) -> Value {
    eventually(&format!("health reports database {expected}"), || async move {
        let (status, body) = app.get("/health", None).await;
        let wanted_status = if expected == "ok" { 200 } else { 503 };
        (status == wanted_status && body["database"] == expected).then_some(body)
    })
    .await
}

/// Connect, join "doc" and store a few updates normally.
async fn writer(app: &TestApp, peer: &YPeer) -> Client {
    let mut alice = app.connect("alice").await;
    alice.join("doc").await;
    let ids = send_updates(&mut alice, peer, "before-", 5).await;
    await_acks(&mut alice, &ids, WAIT).await;
    alice
}

/// The fault must show: no acks, and every sender told its update is not durable.
fn assert_refused(heard: &Heard, sent: &BTreeSet<String>, fault: &str) {
    assert!(
        heard.acks.is_empty(),
        "{fault}: acked although nothing could be committed: {:?}",
        heard.acks
    );
    assert_eq!(
        &heard.unavailable, sent,
        "{fault}: every sender is told document_unavailable"
    );
}

/// Restart on the same database and compare the stored text with `peer`'s.
async fn assert_stored_after_restart(app: TestApp, peer: &YPeer, fault: &str) {
    let token = app.token("alice");
    let database = app.shutdown().await;
    let app = spawn_app_on(database, |_| {}).await;
    let (status, text) = app.get_text("/api/v1/documents/doc/text/content", &token).await;
    assert_eq!(status, 200);
    assert!(
        text == peer.text(),
        "{fault}: every acked update is stored after a restart (stored {} chars, expected {})",
        text.len(),
        peer.text().len()
    );
    app.shutdown().await;
}

#[tokio::test]
async fn no_update_is_acked_while_the_sqlite_files_are_immutable_and_all_are_acked_after() {
    if !may_chattr() {
        note("NOTE: chattr +i is not permitted here: the immutable-file test is SKIPPED");
        return;
    }
    // Arrange
    let app = spawn_app_with(&Backend::Sqlite, |c| c.rate_limit_burst = 1000).await;
    let peer = YPeer::new(1);
    let mut alice = writer(&app, &peer).await;

    // Act: every write to the database files now fails with EPERM.
    // Not the -shm file: SQLite maps it, and a write fault on a mapped
    // immutable page is SIGBUS for the whole process (a crash, covered by
    // the SIGKILL test), not an I/O error.
    let fault = Immutable::set(&sqlite_files(&app.database.url)[..2]).expect("chattr +i");
    let sent = send_updates(&mut alice, &peer, "during-", 30).await;
    let heard = listen(&mut alice, FAULT_WINDOW).await;
    assert_refused(&heard, &sent, "immutable files");
    let health = await_health(&app, "failing").await;
    let rest_update = peer.insert(0, "{rest}");
    let started = Instant::now();
    // Alice's backend writes with her client id: it is hers.
    let (status, body) = app
        .post(
            "/api/v1/documents/doc/updates",
            Some(&app.token("alice")),
            &json!({"update": b64::encode(&rest_update)}),
        )
        .await;
    let rest_wait = started.elapsed();
    drop(fault);

    // Assert
    assert_eq!(health["status"], "degraded");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "unavailable");
    assert!(
        rest_wait < Duration::from_secs(5),
        "told at once, not after a timeout: {rest_wait:?}"
    );
    await_acks(&mut alice, &sent, WAIT).await;
    await_health(&app, "ok").await;
    let after = send_updates(&mut alice, &peer, "after-", 3).await;
    await_acks(&mut alice, &after, WAIT).await;
    assert_stored_after_restart(app, &peer, "immutable files").await;
}

#[tokio::test]
async fn no_update_is_acked_while_the_disk_is_full_and_all_are_acked_after_it_grows() {
    let Some(disk) = Tmpfs::mount("8m") else {
        note("NOTE: mounting a tmpfs is not permitted here: the full-disk test is SKIPPED");
        return;
    };
    // Arrange
    let url = format!("sqlite://{}?mode=rwc", disk.path().join("tandem.db").display());
    let app = spawn_app_on(TestDatabase::shared(&url), |c| c.rate_limit_burst = 1000).await;
    let peer = YPeer::new(1);
    let mut alice = writer(&app, &peer).await;

    // Act: no free block left for the WAL to grow into.
    disk.fill();
    let sent = send_updates(&mut alice, &peer, "during-", 30).await;
    let heard = listen(&mut alice, FAULT_WINDOW).await;
    assert_refused(&heard, &sent, "full disk");
    await_health(&app, "failing").await;
    disk.resize("64m");

    // Assert
    await_acks(&mut alice, &sent, WAIT).await;
    await_health(&app, "ok").await;
    let after = send_updates(&mut alice, &peer, "after-", 3).await;
    await_acks(&mut alice, &after, WAIT).await;
    assert_stored_after_restart(app, &peer, "full disk").await;
    drop(disk);
}

#[tokio::test]
async fn deleting_the_sqlite_file_stops_acks_and_fails_health() {
    // Arrange
    let app = spawn_app_with(&Backend::Sqlite, |c| c.rate_limit_burst = 1000).await;
    let peer = YPeer::new(1);
    let mut alice = writer(&app, &peer).await;

    // Act: the open connections keep writing into an unlinked inode.
    for file in sqlite_files(&app.database.url) {
        let _ = std::fs::remove_file(file);
    }
    let sent = send_updates(&mut alice, &peer, "during-", 10).await;
    let heard = listen(&mut alice, FAULT_WINDOW).await;

    // Assert
    assert_refused(&heard, &sent, "deleted file");
    let health = await_health(&app, "failing").await;
    assert_eq!(health["status"], "degraded");
}

/// The name of the database in a PostgreSQL URL.
fn database_name(url: &str) -> String {
    let path = url.split('?').next().unwrap_or(url);
    path.rsplit('/').next().unwrap_or_default().to_owned()
}

async fn terminate_backends(admin: &DatabaseConnection, name: &str) -> u64 {
    admin
        .execute_unprepared(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        ))
        .await
        .map(|result| result.rows_affected())
        .unwrap_or_default()
}

fn postgres_url() -> Option<String> {
    let url = std::env::var("TEST_DATABASE_URL").ok().filter(|u| !u.is_empty());
    if url.is_none() {
        note("NOTE: TEST_DATABASE_URL is not set: the PostgreSQL durability tests are SKIPPED");
    }
    url
}

#[tokio::test]
async fn no_update_is_acked_while_postgres_refuses_writes_and_all_are_acked_after() {
    let Some(admin_url) = postgres_url() else { return };
    // Arrange
    let app = spawn_app_with(&Backend::Postgres(admin_url.clone()), |c| {
        c.rate_limit_burst = 1000
    })
    .await;
    let name = database_name(&app.database.url);
    let admin = Database::connect(admin_url.as_str())
        .await
        .expect("admin connection");
    let peer = YPeer::new(1);
    let mut alice = writer(&app, &peer).await;

    // Act: every new session is read-only (as after a failover onto a replica).
    admin
        .execute_unprepared(&format!(
            "ALTER DATABASE \"{name}\" SET default_transaction_read_only = on"
        ))
        .await
        .expect("make the database read-only");
    terminate_backends(&admin, &name).await;
    let sent = send_updates(&mut alice, &peer, "during-", 20).await;
    let heard = listen(&mut alice, FAULT_WINDOW).await;
    assert_refused(&heard, &sent, "read-only postgres");
    await_health(&app, "failing").await;
    admin
        .execute_unprepared(&format!(
            "ALTER DATABASE \"{name}\" RESET default_transaction_read_only"
        ))
        .await
        .expect("make the database writable");
    terminate_backends(&admin, &name).await;

    // Assert
    await_acks(&mut alice, &sent, WAIT).await;
    await_health(&app, "ok").await;
    assert_stored_after_restart(app, &peer, "read-only postgres").await;
    admin.close().await.ok();
}

#[tokio::test]
async fn acked_updates_survive_postgres_backends_killed_mid_commit() {
    let Some(admin_url) = postgres_url() else { return };
    // Arrange
    let app = spawn_app_with(&Backend::Postgres(admin_url.clone()), |c| {
        c.rate_limit_burst = 1000
    })
    .await;
    let name = database_name(&app.database.url);
    let admin = Database::connect(admin_url.as_str())
        .await
        .expect("admin connection");
    let peer = YPeer::new(1);
    let mut alice = writer(&app, &peer).await;

    // Act: kill the gateway's backends every few milliseconds while it commits.
    let killer = tokio::spawn(async move {
        let mut killed = 0;
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            killed += terminate_backends(&admin, &name).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        admin.close().await.ok();
        killed
    });
    let sent = send_updates(&mut alice, &peer, "during-", 150).await;
    let killed = killer.await.expect("killer task");

    // Assert
    assert!(killed > 0, "the fault happened");
    await_acks(&mut alice, &sent, WAIT * 2).await;
    await_health(&app, "ok").await;
    assert_stored_after_restart(app, &peer, "killed backends").await;
}
