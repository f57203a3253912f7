//! The y-websocket binary endpoint: same rooms, same durability, presence
//! shared both ways with JSON clients, bad input dropped.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tandem::{
    crdt::awareness::{self, AwarenessEntry},
    protocol::yjs::{self, Inbound},
};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{self, Message, client::IntoClientRequest},
};

use crate::helpers::*;

struct YwsClient {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl YwsClient {
    async fn connect(app: &TestApp, document: &str, token: &str) -> Result<Self, tungstenite::Error> {
        let mut request = app
            .ws_url(&format!("/yjs/{document}?token={token}"))
            .into_client_request()?;
        request
            .headers_mut()
            .insert("user-agent", PHONE_UA.parse().unwrap());
        let (stream, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(Self { stream })
    }

    async fn send(&mut self, frame: Vec<u8>) {
        self.stream.send(Message::binary(frame)).await.unwrap();
    }

    async fn recv(&mut self) -> Inbound {
        loop {
            let message = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("timed out waiting for a binary frame")
                .expect("socket closed")
                .expect("socket error");
            match message {
                Message::Binary(bytes) => return yjs::decode(&bytes).expect("server frame decodes"),
                Message::Close(frame) => panic!("closed: {frame:?}"),
                _ => continue,
            }
        }
    }

    /// The next awareness frame's entries, skipping other frames.
    async fn recv_awareness(&mut self) -> Vec<AwarenessEntry> {
        loop {
            if let Inbound::Awareness(update) = self.recv().await {
                return awareness::decode(&update).unwrap();
            }
        }
    }

    /// The next sync payload (step 2 or update), skipping other frames.
    async fn recv_update(&mut self) -> Vec<u8> {
        loop {
            if let Inbound::Update(update) = self.recv().await {
                return update;
            }
        }
    }

    /// Proof of life: ask for the state vector diff and get a step 2 back.
    async fn assert_alive(&mut self, peer: &YPeer) {
        self.send(yjs::sync_step1(&peer.state_vector())).await;
        self.recv_update().await;
    }
}

fn apply(peer: &YPeer, update: &[u8]) {
    peer.apply_b64(&b64::encode(update));
}

#[tokio::test]
async fn a_binary_client_and_a_json_client_edit_the_same_document() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    alice.join("shared").await;
    let a = YPeer::new(1);

    let mut yjs = YwsClient::connect(&app, "shared", &app.token("bob"))
        .await
        .unwrap();
    assert!(
        matches!(yjs.recv().await, Inbound::SyncStep1(_)),
        "the server opens with sync step 1"
    );
    let joined = alice.recv_type("user_joined").await;
    assert_eq!(joined["user"]["user_id"], "bob");
    assert_eq!(joined["user"]["device_type"], "mobile");

    let b = YPeer::new(2);
    yjs.send(yjs::update(&b.insert(0, "from the provider "))).await;
    let relayed = alice.recv_until("sync_update").await;
    assert_eq!(relayed["user_id"], "bob");
    a.apply_b64(relayed["update"].as_str().unwrap());

    alice
        .send(json!({"type": "sync_update", "document_id": "shared", "update": b64::encode(a.insert(0, "json ")), "id": 1}))
        .await;
    assert_eq!(
        alice.recv_until("ack").await["id"],
        1,
        "JSON clients are still acked after durability"
    );
    apply(&b, &yjs.recv_update().await);
    assert_eq!(a.text(), b.text());

    // A fresh provider syncs everything with step 1 / step 2.
    let mut late = YwsClient::connect(&app, "shared", &app.token("carol"))
        .await
        .unwrap();
    let c = YPeer::new(3);
    late.send(yjs::sync_step1(&c.state_vector())).await;
    apply(&c, &late.recv_update().await);
    assert_eq!(c.text(), a.text());

