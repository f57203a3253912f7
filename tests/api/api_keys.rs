//! API keys (`tk_...`): accepted wherever a token is (`/ws`, `/yjs`, REST),
//! limited by their documents and role, refused when unknown, revoked or
//! expired, cached without missing a revoke made in this process; and the
//! `tandem apikey` CLI against a real database file.

use std::time::Duration;

use serde_json::{Value, json};
use tandem::auth::{
    Role,
    api_keys::{ApiKeys, CreatedKey, KeySpec},
};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

use crate::helpers::*;

fn api_keys(app: &TestApp) -> &ApiKeys {
    app.state.verifier.api_keys().expect("the app accepts API keys")
}

async fn create(app: &TestApp, name: &str, edit: impl FnOnce(&mut KeySpec)) -> CreatedKey {
    let mut spec = KeySpec {
        name: name.to_owned(),
        docs: None,
        role: Role::Editor,
        ttl: None,
    };
    edit(&mut spec);
    api_keys(app).create(spec).await.expect("create a key")
}

/// The status and JSON body of an upgrade the server refuses.
async fn refused_upgrade(app: &TestApp, path: &str) -> (u16, Value) {
    let request = app.ws_url(path).into_client_request().unwrap();
    match tokio_tungstenite::connect_async(request).await {
        Err(tungstenite::Error::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            (
                response.status().as_u16(),
                serde_json::from_slice(&body).expect("JSON error body"),
            )
        }
        other => panic!("expected an HTTP error, got {:?}", other.map(|_| ())),
    }
}

/// `/ws`, `/yjs` and REST all refuse `key` with a JSON 401 naming `fragment`.
async fn assert_refused_everywhere(app: &TestApp, key: &str, fragment: &str) {
    for path in [format!("/ws?token={key}"), format!("/yjs/doc-1?token={key}")] {
        let (status, body) = refused_upgrade(app, &path).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert_eq!(body["error"], "unauthorized");
        assert!(
            body["message"].as_str().unwrap().contains(fragment),
            "{path}: {body}"
        );
    }
    let (status, body) = app.get("/api/v1/presence/document/doc-1", Some(key)).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "unauthorized");
    assert!(body["message"].as_str().unwrap().contains(fragment), "{body}");
}

#[tokio::test]
async fn a_key_connects_on_ws_yjs_and_rest_as_its_own_user() {
    for backend in backends() {
        let app = spawn_app_with(&backend, |_| {}).await;
        let created = create(&app, "build bot", |_| {}).await;
        let key = created.key.expose();
        let user_id = format!("apikey:{}", created.row.id);

        let mut bot = app
            .connect_with(key, Some(DESKTOP_UA))
            .await
            .expect("connect with a key");
        let list = bot.join("doc-1").await;
        assert_eq!(
            list["users"][0]["user_id"],
            user_id.as_str(),
            "{}",
            backend.name()
        );
        assert_eq!(list["users"][0]["name"], "build bot");

        // Sessions are written behind: wait for the row.
        let sessions_path = format!("/api/v1/users/{user_id}/sessions");
        eventually("the key's session is listed", || {
            let (app, path, session) = (&app, &sessions_path, &bot.session_id);
            async move {
                let (status, body) = app.get(path, Some(key)).await;
                assert_eq!(status, 200, "{body}");
                (body["sessions"][0]["session_id"] == session.as_str()).then_some(())
            }
        })
        .await;

        let (status, body) = app.get("/api/v1/presence/document/doc-1", Some(key)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["by_user"][0]["user_id"], user_id.as_str());

        let request = app
            .ws_url(&format!("/yjs/doc-1?token={key}"))
            .into_client_request()
            .unwrap();
        tokio_tungstenite::connect_async(request)
            .await
            .expect("a key opens /yjs too");

        // Another key is another user.
        let other = create(&app, "other bot", |_| {}).await;
        let (status, _) = app.get(&sessions_path, Some(other.key.expose())).await;
        assert_eq!(status, 403);
        app.shutdown().await;
    }
}

