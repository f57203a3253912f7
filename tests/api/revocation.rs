//! `POST /api/v1/admin/revoke`: admins only; a user's or a session's
//! connections closed with 4005 (or removed from one document) on every
//! instance; their tokens kept out afterwards; API keys too.

use std::time::Duration;

use serde_json::json;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

use crate::{helpers::*, scale_out::two_instances};

fn admin(app: &TestApp) -> String {
    app.token_with("ops", |c| c.role = tandem::auth::Role::Admin)
}

async fn expect_revoked_close(client: &mut Client) {
    let close = client.recv_close().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 4005);
    assert_eq!(close.reason.as_str(), "revoked");
}

#[tokio::test]
async fn only_admins_may_revoke_and_bad_requests_are_400() {
    let app = spawn_app().await;
    let body = json!({"user_id": "alice"});
    let (status, reply) = app
        .post("/api/v1/admin/revoke", Some(&app.token("alice")), &body)
        .await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (403, Some("forbidden")),
        "{reply}"
    );
    let viewer = app.token_with("v", |c| c.role = tandem::auth::Role::Viewer);
    assert_eq!(
        app.post("/api/v1/admin/revoke", Some(&viewer), &body).await.0,
        403
    );
    assert_eq!(app.post("/api/v1/admin/revoke", None, &body).await.0, 401);
    let admin = admin(&app);
    for bad in [
        json!({}),
        json!({"session_id": "not-a-uuid"}),
        json!({"user_id": "alice", "document_id": ""}),
        json!({"user_id": "x".repeat(300)}),
    ] {
        let (status, reply) = app.post("/api/v1/admin/revoke", Some(&admin), &bad).await;
        assert_eq!(status, 400, "{bad} -> {reply}");
        assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (status, reply) = app.post("/api/v1/admin/revoke", Some(&admin), &body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply, json!({"revoked": 0, "published": false}));
}

