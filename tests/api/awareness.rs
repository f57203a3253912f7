//! Awareness over the JSON socket: relayed, kept for newcomers, removed when
//! its connection leaves; a client id belongs to its user, so another user
//! cannot erase it and the same user's next connection (a reconnect) takes
//! it over at once.

use serde_json::json;

use crate::helpers::*;

fn awareness(client_id: u64, clock: u32, state: &str) -> String {
    b64::encode(tandem::crdt::awareness::encode(&[
        tandem::crdt::awareness::AwarenessEntry {
            client_id,
            clock,
            json: state.into(),
        },
    ]))
}

fn entries(message: &serde_json::Value) -> Vec<tandem::crdt::awareness::AwarenessEntry> {
    tandem::crdt::awareness::decode(&b64::decode(message["update"].as_str().unwrap())).unwrap()
}

#[tokio::test]
async fn awareness_is_relayed_kept_for_newcomers_and_removed_when_its_owner_leaves() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    alice.join("doc").await;
    bob.join("doc").await;
    alice.recv_type("user_joined").await;

    let state = r#"{"user":{"name":"Alice"},"cursor":{"anchor":3}}"#;
    let update = tandem::crdt::awareness::encode(&[tandem::crdt::awareness::AwarenessEntry {
        client_id: 77,
        clock: 1,
        json: state.into(),
    }]);
    alice
        .send(json!({"type": "awareness", "document_id": "doc", "update": b64::encode(&update), "id": "aw"}))
        .await;
    assert_eq!(alice.recv_type("ack").await["id"], "aw");
    let relayed = bob.recv_type("awareness").await;
    assert_eq!(relayed["user_id"], "alice");
    let entries = tandem::crdt::awareness::decode(&b64::decode(relayed["update"].as_str().unwrap())).unwrap();
    assert_eq!((entries[0].client_id, &*entries[0].json), (77, state));

    // Bob cannot erase alice's state by claiming her client id.
    let spoof = tandem::crdt::awareness::encode(&[tandem::crdt::awareness::AwarenessEntry {
        client_id: 77,
        clock: 9,
        json: "null".into(),
    }]);
    bob.expect_error(
        json!({"type": "awareness", "document_id": "doc", "update": b64::encode(&spoof)}),
        "forbidden",
    )
    .await;
    bob.expect_error(
        json!({"type": "awareness", "document_id": "doc", "update": b64::encode([9u8, 9, 9])}),
        "invalid_update",
    )
    .await;

    let mut carol = app.connect("carol").await;
    carol
        .send(json!({"type": "join_document", "document_id": "doc"}))
        .await;
    carol.recv_type("presence_list").await;
    carol.recv_type("sync_step1").await;
    let snapshot = carol.recv_type("awareness").await;
    let entries =
        tandem::crdt::awareness::decode(&b64::decode(snapshot["update"].as_str().unwrap())).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].client_id, 77);

    alice.stream.close(None).await.unwrap();
    let removal = bob.recv_until("awareness").await;
    let entries = tandem::crdt::awareness::decode(&b64::decode(removal["update"].as_str().unwrap())).unwrap();
    assert_eq!(entries.len(), 1);
    assert!(
        entries[0].is_removal() && entries[0].client_id == 77,
        "the dropped client's cursor is removed at once"
    );
    assert_eq!(bob.recv_type("user_left").await["reason"], "disconnected");
}

#[tokio::test]
async fn a_reconnecting_user_takes_over_its_awareness_client_id_at_once() {
    // Found by the JavaScript client's tests: after a network drop the server
    // has not noticed yet, the same Yjs client's awareness on its new
    // connection was refused as `forbidden` until the old one timed out
    // (90-120 s), so its cursor vanished for everyone meanwhile.
    let app = spawn_app().await;
    let mut old = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    old.join("doc").await;
    bob.join("doc").await;
    old.send(json!({"type": "awareness", "document_id": "doc", "update": awareness(42, 1, r#"{"v":1}"#), "id": "a1"}))
        .await;
    assert_eq!(old.recv_until("ack").await["id"], "a1");
    bob.recv_until("awareness").await;

    // The same user on a new connection, the old one still open (half-dead).
    let mut new = app.connect("alice").await;
    new.join("doc").await;
    new.send(json!({"type": "awareness", "document_id": "doc", "update": awareness(42, 2, r#"{"v":2}"#), "id": "a2"}))
        .await;
    assert_eq!(
        new.recv_until("ack").await["id"],
        "a2",
        "the reconnect's awareness is taken"
    );
    let relayed = bob.recv_until("awareness").await;
    assert_eq!(entries(&relayed)[0].json.as_ref(), r#"{"v":2}"#);

    // Another user still cannot claim it.
    bob.expect_error(
        json!({"type": "awareness", "document_id": "doc", "update": awareness(42, 9, "null")}),
        "forbidden",
    )
    .await;

    // When the old connection finally goes, the state it no longer owns stays.
    old.stream.close(None).await.unwrap();
    assert_eq!(
        bob.recv_until("user_left").await["connection_id"].as_str(),
        Some(old.connection_id.as_str())
    );
    bob.expect_silence(std::time::Duration::from_millis(300)).await;
    let mut carol = app.connect("carol").await;
    carol
        .send(json!({"type": "join_document", "document_id": "doc"}))
        .await;
    let snapshot = carol.recv_until("awareness").await;
    let kept = entries(&snapshot);
    assert_eq!(kept.len(), 1);
    assert_eq!((kept[0].client_id, kept[0].json.as_ref()), (42, r#"{"v":2}"#));

    // And it is the new connection's: it goes when that one does.
    new.stream.close(None).await.unwrap();
    let removal = bob.recv_until("awareness").await;
    assert!(
        entries(&removal)
            .iter()
            .any(|e| e.client_id == 42 && e.is_removal())
    );
}
