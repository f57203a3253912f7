//! Hostile input: each gets a clear error, and the connection and room keep working.

use std::time::Duration;

use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

/// Alice and Bob in document "d"; Bob only watches.
async fn room() -> (TestApp, Client, Client) {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    alice.join("d").await;
    bob.join("d").await;
    alice.recv_type("user_joined").await;
    (app, alice, bob)
}

/// The room still works: a cursor from alice reaches bob.
async fn room_still_works(alice: &mut Client, bob: &mut Client) {
    alice.assert_alive().await;
    alice
        .send(json!({"type": "cursor_move", "document_id": "d", "cursor": {"line": 7, "column": 7}}))
        .await;
    let moved = bob.recv_until("cursor_move").await;
    assert_eq!(moved["cursor"]["line"], 7);
}

#[tokio::test]
async fn malformed_frames_get_errors_and_the_connection_keeps_working() {
    let (_app, mut alice, mut bob) = room().await;
    let cases: Vec<(&str, &str)> = vec![
        ("{oops", "invalid_json"),
        ("", "invalid_json"),
        ("[1,2,3]", "invalid_message"),
        ("\"hello\"", "invalid_message"),
        (r#"{"document_id":"d"}"#, "invalid_message"),
        (r#"{"type":"teleport","document_id":"d"}"#, "unknown_type"),
        (r#"{"type":"cursor_move","document_id":"d"}"#, "invalid_message"),
        (
            r#"{"type":"cursor_move","document_id":"d","cursor":{"line":"ten","column":0}}"#,
            "invalid_message",
        ),
        (
            r#"{"type":"cursor_move","document_id":"d","cursor":{"line":-1,"column":0}}"#,
            "invalid_message",
        ),
        (
            r#"{"type":"cursor_move","document_id":"d","cursor":{"line":1,"column":1e300}}"#,
            "invalid_message",
        ),
        (
            r#"{"type":"cursor_move","document_id":"d","cursor":{"line":4294967296,"column":0}}"#,
            "invalid_message",
        ),
        (
            r#"{"type":"selection_change","document_id":"d","selection":{"start":{"line":1,"column":1}}}"#,
            "invalid_message",
        ),
        (r#"{"type":"join_document","document_id":""}"#, "invalid_message"),
        (r#"{"type":"join_document","document_id":12}"#, "invalid_message"),
        (r#"{"type":"join_document"}"#, "invalid_message"),
        (r#"{"type":"heartbeat","id":{"nested":true}}"#, "invalid_message"),
    ];
    for (frame, code) in cases {
        alice.send_raw(Message::text(frame)).await;
        let error = alice.recv_type("error").await;
        assert_eq!(error["code"], code, "frame {frame:?} gave {error}");
        assert!(!error["message"].as_str().unwrap().is_empty());
    }
    let long_id = "x".repeat(257);
    alice
        .expect_error(
            json!({"type": "join_document", "document_id": long_id}),
            "invalid_message",
        )
        .await;
    room_still_works(&mut alice, &mut bob).await;
    bob.expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn errors_echo_the_message_id() {
    let (_app, mut alice, _bob) = room().await;
    let error = alice
        .expect_error(json!({"type": "cursor_move", "id": "m-1", "document_id": "d", "cursor": {"line": -5, "column": 0}}), "invalid_message")
        .await;
    assert_eq!(error["id"], "m-1");
    let error = alice
        .expect_error(json!({"type": "nope", "id": 42}), "unknown_type")
        .await;
    assert_eq!(error["id"], 42);
}

#[tokio::test]
async fn messages_for_documents_not_joined_and_double_joins_are_refused() {
    let (_app, mut alice, mut bob) = room().await;
    alice
        .expect_error(
            json!({"type": "cursor_move", "document_id": "other", "cursor": {"line": 1, "column": 1}}),
            "not_joined",
        )
        .await;
    alice
        .expect_error(
            json!({"type": "leave_document", "document_id": "other"}),
            "not_joined",
        )
        .await;
    alice
        .expect_error(
            json!({"type": "editing_start", "document_id": "other"}),
            "not_joined",
        )
        .await;
    alice
        .expect_error(
            json!({"type": "join_document", "document_id": "d"}),
            "already_joined",
        )
        .await;
    room_still_works(&mut alice, &mut bob).await;
}

#[tokio::test]
async fn an_oversized_frame_is_too_large_and_the_connection_survives() {
    let (_app, mut alice, mut bob) = room().await;
    let padding = "p".repeat(70 * 1024);
    alice
        .expect_error(json!({"type": "cursor_move", "document_id": "d", "cursor": {"line": 1, "column": 1}, "pad": padding}), "too_large")
        .await;
    room_still_works(&mut alice, &mut bob).await;
}

#[tokio::test]
async fn a_frame_beyond_the_transport_limit_closes_with_1009() {
    let app = spawn_app_with(&Backend::Sqlite, |c| c.max_update_bytes = 16 * 1024).await;
    let mut alice = app.connect("alice").await;
    let huge = "h".repeat(200 * 1024);
    alice
        .send_raw(Message::text(format!(r#"{{"type":"heartbeat","pad":"{huge}"}}"#)))
        .await;
    let close = alice.recv_close().await;
    if let Some(close) = close {
        assert_eq!(u16::from(close.code), 1009);
    }
    // The server itself is fine.
    let mut bob = app.connect("bob").await;
    bob.assert_alive().await;
}

#[tokio::test]
async fn binary_frames_on_the_json_endpoint_are_refused() {
    let (_app, mut alice, mut bob) = room().await;
    alice.send_raw(Message::binary(vec![0u8, 1, 2, 3])).await;
    let error = alice.recv_type("error").await;
    assert_eq!(error["code"], "unsupported_frame");
    room_still_works(&mut alice, &mut bob).await;
}

#[tokio::test]
async fn a_64_kib_user_agent_is_accepted_and_stored_bounded() {
    let app = spawn_app().await;
    let huge = "Mozilla/5.0 ".to_owned() + &"A".repeat(64 * 1024);
    let token = app.token("alice");
    let mut alice = app
        .connect_with(&token, Some(&huge))
        .await
        .expect("connect with a huge User-Agent");
    alice.assert_alive().await;
    let (status, body) = app.get("/api/v1/users/alice/sessions", Some(&token)).await;
    assert_eq!(status, 200);
    let stored = body["sessions"][0]["user_agent"].as_str().unwrap();
    assert!(
        stored.len() <= 512,
        "stored user agent is bounded, got {} bytes",
        stored.len()
    );
    assert_eq!(body["sessions"][0]["device_type"], "other");
}

#[tokio::test]
async fn a_flood_is_rate_limited_and_the_connection_keeps_working() {
    let app = spawn_app_with(&Backend::Sqlite, |c| {
        c.rate_limit_per_second = 20;
        c.rate_limit_burst = 20;
    })
    .await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    alice.join("d").await;
    bob.join("d").await;
    alice.recv_type("user_joined").await;
    for line in 0..200 {
        alice
            .send(json!({"type": "cursor_move", "document_id": "d", "cursor": {"line": line, "column": 0}}))
            .await;
    }
    let error = alice.recv_until("error").await;
    assert_eq!(error["code"], "rate_limited");
    // Bob got at most the burst plus what refilled, not the flood.
    let mut delivered = 0;
    while let Ok(Some(Ok(message))) = tokio::time::timeout(
        Duration::from_millis(300),
        futures_util::StreamExt::next(&mut bob.stream),
    )
    .await
    {
        if message.is_text() {
            delivered += 1;
        }
    }
    assert!((1..100).contains(&delivered), "delivered {delivered} of 200");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    room_still_works(&mut alice, &mut bob).await;
}

#[tokio::test]
async fn a_reader_that_stops_reading_is_closed_as_a_slow_consumer() {
    let app = spawn_app_with(&Backend::Sqlite, |c| {
        c.send_queue_capacity = 16;
        c.rate_limit_per_second = 1_000_000;
        c.rate_limit_burst = 1_000_000;
    })
    .await;
    let mut alice = app.connect("alice").await;
    let mut sleeper = app.connect("sleeper").await;
    alice.join("d").await;
    sleeper.join("d").await;
    alice.recv_type("user_joined").await;

    // The sleeper never reads: its socket buffers fill, then its queue
    // overflows. Document updates, not cursors: a waiting cursor is replaced
    // by the newer one, so presence alone never overflows a queue.
    let peer = YPeer::new(77);
    let chunk = "x".repeat(1000);
    let mut sent = 0;
    while app.state.hub.connection_count() == 2 {
        assert!(sent < 100_000, "the sleeper was never closed");
        for _ in 0..100 {
            let update = b64::encode(peer.insert(0, &chunk));
            let frame = json!({"type": "sync_update", "document_id": "d", "update": update});
            futures_util::SinkExt::feed(&mut alice.stream, Message::text(frame.to_string()))
                .await
                .unwrap();
            sent += 1;
        }
        futures_util::SinkExt::flush(&mut alice.stream).await.unwrap();
        tokio::task::yield_now().await;
    }
    let left = alice.recv_until("user_left").await;
    assert_eq!(left["user_id"], "sleeper");
    assert_eq!(left["reason"], "disconnected");
    alice.assert_alive().await;
    drop(sleeper);
}

#[tokio::test]
async fn too_many_consecutive_errors_close_the_connection_with_4002() {
    let app = spawn_app_with(&Backend::Sqlite, |c| c.max_consecutive_errors = 5).await;
    let mut alice = app.connect("alice").await;
    for _ in 0..10 {
        alice.send_raw(Message::text("nonsense")).await;
    }
    let close = alice.recv_close().await.expect("close frame");
    assert_eq!(u16::from(close.code), 4002);
}

#[tokio::test]
async fn joining_more_documents_than_allowed_is_refused() {
    let app = spawn_app_with(&Backend::Sqlite, |c| c.max_documents_per_connection = 2).await;
    let mut alice = app.connect("alice").await;
    alice.join("a").await;
    alice.join("b").await;
    alice
        .expect_error(
            json!({"type": "join_document", "document_id": "c"}),
            "too_many_documents",
        )
        .await;
    alice.assert_alive().await;
}

/// Webhook URLs are the operator's input: anything but an http(s) URL with
/// a host, or a URL without a signing secret, stops the gateway at start-up
/// with a clear error instead of failing every delivery later.
#[tokio::test]
async fn bad_webhook_settings_are_refused_at_start_up() {
    let database = TestDatabase::create(&Backend::Sqlite).await;
    for (urls, secret, expected) in [
        (
            vec!["ftp://example.com/hook"],
            Some("s"),
            "not an http:// or https:// URL",
        ),
        (vec!["http://"], Some("s"), "not an http:// or https:// URL"),
        (vec!["not a url"], Some("s"), "not an http:// or https:// URL"),
        (vec!["http://127.0.0.1:9/hook"], None, "needs --webhook-secret"),
    ] {
        let mut config = test_config(&database.url);
        config.webhook_urls = urls.iter().map(|u| u.to_string()).collect();
        config.webhook_secret = secret.map(tandem::config::Secret::new);
        let error = match tandem::Application::build(config).await {
            Ok(_) => panic!("{urls:?} was accepted"),
            Err(error) => format!("{error:#}"),
        };
        assert!(error.contains(expected), "{urls:?}: {error}");
    }
}
