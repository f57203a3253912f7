//! JSON reads and JSON ops over REST, against the real server: relayed to
//! socket members, merged with concurrent socket edits, all or nothing,
//! durable across SIGKILL, and refused cleanly when hostile. (Equality of
//! the JSON with npm `yjs` itself is in `node_peers.rs`.)

use std::time::Duration;

use serde_json::{Value, json};
use yrs::{Map, Transact, Update, types::ToJson, updates::decoder::Decode};

use crate::helpers::*;

async fn ops(app: &TestApp, doc: &str, token: &str, ops: Value) -> (u16, Value) {
    app.post(
        &format!("/api/v1/documents/{doc}/ops"),
        Some(token),
        &json!({"ops": ops}),
    )
    .await
}

async fn content(app: &TestApp, doc: &str, token: &str) -> Value {
    let body = app.get_ok(&format!("/api/v1/documents/{doc}/json"), token).await;
    body["content"].clone()
}

/// A yrs replica fed by a socket client's `sync_update`s.
fn apply(doc: &yrs::Doc, message: &Value) {
    let bytes = b64::decode(message["update"].as_str().unwrap());
    doc.transact_mut()
        .apply_update(Update::decode_v1(&bytes).unwrap())
        .unwrap();
}

#[tokio::test]
async fn ops_reach_members_merge_with_socket_edits_and_answer_the_state_vector() {
    let app = spawn_app().await;
    let agent = app.token("agent");
    let mut browser = app.connect("browser").await;
    browser.join("board").await;

    // The browser sets one key of the map over its socket...
    let replica = yrs::Doc::with_client_id(4242);
    let shapes = replica.get_or_insert_map("shapes");
    let update = {
        let mut txn = replica.transact_mut();
        shapes.insert(&mut txn, "mine", "browser's");
        txn.encode_update_v1()
    };
    browser
        .send(json!({"type": "sync_update", "document_id": "board", "update": b64::encode(&update), "id": "u1"}))
        .await;
    assert_eq!(browser.recv_until("ack").await["id"], "u1");

    // ...and the agent sets a sibling key with an op, plus text and an array.
    let (status, body) = app
        .post(
            "/api/v1/documents/board/ops",
            Some(&agent),
            &json!({"id": "req-1", "ops": [
                {"op": "map_set", "path": ["shapes"], "key": "n1", "value": {"x": 10, "y": 20, "text": "hi"}, "shared": true},
                {"op": "text_insert", "path": ["notes"], "index": 0, "text": "from the agent", "attributes": {"bold": true}},
                {"op": "array_insert", "path": ["log"], "index": 0, "values": ["a", 2, null]},
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["document_id"], "board");
    assert_eq!(body["id"], "req-1");
    let answered_sv = b64::decode(body["state_vector"].as_str().unwrap());

    // The browser gets the op as one update attributed to the agent.
    let relayed = browser.recv_until("sync_update").await;
    assert_eq!(relayed["user_id"], "agent");
    apply(&replica, &relayed);
    let txn = replica.transact();
    let seen = shapes.to_json(&txn);
    let seen: Value = serde_json::to_value(&seen).unwrap();
    assert_eq!(seen["mine"], "browser's");
    assert_eq!(seen["n1"], json!({"x": 10, "y": 20, "text": "hi"}));
    drop(txn);

    let content = content(&app, "board", &agent).await;
    assert_eq!(
        content,
        json!({
            "shapes": {"mine": "browser's", "n1": {"x": 10, "y": 20, "text": "hi"}},
            "notes": "from the agent",
            "log": ["a", 2, null],
        })
    );
    // The answered state vector covers both writers.
    let sv = yrs::StateVector::decode_v1(&answered_sv).unwrap();
    assert!(sv.contains_client(&yrs::ClientID::new(4242)));
    assert_eq!(sv.len(), 2, "one client of the browser, one minted for the agent");

    // A second op batch of the same user reuses its client id.
    let (status, body) = ops(
        &app,
        "board",
        &agent,
        json!([{"op": "map_delete", "path": ["shapes"], "key": "mine"}]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let sv = yrs::StateVector::decode_v1(&b64::decode(body["state_vector"].as_str().unwrap())).unwrap();
    assert_eq!(sv.len(), 2, "no new client id per request");
    let (_, one) = app
        .get("/api/v1/documents/board/json?root=shapes", Some(&agent))
        .await;
    assert_eq!(
        one["content"],
        json!({"shapes": {"n1": {"x": 10, "y": 20, "text": "hi"}}})
    );
}

#[tokio::test]
async fn a_bad_batch_changes_nothing_and_names_the_failing_op() {
    let app = spawn_app().await;
    let agent = app.token("agent");
    let (status, _) = ops(
        &app,
        "atomic",
        &agent,
        json!([{"op": "text_insert", "path": ["t"], "index": 0, "text": "abc"}]),
    )
    .await;
    assert_eq!(status, 200);
    let before = content(&app, "atomic", &agent).await;
    let mut member = app.connect("watcher").await;
    member.join("atomic").await;

    let cases = [
        (
            json!([{"op": "map_set", "path": ["m"], "key": "k", "value": 1}, {"op": "text_insert", "path": ["t"], "index": 99, "text": "x"}]),
            1,
        ),
        (
            json!([{"op": "map_set", "path": ["m"], "key": "k", "value": 1}, {"op": "teleport", "path": ["m"]}]),
            1,
        ),
        (
            json!([{"op": "map_set", "path": ["t"], "key": "k", "value": 1}]),
            0,
        ),
        (
            json!([{"op": "array_delete", "path": ["m", "k"], "index": 0, "length": 1}]),
            0,
        ),
        (json!([{"op": "map_set", "path": [3], "key": "k", "value": 1}]), 0),
        (
            json!([{"op": "text_delete", "path": ["t"], "index": 1, "length": 5}]),
            0,
        ),
        (json!([]), 0),
    ];
    for (batch, index) in cases {
        let (status, body) = ops(&app, "atomic", &agent, batch.clone()).await;
        assert_eq!(status, 400, "{batch}: {body}");
        assert_eq!(body["error"], "invalid_op", "{batch}: {body}");
        assert_eq!(body["index"], index, "{batch}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let too_many: Vec<Value> = (0..1001)
        .map(|i| json!({"op": "map_set", "path": ["m"], "key": format!("k{i}"), "value": i}))
        .collect();
    let (status, body) = ops(&app, "atomic", &agent, Value::Array(too_many)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_op")),
        "{body}"
    );
    assert_eq!(content(&app, "atomic", &agent).await, before, "nothing applied");
    member.expect_silence(Duration::from_millis(300)).await;

    // Over the update limit: refused with the op's index.
    let app2 = spawn_app_with(&Backend::Sqlite, |c| c.max_update_bytes = 4096).await;
    let big = "x".repeat(5000);
    let (status, body) = ops(
        &app2,
        "big",
        &app2.token("agent"),
        json!([{"op": "map_set", "path": ["m"], "key": "k", "value": 1}, {"op": "map_set", "path": ["m"], "key": "big", "value": big}]),
    )
    .await;
    assert_eq!((status, body["index"].as_u64()), (400, Some(1)), "{body}");

    // Viewers may read, not write.
    let viewer = app.token_with("val", |c| c.role = tandem::auth::Role::Viewer);
    let (status, body) = ops(
        &app,
        "atomic",
        &viewer,
        json!([{"op": "map_set", "path": ["m"], "key": "k", "value": 1}]),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    assert_eq!(content(&app, "atomic", &viewer).await, before);
    member.assert_alive().await;
}

#[tokio::test]
async fn json_reads_refuse_bad_parameters_with_json_errors() {
    let app = spawn_app().await;
    let token = app.token("reader");
    let (status, _) = ops(
        &app,
        "read",
        &token,
        json!([{"op": "text_insert", "path": ["t"], "index": 0, "text": "x"}]),
    )
    .await;
    assert_eq!(status, 200);
    for (query, code, error) in [
        ("?types=t:banana", 400, "invalid_types"),
        ("?types=nocolon", 400, "invalid_types"),
        ("?root=absent", 404, "not_found"),
    ] {
        let (status, body) = app
            .get(&format!("/api/v1/documents/read/json{query}"), Some(&token))
            .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (code, Some(error)),
            "{query}: {body}"
        );
    }
    let (status, body) = app
        .get("/api/v1/documents/read/json?types=t:array", Some(&token))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["content"]["t"],
        json!(["x"]),
        "a text read as an array: its characters"
    );
    let (status, body) = app
        .get(
            &format!("/api/v1/documents/{}/json", "x".repeat(300)),
            Some(&token),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_document_id")),
        "{body}"
    );
    let (status, _) = app.get("/api/v1/documents/read/json", None).await;
    assert_eq!(status, 401);
    // An op body that is not JSON at all.
    let response = reqwest::Client::new()
        .post(app.url("/api/v1/documents/read/ops"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"ops\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].is_string(), "{body}");
    // No body and no content type: 415 with its own code.
    let response = reqwest::Client::new()
        .post(app.url("/api/v1/documents/read/ops"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 415);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "unsupported_media_type", "{body}");
}

#[tokio::test]
async fn acknowledged_ops_survive_sigkill() {
    for backend in backends() {
        let database = TestDatabase::create(&backend).await;
        let gateway = Gateway::start(&database.url, &[]);
        let token = tandem::auth::jwt::mint_hs256(
            &tandem::config::Secret::new(SECRET),
            &tandem::auth::Claims::for_user("agent", Duration::from_secs(600)),
        )
        .unwrap();
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{}", gateway.port);
        for i in 0..20 {
            let response = http
                .post(format!("{base}/api/v1/documents/kept/ops"))
                .bearer_auth(&token)
                .json(&json!({"ops": [{"op": "array_insert", "path": ["items"], "index": i, "values": [i]}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 200, "{}", backend.name());
        }
        gateway.kill();
        let restarted = Gateway::start(&database.url, &[]);
        let body: Value = get_json(
            &format!("http://127.0.0.1:{}/api/v1/documents/kept/json", restarted.port),
            &token,
        )
        .await;
        let expected: Vec<i64> = (0..20).collect();
        assert_eq!(
            body["content"]["items"],
            json!(expected),
            "{}: every answered op is there after kill -9",
            backend.name()
        );
    }
}
