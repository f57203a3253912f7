//! Authentication of the upgrade: 401 with a JSON body before any upgrade.

use serde_json::json;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

use crate::helpers::*;

async fn refused_upgrade(app: &TestApp, token: Option<&str>) -> (u16, serde_json::Value) {
    let path = match token {
        Some(token) => format!("/ws?token={token}"),
        None => "/ws".to_owned(),
    };
    let request = app.ws_url(&path).into_client_request().unwrap();
    match tokio_tungstenite::connect_async(request).await {
        Err(tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response.body().clone().unwrap_or_default();
            (status, serde_json::from_slice(&body).expect("JSON error body"))
        }
        other => panic!("expected an HTTP error, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn missing_bad_and_expired_tokens_are_refused_before_the_upgrade() {
    let app = spawn_app().await;
    let expired = app.token_with("alice", |c| c.exp = jsonwebtoken::get_current_timestamp() - 600);
    let foreign = tandem::auth::jwt::mint_hs256(
        &tandem::config::Secret::new("someone-else"),
        &tandem::auth::Claims::for_user("alice", std::time::Duration::from_secs(60)),
    )
    .unwrap();
    for (token, fragment) in [
        (None, "missing"),
        (Some("not-a-jwt"), "malformed"),
        (Some(expired.as_str()), "expired"),
        (Some(foreign.as_str()), "signature"),
    ] {
        let (status, body) = refused_upgrade(&app, token).await;
        assert_eq!(status, 401, "{token:?}");
        assert_eq!(body["error"], "unauthorized");
        assert!(body["message"].as_str().unwrap().contains(fragment), "{body}");
    }
    assert_eq!(app.state.hub.connection_count(), 0);
}

#[tokio::test]
async fn a_bearer_header_authenticates_the_upgrade() {
    let app = spawn_app().await;
    let mut request = app.ws_url("/ws").into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", app.token("alice")).parse().unwrap(),
    );
    let (mut stream, _) = tokio_tungstenite::connect_async(request).await.expect("upgrade");
    let message = futures_util::StreamExt::next(&mut stream).await.unwrap().unwrap();
    let connected: serde_json::Value = serde_json::from_str(message.to_text().unwrap()).unwrap();
    assert_eq!(connected["type"], "connected");
    assert_eq!(connected["user_id"], "alice");
}

#[tokio::test]
async fn a_token_limited_to_some_documents_cannot_join_others() {
    let app = spawn_app().await;
    let token = app.token_with("alice", |c| c.docs = Some(vec!["team-*".into()]));
    let mut alice = app.connect_with(&token, None).await.unwrap();
    let list = alice.join("team-1").await;
    assert_eq!(list["users"].as_array().unwrap().len(), 1);
    alice
        .expect_error(
            json!({"type": "join_document", "document_id": "secret"}),
            "forbidden",
        )
        .await;
    alice.assert_alive().await;
}

#[tokio::test]
async fn an_authenticated_request_that_is_not_an_upgrade_gets_a_json_400() {
    let app = spawn_app().await;
    let token = app.token("alice");
    for path in ["/ws", "/yjs/doc-1"] {
        let (status, body) = app.get(path, Some(&token)).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"], "bad_request", "{path}");
        assert!(
            body["message"].as_str().unwrap().contains("upgrade"),
            "{path}: {body}"
        );
    }
    assert_eq!(app.state.hub.connection_count(), 0);
}
