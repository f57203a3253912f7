//! `GET /api/v1/admin/dashboard`, the data behind `/dashboard`: admin only,
//! rooms with members per user and device. The page itself is tested in
//! headless Chromium (tests/browser/dashboard.test.mjs).

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn the_dashboard_lists_rooms_members_and_devices_for_admins_only() {
    let app = spawn_app().await;
    let admin = app.token_with("ops", |c| c.role = tandem::auth::Role::Admin);
    let (status, body) = app
        .get("/api/v1/admin/dashboard", Some(&app.token("alice")))
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "forbidden");
    let (status, body) = app.get("/api/v1/admin/dashboard", None).await;
    assert_eq!(status, 401, "{body}");

    let mut laptop = app.connect("alice").await;
    laptop.join("board").await;
    let phone_token = app.token_with("alice", |c| c.name = Some("Alice".into()));
    let mut phone = app.connect_with(&phone_token, Some(PHONE_UA)).await.unwrap();
    phone.join("board").await;
    phone
        .send(json!({"type": "cursor_move", "document_id": "board", "cursor": {"line": 3, "column": 4}}))
        .await;
    phone
        .send(json!({"type": "editing_start", "document_id": "board"}))
        .await;
    let mut bob = app.connect("bob").await;
    bob.join("notes").await;

    let body = eventually("the phone's cursor and editing on the dashboard", || async {
        let (status, body) = app.get("/api/v1/admin/dashboard", Some(&admin)).await;
        assert_eq!(status, 200, "{body}");
        let phone_device = &body["rooms"][0]["by_user"][0]["devices"][1];
        (phone_device["is_editing"] == true && phone_device["cursor"]["line"] == 3).then_some(body)
    })
    .await;
    assert_eq!(body["connections"], 3);
    assert_eq!(body["connections_by_protocol"]["json"], 3);
    assert_eq!(body["redis"], "disabled");
    assert!(body["messages_processed"].as_u64().unwrap() >= 5, "{body}");
    let rooms = body["rooms"].as_array().unwrap();
    assert_eq!(rooms.len(), 2, "{body}");
    assert_eq!(rooms[0]["document_id"], "board");
    assert_eq!(rooms[0]["members"], 2);
    let alice = &rooms[0]["by_user"][0];
    assert_eq!(alice["user_id"], "alice");
    let devices: Vec<&str> = alice["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_type"].as_str().unwrap())
        .collect();
    assert_eq!(devices, ["desktop", "mobile"]);
    assert_eq!(rooms[1]["document_id"], "notes");
    assert_eq!(rooms[1]["by_user"][0]["user_id"], "bob");

    let response = reqwest::get(app.url("/dashboard")).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let page = response.text().await.unwrap();
    assert!(page.contains("/api/v1/admin/dashboard"), "the page polls the API");
    drop((laptop, phone, bob));
}