#[tokio::test]
async fn a_key_keeps_to_its_documents_and_its_viewer_role() {
    for backend in backends() {
        let app = spawn_app_with(&backend, |_| {}).await;
        let created = create(&app, "reader", |spec| {
            spec.docs = Some(vec!["team-*".into(), "readme".into()]);
            spec.role = Role::Viewer;
        })
        .await;
        let key = created.key.expose();

        let mut reader = app.connect_with(key, None).await.unwrap();
        reader.join("team-1").await;
        reader.join("readme").await;
        reader
            .expect_error(
                json!({"type": "join_document", "document_id": "secret"}),
                "forbidden",
            )
            .await;
        reader.assert_alive().await;

        let (status, body) = app.get("/api/v1/presence/document/secret", Some(key)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (403, Some("forbidden")),
            "{}",
            backend.name()
        );
        let (status, _) = app.get("/api/v1/presence/document/team-9", Some(key)).await;
        assert_eq!(status, 200);
        let (status, body) = refused_upgrade(&app, &format!("/yjs/secret?token={key}")).await;
        assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));

        let update = YPeer::new(7).insert(0, "hi");
        let (status, body) = app
            .post(
                "/api/v1/documents/team-1/updates",
                Some(key),
                &json!({"update": b64::encode(update)}),
            )
            .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (403, Some("forbidden")),
            "{body}"
        );
        app.shutdown().await;
    }
}

#[tokio::test]
async fn unknown_revoked_and_expired_keys_get_a_json_401() {
    for backend in backends() {
        let app = spawn_app_with(&backend, |_| {}).await;
        let unknown = tandem::auth::api_keys::generate_key().unwrap();
        assert_refused_everywhere(&app, unknown.expose(), "unknown API key").await;
        // Asked again: answered from the negative cache, still a 401.
        assert_refused_everywhere(&app, unknown.expose(), "unknown API key").await;
        assert_refused_everywhere(&app, "tk_not-a-key", "API key").await;

        let revoked = create(&app, "revoked", |_| {}).await;
        api_keys(&app).revoke(&revoked.row.id.to_string()).await.unwrap();
        assert_refused_everywhere(&app, revoked.key.expose(), "revoked").await;

        let expiring = create(&app, "short-lived", |spec| {
            spec.ttl = Some(Duration::from_secs(1))
        })
        .await;
        let (status, _) = app
            .get("/api/v1/presence/document/doc-1", Some(expiring.key.expose()))
            .await;
        assert_eq!(status, 200, "{}: valid before its expiry", backend.name());
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        // The cached row is checked against the clock at each use.
        assert_refused_everywhere(&app, expiring.key.expose(), "expired").await;
        assert_eq!(app.state.hub.connection_count(), 0);
        app.shutdown().await;
    }
}

#[tokio::test]
async fn a_revoke_takes_effect_at_once_in_this_process() {
    for backend in backends() {
        let app = spawn_app_with(&backend, |_| {}).await;
        let created = create(&app, "agent", |_| {}).await;
        let key = created.key.expose();
        let id = created.row.id.to_string();
        // Verified, so its row is cached.
        let (status, _) = app.get("/api/v1/presence/document/doc-1", Some(key)).await;
        assert_eq!(status, 200);

        api_keys(&app).revoke(&id).await.unwrap();

        assert_refused_everywhere(&app, key, "revoked").await;
        // Revoking again keeps the first revocation; an unknown id is an error.
        assert_eq!(
            api_keys(&app).revoke(&id).await.unwrap(),
            tandem::auth::api_keys::RevokeOutcome::AlreadyRevoked
        );
        assert!(
            api_keys(&app)
                .revoke(&uuid::Uuid::now_v7().to_string())
                .await
                .is_err()
        );
        assert!(api_keys(&app).revoke("not-an-id").await.is_err());
        app.shutdown().await;
    }
}

#[tokio::test]
async fn a_revoke_made_elsewhere_is_seen_once_the_key_is_invalidated() {
    for backend in backends() {
        let app = spawn_app_with(&backend, |_| {}).await;
        let created = create(&app, "agent", |_| {}).await;
        let key = created.key.expose();
        let (status, _) = app.get("/api/v1/presence/document/doc-1", Some(key)).await;
        assert_eq!(status, 200);

        // Another process revokes the row behind this one's back.
        tandem::storage::api_keys::revoke(&app.state.db, created.row.id, chrono::Utc::now())
            .await
            .unwrap();
        // The cached row answers: verification does not query per request.
        let (status, _) = app.get("/api/v1/presence/document/doc-1", Some(key)).await;
        assert_eq!(status, 200, "{}: served from the cache", backend.name());

        // What the bus will do on every instance.
        api_keys(&app).invalidate(&format!("apikey:{}", created.row.id));
        assert_refused_everywhere(&app, key, "revoked").await;
        app.shutdown().await;
    }
}

