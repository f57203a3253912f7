//! Sessions and presence in the database (SQLite, and PostgreSQL when
//! `TEST_DATABASE_URL` is set): written behind, cleaned when stale, cleaned
//! after a crash, and marked inactive on graceful shutdown.

use std::time::Duration;

use chrono::Utc;
use entity::{document_presence, user_sessions};
use sea_orm::{ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, IntoActiveModel, QueryFilter};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::*;

async fn session_row(db: &DatabaseConnection, session_id: &str) -> Option<user_sessions::Model> {
    user_sessions::Entity::find_by_id(Uuid::parse_str(session_id).unwrap())
        .one(db)
        .await
        .unwrap()
}

async fn presence_row(
    db: &DatabaseConnection,
    document: &str,
    session_id: &str,
) -> Option<document_presence::Model> {
    document_presence::Entity::find()
        .filter(document_presence::Column::DocumentId.eq(document))
        .filter(document_presence::Column::SessionId.eq(Uuid::parse_str(session_id).unwrap()))
        .one(db)
        .await
        .unwrap()
}

#[tokio::test]
async fn sessions_and_presence_are_written_behind_and_closed_on_disconnect() {
    for backend in backends() {
        let app = spawn_app_with(&backend, |_| {}).await;
        let db = app.database.connect().await;
        let mut alice = app.connect("alice").await;
        let mut bob = app.connect_with(&app.token("bob"), Some(PHONE_UA)).await.unwrap();

        // The session row is committed before `connected` is sent.
        let row = session_row(&db, &alice.session_id).await.expect("session row");
        assert!(row.is_active, "{}", backend.name());
        assert_eq!(row.user_id, "alice");
        assert_eq!(row.device_type, "desktop");
        assert_eq!(row.ip_address.as_deref(), Some("127.0.0.1"));
        assert_eq!(row.instance_id, &*app.state.instance_id);
        assert_eq!(row.connection_id.to_string(), alice.connection_id);

        alice.join("doc-1").await;
        bob.join("doc-1").await;
        alice
            .send(json!({"type": "cursor_move", "document_id": "doc-1", "cursor": {"line": 3, "column": 9}}))
            .await;
        alice.send(json!({"type": "selection_change", "document_id": "doc-1", "selection": {"start": {"line": 1, "column": 2}, "end": {"line": 3, "column": 4}}})).await;
        alice
            .send(json!({"type": "editing_start", "document_id": "doc-1"}))
            .await;
        let row = eventually("presence row has the cursor", || {
            let db = &db;
            let session = alice.session_id.clone();
            async move {
                presence_row(db, "doc-1", &session)
                    .await
                    .filter(|r| r.cursor_line == Some(3) && r.is_editing && r.selection_end_column == Some(4))
            }
        })
        .await;
        assert!(row.is_active);
        assert_eq!((row.cursor_column, row.selection_start_line), (Some(9), Some(1)));
        assert_eq!(
            session_row(&db, &alice.session_id)
                .await
                .unwrap()
                .current_document_id
                .as_deref(),
            Some("doc-1")
        );

        bob.send(json!({"type": "leave_document", "document_id": "doc-1"}))
            .await;
        eventually("bob's presence row is inactive", || {
            let db = &db;
            let session = bob.session_id.clone();
            async move {
                presence_row(db, "doc-1", &session)
                    .await
                    .filter(|r| !r.is_active)
                    .map(|_| ())
            }
        })
        .await;

        alice.stream.close(None).await.unwrap();
        let row = eventually("alice's session is closed", || {
            let db = &db;
            let session = alice.session_id.clone();
            async move { session_row(db, &session).await.filter(|r| !r.is_active) }
        })
        .await;
        assert!(row.disconnected_at.is_some());
        let presence = presence_row(&db, "doc-1", &alice.session_id).await.unwrap();
        assert!(!presence.is_active && !presence.is_editing);
    }
}

#[tokio::test]
async fn many_cursor_moves_end_as_the_last_position_in_one_row() {
    for backend in backends() {
        let app = spawn_app_with(&backend, |c| {
            c.presence_flush_interval = Duration::from_millis(200);
            c.rate_limit_burst = 1000;
        })
        .await;
        let db = app.database.connect().await;
        let mut alice = app.connect("alice").await;
        alice.join("d").await;
        for line in 0..300 {
            alice
                .send(
                    json!({"type": "cursor_move", "document_id": "d", "cursor": {"line": line, "column": 1}}),
                )
                .await;
        }
        alice.assert_alive().await;
        eventually("the last cursor position is stored", || {
            let db = &db;
            let session = alice.session_id.clone();
            async move {
                presence_row(db, "d", &session)
                    .await
                    .filter(|r| r.cursor_line == Some(299))
            }
        })
        .await;
        let rows = document_presence::Entity::find().all(&db).await.unwrap();
        assert_eq!(
            rows.len(),
            1,
            "{}: one row per (document, session)",
            backend.name()
        );
    }
}

