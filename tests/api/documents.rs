//! Yjs documents over the JSON socket and REST: convergence, sync steps,
//! durability (including SIGKILL), compaction, roles, awareness, bad input.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

/// A newcomer's full sync (empty state vector), as every client sends it on join.
async fn newcomer_text(app: &TestApp, user: &str, document: &str) -> String {
    let mut client = app.connect(user).await;
    client.join(document).await;
    let peer = YPeer::new(1000 + user.len() as u64);
    client
        .send(json!({"type": "sync_step1", "document_id": document, "state_vector": b64::encode(peer.state_vector())}))
        .await;
    let step2 = client.recv_until("sync_step2").await;
    peer.apply_b64(step2["update"].as_str().unwrap());
    peer.text()
}

/// Send an update with an id and wait for its (post-commit) ack.
#[tokio::test]
async fn newcomers_get_the_current_document_after_every_kind_of_change() {
    // The whole-document encoding newcomers receive is shared until the
    // document changes: inserts, deletions (which leave the state vector as
    // it was) and REST writes must all be seen by the next newcomer.
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    alice.join("doc").await;
    let a = YPeer::new(1);
    send_update(&mut alice, "doc", &a.insert(0, "hello world"), "u1").await;
    assert_eq!(newcomer_text(&app, "bob", "doc").await, "hello world");
    assert_eq!(newcomer_text(&app, "bobby", "doc").await, "hello world");

    // Past one 16 KiB frame the reply is fragmented; it still arrives whole.
    let long = "x".repeat(50_000);
    send_update(&mut alice, "doc", &a.insert(11, &long), "u-long").await;
    assert_eq!(
        newcomer_text(&app, "erin", "doc").await,
        format!("hello world{long}")
    );
    send_update(&mut alice, "doc", &a.remove(11, 50_000), "u-short").await;

    let before = a.state_vector();
    send_update(&mut alice, "doc", &a.remove(0, 6), "u2").await;
    assert_eq!(a.state_vector(), before, "a deletion adds no item");
    assert_eq!(newcomer_text(&app, "carol", "doc").await, "world");

    // The backend writes with a Yjs client id of its own: client id 1 is alice's.
    let backend = YPeer::new(2);
    backend.apply_b64(&b64::encode(a.full_state()));
    let (status, body) = app
        .post(
            "/api/v1/documents/doc/updates",
            Some(&app.token("backend")),
            &json!({"update": b64::encode(backend.insert(0, ">> "))}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let expected = backend.text();
    assert_eq!(expected, ">> world");
    assert_eq!(newcomer_text(&app, "dave", "doc").await, expected);
}

#[tokio::test]
async fn two_yrs_clients_converge_after_concurrent_inserts_at_the_same_position() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    alice.join("doc").await;
    bob.join("doc").await;
    alice.recv_type("user_joined").await;
    let (a, b) = (YPeer::new(1), YPeer::new(2));

    // Both type at position 0 before seeing each other's edit.
    let from_a = a.insert(0, "alice ");
    let from_b = b.insert(0, "bob ");
    alice
        .send(
            json!({"type": "sync_update", "document_id": "doc", "update": b64::encode(&from_a), "id": "a1"}),
        )
        .await;
    bob.send(
        json!({"type": "sync_update", "document_id": "doc", "update": b64::encode(&from_b), "id": "b1"}),
    )
    .await;

    let relayed = bob.recv_until("sync_update").await;
    assert_eq!(relayed["user_id"], "alice");
    b.apply_b64(relayed["update"].as_str().unwrap());
    let relayed = alice.recv_until("sync_update").await;
    assert_eq!(relayed["user_id"], "bob");
    a.apply_b64(relayed["update"].as_str().unwrap());

    assert_eq!(a.text(), b.text());
    assert_eq!(a.text().len(), "alice bob ".len());
    assert_eq!(a.state_vector(), b.state_vector());
    let (status, _) = app.get("/api/v1/documents/doc/text/content", None).await;
    assert_eq!(status, 401, "the text endpoint needs a token too");
    let (status, text) = app
        .get_text("/api/v1/documents/doc/text/content", &app.token("alice"))
        .await;
    assert_eq!((status, text), (200, a.text()));
}

#[tokio::test]
async fn a_late_joiner_receives_the_full_state_through_sync_steps() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    alice.join("doc").await;
    let a = YPeer::new(1);
    for (i, word) in ["one ", "two ", "three"].iter().enumerate() {
        send_update(
            &mut alice,
            "doc",
            &a.insert(a.text().len() as u32, word),
            &format!("u{i}"),
        )
        .await;
    }

    let mut carol = app.connect("carol").await;
    carol
        .send(json!({"type": "join_document", "document_id": "doc"}))
        .await;
    carol.recv_type("presence_list").await;
    let step1 = carol.recv_type("sync_step1").await;
    assert!(!b64::decode(step1["state_vector"].as_str().unwrap()).is_empty());
    let c = YPeer::new(3);
    carol
        .send(json!({"type": "sync_step1", "document_id": "doc", "state_vector": b64::encode(c.state_vector()), "id": 5}))
        .await;
    let step2 = carol.recv_type("sync_step2").await;
    assert_eq!(step2["id"], 5);
    c.apply_b64(step2["update"].as_str().unwrap());
    assert_eq!(c.text(), "one two three");

    // Asking again with the full state vector yields nothing new.
    carol.send(json!({"type": "sync_step1", "document_id": "doc", "state_vector": b64::encode(c.state_vector())})).await;
    let empty = carol.recv_type("sync_step2").await;
    let extra = YPeer::new(9);
    extra.apply_b64(empty["update"].as_str().unwrap());
    assert_eq!(extra.text(), "");
}

