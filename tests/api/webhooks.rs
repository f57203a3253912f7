//! Webhooks against a real local HTTP receiver (raw TCP, so the test
//! controls failures and downtime): signed, at least once, in order per
//! document, debounced, surviving a kill -9 of the gateway while the
//! receiver is down, and each delivered by one instance of several.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use crate::helpers::*;

const HOOK_SECRET: &str = "whsec-test";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    signature: String,
    body: String,
    event: Value,
    /// The status it was answered with.
    status: u16,
}

/// A webhook receiver: answers 500 to the first `fail_first` requests, then 200.
struct Receiver {
    port: u16,
    log: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(port: u16, fail_first: usize) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(AtomicUsize::new(fail_first));
        let task = tokio::spawn({
            let log = log.clone();
            async move {
                loop {
                    let Ok((mut socket, _)) = listener.accept().await else {
                        return;
                    };
                    let (log, failures) = (log.clone(), failures.clone());
                    tokio::spawn(async move {
                        let Some((headers, body)) = read_request(&mut socket).await else {
                            return;
                        };
                        let failing = failures
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok();
                        let status = if failing { 500 } else { 200 };
                        let signature = headers.get("tandem-signature").cloned().unwrap_or_default();
                        let event = serde_json::from_str(&body).unwrap_or(Value::Null);
                        log.lock().unwrap().push(Received {
                            signature,
                            body,
                            event,
                            status,
                        });
                        let reply =
                            format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                        let _ = socket.write_all(reply.as_bytes()).await;
                    });
                }
            }
        });
        Self { port, log, task }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Requests answered 200, in arrival order.
    fn delivered(&self) -> Vec<Received> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.status == 200)
            .cloned()
            .collect()
    }

    fn all(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }

    /// Go down: the port refuses connections.
    fn stop(self) -> u16 {
        self.task.abort();
        self.port
    }
}

async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<(HashMap<String, String>, String)> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..header_end]).to_string();
    let headers: HashMap<String, String> = head
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers.get("content-length")?.parse().ok()?;
    while buffer.len() < header_end + length {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8(buffer[header_end..header_end + length].to_vec()).ok()?;
    Some((headers, body))
}

/// `t=<unix>,v1=<hex HMAC-SHA256 of "t.body">`, checked independently of the server's code.
fn verify(received: &Received) {
    let (t, v1) = received
        .signature
        .split_once(',')
        .and_then(|(t, v1)| Some((t.strip_prefix("t=")?, v1.strip_prefix("v1=")?)))
        .unwrap_or_else(|| panic!("malformed signature {:?}", received.signature));
    let t: i64 = t.parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - t).abs() < 300, "signed now");
    let mut mac = Hmac::<Sha256>::new_from_slice(HOOK_SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.{}", received.body).as_bytes());
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(v1, expected, "signature of {}", received.body);
}

/// The event types delivered for `order_key`'s document, in delivery order, each once.
fn types_for(received: &[Received], document_id: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    received
        .iter()
        .filter(|r| r.event["data"]["document_id"] == document_id)
        .filter(|r| seen.insert(r.event["id"].as_str().unwrap().to_owned()))
        .map(|r| r.event["type"].as_str().unwrap().to_owned())
        .collect()
}

fn hooked(config: &mut tandem::Config, url: String) {
    config.webhook_urls = vec![url];
    config.webhook_secret = Some(tandem::config::Secret::new(HOOK_SECRET));
    config.webhook_debounce = Duration::from_millis(300);
}