#[tokio::test]
async fn last_used_is_recorded_behind_not_on_every_request() {
    for backend in backends() {
        let app = spawn_app_with(&backend, |_| {}).await;
        let created = create(&app, "agent", |_| {}).await;
        assert_eq!(created.row.last_used_at, None);
        let key = created.key.expose();
        let last_used = || async {
            tandem::storage::api_keys::list(&app.state.db)
                .await
                .unwrap()
                .into_iter()
                .find(|row| row.id == created.row.id)
                .and_then(|row| row.last_used_at)
        };
        let (status, _) = app.get("/api/v1/presence/document/doc-1", Some(key)).await;
        assert_eq!(status, 200);
        let first = eventually("last_used_at is written", || async { last_used().await }).await;

        for _ in 0..5 {
            let (status, _) = app.get("/api/v1/presence/document/doc-1", Some(key)).await;
            assert_eq!(status, 200);
        }
        // A reload (as after a revoke elsewhere or the cache TTL) within the
        // minute does not write again either.
        api_keys(&app).invalidate(&created.row.id.to_string());
        let (status, _) = app.get("/api/v1/presence/document/doc-1", Some(key)).await;
        assert_eq!(status, 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(last_used().await, Some(first), "{}", backend.name());
        app.shutdown().await;
    }
}

/// Run `tandem apikey ...` against `database_url`; (success, stdout, stderr).
/// Awaited, not blocking: the gateway under test runs on this test's
/// runtime, and a blocked runtime would hold its SQLite locks meanwhile.
async fn cli(database_url: &str, args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .arg("apikey")
        .args(args)
        .output()
        .await
        .expect("run tandem");
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[tokio::test]
async fn the_cli_creates_lists_and_revokes_keys() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("tandem.db").display());

    let (ok, stdout, stderr) = cli(
        &url,
        &[
            "create", "--name", "ci bot", "--doc", "team-*", "--role", "viewer", "--ttl", "1h",
        ],
    )
    .await;
    assert!(ok, "{stderr}");
    let key = stdout.trim();
    assert!(
        key.starts_with("tk_") && !key.contains(char::is_whitespace),
        "{stdout:?}"
    );
    assert!(stderr.contains("shown once"), "{stderr}");

    let (ok, listing, stderr) = cli(&url, &["list"]).await;
    assert!(ok, "{stderr}");
    assert!(!listing.contains(key), "the list never shows a key");
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 2, "{listing}");
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("LAST USED"),
        "{listing}"
    );
    let id = lines[1].split_whitespace().next().unwrap().to_owned();
    for field in ["ci bot", "viewer", "team-*", "active"] {
        assert!(lines[1].contains(field), "{field}: {listing}");
    }

    // The gateway on the same database accepts the key as the CLI made it.
    let app = spawn_app_on(TestDatabase::shared(&url), |_| {}).await;
    let mut bot = app.connect_with(key, None).await.expect("the CLI's key connects");
    let list = bot.join("team-1").await;
    assert_eq!(list["users"][0]["user_id"], format!("apikey:{id}"));
    assert_eq!(list["users"][0]["name"], "ci bot");

    let (ok, stdout, stderr) = cli(&url, &["revoke", &id]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("revoked"), "{stdout}");
    let (_, listing, _) = cli(&url, &["list"]).await;
    assert!(listing.lines().nth(1).unwrap().contains("revoked"), "{listing}");
    // The CLI is another process: the gateway learns of it through invalidation.
    api_keys(&app).invalidate(&id);
    assert_refused_everywhere(&app, key, "revoked").await;

    for bad in [
        &["revoke", "not-an-id"][..],
        &["create", "--name", "x", "--role", "root"],
        &["create", "--name", ""],
        &["create", "--name", "x", "--doc", ""],
    ] {
        let (ok, _, stderr) = cli(&url, bad).await;
        assert!(!ok, "{bad:?} should fail");
        assert!(stderr.contains("tandem:"), "{bad:?}: {stderr}");
    }
    drop(bot);
    app.shutdown().await;
}
