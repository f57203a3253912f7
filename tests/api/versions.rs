//! Document versions over REST: saving, listing and reading them, restoring
//! one with a forward update that live clients converge on, durably, and the
//! automatic versions (after quiet time, at compaction) with their pruning.

use std::{cmp::Ordering, time::Duration};

use serde_json::{Value, json};
use yrs::{StateVector, updates::decoder::Decode};

use crate::helpers::*;

/// Apply `update` through `POST .../updates`; returns the answer (200 asserted).
async fn rest_update(app: &TestApp, token: &str, document: &str, update: &[u8]) -> Value {
    let (status, body) = app
        .post(
            &format!("/api/v1/documents/{document}/updates"),
            Some(token),
            &json!({"update": b64::encode(update)}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Read the next `sync_update` and apply it to `peer`; returns the message.
async fn receive_into(client: &mut Client, peer: &YPeer) -> Value {
    let update = client.recv_until("sync_update").await;
    peer.apply_b64(update["update"].as_str().unwrap());
    update
}

/// The live root text "content" over REST.
async fn live_text(app: &TestApp, token: &str, document: &str) -> String {
    let (status, text) = app
        .get_text(&format!("/api/v1/documents/{document}/text/content"), token)
        .await;
    assert_eq!(status, 200, "{text}");
    text
}

/// The live document as JSON (`GET .../json`), its `content` only.
async fn live_json(app: &TestApp, token: &str, document: &str) -> Value {
    let body = app
        .get_ok(&format!("/api/v1/documents/{document}/json"), token)
        .await;
    body["content"].clone()
}

/// `POST .../versions` with `body`; returns the status and answer.
async fn create(app: &TestApp, token: &str, document: &str, body: Value) -> (u16, Value) {
    app.post(
        &format!("/api/v1/documents/{document}/versions"),
        Some(token),
        &body,
    )
    .await
}

/// `POST .../versions/{id}/restore`; returns the status and answer.
async fn restore_version(app: &TestApp, token: &str, document: &str, version_id: &str) -> (u16, Value) {
    app.post(
        &format!("/api/v1/documents/{document}/versions/{version_id}/restore"),
        Some(token),
        &json!({}),
    )
    .await
}

/// Save a version (200 asserted).
async fn save(app: &TestApp, token: &str, document: &str, label: Option<&str>) -> Value {
    let body = match label {
        Some(label) => json!({"label": label}),
        None => json!({}),
    };
    let (status, version) = create(app, token, document, body).await;
    assert_eq!(status, 200, "{version}");
    version
}

/// One page of versions (200 asserted).
async fn page(app: &TestApp, token: &str, document: &str, query: &str) -> Value {
    let page = app
        .get_ok(&format!("/api/v1/documents/{document}/versions{query}"), token)
        .await;
    assert_eq!(page["document_id"], document);
    page
}

/// Every version of the document, newest first (one page).
async fn all_versions(app: &TestApp, token: &str, document: &str) -> Vec<Value> {
    let page = page(app, token, document, "?limit=500").await;
    assert!(page.get("next_before").is_none(), "{page}");
    page["versions"].as_array().unwrap().clone()
}

/// [`restore_version`] of a version object (its `id`).
async fn restore_version_of(app: &TestApp, token: &str, document: &str, of: &Value) -> (u16, Value) {
    restore_version(app, token, document, of["id"].as_str().unwrap()).await
}

/// [`version`] of a version object (its `id`).
async fn version_of(app: &TestApp, token: &str, document: &str, of: &Value) -> Value {
    version(app, token, document, of["id"].as_str().unwrap()).await
}

/// One version with its state and content (200 asserted).
async fn version(app: &TestApp, token: &str, document: &str, id: &str) -> Value {
    app.get_ok(&format!("/api/v1/documents/{document}/versions/{id}"), token)
        .await
}

/// The root text "content" of a version's (or document's) base64 state.
fn text_of_state(state: &Value) -> String {
    let peer = YPeer::new(99_999);
    peer.apply_b64(state.as_str().expect("a base64 state"));
    peer.text()
}

fn state_vector(b64_state_vector: &Value) -> StateVector {
    StateVector::decode_v1(&b64::decode(
        b64_state_vector.as_str().expect("a base64 state vector"),
    ))
    .expect("a state vector")
}

fn ids(versions: &[Value]) -> Vec<&str> {
    versions.iter().map(|v| v["id"].as_str().unwrap()).collect()
}

/// The version fields every answer carries, as the list shows them.
fn summary(version: &Value) -> Value {
    json!({
        "id": version["id"],
        "document_id": version["document_id"],
        "label": version["label"],
        "automatic": version["automatic"],
        "created_at": version["created_at"],
        "created_by": version["created_by"],
        "state_vector": version["state_vector"],
    })
}

#[track_caller]
fn assert_error(status: u16, body: &Value, expected_status: u16, code: &str) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["error"], code, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

#[tokio::test]
async fn versions_are_saved_listed_newest_first_a_page_at_a_time_and_read_back() {
    for backend in backends() {
        let name = backend.name();
        let app = spawn_app_with(&backend, |_| {}).await;
        let alice = app.token("alice");
        let viewer = app.token_with("val", |c| c.role = tandem::auth::Role::Viewer);
        let a = YPeer::new(1);

        let answer = rest_update(&app, &alice, "doc", &a.insert(0, "hello")).await;
        let json_at_first = live_json(&app, &alice, "doc").await;
        assert_eq!(json_at_first, json!({"content": "hello"}));
        let first = save(&app, &alice, "doc", None).await;
        assert_eq!(first["document_id"], "doc", "{name}");
        assert_eq!(first["label"], Value::Null, "{name}");
        assert_eq!(first["automatic"], false, "{name}");
        assert_eq!(first["created_by"], "alice", "{name}");
        assert_eq!(
            state_vector(&first["state_vector"]),
            state_vector(&answer["state_vector"]),
            "{name}: the state vector of the document when it was saved"
        );
        assert!(first["created_at"].as_str().is_some_and(|t| !t.is_empty()));

        rest_update(&app, &alice, "doc", &a.insert(5, " world")).await;
        let second = save(&app, &alice, "doc", Some("  second draft  ")).await;
        assert_eq!(second["label"], "second draft", "{name}: labels are trimmed");
        // A blank label is no label.
        rest_update(&app, &alice, "doc", &a.remove(0, 6)).await;
        let third = save(&app, &alice, "doc", Some("   ")).await;
        assert_eq!(third["label"], Value::Null, "{name}");
        // Live moves on; the versions do not.
        rest_update(&app, &alice, "doc", &a.insert(5, "!")).await;
        assert_eq!(live_text(&app, &alice, "doc").await, "world!");

        // The list: newest first, the same fields as when saved.
        let listed = all_versions(&app, &alice, "doc").await;
        assert_eq!(
            listed,
            vec![summary(&third), summary(&second), summary(&first)],
            "{name}"
        );

        // A page at a time.
        let one = page(&app, &alice, "doc", "?limit=1").await;
        assert_eq!(one["versions"], json!([summary(&third)]), "{name}");
        let before = one["next_before"].as_str().expect("more pages").to_owned();
        assert_eq!(before, third["id"]);
        let two = page(&app, &alice, "doc", &format!("?limit=1&before={before}")).await;
        assert_eq!(two["versions"], json!([summary(&second)]), "{name}");
        let before = two["next_before"].as_str().expect("more pages").to_owned();
        let last = page(&app, &alice, "doc", &format!("?limit=1&before={before}")).await;
        assert_eq!(last["versions"], json!([summary(&first)]), "{name}");
        assert!(last.get("next_before").is_none(), "{name}: {last}");
        let rest = page(
            &app,
            &alice,
            "doc",
            &format!("?limit=5&before={}", second["id"].as_str().unwrap()),
        )
        .await;
        assert_eq!(rest["versions"], json!([summary(&first)]), "{name}");
        assert!(rest.get("next_before").is_none(), "{name}: {rest}");

        // Each version holds the document as it was saved.
        for (saved, text) in [(&first, "hello"), (&second, "hello world"), (&third, "world")] {
            let read = version_of(&app, &alice, "doc", saved).await;
            assert_eq!(summary(&read), summary(saved), "{name}");
            assert_eq!(text_of_state(&read["state"]), text, "{name}");
            assert_eq!(read["content"], json!({"content": text}), "{name}");
        }
        let read = version_of(&app, &alice, "doc", &first).await;
        assert_eq!(
            read["content"], json_at_first,
            "{name}: content renders like GET .../json"
        );

        // A viewer reads and lists, but neither saves nor restores.
        assert_eq!(all_versions(&app, &viewer, "doc").await, listed, "{name}");
        let read = version_of(&app, &viewer, "doc", &first).await;
        assert_eq!(read["content"], json!({"content": "hello"}));
        let (status, body) = create(&app, &viewer, "doc", json!({"label": "mine"})).await;
        assert_error(status, &body, 403, "forbidden");
        let (status, body) = restore_version_of(&app, &viewer, "doc", &first).await;
        assert_error(status, &body, 403, "forbidden");
        assert_eq!(
            live_text(&app, &alice, "doc").await,
            "world!",
            "{name}: nothing restored"
        );
        assert_eq!(
            all_versions(&app, &alice, "doc").await,
            listed,
            "{name}: nothing saved for the viewer (no `before restore` either)"
        );
        // A token for other documents sees none of this one's versions.
        let elsewhere = app.token_with("eve", |c| c.docs = Some(vec!["other".into()]));
        let (status, body) = app.get("/api/v1/documents/doc/versions", Some(&elsewhere)).await;
        assert_error(status, &body, 403, "forbidden");
        let (status, body) = app
            .get(
                &format!("/api/v1/documents/doc/versions/{}", first["id"].as_str().unwrap()),
                Some(&elsewhere),
            )
            .await;
        assert_error(status, &body, 403, "forbidden");
        let (status, body) = app.get("/api/v1/documents/doc/versions", None).await;
        assert_error(status, &body, 401, "unauthorized");

        // Bad input.
        let (status, body) = create(&app, &alice, "doc", json!({"label": "x".repeat(257)})).await;
        assert_error(status, &body, 400, "invalid_label");
        for query in ["?limit=0", "?limit=501"] {
            let (status, body) = app
                .get(&format!("/api/v1/documents/doc/versions{query}"), Some(&alice))
                .await;
            assert_error(status, &body, 400, "invalid_limit");
        }
        let (status, body) = app
            .get("/api/v1/documents/doc/versions?before=yesterday", Some(&alice))
            .await;
        assert_error(status, &body, 400, "invalid_version_id");
        let (status, body) = app
            .get("/api/v1/documents/doc/versions/not-a-uuid", Some(&alice))
            .await;
        assert_error(status, &body, 400, "invalid_version_id");
        let unknown = uuid::Uuid::now_v7();
        let (status, body) = app
            .get(&format!("/api/v1/documents/doc/versions/{unknown}"), Some(&alice))
            .await;
        assert_error(status, &body, 404, "not_found");
        let (status, body) = restore_version(&app, &alice, "doc", &unknown.to_string()).await;
        assert_error(status, &body, 404, "not_found");
        let (status, body) = restore_version(&app, &alice, "doc", "nope").await;
        assert_error(status, &body, 400, "invalid_version_id");
        // A version belongs to its document.
        let (status, body) = app
            .get(
                &format!(
                    "/api/v1/documents/other/versions/{}",
                    first["id"].as_str().unwrap()
                ),
                Some(&alice),
            )
            .await;
        assert_error(status, &body, 404, "not_found");
        let (status, body) = restore_version_of(&app, &alice, "other", &first).await;
        assert_error(status, &body, 404, "not_found");
        assert_eq!(
            all_versions(&app, &alice, "doc").await,
            listed,
            "{name}: refused requests saved nothing"
        );
        assert_eq!(page(&app, &alice, "other", "").await["versions"], json!([]));

        // The longest label, in characters (not bytes), is accepted.
        let longest = "é".repeat(256);
        let labelled = save(&app, &alice, "doc", Some(&longest)).await;
        assert_eq!(labelled["label"], longest.as_str(), "{name}");
        let read = version_of(&app, &alice, "doc", &labelled).await;
        assert_eq!(read["label"], longest.as_str(), "{name}");
        assert_eq!(read["content"], json!({"content": "world!"}), "{name}");
    }
}

#[tokio::test]
async fn a_restore_reaches_connected_clients_as_a_forward_update_and_saves_the_document_first() {
    for backend in backends() {
        let name = backend.name();
        let app = spawn_app_with(&backend, |_| {}).await;
        let token = app.token("carol");
        let mut alice = app.connect("alice").await;
        let mut bob = app.connect("bob").await;
        alice.join("doc").await;
        bob.join("doc").await;
        let (a, b) = (YPeer::new(1), YPeer::new(2));

        // Both edit to "v1", which is saved.
        send_update(&mut alice, "doc", &a.insert(0, "version one"), "a1").await;
        receive_into(&mut bob, &b).await;
        send_update(&mut bob, "doc", &b.insert(11, " is here"), "b1").await;
        receive_into(&mut alice, &a).await;
        let v1_text = "version one is here";
        assert_eq!((a.text().as_str(), b.text().as_str()), (v1_text, v1_text));
        let v1 = save(&app, &token, "doc", Some("v1")).await;

        // Then more edits: inserts and deletes by both.
        send_update(&mut alice, "doc", &a.remove(0, 8), "a2").await;
        receive_into(&mut bob, &b).await;
        send_update(&mut bob, "doc", &b.insert(0, "THE "), "b2").await;
        receive_into(&mut alice, &a).await;
        send_update(&mut alice, "doc", &a.remove(8, 3), "a3").await;
        receive_into(&mut bob, &b).await;
        send_update(&mut bob, "doc", &b.insert(b.text().len() as u32, "!!"), "b3").await;
        receive_into(&mut alice, &a).await;
        let edited = a.text();
        assert_eq!(edited, "THE one here!!");
        assert_eq!(b.text(), edited);
        assert_eq!(live_text(&app, &token, "doc").await, edited, "{name}");
        let edited_json = live_json(&app, &token, "doc").await;

        // Restore v1.
        let (status, restore) = restore_version_of(&app, &token, "doc", &v1).await;
        assert_eq!(status, 200, "{name}: {restore}");
        assert_eq!(restore["document_id"], "doc");
        assert_eq!(restore["restored"], summary(&v1), "{name}");
        let before = &restore["before_restore"];
        assert_eq!(before["label"], "before restore", "{name}");
        assert_eq!(before["automatic"], false, "{name}");
        assert_eq!(before["created_by"], "carol", "{name}");
        assert_eq!(before["document_id"], "doc");

        // Both clients get it as an ordinary update and converge, no rejoin.
        for (client, peer) in [(&mut alice, &a), (&mut bob, &b)] {
            let update = receive_into(client, peer).await;
            assert_eq!(update["document_id"], "doc");
            assert_eq!(update["user_id"], "carol", "{name}");
            assert_eq!(peer.text(), v1_text, "{name}");
        }
        assert_eq!(live_text(&app, &token, "doc").await, v1_text, "{name}");
        assert_eq!(live_json(&app, &token, "doc").await, json!({"content": v1_text}));

        // A forward update: the state vector only grew, past both versions'.
        let after = state_vector(&restore["state_vector"]);
        let v1_sv = state_vector(&v1["state_vector"]);
        let before_sv = state_vector(&before["state_vector"]);
        assert_eq!(after.partial_cmp(&v1_sv), Some(Ordering::Greater), "{name}");
        assert_eq!(after.partial_cmp(&before_sv), Some(Ordering::Greater), "{name}");
        assert_eq!(before_sv.partial_cmp(&v1_sv), Some(Ordering::Greater), "{name}");
        let peer_sv = StateVector::decode_v1(&a.state_vector()).unwrap();
        assert_eq!(peer_sv, after, "{name}: the clients hold what the server holds");
        assert_eq!(StateVector::decode_v1(&b.state_vector()).unwrap(), after);

        // The document as it was is kept as `before restore`.
        let saved = version_of(&app, &token, "doc", before).await;
        assert_eq!(text_of_state(&saved["state"]), edited, "{name}");
        assert_eq!(saved["content"], edited_json, "{name}");
        let listed = all_versions(&app, &token, "doc").await;
        assert_eq!(
            ids(&listed),
            vec![before["id"].as_str().unwrap(), v1["id"].as_str().unwrap()]
        );
        assert_eq!(listed[0], summary(before), "{name}");
        // The restored version itself is unchanged.
        let read = version_of(&app, &token, "doc", &v1).await;
        assert_eq!(read["content"], json!({"content": v1_text}));

        // Editing goes on from the restored content, on every replica.
        send_update(&mut alice, "doc", &a.insert(0, ">> "), "a4").await;
        receive_into(&mut bob, &b).await;
        let expected = format!(">> {v1_text}");
        assert_eq!((a.text(), b.text()), (expected.clone(), expected.clone()));
        assert_eq!(live_text(&app, &token, "doc").await, expected, "{name}");

        // Restoring `before restore` brings the edited text back.
        let (status, back) = restore_version_of(&app, &token, "doc", before).await;
        assert_eq!(status, 200, "{back}");
        for (client, peer) in [(&mut alice, &a), (&mut bob, &b)] {
            receive_into(client, peer).await;
            assert_eq!(peer.text(), edited, "{name}");
        }
        assert_eq!(live_text(&app, &token, "doc").await, edited, "{name}");
        let back_sv = state_vector(&back["state_vector"]);
        assert_eq!(back_sv.partial_cmp(&after), Some(Ordering::Greater), "{name}");
        let saved = version_of(&app, &token, "doc", &back["before_restore"]).await;
        assert_eq!(text_of_state(&saved["state"]), expected, "{name}");
        assert_eq!(all_versions(&app, &token, "doc").await.len(), 3, "{name}");
    }
}

#[tokio::test]
async fn a_restore_is_durable_across_a_restart_and_a_kill() {
    for backend in backends() {
        let name = backend.name();
        let app = spawn_app_with(&backend, |_| {}).await;
        let token = app.token("alice");
        let a = YPeer::new(1);
        // A version of the document before anything was written.
        let empty = save(&app, &token, "doc", Some("empty")).await;
        let read = version_of(&app, &token, "doc", &empty).await;
        assert_eq!(read["content"], json!({}), "{name}");
        rest_update(&app, &token, "doc", &a.insert(0, "kept text")).await;
        let kept = save(&app, &token, "doc", Some("kept")).await;
        rest_update(&app, &token, "doc", &a.remove(0, 5)).await;
        rest_update(&app, &token, "doc", &a.insert(4, " and later edits")).await;
        assert_eq!(live_text(&app, &token, "doc").await, "text and later edits");

        let (status, restore) = restore_version_of(&app, &token, "doc", &kept).await;
        assert_eq!(status, 200, "{name}: {restore}");
        let database = app.shutdown().await;

        let app = spawn_app_on(database, |_| {}).await;
        assert_eq!(
            live_text(&app, &token, "doc").await,
            "kept text",
            "{name}: the restore survived a restart"
        );
        let (status, doc) = app.get("/api/v1/documents/doc", Some(&token)).await;
        assert_eq!(status, 200, "{doc}");
        assert_eq!(text_of_state(&doc["state"]), "kept text");
        assert_eq!(
            state_vector(&doc["state_vector"]),
            state_vector(&restore["state_vector"]),
            "{name}"
        );
        let listed = all_versions(&app, &token, "doc").await;
        assert_eq!(
            ids(&listed),
            vec![
                restore["before_restore"]["id"].as_str().unwrap(),
                kept["id"].as_str().unwrap(),
                empty["id"].as_str().unwrap(),
            ],
            "{name}"
        );
        let before = version_of(&app, &token, "doc", &restore["before_restore"]).await;
        assert_eq!(
            before["content"],
            json!({"content": "text and later edits"}),
            "{name}"
        );

        // Restoring the version the document already equals changes nothing.
        let (status, again) = restore_version_of(&app, &token, "doc", &kept).await;
        assert_eq!(status, 200, "{name}: {again}");
        assert_eq!(
            state_vector(&again["state_vector"]),
            state_vector(&restore["state_vector"]),
            "{name}: nothing to write"
        );
        assert_eq!(live_text(&app, &token, "doc").await, "kept text");
        let saved = version_of(&app, &token, "doc", &again["before_restore"]).await;
        assert_eq!(saved["content"], json!({"content": "kept text"}), "{name}");

        // Restore the empty version, then kill the process right after the answer.
        let database = app.shutdown().await;
        let gateway = Gateway::start(&database.url, &[]);
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{}", gateway.port);
        let response = http
            .post(format!(
                "{base}/api/v1/documents/doc/versions/{}/restore",
                empty["id"].as_str().unwrap()
            ))
            .bearer_auth(&token)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{name}");
        gateway.kill();

        let restarted = Gateway::start(&database.url, &[]);
        let base = format!("http://127.0.0.1:{}", restarted.port);
        let response = http
            .get(format!("{base}/api/v1/documents/doc/text/content"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert_eq!(
            (status, text.as_str()),
            (200, ""),
            "{name}: the restore to the empty version survived kill -9"
        );
        let versions = get_json(&format!("{base}/api/v1/documents/doc/versions"), &token).await;
        let newest = &versions["versions"][0];
        assert_eq!(newest["label"], "before restore", "{name}: {versions}");
        let read: Value = get_json(
            &format!(
                "{base}/api/v1/documents/doc/versions/{}",
                newest["id"].as_str().unwrap()
            ),
            &token,
        )
        .await;
        assert_eq!(read["content"], json!({"content": "kept text"}), "{name}");
        restarted.kill();
    }
}

#[tokio::test]
async fn a_restore_brings_back_maps_arrays_and_texts_written_as_json_ops() {
    let app = spawn_app().await;
    let token = app.token("alice");
    let ops = |ops: Value| {
        let app = &app;
        let token = token.clone();
        async move {
            let (status, body) = app
                .post("/api/v1/documents/shapes/ops", Some(&token), &json!({"ops": ops}))
                .await;
            assert_eq!(status, 200, "{body}");
        }
    };
    ops(json!([
        {"op": "map_set", "path": ["shapes"], "key": "a", "value": {"x": 1, "tags": ["t"]}, "shared": true},
        {"op": "map_set", "path": ["shapes"], "key": "b", "value": 2},
        {"op": "text_insert", "path": ["body"], "index": 0, "text": "hello"},
        {"op": "array_insert", "path": ["list"], "index": 0, "values": [1, 2, 3]},
    ]))
    .await;
    let saved_json = live_json(&app, &token, "shapes").await;
    assert_eq!(
        saved_json,
        json!({"shapes": {"a": {"x": 1, "tags": ["t"]}, "b": 2}, "body": "hello", "list": [1, 2, 3]})
    );
    let saved = save(&app, &token, "shapes", None).await;
    assert_eq!(
        version_of(&app, &token, "shapes", &saved).await["content"],
        saved_json
    );
    ops(json!([
        {"op": "map_set", "path": ["shapes", "a"], "key": "x", "value": 9},
        {"op": "map_delete", "path": ["shapes"], "key": "b"},
        {"op": "map_set", "path": ["shapes"], "key": "c", "value": true},
        {"op": "text_delete", "path": ["body"], "index": 0, "length": 2},
        {"op": "array_delete", "path": ["list"], "index": 0, "length": 1},
    ]))
    .await;
    assert_ne!(live_json(&app, &token, "shapes").await, saved_json);

    let (status, restore) = restore_version_of(&app, &token, "shapes", &saved).await;
    assert_eq!(status, 200, "{restore}");
    assert_eq!(live_json(&app, &token, "shapes").await, saved_json);
}

/// Automatic versions of `document`, newest first.
async fn automatic(app: &TestApp, token: &str, document: &str) -> Vec<Value> {
    all_versions(app, token, document)
        .await
        .into_iter()
        .filter(|v| v["automatic"] == true)
        .collect()
}

#[tokio::test]
async fn the_first_edit_after_quiet_time_saves_the_document_as_it_was() {
    for backend in backends() {
        let name = backend.name();
        let app = spawn_app_with(&backend, |c| {
            c.auto_version_after = Duration::from_millis(300);
        })
        .await;
        let alice = app.token("alice");
        let bob = app.token("bob");
        let (a, b) = (YPeer::new(1), YPeer::new(2));

        rest_update(&app, &alice, "doc", &a.insert(0, "one")).await;
        let answer = rest_update(&app, &alice, "doc", &a.insert(3, " two")).await;
        assert_eq!(
            all_versions(&app, &alice, "doc").await,
            Vec::<Value>::new(),
            "{name}: edits in a row save nothing"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            all_versions(&app, &alice, "doc").await.is_empty(),
            "{name}: quiet alone saves nothing"
        );
        b.apply_b64(&b64::encode(a.full_state()));
        rest_update(&app, &bob, "doc", &b.insert(7, " three")).await;
        assert_eq!(live_text(&app, &alice, "doc").await, "one two three");

        let versions = all_versions(&app, &alice, "doc").await;
        assert_eq!(versions.len(), 1, "{name}: {versions:?}");
        let saved = &versions[0];
        assert_eq!(saved["automatic"], true, "{name}");
        assert_eq!(saved["label"], Value::Null, "{name}");
        assert_eq!(
            saved["created_by"], "bob",
            "{name}: the editor whose edit ended the quiet"
        );
        assert_eq!(
            state_vector(&saved["state_vector"]),
            state_vector(&answer["state_vector"]),
            "{name}: the state before the edit"
        );
        let read = version_of(&app, &alice, "doc", saved).await;
        assert_eq!(read["content"], json!({"content": "one two"}), "{name}");
        assert_eq!(text_of_state(&read["state"]), "one two", "{name}");

        // The next edit right away saves nothing more.
        rest_update(&app, &bob, "doc", &b.insert(0, "0 ")).await;
        assert_eq!(all_versions(&app, &alice, "doc").await.len(), 1, "{name}");
    }
}

#[tokio::test]
async fn only_the_newest_automatic_versions_are_kept_and_saved_ones_stay() {
    for backend in backends() {
        let name = backend.name();
        let app = spawn_app_with(&backend, |c| {
            c.auto_version_after = Duration::from_millis(300);
            c.keep_versions = 2;
        })
        .await;
        let token = app.token("alice");
        let a = YPeer::new(1);
        rest_update(&app, &token, "doc", &a.insert(0, "0")).await;
        let labelled = save(&app, &token, "doc", Some("mine")).await;
        let unlabelled = save(&app, &token, "doc", None).await;
        let mut before_each = Vec::new();
        for i in 1..=4 {
            tokio::time::sleep(Duration::from_millis(450)).await;
            before_each.push(a.text());
            rest_update(
                &app,
                &token,
                "doc",
                &a.insert(a.text().len() as u32, &i.to_string()),
            )
            .await;
        }
        assert_eq!(a.text(), "01234");
        assert_eq!(live_text(&app, &token, "doc").await, "01234");

        let listed = all_versions(&app, &token, "doc").await;
        let autos: Vec<&Value> = listed.iter().filter(|v| v["automatic"] == true).collect();
        assert_eq!(autos.len(), 2, "{name}: {listed:?}");
        let mut contents = Vec::new();
        for auto in &autos {
            let read = version_of(&app, &token, "doc", auto).await;
            contents.push(read["content"]["content"].as_str().unwrap().to_owned());
        }
        assert_eq!(
            contents,
            vec![before_each[3].clone(), before_each[2].clone()],
            "{name}: the newest two are kept"
        );
        assert_eq!(contents, vec!["0123", "012"]);
        let kept: Vec<&Value> = listed.iter().filter(|v| v["automatic"] == false).collect();
        assert_eq!(kept, vec![&summary(&unlabelled), &summary(&labelled)], "{name}");
        assert_eq!(listed.len(), 4, "{name}");
    }
}

#[tokio::test]
async fn a_compaction_saves_an_automatic_version_when_they_are_on() {
    for backend in backends() {
        let name = backend.name();
        let app = spawn_app_with(&backend, |c| {
            c.compact_after_updates = 5;
            c.auto_version_after = Duration::from_secs(600);
        })
        .await;
        let token = app.token("alice");
        let a = YPeer::new(1);
        let mut texts = Vec::new();
        for i in 0..8 {
            rest_update(
                &app,
                &token,
                "doc",
                &a.insert(a.text().len() as u32, &format!("<{i}>")),
            )
            .await;
            texts.push(a.text());
        }
        let saved = eventually("a compaction saved a version", || {
            let app = &app;
            let token = token.clone();
            async move {
                let versions = automatic(app, &token, "doc").await;
                versions.into_iter().next()
            }
        })
        .await;
        assert_eq!(saved["created_by"], "tandem", "{name}");
        assert_eq!(saved["label"], Value::Null, "{name}");
        let read = version_of(&app, &token, "doc", &saved).await;
        let text = read["content"]["content"].as_str().unwrap().to_owned();
        // Compacted once more than 5 updates were stored: at least 6 of them.
        assert!(
            texts[5..].contains(&text),
            "{name}: the version is the document as compacted, got {text:?}"
        );
        assert_eq!(text_of_state(&read["state"]), text);
        let (_, doc) = app.get("/api/v1/documents/doc", Some(&token)).await;
        assert!(
            doc["updates_since_snapshot"].as_u64().unwrap() < 8,
            "{name}: the log was compacted: {doc}"
        );
        assert_eq!(live_text(&app, &token, "doc").await, a.text());
    }
}

#[tokio::test]
async fn without_automatic_versions_nothing_is_saved_by_quiet_or_compaction() {
    for backend in backends() {
        let name = backend.name();
        let app = spawn_app_with(&backend, |c| {
            c.compact_after_updates = 5;
            c.auto_version_after = Duration::ZERO;
        })
        .await;
        let token = app.token("alice");
        let a = YPeer::new(1);
        rest_update(&app, &token, "doc", &a.insert(0, "x")).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        for i in 0..8 {
            rest_update(
                &app,
                &token,
                "doc",
                &a.insert(a.text().len() as u32, &i.to_string()),
            )
            .await;
        }
        eventually("compaction folded the log", || {
            let app = &app;
            let token = token.clone();
            async move {
                let (_, doc) = app.get("/api/v1/documents/doc", Some(&token)).await;
                (doc["updates_since_snapshot"].as_u64().unwrap() < 9).then_some(())
            }
        })
        .await;
        assert_eq!(
            all_versions(&app, &token, "doc").await,
            Vec::<Value>::new(),
            "{name}"
        );
        assert_eq!(live_text(&app, &token, "doc").await, a.text());
    }
}