#[tokio::test]
async fn events_are_signed_debounced_retried_and_in_order_per_document() {
    let receiver = Receiver::start(0, 2).await;
    let app = spawn_app_with(&Backend::Sqlite, |c| hooked(c, receiver.url())).await;
    let mut alice = app.connect("alice").await;
    alice.join("hooked").await;
    let peer = YPeer::new(77);
    for (i, word) in ["one ", "two ", "three "].iter().enumerate() {
        let update = peer.insert(peer.text().len() as u32, word);
        alice
            .send(json!({"type": "sync_update", "document_id": "hooked", "update": b64::encode(&update), "id": i}))
            .await;
        alice.recv_until("ack").await;
    }
    let (status, _) = app
        .post(
            "/api/v1/documents/hooked/ops",
            Some(&app.token("agent")),
            &json!({"ops": [{"op": "map_set", "path": ["meta"], "key": "by", "value": "agent"}]}),
        )
        .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    alice
        .send(json!({"type": "leave_document", "document_id": "hooked"}))
        .await;
    drop(alice);

    let delivered = eventually("every event delivered", || {
        let delivered = receiver.delivered();
        let kinds: Vec<String> = delivered
            .iter()
            .map(|r| r.event["type"].as_str().unwrap_or("").to_owned())
            .collect();
        let done = [
            "presence.joined",
            "document.updated",
            "presence.left",
            "session.ended",
        ]
        .iter()
        .all(|k| kinds.iter().any(|got| got == k));
        async move { done.then_some(delivered) }
    })
    .await;
    for received in receiver.all() {
        verify(&received);
    }
    // Two refusals were retried: the same event ids came again.
    let all = receiver.all();
    assert_eq!(all.iter().filter(|r| r.status == 500).count(), 2);
    for failed in all.iter().filter(|r| r.status == 500) {
        assert!(
            delivered.iter().any(|d| d.event["id"] == failed.event["id"]),
            "a refused delivery is retried with its id"
        );
    }
    let order = types_for(&delivered, "hooked");
    assert_eq!(
        order,
        ["presence.joined", "document.updated", "presence.left"],
        "in order per document, edits within the debounce in one event"
    );
    let updated = delivered
        .iter()
        .find(|r| r.event["type"] == "document.updated")
        .unwrap();
    let mut users: Vec<&str> = updated.event["data"]["user_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    users.sort();
    assert_eq!(users, ["agent", "alice"]);
    assert!(updated.event["data"]["state_vector"].is_string());
    let joined = delivered
        .iter()
        .find(|r| r.event["type"] == "presence.joined")
        .unwrap();
    assert_eq!(joined.event["data"]["user_id"], "alice");
    assert_eq!(joined.event["data"]["first_device"], true);
    let left = delivered
        .iter()
        .find(|r| r.event["type"] == "presence.left")
        .unwrap();
    assert_eq!(left.event["data"]["last_device"], true);
    assert_eq!(left.event["data"]["reason"], "left");
    let ended = delivered
        .iter()
        .find(|r| r.event["type"] == "session.ended")
        .unwrap();
    assert_eq!(ended.event["data"]["user_id"], "alice");
    // Unique ids per event.
    let ids: HashSet<&str> = delivered
        .iter()
        .map(|r| r.event["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids.len(),
        delivered.len(),
        "each event delivered once after its 2xx"
    );

    // Nothing left over.
    let admin = app.token_with("root", |c| c.role = tandem::auth::Role::Admin);
    let (status, body) = app.get("/api/v1/admin/webhooks", Some(&admin)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["enabled"], true);
    assert_eq!(body["pending"], json!([]), "{body}");
    let (status, _) = app.get("/api/v1/admin/webhooks", Some(&app.token("alice"))).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn events_survive_a_kill_9_while_the_receiver_is_down() {
    for backend in backends() {
        // A port that refuses connections until the receiver comes up.
        let port = Receiver::start(0, 0).await.stop();
        let url = format!("http://127.0.0.1:{port}/hook");
        let database = TestDatabase::create(&backend).await;
        let env = [
            ("TANDEM_WEBHOOK_URL", url.as_str()),
            ("TANDEM_WEBHOOK_SECRET", HOOK_SECRET),
            ("TANDEM_WEBHOOK_DEBOUNCE", "200ms"),
        ];
        let gateway = Gateway::start(&database.url, &env);
        let secret = tandem::config::Secret::new(SECRET);
        let mint = |user: &str, admin: bool| {
            let mut claims = tandem::auth::Claims::for_user(user, Duration::from_secs(600));
            if admin {
                claims.role = tandem::auth::Role::Admin;
            }
            tandem::auth::jwt::mint_hs256(&secret, &claims).unwrap()
        };
        let (agent, admin) = (mint("agent", false), mint("root", true));
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{}", gateway.port);
        for i in 0..3 {
            let response = http
                .post(format!("{base}/api/v1/documents/crash/ops"))
                .bearer_auth(&agent)
                .json(&json!({"ops": [{"op": "map_set", "path": ["m"], "key": format!("k{i}"), "value": i}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 200);
            // Past the debounce: one document.updated per op.
            tokio::time::sleep(Duration::from_millis(350)).await;
        }
        let response = http
            .post(format!("{base}/api/v1/documents/crash/versions"))
            .bearer_auth(&agent)
            .json(&json!({"label": "v1"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        // The gateway has tried and failed: the admin view shows it.
        let pending = eventually("attempts recorded", || {
            let (http, base, admin) = (http.clone(), base.clone(), admin.clone());
            async move {
                let body: Value = http
                    .get(format!("{base}/api/v1/admin/webhooks"))
                    .bearer_auth(&admin)
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                let pending = body["pending"].as_array()?.clone();
                (pending.len() == 4 && pending.iter().any(|p| p["attempts"].as_i64() > Some(0)))
                    .then_some(pending)
            }
        })
        .await;
        assert!(pending[0]["last_error"].as_str().is_some_and(|e| !e.is_empty()));
        eventually("the outbox gauge", || {
            let (http, base) = (http.clone(), base.clone());
            async move {
                let text = http
                    .get(format!("{base}/metrics"))
                    .send()
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()?;
                text.lines()
                    .any(|l| l == "tandem_webhooks_pending 4")
                    .then_some(())
            }
        })
        .await;
        gateway.kill();

        let receiver = Receiver::start(port, 0).await;
        let restarted = Gateway::start(&database.url, &env);
        let delivered = eventually("delivered after the restart", || {
            let delivered = receiver.delivered();
            async move { (types_for(&delivered, "crash").len() >= 4).then_some(delivered) }
        })
        .await;
        for received in &delivered {
            verify(received);
        }
        assert_eq!(
            types_for(&delivered, "crash"),
            [
                "document.updated",
                "document.updated",
                "document.updated",
                "document.version_created"
            ],
            "{}: every event, in order",
            backend.name()
        );
        let keys: Vec<Value> = delivered
            .iter()
            .filter(|r| r.event["type"] == "document.updated")
            .map(|r| r.event["data"]["user_ids"].clone())
            .collect();
        assert!(keys.iter().all(|u| *u == json!(["agent"])), "{keys:?}");
        drop(restarted);
    }
}

#[tokio::test]
async fn several_instances_deliver_each_event_once() {
    let Some((_, postgres)) = scale_out_services() else {
        return;
    };
    let receiver = Receiver::start(0, 0).await;
    let database = TestDatabase::create(&Backend::Postgres(postgres.clone())).await;
    let url = database.url.clone();
    let a = spawn_app_on(database, |c| hooked(c, receiver.url())).await;
    let b = spawn_app_on(TestDatabase::shared(&url), |c| hooked(c, receiver.url())).await;
    let c = spawn_app_on(TestDatabase::shared(&url), |c| hooked(c, receiver.url())).await;
    let token = a.token("agent");
    let n = 30;
    for i in 0..n {
        let app = [&a, &b, &c][i % 3];
        let (status, body) = app
            .post(
                &format!("/api/v1/documents/multi-{i}/versions"),
                Some(&token),
                &json!({"label": format!("v{i}")}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let delivered = eventually("all versions announced", || {
        let delivered = receiver.delivered();
        let count = delivered
            .iter()
            .filter(|r| r.event["type"] == "document.version_created")
            .count();
        async move { (count >= n).then_some(delivered) }
    })
    .await;
    // Let any duplicate show up.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let all = receiver.all();
    let versions: Vec<&Received> = all
        .iter()
        .filter(|r| r.event["type"] == "document.version_created")
        .collect();
    let ids: HashSet<&str> = versions.iter().map(|r| r.event["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), n, "{delivered:?}");
    assert_eq!(versions.len(), n, "no event delivered twice by two instances");
}

#[tokio::test]
async fn the_sweep_tells_webhooks_of_a_crashed_gateway_s_members() {
    let receiver = Receiver::start(0, 0).await;
    let database = TestDatabase::create(&Backend::Sqlite).await;
    let url = receiver.url();
    let env = [
        ("TANDEM_WEBHOOK_URL", url.as_str()),
        ("TANDEM_WEBHOOK_SECRET", HOOK_SECRET),
    ];
    let gateway = Gateway::start(&database.url, &env);
    let token = tandem::auth::jwt::mint_hs256(
        &tandem::config::Secret::new(SECRET),
        &tandem::auth::Claims::for_user("ghost", Duration::from_secs(600)),
    )
    .unwrap();
    let (mut ghost, _) =
        Client::open_at(format!("127.0.0.1:{}", gateway.port).parse().unwrap(), &token, "").await;
    ghost.join("haunted").await;
    eventually("the join is announced", || {
        let joined = receiver
            .delivered()
            .iter()
            .any(|r| r.event["type"] == "presence.joined");
        async move { joined.then_some(()) }
    })
    .await;
    gateway.kill();

    // Another process's sweep finds the dead session and ends it.
    let _sweeper = spawn_app_on(database, |c| {
        hooked(c, url.clone());
        c.heartbeat_interval = Duration::from_millis(500);
        c.session_ttl = Duration::from_secs(2);
        c.cleanup_interval = Duration::from_millis(300);
    })
    .await;
    let delivered = eventually("the sweep's events", || {
        let delivered = receiver.delivered();
        let done = delivered.iter().any(|r| r.event["type"] == "session.ended");
        async move { done.then_some(delivered) }
    })
    .await;
    let left = delivered
        .iter()
        .find(|r| r.event["type"] == "presence.left")
        .expect("presence.left for the dead member");
    assert_eq!(left.event["data"]["document_id"], "haunted");
    assert_eq!(left.event["data"]["reason"], "timeout");
    let ended = delivered
        .iter()
        .find(|r| r.event["type"] == "session.ended")
        .unwrap();
    assert_eq!(ended.event["data"]["user_id"], "ghost");
    assert_eq!(ended.event["data"]["reason"], "timeout");
    for received in &delivered {
        verify(received);
    }
}