/// Insert a session (and a presence row) as a process that died would have left them.
async fn insert_orphan(
    db: &DatabaseConnection,
    user: &str,
    last_seen_ago: chrono::Duration,
    instance: &str,
) -> Uuid {
    let now = Utc::now();
    let session_id = Uuid::now_v7();
    user_sessions::Model {
        id: session_id,
        user_id: user.into(),
        user_name: None,
        connection_id: Uuid::now_v7(),
        is_active: true,
        user_agent: None,
        ip_address: None,
        device_type: "other".into(),
        current_document_id: Some("doc-1".into()),
        instance_id: instance.into(),
        created_at: now - last_seen_ago,
        last_seen_at: now - last_seen_ago,
        disconnected_at: None,
        resumed_count: 0,
    }
    .into_active_model()
    .reset_all()
    .insert(db)
    .await
    .unwrap();
    document_presence::Model {
        id: Uuid::now_v7(),
        document_id: "doc-1".into(),
        user_id: user.into(),
        session_id,
        is_active: true,
        is_editing: true,
        cursor_line: Some(1),
        cursor_column: Some(1),
        selection_start_line: None,
        selection_start_column: None,
        selection_end_line: None,
        selection_end_column: None,
        joined_at: now - last_seen_ago,
        last_seen_at: now - last_seen_ago,
    }
    .into_active_model()
    .reset_all()
    .insert(db)
    .await
    .unwrap();
    session_id
}

#[tokio::test]
async fn the_sweep_deactivates_stale_sessions_but_not_live_ones() {
    for backend in backends() {
        let database = TestDatabase::create(&backend).await;
        let db = database.connect().await;
        let stale = insert_orphan(&db, "ghost", chrono::Duration::minutes(10), "dead-instance").await;
        let fresh = insert_orphan(
            &db,
            "other-instance-user",
            chrono::Duration::seconds(1),
            "live-instance",
        )
        .await;

        let app = spawn_app_on(database, |c| {
            c.session_ttl = Duration::from_secs(120);
            c.cleanup_interval = Duration::from_millis(100);
        })
        .await;
        let mut alice = app.connect("alice").await;
        alice.join("doc-1").await;

        eventually("the stale session is inactive", || {
            let db = &db;
            async move {
                let row = user_sessions::Entity::find_by_id(stale)
                    .one(db)
                    .await
                    .unwrap()
                    .unwrap();
                (!row.is_active).then_some(())
            }
        })
        .await;
        let presence = document_presence::Entity::find()
            .filter(document_presence::Column::SessionId.eq(stale))
            .one(&db)
            .await
            .unwrap()
            .unwrap();
        assert!(!presence.is_active && !presence.is_editing, "{}", backend.name());
        let fresh_row = user_sessions::Entity::find_by_id(fresh)
            .one(&db)
            .await
            .unwrap()
            .unwrap();
        assert!(fresh_row.is_active, "a session within its TTL stays");
        assert!(
            session_row(&db, &alice.session_id).await.unwrap().is_active,
            "a live local session stays"
        );
        alice.assert_alive().await;
    }
}

#[tokio::test]
async fn a_restart_with_the_same_instance_id_cleans_its_leftovers_at_once() {
    for backend in backends() {
        let database = TestDatabase::create(&backend).await;
        let db = database.connect().await;
        let leftover = insert_orphan(&db, "alice", chrono::Duration::seconds(1), "pod-a").await;
        let app = spawn_app_on(database, |c| c.instance_id = Some("pod-a".into())).await;
        let row = user_sessions::Entity::find_by_id(leftover)
            .one(&db)
            .await
            .unwrap()
            .unwrap();
        assert!(!row.is_active, "{}: deactivated before serving", backend.name());
        let (status, body) = app
            .get("/api/v1/users/alice/sessions", Some(&app.token("alice")))
            .await;
        assert_eq!(status, 200);
        assert_eq!(body["sessions"], json!([]));
    }
}

