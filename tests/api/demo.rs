//! `/demo` and `/demo/token`: served with `--demo` (or the development
//! secret on loopback), 404 otherwise; demo tokens connect as the name's user.

use serde_json::Value;

use crate::helpers::*;

async fn get_raw(app: &TestApp, path: &str) -> (u16, String, String) {
    let response = reqwest::get(app.url(path)).await.expect("http");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

#[tokio::test]
async fn the_demo_serves_its_page_bundle_and_tokens() {
    let app = spawn_app_with(&Backend::Sqlite, |config| config.demo = true).await;
    let (status, content_type, body) = get_raw(&app, "/demo").await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(body.contains("/demo/app.js"), "the page loads its bundle: {body}");
    let (status, content_type, body) = get_raw(&app, "/demo/app.js").await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/javascript"), "{content_type}");
    assert!(
        body.len() > 10_000,
        "the bundle holds the client and Yjs ({} bytes)",
        body.len()
    );

    let (status, body) = app.get("/demo/token?name=Ada%20L.", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "demo-adal");
    assert_eq!(body["name"], "Ada L.");
    let token = body["token"].as_str().unwrap();
    let client = app
        .connect_with(token, Some(DESKTOP_UA))
        .await
        .expect("demo token connects");
    assert!(!client.session_id.is_empty());
    let (status, body) = app.get("/api/v1/users/demo-adal/sessions", Some(token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sessions"].as_array().map(Vec::len), Some(1), "{body}");
}

#[tokio::test]
async fn demo_tokens_need_a_printable_name() {
    let app = spawn_app_with(&Backend::Sqlite, |config| config.demo = true).await;
    let long = "x".repeat(65);
    for query in [
        "",
        "?name=",
        "?name=%20%20",
        "?name=a%0Ab",
        &format!("?name={long}"),
    ] {
        let (status, body): (u16, Value) = app.get(&format!("/demo/token{query}"), None).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"], "invalid_message", "{query}: {body}");
    }
}

#[tokio::test]
async fn without_the_demo_flag_a_configured_secret_hides_the_demo() {
    let app = spawn_app().await;
    for path in ["/demo", "/demo/app.js", "/demo/token?name=Ada"] {
        let (status, body) = app.get(path, None).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["error"], "not_found", "{path}: {body}");
    }
}

#[test]
fn the_development_secret_on_loopback_implies_the_demo() {
    let mut config = tandem::config::Config::defaults_without_env();
    assert!(config.demo_enabled(), "cargo run --release serves /demo");
    config.jwt_secret = Some(tandem::config::Secret::new("a real secret"));
    assert!(!config.demo_enabled());
    config.demo = true;
    assert!(config.demo_enabled());
}
