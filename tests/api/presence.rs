//! The JSON presence protocol between several users and devices.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn connected_message_carries_ids_and_heartbeat_interval() {
    let app = spawn_app_with(&Backend::Sqlite, |c| {
        c.heartbeat_interval = Duration::from_secs(20)
    })
    .await;
    let mut client = app.connect_with(&app.token("alice"), None).await.unwrap();
    assert!(uuid::Uuid::parse_str(&client.connection_id).is_ok());
    assert!(uuid::Uuid::parse_str(&client.session_id).is_ok());
    client.send(json!({"type": "heartbeat", "id": 1})).await;
    let ack = client.recv_type("heartbeat_ack").await;
    assert_eq!(ack["id"], 1);
    let now = chrono::Utc::now().timestamp_millis();
    assert!((ack["server_time"].as_i64().unwrap() - now).abs() < 60_000);
}

#[tokio::test]
async fn two_users_and_a_second_device_see_each_other_in_a_document() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    let mut alice_phone = app
        .connect_with(&app.token("alice"), Some(PHONE_UA))
        .await
        .unwrap();

    let list = alice.join("doc-1").await;
    assert_eq!(list["document_id"], "doc-1");
    assert_eq!(list["users"].as_array().unwrap().len(), 1);

    let list = bob.join("doc-1").await;
    assert_eq!(list["users"].as_array().unwrap().len(), 2);
    let joined = alice.recv_type("user_joined").await;
    assert_eq!(joined["user"]["user_id"], "bob");
    assert_eq!(joined["user"]["connection_id"], bob.connection_id.as_str());

    let list = alice_phone.join("doc-1").await;
    let users = list["users"].as_array().unwrap();
    assert_eq!(users.len(), 3);
    let alice_devices: Vec<_> = users.iter().filter(|u| u["user_id"] == "alice").collect();
    assert_eq!(alice_devices.len(), 2, "both of alice's devices are present");
    let phone = users
        .iter()
        .find(|u| u["connection_id"] == alice_phone.connection_id.as_str())
        .unwrap();
    assert_eq!(phone["device_type"], "mobile");
    assert_eq!(phone["is_editing"], false);
    for key in [
        "user_id",
        "name",
        "session_id",
        "connection_id",
        "device_type",
        "is_editing",
        "cursor",
        "selection",
        "joined_at",
        "last_seen_at",
    ] {
        assert!(phone.get(key).is_some(), "presence has {key}");
    }
    for client in [&mut alice, &mut bob] {
        let joined = client.recv_type("user_joined").await;
        assert_eq!(joined["user"]["device_type"], "mobile");
    }
}

#[tokio::test]
async fn cursor_move_reaches_other_members_of_the_document_but_not_the_sender() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    alice.join("doc-1").await;
    bob.join("doc-1").await;
    alice.recv_type("user_joined").await;

    alice
        .send(json!({"type": "cursor_move", "id": "c1", "document_id": "doc-1", "cursor": {"line": 10, "column": 5}}))
        .await;
    let ack = alice.recv_type("ack").await;
    assert_eq!(ack["id"], "c1");
    let moved = bob.recv_type("cursor_move").await;
    assert_eq!(moved["document_id"], "doc-1");
    assert_eq!(moved["user_id"], "alice");
    assert_eq!(moved["connection_id"], alice.connection_id.as_str());
    assert_eq!(moved["cursor"], json!({"line": 10, "column": 5}));
    assert!(moved.get("id").is_none(), "the sender's id is not forwarded");
    alice.expect_silence(Duration::from_millis(200)).await;

    // A newcomer sees the cursor in the presence list.
    let mut carol = app.connect("carol").await;
    let list = carol.join("doc-1").await;
    let alice_entry = list["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["user_id"] == "alice")
        .unwrap()
        .clone();
    assert_eq!(alice_entry["cursor"], json!({"line": 10, "column": 5}));
}

#[tokio::test]
async fn selection_and_editing_changes_are_broadcast_with_their_sender() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    alice.join("d").await;
    bob.join("d").await;
    alice.recv_type("user_joined").await;

    let selection = json!({"start": {"line": 1, "column": 2}, "end": {"line": 3, "column": 4}});
    alice
        .send(json!({"type": "selection_change", "document_id": "d", "selection": selection}))
        .await;
    let changed = bob.recv_type("selection_change").await;
    assert_eq!(changed["selection"], selection);
    assert_eq!(changed["user_id"], "alice");

    alice
        .send(json!({"type": "selection_change", "document_id": "d", "selection": null}))
        .await;
    assert!(bob.recv_type("selection_change").await["selection"].is_null());

    alice
        .send(json!({"type": "editing_start", "document_id": "d"}))
        .await;
    let started = bob.recv_type("editing_start").await;
    assert_eq!(started["connection_id"], alice.connection_id.as_str());
    alice
        .send(json!({"type": "editing_stop", "document_id": "d"}))
        .await;
    let stopped = bob.recv_type("editing_stop").await;
    assert_eq!(stopped["user_id"], "alice");
    assert_eq!(stopped["reason"], "client");
}