#[tokio::test]
async fn graceful_shutdown_closes_sockets_with_1001_and_marks_sessions_inactive() {
    for backend in backends() {
        let app = spawn_app_with(&backend, |c| c.presence_flush_interval = Duration::from_secs(60)).await;
        let db = app.database.connect().await;
        let mut alice = app.connect("alice").await;
        alice.join("doc-1").await;
        // Only written behind (60 s interval): must still be flushed at shutdown.
        alice.send(json!({"type": "cursor_move", "document_id": "doc-1", "cursor": {"line": 42, "column": 0}, "id": 1})).await;
        alice.recv_type("ack").await;
        let session = alice.session_id.clone();

        let stopping = tokio::spawn(app.shutdown());
        let close = alice.recv_close().await.expect("close frame");
        assert_eq!(u16::from(close.code), 1001);
        let _database = stopping.await.unwrap();

        let row = session_row(&db, &session).await.unwrap();
        assert!(!row.is_active, "{}", backend.name());
        let presence = presence_row(&db, "doc-1", &session).await.unwrap();
        assert!(!presence.is_active);
        assert_eq!(
            presence.cursor_line,
            Some(42),
            "the written-behind cursor was flushed"
        );
    }
}

#[tokio::test]
async fn a_restart_finds_a_killed_process_sessions_and_cleans_them() {
    for backend in backends() {
        let database = TestDatabase::create(&backend).await;
        let db = database.connect().await;
        let first = Gateway::start(&database.url, &[]);
        let token = tandem::auth::jwt::mint_hs256(
            &tandem::config::Secret::new(SECRET),
            &tandem::auth::Claims::for_user("alice", Duration::from_secs(600)),
        )
        .unwrap();
        let url = format!("ws://127.0.0.1:{}/ws?token={token}", first.port);
        let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let connected = futures_util::StreamExt::next(&mut socket).await.unwrap().unwrap();
        let connected: serde_json::Value = serde_json::from_str(connected.to_text().unwrap()).unwrap();
        let session_id = connected["session_id"].as_str().unwrap().to_owned();
        futures_util::SinkExt::send(
            &mut socket,
            tokio_tungstenite::tungstenite::Message::text(
                r#"{"type":"join_document","document_id":"doc-1"}"#,
            ),
        )
        .await
        .unwrap();
        eventually("presence row written", || {
            let db = &db;
            let session = session_id.clone();
            async move { presence_row(db, "doc-1", &session).await.filter(|r| r.is_active) }
        })
        .await;

        first.kill();
        assert!(
            session_row(&db, &session_id).await.unwrap().is_active,
            "a killed process leaves its rows active"
        );

        let _second = Gateway::start(
            &database.url,
            &[
                ("TANDEM_SESSION_TTL", "2s"),
                ("TANDEM_HEARTBEAT_INTERVAL", "500ms"),
                ("TANDEM_CLEANUP_INTERVAL", "200ms"),
            ],
        );
        eventually("the dead process's session is cleaned", || {
            let db = &db;
            let session = session_id.clone();
            async move { session_row(db, &session).await.filter(|r| !r.is_active) }
        })
        .await;
        let presence = presence_row(&db, "doc-1", &session_id).await.unwrap();
        assert!(
            !presence.is_active,
            "{}: no ghost presence after a crash",
            backend.name()
        );
    }
}

/// The three newest migrations roll back and forward on both backends
/// (their `down`s are real): `webhook_outbox`, `document_versions` and
/// `user_sessions.resumed_count` go, the older schema stays, and all three
/// come back.
#[tokio::test]
async fn the_newest_migrations_go_down_and_up_again() {
    use migration::{Migrator, MigratorTrait};
    use sea_orm::{ConnectionTrait, Statement};
    for backend in backends() {
        let name = backend.name();
        let database = TestDatabase::create(&backend).await;
        let db = database.connect().await;
        Migrator::up(&db, None).await.unwrap();
        let probe = |sql: &str| Statement::from_string(db.get_database_backend(), sql);
        let newest = [
            "SELECT seq, event_id, target, status FROM webhook_outbox",
            "SELECT id, document_id, label, automatic, state, state_vector FROM document_versions",
            "SELECT resumed_count FROM user_sessions",
        ];
        let older = [
            "SELECT id, user_id FROM user_sessions",
            "SELECT id, key_hash FROM api_keys",
        ];
        for sql in newest.iter().chain(&older) {
            db.query_all_raw(probe(sql))
                .await
                .unwrap_or_else(|e| panic!("{name}: {sql} after up: {e}"));
        }
        Migrator::down(&db, Some(3)).await.unwrap();
        for sql in newest {
            assert!(
                db.query_all_raw(probe(sql)).await.is_err(),
                "{name}: {sql} still works after down"
            );
        }
        for sql in older {
            db.query_all_raw(probe(sql))
                .await
                .unwrap_or_else(|e| panic!("{name}: {sql} after down (older migrations stay): {e}"));
        }
        Migrator::up(&db, None).await.unwrap();
        for sql in newest.iter().chain(&older) {
            db.query_all_raw(probe(sql))
                .await
                .unwrap_or_else(|e| panic!("{name}: {sql} after up again: {e}"));
        }
    }
}
