//! App messages on the socket and over REST: `broadcast` to a document's
//! other members, `send_to_user` to every connection of a user who shares a
//! document, their refusals, and their REST forms. Across instances:
//! tests/api/scale_out.rs.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_broadcast_reaches_every_other_member_verbatim_and_viewers_may_send_one() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    let viewer = app.token_with("bob", |c| c.role = tandem::auth::Role::Viewer);
    let mut bob = app.connect_with(&viewer, Some(DESKTOP_UA)).await.unwrap();
    let mut carol = app.connect("carol").await;
    for client in [&mut alice, &mut bob, &mut carol] {
        client.join("doc").await;
    }
    // Raw text, so the data's formatting is checked to pass through untouched.
    alice
        .send_raw(tokio_tungstenite::tungstenite::Message::text(
            r#"{"type":"broadcast","document_id":"doc","event":"typing","data":{"field": "comment", "n": [1, 2.5]},"id":"b1"}"#,
        ))
        .await;
    assert_eq!(alice.recv_until("ack").await["id"], "b1");
    for client in [&mut bob, &mut carol] {
        let message = client.recv_until("broadcast").await;
        assert_eq!(message["document_id"], "doc");
        assert_eq!(message["event"], "typing");
        assert_eq!(message["data"], json!({"field": "comment", "n": [1, 2.5]}));
        assert_eq!(message["user_id"], "alice");
        assert_eq!(
            message["connection_id"].as_str(),
            Some(alice.connection_id.as_str())
        );
    }
    bob.send(json!({"type": "broadcast", "document_id": "doc", "event": "typing", "data": null, "id": 2}))
        .await;
    assert_eq!(bob.recv_until("ack").await["id"], 2, "a viewer may broadcast");
    assert_eq!(alice.recv_until("broadcast").await["user_id"], "bob");
    alice.expect_silence(std::time::Duration::from_millis(200)).await;
}

#[tokio::test]
async fn bad_app_messages_get_clear_errors_and_the_connection_keeps_working() {
    let app = spawn_app_with(&Backend::Sqlite, |config| config.max_broadcast_bytes = 200).await;
    let mut alice = app.connect("alice").await;
    alice.join("doc").await;
    let cases = [
        (
            json!({"type": "broadcast", "document_id": "other", "event": "e", "data": 1}),
            "not_joined",
        ),
        (
            json!({"type": "broadcast", "document_id": "doc", "data": 1}),
            "invalid_message",
        ),
        (
            json!({"type": "broadcast", "document_id": "doc", "event": "", "data": 1}),
            "invalid_message",
        ),
        (
            json!({"type": "broadcast", "document_id": "doc", "event": "x".repeat(65), "data": 1}),
            "invalid_message",
        ),
        (
            json!({"type": "broadcast", "document_id": "doc", "event": "a\u{7}b", "data": 1}),
            "invalid_message",
        ),
        (
            json!({"type": "broadcast", "document_id": "doc", "event": "e"}),
            "invalid_message",
        ),
        (
            json!({"type": "broadcast", "document_id": "doc", "event": "e", "data": "y".repeat(300)}),
            "too_large",
        ),
        (
            json!({"type": "send_to_user", "event": "e", "data": 1}),
            "invalid_message",
        ),
        (
            json!({"type": "send_to_user", "user_id": "", "event": "e", "data": 1}),
            "invalid_message",
        ),
        (
            json!({"type": "send_to_user", "user_id": "stranger", "event": "e", "data": 1}),
            "forbidden",
        ),
    ];
    for (message, code) in cases {
        alice.expect_error(message, code).await;
    }
    // Nesting deeper than 32 arrays and objects is refused.
    let deep = format!(
        r#"{{"type":"broadcast","document_id":"doc","event":"e","data":{}1{}}}"#,
        "[".repeat(33),
        "]".repeat(33)
    );
    alice
        .send_raw(tokio_tungstenite::tungstenite::Message::text(deep))
        .await;
    let error = alice.recv_type("error").await;
    assert_eq!(error["code"], "invalid_message", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("deeper than 32"),
        "{error}"
    );
    alice.assert_alive().await;
}

#[tokio::test]
async fn send_to_user_reaches_every_connection_of_a_user_who_shares_a_document() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    let mut bob_laptop = app.connect("bob").await;
    let mut bob_phone = app.connect_with(&app.token("bob"), Some(PHONE_UA)).await.unwrap();
    let mut dave = app.connect("dave").await;
    alice.join("doc").await;
    bob_laptop.join("doc").await;
    dave.join("elsewhere").await;
    alice
        .send(json!({"type": "send_to_user", "user_id": "bob", "event": "follow_me", "data": {"line": 3}, "id": "d"}))
        .await;
    assert_eq!(alice.recv_until("ack").await["id"], "d");
    for bob in [&mut bob_laptop, &mut bob_phone] {
        let direct = bob.recv_until("direct").await;
        assert_eq!(direct["from_user_id"], "alice");
        assert_eq!(
            direct["from_connection_id"].as_str(),
            Some(alice.connection_id.as_str())
        );
        assert_eq!(direct["event"], "follow_me");
        assert_eq!(direct["data"], json!({"line": 3}));
    }
    // No unsolicited messages between strangers.
    alice
        .expect_error(
            json!({"type": "send_to_user", "user_id": "dave", "event": "hi", "data": null}),
            "forbidden",
        )
        .await;
    dave.expect_silence(std::time::Duration::from_millis(200)).await;
}

#[tokio::test]
async fn backends_broadcast_to_a_document_and_message_a_user_over_rest() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    alice.join("doc").await;
    bob.join("doc").await;
    let agent = app.token("agent");
    let (status, body) = app
        .post(
            "/api/v1/documents/doc/broadcast",
            Some(&agent),
            &json!({"event": "notice", "data": {"text": "saved"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"delivered": 2, "published": false}));
    for client in [&mut alice, &mut bob] {
        let message = client.recv_until("broadcast").await;
        assert_eq!(message["user_id"], "agent");
        assert!(message["connection_id"].is_null());
        assert_eq!(message["data"]["text"], "saved");
    }
    let scoped = app.token_with("agent", |c| c.docs = Some(vec!["other".into()]));
    let (status, body) = app
        .post(
            "/api/v1/documents/doc/broadcast",
            Some(&scoped),
            &json!({"event": "notice", "data": 1}),
        )
        .await;
    assert_eq!(status, 403, "the docs claim applies: {body}");
    let (status, body) = app
        .post(
            "/api/v1/documents/doc/broadcast",
            Some(&agent),
            &json!({"event": "", "data": 1}),
        )
        .await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_message")));

    let (status, body) = app
        .post(
            "/api/v1/users/bob/messages",
            Some(&agent),
            &json!({"event": "ping", "data": 1}),
        )
        .await;
    assert_eq!(status, 403, "an editor token may not message users: {body}");
    let admin = app.token_with("ops", |c| c.role = tandem::auth::Role::Admin);
    let (status, body) = app
        .post(
            "/api/v1/users/bob/messages",
            Some(&admin),
            &json!({"event": "ping", "data": [true]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"delivered": 1, "published": false}));
    let direct = bob.recv_until("direct").await;
    assert_eq!(
        (direct["from_user_id"].as_str(), direct["event"].as_str()),
        (Some("ops"), Some("ping"))
    );
    assert!(direct["from_connection_id"].is_null());
    alice.expect_silence(std::time::Duration::from_millis(200)).await;
}