#[tokio::test]
async fn editing_stops_by_itself_after_the_idle_timeout() {
    let app = spawn_app_with(&Backend::Sqlite, |c| {
        c.editing_idle_timeout = Duration::from_millis(300)
    })
    .await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    alice.join("d").await;
    bob.join("d").await;
    alice.recv_type("user_joined").await;
    alice
        .send(json!({"type": "editing_start", "document_id": "d"}))
        .await;
    bob.recv_type("editing_start").await;

    let stopped = bob.recv_type("editing_stop").await;
    assert_eq!(stopped["reason"], "idle");
    assert_eq!(stopped["connection_id"], alice.connection_id.as_str());
    let own = alice.recv_type("editing_stop").await;
    assert_eq!(own["reason"], "idle", "the idle editor is told too");
}

#[tokio::test]
async fn leaving_and_disconnecting_tell_the_others_why() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    let mut carol = app.connect("carol").await;
    alice.join("d").await;
    bob.join("d").await;
    carol.join("d").await;
    alice.recv_type("user_joined").await;
    alice.recv_type("user_joined").await;
    bob.recv_type("user_joined").await;

    bob.send(json!({"type": "leave_document", "document_id": "d", "id": 9}))
        .await;
    assert_eq!(bob.recv_type("ack").await["id"], 9);
    let left = alice.recv_type("user_left").await;
    assert_eq!(left["user_id"], "bob");
    assert_eq!(left["connection_id"], bob.connection_id.as_str());
    assert_eq!(left["reason"], "left");
    carol.recv_type("user_left").await;

    // Bob no longer receives the room's traffic.
    alice
        .send(json!({"type": "cursor_move", "document_id": "d", "cursor": {"line": 1, "column": 1}}))
        .await;
    carol.recv_type("cursor_move").await;
    bob.expect_silence(Duration::from_millis(200)).await;

    carol.stream.close(None).await.unwrap();
    let left = alice.recv_type("user_left").await;
    assert_eq!(left["user_id"], "carol");
    assert_eq!(left["reason"], "disconnected");
}

#[tokio::test]
async fn one_socket_joins_many_documents_and_messages_stay_in_their_document() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    let mut carol = app.connect("carol").await;
    alice.join("one").await;
    alice.join("two").await;
    bob.join("one").await;
    carol.join("two").await;
    assert_eq!(alice.recv_type("user_joined").await["document_id"], "one");
    assert_eq!(alice.recv_type("user_joined").await["document_id"], "two");

    bob.send(json!({"type": "cursor_move", "document_id": "one", "cursor": {"line": 1, "column": 0}}))
        .await;
    let moved = alice.recv_type("cursor_move").await;
    assert_eq!(moved["document_id"], "one");
    carol.expect_silence(Duration::from_millis(200)).await;

    carol
        .send(json!({"type": "cursor_move", "document_id": "two", "cursor": {"line": 2, "column": 0}}))
        .await;
    assert_eq!(alice.recv_type("cursor_move").await["document_id"], "two");
    bob.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_silent_session_times_out_and_the_others_see_reason_timeout() {
    let app = spawn_app_with(&Backend::Sqlite, |c| {
        c.heartbeat_interval = Duration::from_millis(100);
        c.session_ttl = Duration::from_millis(600);
    })
    .await;
    let mut alice = app.connect("alice").await;
    alice.join("d").await;

    // A raw socket that never answers pings and never sends anything: it does
    // not poll its stream, so tungstenite cannot auto-reply to pings.
    let mut silent = app.connect("ghost").await;
    silent.join("d").await;
    alice.recv_type("user_joined").await;

    // Keep alice alive with heartbeats while waiting for the ghost to time out.
    let left = loop {
        alice.send(json!({"type": "heartbeat"})).await;
        let message = alice.recv().await;
        if message["type"] == "user_left" {
            break message;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(left["user_id"], "ghost");
    assert_eq!(left["reason"], "timeout");
    let close = silent.recv_close().await.expect("close frame");
    assert_eq!(u16::from(close.code), 4000);
}

#[tokio::test]
async fn user_joined_and_user_left_say_whether_it_is_the_first_and_last_device() {
    let app = spawn_app().await;
    let mut bob = app.connect("bob").await;
    bob.join("doc").await;
    let mut devices = Vec::new();
    for (n, user_agent) in [DESKTOP_UA, PHONE_UA, DESKTOP_UA].into_iter().enumerate() {
        let mut device = app
            .connect_with(&app.token("alice"), Some(user_agent))
            .await
            .unwrap();
        device.join("doc").await;
        let joined = bob.recv_type("user_joined").await;
        assert_eq!(
            joined["user"]["connection_id"].as_str(),
            Some(device.connection_id.as_str())
        );
        assert_eq!(joined["first_device"], n == 0, "device {n}: {joined}");
        devices.push(device);
    }
    // Two leave (one by leave_document, one by dropping), then the last.
    devices[1]
        .send(json!({"type": "leave_document", "document_id": "doc"}))
        .await;
    let left = bob.recv_type("user_left").await;
    assert_eq!(
        (left["reason"].as_str(), left["last_device"].as_bool()),
        (Some("left"), Some(false))
    );
    devices.remove(0).stream.close(None).await.unwrap();
    let left = bob.recv_type("user_left").await;
    assert_eq!(
        (left["reason"].as_str(), left["last_device"].as_bool()),
        (Some("disconnected"), Some(false))
    );
    devices.remove(1).stream.close(None).await.unwrap();
    let left = bob.recv_type("user_left").await;
    assert_eq!(left["last_device"], true, "{left}");
    assert_eq!(left["user_id"], "alice");
}