#[tokio::test]
async fn revoking_a_user_closes_every_connection_and_keeps_older_tokens_out() {
    let app = spawn_app().await;
    let old_token = app.token("alice");
    let mut laptop = app.connect_with(&old_token, None).await.unwrap();
    let mut phone = app.connect_with(&old_token, Some(PHONE_UA)).await.unwrap();
    let mut bob = app.connect("bob").await;
    laptop.join("doc").await;
    phone.join("doc").await;
    bob.join("doc").await;

    let (status, reply) = app
        .post(
            "/api/v1/admin/revoke",
            Some(&admin(&app)),
            &json!({"user_id": "alice"}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply, json!({"revoked": 2, "published": false}));
    expect_revoked_close(&mut laptop).await;
    expect_revoked_close(&mut phone).await;
    for _ in 0..2 {
        let left = bob.recv_until("user_left").await;
        assert_eq!(
            (left["user_id"].as_str(), left["reason"].as_str()),
            (Some("alice"), Some("revoked"))
        );
    }
    let (status, body) = upgrade_status(&app, &old_token).await;
    assert_eq!(status, 401);
    assert!(body["message"].as_str().unwrap().contains("revoked"), "{body}");
    assert_eq!(
        app.get("/api/v1/users/alice/sessions", Some(&old_token)).await.0,
        401
    );
    // The app may let the user back in with a token issued after the revocation.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    app.connect_with(&app.token("alice"), None)
        .await
        .expect("a newer token");
    bob.assert_alive().await;
}

#[tokio::test]
async fn revoking_a_session_keeps_only_its_token_out() {
    let app = spawn_app().await;
    let first_token = app.token_with("alice", |c| c.exp -= 1);
    let second_token = app.token("alice");
    let mut first = app.connect_with(&first_token, None).await.unwrap();
    let mut second = app.connect_with(&second_token, None).await.unwrap();
    let (_, reply) = app
        .post(
            "/api/v1/admin/revoke",
            Some(&admin(&app)),
            &json!({"session_id": first.session_id}),
        )
        .await;
    assert_eq!(reply["revoked"], 1, "{reply}");
    expect_revoked_close(&mut first).await;
    second.assert_alive().await;
    assert_eq!(upgrade_status(&app, &first_token).await.0, 401);
    assert_eq!(upgrade_status(&app, &second_token).await.0, 101);
}

#[tokio::test]
async fn revoking_a_document_removes_only_that_membership() {
    let app = spawn_app().await;
    let token = app.token("alice");
    let mut alice = app.connect_with(&token, None).await.unwrap();
    let mut bob = app.connect("bob").await;
    alice.join("doc-a").await;
    alice.join("doc-b").await;
    bob.join("doc-a").await;
    alice.recv_until("user_joined").await;
    let request = app
        .ws_url(&format!("/yjs/doc-a?token={token}"))
        .into_client_request()
        .unwrap();
    let (mut provider, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    // Its first frame (the server's sync step 1) says it is registered.
    futures_util::StreamExt::next(&mut provider)
        .await
        .unwrap()
        .unwrap();

    let (_, reply) = app
        .post(
            "/api/v1/admin/revoke",
            Some(&admin(&app)),
            &json!({"user_id": "alice", "document_id": "doc-a"}),
        )
        .await;
    assert_eq!(reply["revoked"], 2, "{reply}");
    assert_eq!(alice.recv_until("document_revoked").await["document_id"], "doc-a");
    let left = bob.recv_until("user_left").await;
    assert_eq!(left["reason"], "revoked");
    // The /yjs connection holds only that document: it is closed.
    let close = loop {
        match futures_util::StreamExt::next(&mut provider).await {
            Some(Ok(tungstenite::Message::Close(frame))) => break frame.expect("close frame"),
            Some(Ok(_)) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(u16::from(close.code), 4005);
    // Still in doc-b, and the token still works for new connections.
    alice
        .send(json!({"type": "cursor_move", "document_id": "doc-b", "cursor": {"line": 0, "column": 1}, "id": 1}))
        .await;
    assert_eq!(alice.recv_until("ack").await["id"], 1);
    alice
        .expect_error(
            json!({"type": "cursor_move", "document_id": "doc-a", "cursor": {"line": 0, "column": 1}}),
            "not_joined",
        )
        .await;
    // Access to doc-a stays revoked for this token: rejoining and /yjs are refused.
    alice
        .expect_error(
            json!({"type": "join_document", "document_id": "doc-a"}),
            "forbidden",
        )
        .await;
    let request = app
        .ws_url(&format!("/yjs/doc-a?token={token}"))
        .into_client_request()
        .unwrap();
    match tokio_tungstenite::connect_async(request).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status().as_u16(), 403),
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
    // A token issued after the revocation may open it again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut again = app.connect("alice").await;
    again.join("doc-a").await;
}

#[tokio::test]
async fn a_session_revoked_after_a_refresh_keeps_the_new_token_out() {
    let app = spawn_app().await;
    let first = app.token_with("alice", |c| c.exp -= 1);
    let refreshed = app.token("alice");
    let mut alice = app.connect_with(&first, None).await.unwrap();
    alice
        .send(json!({"type": "refresh_token", "id": "r", "token": refreshed}))
        .await;
    alice.recv_until("token_refreshed").await;
    let (_, reply) = app
        .post(
            "/api/v1/admin/revoke",
            Some(&admin(&app)),
            &json!({"session_id": alice.session_id}),
        )
        .await;
    assert_eq!(reply["revoked"], 1, "{reply}");
    expect_revoked_close(&mut alice).await;
    assert_eq!(
        upgrade_status(&app, &refreshed).await.0,
        401,
        "the token it held when revoked"
    );
}

#[tokio::test]
async fn revoking_an_api_key_closes_its_connections() {
    let app = spawn_app().await;
    let keys = app.state.verifier.api_keys().expect("API keys").clone();
    let created = keys
        .create(tandem::auth::api_keys::KeySpec {
            name: "agent".into(),
            docs: None,
            role: tandem::auth::Role::Editor,
            ttl: None,
        })
        .await
        .unwrap();
    let key = created.key.expose().to_owned();
    let mut agent = app.connect_with(&key, None).await.unwrap();
    let user_id = format!("apikey:{}", created.row.id);
    let (_, reply) = app
        .post(
            "/api/v1/admin/revoke",
            Some(&admin(&app)),
            &json!({"user_id": user_id}),
        )
        .await;
    assert_eq!(reply["revoked"], 1, "{reply}");
    expect_revoked_close(&mut agent).await;
    assert_eq!(upgrade_status(&app, &key).await.0, 401);
}

#[tokio::test]
async fn revocations_reach_every_instance() {
    let Some((redis, postgres)) = scale_out_services() else {
        return;
    };
    let (a, b) = two_instances(&redis, &postgres).await;
    let token = b.token("alice");
    let mut on_b = b.connect_with(&token, None).await.unwrap();
    let session_token = b.token_with("carol", |c| c.exp -= 1);
    let mut carol_on_b = b.connect_with(&session_token, None).await.unwrap();
    let started = std::time::Instant::now();
    let (_, reply) = a
        .post(
            "/api/v1/admin/revoke",
            Some(&admin(&a)),
            &json!({"user_id": "alice"}),
        )
        .await;
    assert_eq!(reply, json!({"revoked": 0, "published": true}));
    expect_revoked_close(&mut on_b).await;
    note(&format!(
        "cross-instance revocation closed the socket after {:?}",
        started.elapsed()
    ));
    for app in [&a, &b] {
        assert_eq!(upgrade_status(app, &token).await.0, 401);
    }
    // A session on B revoked through A: B knows the token's fingerprint and
    // shares the deny entry, so A refuses the token too.
    let (_, reply) = a
        .post(
            "/api/v1/admin/revoke",
            Some(&admin(&a)),
            &json!({"session_id": carol_on_b.session_id}),
        )
        .await;
    assert_eq!(reply["published"], true);
    expect_revoked_close(&mut carol_on_b).await;
    eventually("A refuses the revoked session's token", || async {
        (upgrade_status(&a, &session_token).await.0 == 401).then_some(())
    })
    .await;
    assert_eq!(upgrade_status(&b, &session_token).await.0, 401);
    // Carol's other tokens still work.
    b.connect("carol").await;

    // An instance started after the revocations loads them from Redis.
    let prefix = a.state.config.redis_prefix.clone();
    let redis_url = redis.clone();
    let c = spawn_app_on(TestDatabase::shared(&a.database.url), move |config| {
        config.redis_url = Some(redis_url);
        config.redis_prefix = prefix;
    })
    .await;
    crate::scale_out::wait_redis(&c, "ok").await;
    assert_eq!(upgrade_status(&c, &token).await.0, 401);
    assert_eq!(upgrade_status(&c, &session_token).await.0, 401);
}

#[tokio::test]
async fn an_admin_api_key_may_revoke_and_the_cli_revoke_closes_a_keys_connections() {
    let Some((redis, _)) = scale_out_services() else {
        return;
    };
    let prefix = format!("tandem-test-{}", uuid::Uuid::new_v4().simple());
    let (redis_url, app_prefix) = (redis.clone(), prefix.clone());
    let app = spawn_app_with(&Backend::Sqlite, move |config| {
        config.redis_url = Some(redis_url);
        config.redis_prefix = app_prefix;
    })
    .await;
    crate::scale_out::wait_redis(&app, "ok").await;
    let keys = app.state.verifier.api_keys().expect("API keys").clone();
    let spec = |name: &str, role| tandem::auth::api_keys::KeySpec {
        name: name.into(),
        docs: None,
        role,
        ttl: None,
    };
    let ops = keys.create(spec("ops", tandem::auth::Role::Admin)).await.unwrap();
    let agent = keys
        .create(spec("agent", tandem::auth::Role::Editor))
        .await
        .unwrap();
    let (status, reply) = app
        .post(
            "/api/v1/admin/revoke",
            Some(ops.key.expose()),
            &json!({"user_id": "nobody"}),
        )
        .await;
    assert_eq!(status, 200, "an admin API key may call the admin API: {reply}");
    let (status, _) = app
        .post(
            "/api/v1/admin/revoke",
            Some(agent.key.expose()),
            &json!({"user_id": "nobody"}),
        )
        .await;
    assert_eq!(status, 403, "an editor key may not");

    let mut connected = app.connect_with(agent.key.expose(), None).await.unwrap();
    // The CLI, another process, revokes the key (its id in upper case: any
    // UUID spelling names it) and tells the running gateway through Redis.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &app.database.url)
        .env("REDIS_URL", &redis)
        .env("TANDEM_REDIS_PREFIX", &prefix)
        .args(["apikey", "revoke", &agent.row.id.to_string().to_uppercase()])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    expect_revoked_close(&mut connected).await;
    assert_eq!(upgrade_status(&app, agent.key.expose()).await.0, 401);
}
