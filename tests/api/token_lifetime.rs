//! Tokens on open connections: `token_expiring` ahead of `exp`,
//! `refresh_token` (same user only; new `docs` and `role` apply at once),
//! 4004 at expiry on `/ws` and `/yjs`.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

use crate::helpers::*;

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

async fn app() -> TestApp {
    spawn_app_with(&Backend::Sqlite, |config| {
        config.token_expiry_warning = Duration::from_secs(2);
    })
    .await
}

#[tokio::test]
async fn an_unrefreshed_token_is_warned_then_closed_with_4004_and_a_refreshed_one_lives_on() {
    let app = app().await;
    // Room for a loaded machine: the warning at +4 s, the close at +11 s.
    let exp = now() + 6;
    let mut carol = app
        .connect_with(&app.token_with("carol", |c| c.exp = exp), None)
        .await
        .unwrap();
    let mut alice = app
        .connect_with(&app.token_with("alice", |c| c.exp = exp), None)
        .await
        .unwrap();
    let mut bob = app.connect("bob").await;
    for client in [&mut carol, &mut alice, &mut bob] {
        client.join("doc").await;
    }

    let warning = alice.recv_until("token_expiring").await;
    assert_eq!(warning["expires_at"], exp);
    alice
        .send(json!({"type": "refresh_token", "id": 7, "token": app.token("alice")}))
        .await;
    let refreshed = alice.recv_until("token_refreshed").await;
    assert_eq!(refreshed["id"], 7);
    assert!(refreshed["expires_at"].as_u64().unwrap() > exp + 3000);

    assert_eq!(carol.recv_until("token_expiring").await["expires_at"], exp);
    let close = carol.recv_close().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 4004);
    assert_eq!(close.reason.as_str(), "token expired");
    assert!(now() >= exp + 5, "closed at the leeway's end, not before");
    let left = loop {
        let left = bob.recv_until("user_left").await;
        if left["user_id"] == "carol" {
            break left;
        }
    };
    assert_eq!(left["reason"], "expired");
    alice.assert_alive().await;
}

#[tokio::test]
async fn refresh_tokens_that_fail_or_name_another_user_keep_the_old_token() {
    let app = app().await;
    let mut alice = app.connect("alice").await;
    alice.join("doc").await;
    let expired = app.token_with("alice", |c| c.exp = now() - 600);
    let error = alice
        .expect_error(
            json!({"type": "refresh_token", "id": 1, "token": expired}),
            "unauthorized",
        )
        .await;
    assert_eq!(error["id"], 1);
    assert!(error["message"].as_str().unwrap().contains("expired"), "{error}");
    alice
        .expect_error(
            json!({"type": "refresh_token", "token": "garbage"}),
            "unauthorized",
        )
        .await;
    alice
        .expect_error(
            json!({"type": "refresh_token", "token": app.token("mallory")}),
            "forbidden",
        )
        .await;
    alice
        .expect_error(json!({"type": "refresh_token"}), "invalid_message")
        .await;
    alice
        .expect_error(json!({"type": "refresh_token", "token": 5}), "invalid_message")
        .await;
    // Still alice, still in the document.
    alice.assert_alive().await;
    alice
        .send(json!({"type": "cursor_move", "document_id": "doc", "cursor": {"line": 1, "column": 1}, "id": "c"}))
        .await;
    assert_eq!(alice.recv_until("ack").await["id"], "c");
}

#[tokio::test]
async fn a_refreshed_token_with_fewer_documents_and_the_viewer_role_applies_at_once() {
    let app = app().await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    alice.join("secret-plans").await;
    alice.join("team-1").await;
    bob.join("secret-plans").await;
    alice.recv_until("user_joined").await;

    let narrower = app.token_with("alice", |c| {
        c.docs = Some(vec!["team-*".into()]);
        c.role = tandem::auth::Role::Viewer;
    });
    alice
        .send(json!({"type": "refresh_token", "id": "r", "token": narrower}))
        .await;
    let mut revoked = None;
    let mut refreshed = false;
    while revoked.is_none() || !refreshed {
        let message = alice.recv().await;
        match message["type"].as_str() {
            Some("document_revoked") => revoked = Some(message),
            Some("token_refreshed") => refreshed = true,
            _ => {}
        }
    }
    assert_eq!(revoked.unwrap()["document_id"], "secret-plans");
    let left = bob.recv_until("user_left").await;
    assert_eq!(
        (left["user_id"].as_str(), left["reason"].as_str()),
        (Some("alice"), Some("revoked"))
    );
    // Gone from the revoked document, still in the other, now read-only.
    alice
        .expect_error(
            json!({"type": "cursor_move", "document_id": "secret-plans", "cursor": {"line": 0, "column": 0}}),
            "not_joined",
        )
        .await;
    let update = b64::encode(YPeer::new(7).insert(0, "x"));
    alice
        .expect_error(
            json!({"type": "sync_update", "document_id": "team-1", "update": update}),
            "forbidden",
        )
        .await;
    alice
        .expect_error(
            json!({"type": "join_document", "document_id": "secret-plans"}),
            "forbidden",
        )
        .await;
}

#[tokio::test]
async fn the_yjs_endpoint_closes_with_4004_when_its_token_expires() {
    let app = app().await;
    let exp = now() + 2;
    let token = app.token_with("alice", |c| c.exp = exp);
    let request = app
        .ws_url(&format!("/yjs/doc?token={token}"))
        .into_client_request()
        .unwrap();
    let (mut stream, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let close = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match stream.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("socket ended without a close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("closed in time")
    .expect("a close frame");
    assert_eq!(u16::from(close.code), 4004);
    assert!(now() >= exp + 5);
}