    let (_, stats) = app.get("/stats", None).await;
    assert_eq!(stats["connections_by_protocol"]["yjs"], 2);
    let (_, presence) = app
        .get("/api/v1/presence/document/shared", Some(&app.token("alice")))
        .await;
    assert_eq!(presence["users"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn presence_is_shared_both_ways_and_dropped_clients_leave_no_ghost() {
    let app = spawn_app().await;
    let mut alice = app
        .connect_with(&app.token_with("alice", |c| c.name = Some("Alice".into())), None)
        .await
        .unwrap();
    alice.join("doc").await;
    let mut yjs = YwsClient::connect(&app, "doc", &app.token("bob")).await.unwrap();
    // The welcome carries alice's presence as an awareness state.
    let entries = yjs.recv_awareness().await;
    let state: serde_json::Value = serde_json::from_str(&entries[0].json).unwrap();
    assert_eq!(state["user"]["name"], "Alice");
    assert_eq!(state["user"]["id"], "alice");
    assert!(state["user"]["color"].as_str().unwrap().starts_with('#'));
    alice.recv_type("user_joined").await;

    // JSON cursor -> awareness for the provider.
    alice
        .send(json!({"type": "cursor_move", "document_id": "doc", "cursor": {"line": 4, "column": 2}}))
        .await;
    let entries = yjs.recv_awareness().await;
    let state: serde_json::Value = serde_json::from_str(&entries[0].json).unwrap();
    assert_eq!(state["cursor"], json!({"line": 4, "column": 2}));

    // Provider awareness -> JSON `awareness` plus the cursor in presence.
    let own = json!({"user": {"name": "Bob"}, "cursor": {"line": 9, "column": 1}}).to_string();
    yjs.send(yjs::awareness(&awareness::encode(&[AwarenessEntry {
        client_id: 4242,
        clock: 1,
        json: own.into(),
    }])))
    .await;
    let relayed = alice.recv_until("awareness").await;
    assert_eq!(relayed["user_id"], "bob");
    let moved = alice.recv_until("cursor_move").await;
    assert_eq!(moved["cursor"], json!({"line": 9, "column": 1}));
    let (_, presence) = app
        .get("/api/v1/presence/document/doc", Some(&app.token("alice")))
        .await;
    let bob = presence["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["user_id"] == "bob")
        .unwrap()
        .clone();
    assert_eq!(bob["cursor"], json!({"line": 9, "column": 1}));

    // The provider drops: its awareness is removed for everyone at once.
    drop(yjs);
    let removal = alice.recv_until("awareness").await;
    let entries = awareness::decode(&b64::decode(removal["update"].as_str().unwrap())).unwrap();
    assert!(entries.iter().any(|e| e.client_id == 4242 && e.is_removal()));
    assert_eq!(alice.recv_until("user_left").await["reason"], "disconnected");

    // And a JSON client leaving removes its synthesized state for providers.
    let mut watcher = YwsClient::connect(&app, "doc", &app.token("carol"))
        .await
        .unwrap();
    watcher.recv_awareness().await;
    alice
        .send(json!({"type": "leave_document", "document_id": "doc"}))
        .await;
    let entries = watcher.recv_awareness().await;
    assert!(entries[0].is_removal());
}

#[tokio::test]
async fn bad_binary_input_is_dropped_and_the_connection_keeps_working() {
    let app = spawn_app().await;
    let mut yjs = YwsClient::connect(&app, "doc", &app.token("bob")).await.unwrap();
    yjs.recv().await;
    let peer = YPeer::new(5);
    for frame in [
        vec![],
        vec![0xff, 0xff, 0xff],
        vec![42, 1, 2],
        vec![0, 1, 50, 1, 2],
        vec![0, 2, 3, 0xde, 0xad, 0xbe],
        vec![1, 5, 9, 9, 9, 9, 9],
    ] {
        yjs.send(frame).await;
    }
    yjs.stream
        .send(Message::text("{\"type\":\"heartbeat\"}"))
        .await
        .unwrap();
    yjs.assert_alive(&peer).await;
    let mut bob_json = app.connect("bob").await;
    bob_json.join("doc").await;
    bob_json.assert_alive().await;
}

#[tokio::test]
async fn the_binary_endpoint_checks_the_token_before_upgrading() {
    let app = spawn_app().await;
    for (token, status) in [
        ("".to_owned(), 401),
        ("garbage".to_owned(), 401),
        (
            app.token_with("bob", |c| c.docs = Some(vec!["other".into()])),
            403,
        ),
    ] {
        match YwsClient::connect(&app, "doc", &token).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), status);
                let body: serde_json::Value =
                    serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
                assert!(body["message"].as_str().is_some());
            }
            other => panic!("expected {status}, got {:?}", other.map(|_| ())),
        }
    }
}

#[tokio::test]
async fn a_binary_viewer_receives_the_document_but_its_updates_are_dropped() {
    let app = spawn_app().await;
    let mut editor = app.connect("ed").await;
    editor.join("doc").await;
    let e = YPeer::new(1);
    editor.send(json!({"type": "sync_update", "document_id": "doc", "update": b64::encode(e.insert(0, "hello")), "id": 1})).await;
    editor.recv_until("ack").await;

    let token = app.token_with("val", |c| c.role = tandem::auth::Role::Viewer);
    let mut viewer = YwsClient::connect(&app, "doc", &token).await.unwrap();
    assert_eq!(editor.recv_type("user_joined").await["user"]["user_id"], "val");
    let v = YPeer::new(2);
    viewer.send(yjs::sync_step1(&v.state_vector())).await;
    apply(&v, &viewer.recv_update().await);
    assert_eq!(v.text(), "hello");
    viewer.send(yjs::update(&v.insert(0, "evil "))).await;
    viewer.assert_alive(&v).await;
    editor.expect_silence(Duration::from_millis(300)).await;
    let (_, text) = app
        .get_text("/api/v1/documents/doc/text/content", &app.token("ed"))
        .await;
    assert_eq!(text, "hello");
}

#[tokio::test]
async fn a_provider_joining_a_large_document_gets_it_whole_in_fragments() {
    // 100 KB of text: the server's sync step 2 is written as 16 KiB fragments
    // of one shared encoding; the client must see one complete message.
    let app = spawn_app().await;
    let mut writer = app.connect("alice").await;
    writer.join("big").await;
    let author = YPeer::new(1);
    let text = "0123456789".repeat(10_000);
    writer
        .send(json!({"type": "sync_update", "document_id": "big", "update": b64::encode(author.insert(0, &text)), "id": "w"}))
        .await;
    assert_eq!(writer.recv_until("ack").await["id"], "w");

    for attempt in 0..2 {
        let mut provider = YwsClient::connect(&app, "big", &app.token("bob")).await.unwrap();
        let peer = YPeer::new(10 + attempt);
        provider.send(yjs::sync_step1(&peer.state_vector())).await;
        let whole = provider.recv_update().await;
        assert!(whole.len() > 100_000, "attempt {attempt}: {} bytes", whole.len());
        apply(&peer, &whole);
        assert_eq!(peer.text(), text, "attempt {attempt}");
    }
}
