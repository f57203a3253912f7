//! REST: presence per document, sessions per user, health, stats, JSON errors.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn document_presence_lists_everyone_and_groups_devices_per_user() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    let mut alice_phone = app
        .connect_with(&app.token("alice"), Some(PHONE_UA))
        .await
        .unwrap();
    let mut bob = app.connect("bob").await;
    alice.join("doc-1").await;
    alice_phone.join("doc-1").await;
    bob.join("doc-1").await;
    alice.send(json!({"type": "cursor_move", "document_id": "doc-1", "cursor": {"line": 4, "column": 2}, "id": 1})).await;
    alice.recv_until("ack").await;

    let (status, body) = app
        .get("/api/v1/presence/document/doc-1", Some(&app.token("carol")))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["document_id"], "doc-1");
    assert_eq!(body["users"].as_array().unwrap().len(), 3);
    let by_user = body["by_user"].as_array().unwrap();
    assert_eq!(by_user.len(), 2);
    let alice_group = by_user.iter().find(|g| g["user_id"] == "alice").unwrap();
    let devices = alice_group["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 2);
    let mut types: Vec<_> = devices
        .iter()
        .map(|d| d["device_type"].as_str().unwrap())
        .collect();
    types.sort();
    assert_eq!(types, ["desktop", "mobile"]);
    assert!(
        devices
            .iter()
            .any(|d| d["cursor"] == json!({"line": 4, "column": 2}))
    );

    let (status, body) = app
        .get("/api/v1/presence/document/empty-doc", Some(&app.token("carol")))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["users"], json!([]));
}

#[tokio::test]
async fn rest_refuses_missing_tokens_and_documents_outside_the_token() {
    let app = spawn_app().await;
    let (status, body) = app.get("/api/v1/presence/document/doc-1", None).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "unauthorized");
    let (status, body) = app.get("/api/v1/presence/document/doc-1", Some("garbage")).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "unauthorized");
    let limited = app.token_with("alice", |c| c.docs = Some(vec!["mine".into()]));
    let (status, body) = app.get("/api/v1/presence/document/doc-1", Some(&limited)).await;
    assert_eq!(status, 403);
    assert_eq!(body["error"], "forbidden");
    let long = "x".repeat(300);
    let (status, body) = app
        .get(
            &format!("/api/v1/presence/document/{long}"),
            Some(&app.token("a")),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_document_id");
}

#[tokio::test]
async fn a_user_reads_only_their_own_sessions_with_devices() {
    let app = spawn_app().await;
    let mut laptop = app.connect("alice").await;
    let _phone = app
        .connect_with(&app.token("alice"), Some(PHONE_UA))
        .await
        .unwrap();
    let _bob = app.connect("bob").await;
    laptop.join("doc-9").await;

    let token = app.token("alice");
    let body = eventually("alice's current document is recorded", || {
        let app = &app;
        let token = token.clone();
        async move {
            let (status, body) = app.get("/api/v1/users/alice/sessions", Some(&token)).await;
            assert_eq!(status, 200);
            let sessions = body["sessions"].as_array().unwrap();
            sessions
                .iter()
                .any(|s| s["current_document_id"] == "doc-9")
                .then_some(body)
        }
    })
    .await;
    let sessions = body["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    let mut types: Vec<_> = sessions
        .iter()
        .map(|s| s["device_type"].as_str().unwrap())
        .collect();
    types.sort();
    assert_eq!(types, ["desktop", "mobile"]);
    assert!(
        sessions
            .iter()
            .all(|s| s["user_agent"].as_str().is_some() && s["last_seen_at"].as_str().is_some())
    );
    assert!(
        sessions
            .iter()
            .any(|s| s["session_id"] == laptop.session_id.as_str())
    );

    let (status, body) = app.get("/api/v1/users/bob/sessions", Some(&token)).await;
    assert_eq!(status, 403);
    assert_eq!(body["error"], "forbidden");
}

#[tokio::test]
async fn health_stats_and_unknown_routes_answer_in_json() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    alice.join("doc-1").await;
    alice.send(json!({"type": "heartbeat"})).await;
    alice.recv_type("heartbeat_ack").await;

    let (status, health) = app.get("/health", None).await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["database"], "ok");
    assert_eq!(health["redis"], "disabled");
    assert_eq!(health["connections"], 1);
    assert_eq!(health["rooms"], 1);

    let (status, stats) = app.get("/stats", None).await;
    assert_eq!(status, 200);
    assert_eq!(stats["rooms"], json!([{"document_id": "doc-1", "members": 1}]));
    assert!(stats["messages_processed"].as_u64().unwrap() >= 2);
    assert_eq!(stats["connections_by_protocol"]["json"], 1);

    let (status, body) = app.get("/no/such/route", None).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "not_found");
    let (status, body) = app.post("/health", None, &json!({})).await;
    assert_eq!(status, 405);
    assert_eq!(body["error"], "method_not_allowed");

    let (status, spec) = app.get("/openapi.json", None).await;
    assert_eq!(status, 200);
    assert!(spec["paths"]["/api/v1/presence/document/{document_id}"].is_object());
    for (path, method) in [
        ("/api/v1/documents/{document_id}/json", "get"),
        ("/api/v1/documents/{document_id}/ops", "post"),
        ("/api/v1/documents/{document_id}/versions", "get"),
        ("/api/v1/documents/{document_id}/versions", "post"),
        ("/api/v1/documents/{document_id}/versions/{version_id}", "get"),
        (
            "/api/v1/documents/{document_id}/versions/{version_id}/restore",
            "post",
        ),
        ("/api/v1/admin/webhooks", "get"),
    ] {
        assert!(
            spec["paths"][path][method].is_object(),
            "{method} {path} in the spec"
        );
    }
    let error = &spec["components"]["schemas"]["ErrorBody"]["properties"];
    assert!(
        error["index"].is_object(),
        "invalid_op's index is documented: {error}"
    );
}

#[tokio::test]
async fn a_plain_get_on_the_websocket_route_is_a_json_error() {
    let app = spawn_app().await;
    let (status, body) = app.get(&format!("/ws?token={}", app.token("alice")), None).await;
    assert_eq!(status, 400);
    assert!(body["message"].as_str().is_some());
}