#[tokio::test]
async fn a_rest_update_reaches_connected_clients_and_the_text_endpoint() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    alice.join("doc").await;
    let agent = YPeer::new(42);
    let update = agent.insert(0, "written by an agent");
    let token = app.token("agent");
    let (status, body) = app
        .post(
            "/api/v1/documents/doc/updates",
            Some(&token),
            &json!({"update": b64::encode(&update)}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state_vector"], b64::encode(agent.state_vector()));

    let relayed = alice.recv_until("sync_update").await;
    assert_eq!(relayed["user_id"], "agent");
    let a = YPeer::new(1);
    a.apply_b64(relayed["update"].as_str().unwrap());
    assert_eq!(a.text(), "written by an agent");

    let (status, doc) = app.get("/api/v1/documents/doc", Some(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(doc["updates_since_snapshot"], 1);
    let copy = YPeer::new(2);
    copy.apply_b64(doc["state"].as_str().unwrap());
    assert_eq!(copy.text(), "written by an agent");
    assert_eq!(doc["state_vector"], b64::encode(copy.state_vector()));

    let (status, body) = app.get("/api/v1/documents/doc/text/missing", Some(&token)).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "not_found");
}

#[tokio::test]
async fn rest_document_endpoints_check_roles_and_input() {
    let app = spawn_app().await;
    let viewer = app.token_with("val", |c| c.role = tandem::auth::Role::Viewer);
    let update = YPeer::new(1).insert(0, "x");
    let (status, body) = app
        .post(
            "/api/v1/documents/doc/updates",
            Some(&viewer),
            &json!({"update": b64::encode(&update)}),
        )
        .await;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
    let editor = app.token("ed");
    for (payload, expected) in [
        (json!({"update": "!!!"}), 400),
        (json!({"update": b64::encode([1u8, 2, 3, 4, 5])}), 400),
        (json!({"nope": 1}), 400),
    ] {
        let (status, body) = app
            .post("/api/v1/documents/doc/updates", Some(&editor), &payload)
            .await;
        assert_eq!(status, expected, "{payload} -> {body}");
    }
    let (status, _) = app
        .post(
            "/api/v1/documents/doc/updates",
            None,
            &json!({"update": b64::encode(&update)}),
        )
        .await;
    assert_eq!(status, 401);
    let only_other = app.token_with("ed", |c| c.docs = Some(vec!["other".into()]));
    let (status, _) = app.get("/api/v1/documents/doc", Some(&only_other)).await;
    assert_eq!(status, 403);
    let (status, doc) = app.get("/api/v1/documents/doc", Some(&viewer)).await;
    assert_eq!(status, 200, "viewers read");
    let copy = YPeer::new(5);
    copy.apply_b64(doc["state"].as_str().unwrap());
    assert_eq!(copy.text(), "", "nothing was applied");
}

#[tokio::test]
async fn a_viewer_syncs_and_shares_presence_but_its_updates_are_forbidden() {
    let app = spawn_app().await;
    let mut editor = app.connect("ed").await;
    editor.join("doc").await;
    let e = YPeer::new(1);
    send_update(&mut editor, "doc", &e.insert(0, "hello"), "e1").await;

    let token = app.token_with("val", |c| c.role = tandem::auth::Role::Viewer);
    let mut viewer = app.connect_with(&token, None).await.unwrap();
    viewer.join("doc").await;
    editor.recv_type("user_joined").await;
    let v = YPeer::new(2);
    viewer.send(json!({"type": "sync_step1", "document_id": "doc", "state_vector": b64::encode(v.state_vector())})).await;
    v.apply_b64(viewer.recv_type("sync_step2").await["update"].as_str().unwrap());
    assert_eq!(v.text(), "hello");

    // Answering the server's sync_step1 with an empty step 2 is fine for a viewer.
    viewer
        .send(json!({"type": "sync_step2", "document_id": "doc", "update": b64::encode([0u8, 0]), "id": "empty"}))
        .await;
    assert_eq!(viewer.recv_type("ack").await["id"], "empty");
    let error = viewer
        .expect_error(json!({"type": "sync_update", "document_id": "doc", "update": b64::encode(v.insert(0, "evil ")), "id": 1}), "forbidden")
        .await;
    assert_eq!(error["id"], 1);
    viewer
        .send(json!({"type": "cursor_move", "document_id": "doc", "cursor": {"line": 0, "column": 1}}))
        .await;
    assert_eq!(editor.recv_type("cursor_move").await["user_id"], "val");
    let (status, text) = app
        .get_text("/api/v1/documents/doc/text/content", &app.token("ed"))
        .await;
    assert_eq!((status, text.as_str()), (200, "hello"));
}

#[tokio::test]
async fn bad_updates_are_refused_and_leave_the_document_unchanged() {
    let app = spawn_app_with(&Backend::Sqlite, |c| {
        c.rate_limit_per_second = 100_000;
        c.rate_limit_burst = 100_000;
        c.max_consecutive_errors = 100_000;
        c.max_update_bytes = 64 * 1024;
    })
    .await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    alice.join("doc").await;
    bob.join("doc").await;
    alice.recv_type("user_joined").await;
    let a = YPeer::new(1);
    let good = a.insert(0, "stable text");
    send_update(&mut alice, "doc", &good, "good").await;
    bob.recv_until("sync_update").await;

    let token = app.token("alice");
    let (_, before) = app.get("/api/v1/documents/doc", Some(&token)).await;

    alice
        .expect_error(
            json!({"type": "sync_update", "document_id": "doc", "update": "not base64!"}),
            "invalid_update",
        )
        .await;
    let truncated = &good[..good.len() / 2];
    alice
        .expect_error(
            json!({"type": "sync_update", "document_id": "doc", "update": b64::encode(truncated)}),
            "invalid_update",
        )
        .await;
    let big = vec![7u8; 64 * 1024 + 1];
    alice
        .expect_error(
            json!({"type": "sync_update", "document_id": "doc", "update": b64::encode(&big)}),
            "too_large",
        )
        .await;
    alice.expect_error(json!({"type": "sync_step1", "document_id": "doc", "state_vector": b64::encode([0xff, 0xff, 0xff, 0xff, 0x0f])}), "invalid_update").await;

    // A few thousand random buffers: every one answered, no panic, no hang.
    let mut seed = 0x9E3779B97F4A7C15u64;
    let rounds = 2000;
    for round in 0..rounds {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = 1 + (seed % 48) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|i| (seed.rotate_left((i * 7 + round) as u32 % 64) & 0xff) as u8)
            .collect();
        let frame =
            json!({"type": "sync_update", "document_id": "doc", "update": b64::encode(&bytes), "id": round});
        futures_util::SinkExt::feed(
            &mut alice.stream,
            tokio_tungstenite::tungstenite::Message::text(frame.to_string()),
        )
        .await
        .unwrap();
    }
    futures_util::SinkExt::flush(&mut alice.stream).await.unwrap();
    let mut answered = 0;
    while answered < rounds {
        let reply = alice.recv().await;
        if reply["type"] == "error" || reply["type"] == "ack" {
            answered += 1;
        }
    }
    alice.assert_alive().await;
    let (_, after) = app.get("/api/v1/documents/doc", Some(&token)).await;
    let (old, new) = (YPeer::new(8), YPeer::new(9));
    old.apply_b64(before["state"].as_str().unwrap());
    new.apply_b64(after["state"].as_str().unwrap());
    assert_eq!(new.text(), "stable text");
    assert_eq!(old.text(), new.text());

    // The room still relays good updates.
    send_update(&mut alice, "doc", &a.insert(0, "still "), "good2").await;
    let relayed = bob.recv_until("sync_update").await;
    assert_eq!(relayed["user_id"], "alice");
}

#[tokio::test]
async fn updates_waiting_for_missing_dependencies_are_bounded() {
    let app = spawn_app_with(&Backend::Sqlite, |c| c.max_pending_update_bytes = 1024).await;
    let mut alice = app.connect("alice").await;
    alice.join("doc").await;
    let a = YPeer::new(1);
    let _first = a.insert(0, "never sent");
    let second = a.insert(0, &"x".repeat(4096));
    alice
        .expect_error(
            json!({"type": "sync_update", "document_id": "doc", "update": b64::encode(&second)}),
            "invalid_update",
        )
        .await;
    let small = YPeer::new(2);
    small.insert(0, "a");
    let later = small.insert(1, "b");
    // Within the bound, an update with missing dependencies is kept (and acked once stored).
    send_update(&mut alice, "doc", &later, "pending-ok").await;
}

#[tokio::test]
async fn compaction_keeps_the_document_identical() {
    for backend in backends() {
        let app = spawn_app_with(&backend, |c| c.compact_after_updates = 10).await;
        let mut alice = app.connect("alice").await;
        alice.join("doc").await;
        let a = YPeer::new(1);
        for i in 0..25 {
            let at = (i * 7 % (a.text().len() as u32 + 1)).min(a.text().len() as u32);
            send_update(
                &mut alice,
                "doc",
                &a.insert(at, &format!("<{i}>")),
                &format!("u{i}"),
            )
            .await;
        }
        let token = app.token("alice");
        let doc = eventually("compaction folded the log", || {
            let app = &app;
            let token = token.clone();
            async move {
                let (_, doc) = app.get("/api/v1/documents/doc", Some(&token)).await;
                (doc["updates_since_snapshot"].as_u64().unwrap() < 25).then_some(doc)
            }
        })
        .await;
        let copy = YPeer::new(2);
        copy.apply_b64(doc["state"].as_str().unwrap());
        assert_eq!(copy.text(), a.text(), "{}", backend.name());
        assert_eq!(copy.state_vector(), a.state_vector());

        // And from storage alone, after a restart.
        let database = app.shutdown().await;
        let app = spawn_app_on(database, |_| {}).await;
        let (_, doc) = app.get("/api/v1/documents/doc", Some(&token)).await;
        let reloaded = YPeer::new(3);
        reloaded.apply_b64(doc["state"].as_str().unwrap());
        assert_eq!(reloaded.text(), a.text());
        assert_eq!(reloaded.state_vector(), a.state_vector());
    }
}

#[tokio::test]
async fn acknowledged_updates_survive_sigkill() {
    for backend in backends() {
        let database = TestDatabase::create(&backend).await;
        let gateway = Gateway::start(&database.url, &[]);
        let token = tandem::auth::jwt::mint_hs256(
            &tandem::config::Secret::new(SECRET),
            &tandem::auth::Claims::for_user("alice", Duration::from_secs(600)),
        )
        .unwrap();
        let (stream, _) =
            tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/ws?token={token}", gateway.port))
                .await
                .unwrap();
        let mut alice = Client {
            stream,
            connection_id: String::new(),
            session_id: String::new(),
        };
        alice.recv_type("connected").await;
        alice.join("durable").await;
        let a = YPeer::new(1);
        let n = 40;
        for i in 0..n {
            let update = a.insert(a.text().len() as u32, &format!("{i},"));
            alice.send(json!({"type": "sync_update", "document_id": "durable", "update": b64::encode(&update), "id": i})).await;
        }
        let mut acked = 0;
        while acked < n {
            if alice.recv().await["type"] == "ack" {
                acked += 1;
            }
        }
        gateway.kill();

        let restarted = Gateway::start(&database.url, &[]);
        let body = reqwest::Client::new()
            .get(format!(
                "http://127.0.0.1:{}/api/v1/documents/durable/text/content",
                restarted.port
            ))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(
            body,
            a.text(),
            "{}: every acknowledged update is there after kill -9",
            backend.name()
        );
    }
}

#[tokio::test]
async fn an_update_that_waits_for_a_missing_earlier_one_is_answered_with_sync_step1() {
    // The client's first update never arrived (refused while the server
    // was busy, say); its second waits for it. The server asks for what it
    // lacks instead of holding the second forever, and once the client
    // sends it, the others get both.
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    alice.join("doc").await;
    bob.join("doc").await;
    let peer = YPeer::new(4242);
    let first = peer.insert(0, "hello");
    let second = peer.insert(5, " world");
    alice
        .send(json!({"type": "sync_update", "document_id": "doc", "update": b64::encode(&second), "id": "2"}))
        .await;
    let step1 = alice.recv_until("sync_step1").await;
    assert_eq!(step1["document_id"], "doc");
    assert_eq!(alice.recv_until("ack").await["id"], "2");
    send_update(&mut alice, "doc", &first, "1").await;
    let reader = YPeer::new(7);
    for _ in 0..2 {
        let relayed = bob.recv_until("sync_update").await;
        reader.apply_b64(relayed["update"].as_str().unwrap());
        if reader.text() == "hello world" {
            break;
        }
    }
    assert_eq!(reader.text(), "hello world");
    assert_eq!(newcomer_text(&app, "carol", "doc").await, "hello world");
}
