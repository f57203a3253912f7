//! Limits that keep one client from hurting the rest: queued bytes per
//! connection, handshake timeout and connection caps, the REST rate limit,
//! REST reads that leave no rooms, paginated sessions, close frames for
//! protocol violations, and the token time claims.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_tungstenite::{
    MaybeTlsStream,
    tungstenite::{self, Message, client::IntoClientRequest},
};

use crate::helpers::*;

/// An upgrade that must be refused: its status and JSON body.
async fn refused_upgrade(app: &TestApp, path: &str, token: &str) -> (u16, Value) {
    let request = app
        .ws_url(&format!("{path}?token={token}"))
        .into_client_request()
        .unwrap();
    match tokio_tungstenite::connect_async(request).await {
        Err(tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response.body().clone().unwrap_or_default();
            (status, serde_json::from_slice(&body).expect("JSON error body"))
        }
        other => panic!("expected an HTTP error, got {:?}", other.map(|_| ())),
    }
}

/// Read until the server ends the connection: end of file, a reset, or (for
/// a server that answers before closing) the response it sent.
async fn read_until_closed(socket: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(WAIT, socket.read(&mut buf))
            .await
            .expect("the server should have closed the connection");
        match read {
            Ok(0) | Err(_) => return received,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// The raw socket under a test client, for frames a well-behaved client cannot send.
fn raw_socket(client: &mut Client) -> &mut TcpStream {
    match client.stream.get_mut() {
        MaybeTlsStream::Plain(socket) => socket,
        _ => panic!("tests use plain TCP"),
    }
}

// Item 5: a client that never reads.

#[tokio::test]
async fn a_client_that_never_reads_is_closed_once_its_queued_bytes_pass_the_bound() {
    let app = spawn_app_with(&Backend::Sqlite, |c| c.max_queued_bytes = 1024 * 1024).await;
    let peer = YPeer::new(1);
    let update = peer.insert(0, &"x".repeat(600 * 1024));
    let token = app.token("alice");
    let (status, body) = app
        .post(
            "/api/v1/documents/big/updates",
            Some(&token),
            &json!({"update": b64::encode(&update)}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut alice = app.connect("alice").await;
    alice.join("big").await;

    // Ask for the whole ~800 KB (base64) document 60 times without reading.
    const REQUESTS: usize = 60;
    for _ in 0..REQUESTS {
        alice
            .send(json!({"type": "sync_step1", "document_id": "big", "state_vector": "AA=="}))
            .await;
    }
    eventually("the server to drop the non-reading connection", || async {
        (app.state.hub.connection_count() == 0).then_some(())
    })
    .await;

    // What was already on the wire arrives, then the end: never all the replies.
    let mut replies = 0;
    let close = loop {
        match tokio::time::timeout(WAIT, alice.stream.next())
            .await
            .expect("the connection ends")
        {
            Some(Ok(Message::Text(text))) if text.contains("sync_step2") => replies += 1,
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break None,
        }
    };
    assert!(replies < REQUESTS, "all {replies} replies were queued");
    if let Some(frame) = close {
        assert_eq!(u16::from(frame.code), 4001, "{frame:?}");
    }
}

// Item 8: silent sockets, pending handshakes, connection caps.

#[tokio::test]
async fn silent_and_half_sent_connections_are_dropped_after_the_handshake_timeout() {
    let app = spawn_app_with(&Backend::Sqlite, |c| {
        c.handshake_timeout = Duration::from_millis(300)
    })
    .await;
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    let mut half_sent = TcpStream::connect(app.addr).await.unwrap();
    half_sent
        .write_all(b"GET /ws HTTP/1.1\r\nHost: tandem\r\n")
        .await
        .unwrap();
    for socket in [&mut silent, &mut half_sent] {
        let received = read_until_closed(socket).await;
        assert!(received.is_empty(), "{}", String::from_utf8_lossy(&received));
    }
    // A prompt client is unaffected.
    let (status, _) = app.get("/health", None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn past_the_pending_handshake_cap_new_connections_get_a_json_503() {
    let app = spawn_app_with(&Backend::Sqlite, |c| c.max_pending_handshakes = 2).await;
    let first = TcpStream::connect(app.addr).await.unwrap();
    let second = TcpStream::connect(app.addr).await.unwrap();
    let mut third = TcpStream::connect(app.addr).await.unwrap();
    let response = String::from_utf8(read_until_closed(&mut third).await).unwrap();
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    let body: Value = serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["error"], "too_many_connections", "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));

    drop((first, second));
    eventually("a slot to free up", || async {
        let response = reqwest::get(app.url("/health")).await.ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn past_the_per_user_cap_an_upgrade_gets_a_json_429() {
    let app = spawn_app_with(&Backend::Sqlite, |c| c.max_connections_per_user = 2).await;
    let mut first = app.connect("alice").await;
    let _second = app.connect("alice").await;
    let token = app.token("alice");
    for path in ["/ws", "/yjs/doc-1"] {
        let (status, body) = refused_upgrade(&app, path, &token).await;
        assert_eq!(status, 429, "{path}: {body}");
        assert_eq!(body["error"], "too_many_connections", "{path}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| m.contains("user")),
            "{body}"
        );
    }
    // Other users are not affected, and a closed connection frees its slot.
    app.connect("bob").await.assert_alive().await;
    first.stream.close(None).await.unwrap();
    eventually("alice's slot to free up", || async {
        app.connect_with(&token, None).await.ok()
    })
    .await
    .assert_alive()
    .await;
}

#[tokio::test]
async fn past_the_per_ip_cap_an_upgrade_gets_a_json_429() {
    let app = spawn_app_with(&Backend::Sqlite, |c| c.max_connections_per_ip = 2).await;
    let _alice = app.connect("alice").await;
    let _bob = app.connect("bob").await;
    let (status, body) = refused_upgrade(&app, "/ws", &app.token("carol")).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"], "too_many_connections");
    assert!(
        body["message"].as_str().is_some_and(|m| m.contains("IP")),
        "{body}"
    );
    assert_eq!(app.state.hub.connection_count(), 2);
}

// Item 9: REST rate limit, rooms left behind by reads, pagination, close frames.

#[tokio::test]
async fn rest_requests_over_the_rate_limit_get_a_json_429_with_retry_after() {
    let app = spawn_app_with(&Backend::Sqlite, |c| {
        c.rest_rate_limit_per_second = 1;
        c.rest_rate_limit_burst = 3;
    })
    .await;
    let token = app.token("alice");
    let client = reqwest::Client::new();
    let mut limited = None;
    for _ in 0..10 {
        let response = client
            .get(app.url("/api/v1/users/alice/sessions"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        if response.status() == 429 {
            limited = Some(response);
            break;
        }
        assert_eq!(response.status(), 200);
    }
    let response = limited.expect("no request was rate limited");
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited", "{body}");
    // Only the REST API is limited.
    let (status, _) = app.get("/health", None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn rest_reads_of_documents_leave_no_rooms_behind() {
    let app = spawn_app().await;
    let token = app.token("alice");
    for n in 0..5 {
        let (status, body) = app
            .get(&format!("/api/v1/documents/read-{n}"), Some(&token))
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, _) = app
            .get_text(&format!("/api/v1/documents/text-{n}/text/content"), &token)
            .await;
        assert!(status == 200 || status == 404, "{status}");
    }
    assert_eq!(app.state.hub.rooms_snapshot().len(), 0, "rooms were left behind");

    // A room with members stays, members and all.
    let mut alice = app.connect("alice").await;
    alice.join("busy").await;
    let (status, _) = app.get("/api/v1/documents/busy", Some(&token)).await;
    assert_eq!(status, 200);
    let rooms = app.state.hub.rooms_snapshot();
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0].state().members().len(), 1);
    alice.assert_alive().await;
}

#[tokio::test]
async fn user_sessions_are_paginated_with_a_cursor() {
    let app = spawn_app().await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(app.connect("alice").await);
    }
    let token = app.token("alice");
    let (status, first) = app
        .get("/api/v1/users/alice/sessions?limit=2", Some(&token))
        .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["user_id"], "alice");
    assert_eq!(first["sessions"].as_array().unwrap().len(), 2);
    let after = first["next_after"].as_str().expect("a next-page cursor");
    let (status, second) = app
        .get(
            &format!("/api/v1/users/alice/sessions?limit=2&after={after}"),
            Some(&token),
        )
        .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["sessions"].as_array().unwrap().len(), 1);
    assert!(second["next_after"].is_null(), "{second}");
    let mut seen: Vec<String> = first["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["sessions"].as_array().unwrap())
        .map(|s| s["session_id"].as_str().unwrap().to_owned())
        .collect();
    let mut expected: Vec<String> = clients.iter().map(|c| c.session_id.clone()).collect();
    seen.sort();
    expected.sort();
    assert_eq!(seen, expected);

    // Default page: everything here, no cursor.
    let (_, all) = app.get("/api/v1/users/alice/sessions", Some(&token)).await;
    assert_eq!(all["sessions"].as_array().unwrap().len(), 3);
    assert!(all["next_after"].is_null());

    for query in ["limit=0", "limit=1001", "limit=ten", "after=not-a-uuid"] {
        let (status, body) = app
            .get(&format!("/api/v1/users/alice/sessions?{query}"), Some(&token))
            .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body["error"].as_str().is_some(), "{query}: {body}");
    }
}

/// A masked client frame with the given first byte (FIN, RSV, opcode) and payload.
fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut frame = vec![first, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

#[tokio::test]
async fn protocol_violations_get_a_1002_close_frame() {
    let app = spawn_app().await;
    let cases: [(&str, Vec<u8>); 3] = [
        ("unmasked frame", vec![0x81, 0x02, b'h', b'i']),
        ("reserved bits", client_frame(0xC1, b"hi")),
        ("unknown opcode", client_frame(0x83, b"hi")),
    ];
    for (what, bytes) in cases {
        let mut alice = app.connect("alice").await;
        raw_socket(&mut alice).write_all(&bytes).await.unwrap();
        let frame = alice
            .recv_close()
            .await
            .unwrap_or_else(|| panic!("{what}: no close frame"));
        assert_eq!(u16::from(frame.code), 1002, "{what}: {frame:?}");
    }
}

#[tokio::test]
async fn invalid_utf8_text_gets_a_1007_close_frame_on_both_endpoints() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    raw_socket(&mut alice)
        .write_all(&client_frame(0x81, &[0xff, 0xfe, 0xfd]))
        .await
        .unwrap();
    let frame = alice.recv_close().await.expect("a close frame");
    assert_eq!(u16::from(frame.code), 1007, "{frame:?}");

    let request = app
        .ws_url(&format!("/yjs/doc-1?token={}", app.token("bob")))
        .into_client_request()
        .unwrap();
    let (mut bob, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    match bob.get_mut() {
        MaybeTlsStream::Plain(socket) => socket
            .write_all(&client_frame(0x81, &[0xc3, 0x28]))
            .await
            .unwrap(),
        _ => unreachable!(),
    }
    let close = loop {
        match tokio::time::timeout(WAIT, bob.next()).await.expect("close") {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(u16::from(close.expect("a close frame").code), 1007);
}

// Item 12: token time claims.

fn raw_token(claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn a_token_not_valid_before_a_future_time_is_refused() {
    let app = spawn_app().await;
    let now = jsonwebtoken::get_current_timestamp();
    let token = raw_token(&json!({"sub": "alice", "exp": now + 3600, "nbf": now + 600}));
    let (status, body) = refused_upgrade(&app, "/ws", &token).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "unauthorized");
    assert!(
        body["message"].as_str().unwrap().contains("not valid yet"),
        "{body}"
    );
    let (status, body) = app.get("/api/v1/users/alice/sessions", Some(&token)).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("not valid yet"),
        "{body}"
    );

    // A past nbf is fine.
    let token = raw_token(&json!({"sub": "alice", "exp": now + 3600, "nbf": now - 60}));
    app.connect_with(&token, None).await.unwrap().assert_alive().await;
}

#[tokio::test]
async fn a_token_without_exp_or_sub_names_the_missing_claim() {
    let app = spawn_app().await;
    let now = jsonwebtoken::get_current_timestamp();
    for (claims, message) in [
        (
            json!({"sub": "alice"}),
            r#"token is malformed: missing required claim "exp""#,
        ),
        (
            json!({"exp": now + 3600}),
            r#"token is malformed: missing required claim "sub""#,
        ),
    ] {
        let token = raw_token(&claims);
        let (status, body) = refused_upgrade(&app, "/ws", &token).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["message"], message, "{body}");
        let (status, body) = app.get("/api/v1/users/alice/sessions", Some(&token)).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["message"], message, "{body}");
    }
}
