//! Several instances over Redis and a shared PostgreSQL: presence, documents,
//! a killed instance, a Redis restart. Each test has its own key prefix and
//! database, so they run in parallel.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::json;

use crate::helpers::*;

fn prefix() -> String {
    format!("tandem-test-{}", uuid::Uuid::new_v4().simple())
}

/// Two in-process instances on one fresh database and one Redis prefix.
pub(crate) async fn two_instances(redis: &str, postgres: &str) -> (TestApp, TestApp) {
    let database = TestDatabase::create(&Backend::Postgres(postgres.to_owned())).await;
    let url = database.url.clone();
    let prefix = prefix();
    let tweak = |c: &mut tandem::Config| {
        c.redis_url = Some(redis.to_owned());
        c.redis_prefix = prefix.clone();
        c.instance_ttl = Duration::from_secs(2);
    };
    let a = spawn_app_on(database, tweak).await;
    let b = spawn_app_on(TestDatabase::shared(&url), tweak).await;
    wait_redis(&a, "ok").await;
    wait_redis(&b, "ok").await;
    (a, b)
}

pub(crate) async fn wait_redis(app: &TestApp, state: &str) {
    eventually(&format!("redis {state} on an instance"), || async {
        let (_, health) = app.get("/health", None).await;
        (health["redis"] == state).then_some(())
    })
    .await;
}

/// Wait until `app` (which holds no room for `document`) sees `count` members through Redis.
async fn wait_members(app: &TestApp, document: &str, count: usize) -> serde_json::Value {
    let token = app.token("observer");
    eventually("members visible through redis", || {
        let token = token.clone();
        async move {
            let (_, body) = app
                .get(&format!("/api/v1/presence/document/{document}"), Some(&token))
                .await;
            (body["users"].as_array().map_or(0, Vec::len) == count).then_some(body)
        }
    })
    .await
}

#[tokio::test]
async fn presence_crosses_instances_join_cursor_and_leave() {
    let Some((redis, postgres)) = scale_out_services() else {
        return;
    };
    let (a, b) = two_instances(&redis, &postgres).await;
    let mut alice = a.connect("alice").await;
    alice.join("doc").await;
    wait_members(&b, "doc", 1).await;

    let mut bob = b.connect("bob").await;
    let list = bob.join("doc").await;
    let users: Vec<_> = list["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user_id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        users.contains(&"alice".to_owned()) && users.contains(&"bob".to_owned()),
        "{list}"
    );
    let joined = alice.recv_type("user_joined").await;
    assert_eq!(joined["user"]["user_id"], "bob");

    alice
        .send(json!({"type": "cursor_move", "document_id": "doc", "cursor": {"line": 3, "column": 4}}))
        .await;
    let moved = bob.recv_type("cursor_move").await;
    assert_eq!(
        (moved["user_id"].as_str(), &moved["cursor"]),
        (Some("alice"), &json!({"line": 3, "column": 4}))
    );
    alice.expect_silence(Duration::from_millis(300)).await;

    bob.send(json!({"type": "leave_document", "document_id": "doc"}))
        .await;
    let left = alice.recv_type("user_left").await;
    assert_eq!(
        (left["user_id"].as_str(), left["reason"].as_str()),
        (Some("bob"), Some("left"))
    );
}

#[tokio::test]
async fn one_user_with_a_device_on_each_instance_shows_both_everywhere() {
    let Some((redis, postgres)) = scale_out_services() else {
        return;
    };
    let (a, b) = two_instances(&redis, &postgres).await;
    let mut laptop = a.connect("alice").await;
    laptop.join("doc").await;
    wait_members(&b, "doc", 1).await;
    let mut bob = b.connect("bob").await;
    bob.join("doc").await;
    assert_eq!(
        laptop.recv_type("user_joined").await["first_device"],
        true,
        "bob's first device"
    );
    let mut phone = b.connect_with(&b.token("alice"), Some(PHONE_UA)).await.unwrap();
    phone.join("doc").await;
    let joined = laptop.recv_type("user_joined").await;
    assert_eq!(joined["user"]["device_type"], "mobile");
    assert_eq!(
        joined["first_device"], false,
        "alice's laptop on the other instance counts"
    );
    let joined = bob.recv_type("user_joined").await;
    assert_eq!(
        joined["first_device"], false,
        "seen the same way on the phone's instance"
    );
    for app in [&a, &b] {
        let (status, body) = app
            .get("/api/v1/presence/document/doc", Some(&app.token("alice")))
            .await;
        assert_eq!(status, 200);
        let groups = body["by_user"].as_array().unwrap();
        assert_eq!(groups.len(), 2, "alice and bob: {body}");
        let alice = groups.iter().find(|g| g["user_id"] == "alice").unwrap();
        let mut devices: Vec<_> = alice["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["device_type"].as_str().unwrap().to_owned())
            .collect();
        devices.sort();
        assert_eq!(devices, ["desktop", "mobile"]);
    }
    let (_, sessions) = a
        .get("/api/v1/users/alice/sessions", Some(&a.token("alice")))
        .await;
    assert_eq!(
        sessions["sessions"].as_array().unwrap().len(),
        2,
        "both devices, from the shared database"
    );
    laptop
        .send(serde_json::json!({"type": "leave_document", "document_id": "doc"}))
        .await;
    let left = bob.recv_type("user_left").await;
    assert_eq!(left["last_device"], false, "alice's phone is still here");
    phone
        .send(serde_json::json!({"type": "leave_document", "document_id": "doc"}))
        .await;
    let left = bob.recv_type("user_left").await;
    assert_eq!(left["last_device"], true);
}

#[tokio::test]
async fn concurrent_edits_through_two_instances_converge_and_are_stored_once() {
    let Some((redis, postgres)) = scale_out_services() else {
        return;
    };
    let (a, b) = two_instances(&redis, &postgres).await;
    let mut alice = a.connect("alice").await;
    alice.join("doc").await;
    wait_members(&b, "doc", 1).await;
    let mut bob = b.connect("bob").await;
    bob.join("doc").await;
    alice.recv_type("user_joined").await;
    let (pa, pb) = (YPeer::new(1), YPeer::new(2));
    alice.send(json!({"type": "sync_update", "document_id": "doc", "update": b64::encode(pa.insert(0, "alice ")), "id": "a"})).await;
    bob.send(json!({"type": "sync_update", "document_id": "doc", "update": b64::encode(pb.insert(0, "bob ")), "id": "b"})).await;
    pb.apply_b64(bob.recv_until("sync_update").await["update"].as_str().unwrap());
    pa.apply_b64(alice.recv_until("sync_update").await["update"].as_str().unwrap());
    assert_eq!(pa.text(), pb.text());
    assert_eq!(pa.state_vector(), pb.state_vector());
    for app in [&a, &b] {
        let (status, text) = app
            .get_text("/api/v1/documents/doc/text/content", &app.token("x"))
            .await;
        assert_eq!((status, text), (200, pa.text()));
    }
    // Relays go out before the commit: wait for both commits, then count.
    let doc = eventually("both updates committed", || async {
        let (_, doc) = a.get("/api/v1/documents/doc", Some(&a.token("x"))).await;
        (doc["updates_since_snapshot"].as_u64() >= Some(2)).then_some(doc)
    })
    .await;
    assert_eq!(
        doc["updates_since_snapshot"], 2,
        "each update stored once, by its origin"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn a_killed_instance_is_noticed_and_its_users_leave_with_timeout() {
    let Some((redis, postgres)) = scale_out_services() else {
        return;
    };
    let database = TestDatabase::create(&Backend::Postgres(postgres.clone())).await;
    let prefix = prefix();
    let doomed = Gateway::start(
        &database.url,
        &[
            ("REDIS_URL", &redis),
            ("TANDEM_REDIS_PREFIX", &prefix),
            ("TANDEM_INSTANCE_TTL", "2s"),
        ],
    );
    let url = database.url.clone();
    let survivor = spawn_app_on(database, |c| {
        c.redis_url = Some(redis.clone());
        c.redis_prefix = prefix.clone();
        c.instance_ttl = Duration::from_secs(2);
    })
    .await;
    let token = survivor.token("ghost");
    let (stream, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/ws?token={token}", doomed.port))
            .await
            .unwrap();
    let mut ghost = Client {
        stream,
        connection_id: String::new(),
        session_id: String::new(),
    };
    let session_id = ghost.recv_type("connected").await["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    ghost.join("doc").await;
    wait_members(&survivor, "doc", 1).await;
    let mut alice = survivor.connect("alice").await;
    let list = alice.join("doc").await;
    assert_eq!(list["users"].as_array().unwrap().len(), 2);

    doomed.kill();
    let left = alice.recv_until("user_left").await;
    assert_eq!(
        (left["user_id"].as_str(), left["reason"].as_str()),
        (Some("ghost"), Some("timeout"))
    );
    let db = TestDatabase::shared(&url).connect().await;
    let row = eventually("the dead instance's session is inactive", || {
        let db = &db;
        let id = uuid::Uuid::parse_str(&session_id).unwrap();
        async move {
            use sea_orm::EntityTrait;
            entity::user_sessions::Entity::find_by_id(id)
                .one(db)
                .await
                .unwrap()
                .filter(|r| !r.is_active)
        }
    })
    .await;
    assert!(row.disconnected_at.is_some());
    let (_, body) = survivor.get("/api/v1/presence/document/doc", Some(&token)).await;
    assert_eq!(
        body["users"].as_array().unwrap().len(),
        1,
        "no ghost after a crash: {body}"
    );
}

/// Issue 16: with the default settings the users of a SIGKILLed instance
/// used to stay visible elsewhere for 69 s. They must be gone within 15 s.
#[tokio::test]
async fn a_killed_instances_users_are_gone_within_15_s_by_default() {
    let Some((redis, postgres)) = scale_out_services() else {
        return;
    };
    let database = TestDatabase::create(&Backend::Postgres(postgres.clone())).await;
    let prefix = prefix();
    let doomed = Gateway::start(
        &database.url,
        &[("REDIS_URL", &redis), ("TANDEM_REDIS_PREFIX", &prefix)],
    );
    let survivor = spawn_app_on(database, |c| {
        c.redis_url = Some(redis.clone());
        c.redis_prefix = prefix.clone();
    })
    .await;
    let token = survivor.token("ghost");
    let (stream, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/ws?token={token}", doomed.port))
            .await
            .unwrap();
    let mut ghost = Client {
        stream,
        connection_id: String::new(),
        session_id: String::new(),
    };
    ghost.recv_type("connected").await;
    ghost.join("doc").await;
    wait_members(&survivor, "doc", 1).await;
    let mut alice = survivor.connect("alice").await;
    alice.join("doc").await;

    doomed.kill();
    let killed = std::time::Instant::now();
    let left = tokio::time::timeout(Duration::from_secs(15), async {
        use futures_util::StreamExt;
        loop {
            let frame = alice.stream.next().await.expect("open").expect("frame");
            if let tokio_tungstenite::tungstenite::Message::Text(text) = frame {
                let message: serde_json::Value = serde_json::from_str(&text).unwrap();
                if message["type"] == "user_left" && message["user_id"] == "ghost" {
                    return message;
                }
            }
        }
    })
    .await
    .expect("the dead instance's user left within 15 s");
    assert_eq!(left["reason"], "timeout");
    note(&format!(
        "a killed instance's user left after {:?} (defaults)",
        killed.elapsed()
    ));
}

/// A Redis server this test owns, so it may stop and restart it.
struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    fn start(port: u16) -> Option<Self> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let mut redis = Self {
            port,
            child: Some(child),
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(redis);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        redis.stop();
        None
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn delivery_resumes_after_redis_restarts_and_nothing_written_meanwhile_is_lost() {
    let Some((_, postgres)) = scale_out_services() else {
        return;
    };
    let port = free_port();
    let Some(mut redis) = PrivateRedis::start(port) else {
        note("NOTE: redis-server could not be started: the Redis restart test is SKIPPED");
        return;
    };
    let (a, b) = two_instances(&redis.url(), &postgres).await;
    let mut alice = a.connect("alice").await;
    let mut carol = a.connect("carol").await;
    alice.join("doc").await;
    carol.join("doc").await;
    alice.recv_type("user_joined").await;
    wait_members(&b, "doc", 2).await;
    let mut bob = b.connect("bob").await;
    bob.join("doc").await;
    alice.recv_type("user_joined").await;
    carol.recv_type("user_joined").await;

    redis.stop();
    wait_redis(&a, "down").await;
    // Local fan-out goes on.
    alice
        .send(json!({"type": "cursor_move", "document_id": "doc", "cursor": {"line": 1, "column": 1}}))
        .await;
    assert_eq!(carol.recv_type("cursor_move").await["user_id"], "alice");
    // An edit during the outage is stored, and reaches bob once Redis is back.
    let pa = YPeer::new(1);
    alice.send(json!({"type": "sync_update", "document_id": "doc", "update": b64::encode(pa.insert(0, "during the outage")), "id": "gap"})).await;
    alice.recv_until("ack").await;

    let _redis_again = PrivateRedis::start(port).expect("restart redis");
    drop(redis);
    wait_redis(&a, "ok").await;
    wait_redis(&b, "ok").await;
    let pb = YPeer::new(2);
    let resynced = bob.recv_until("sync_update").await;
    pb.apply_b64(resynced["update"].as_str().unwrap());
    assert_eq!(pb.text(), "during the outage");

    // And live delivery across instances resumes.
    let mut line = 10;
    let moved = loop {
        alice
            .send(json!({"type": "cursor_move", "document_id": "doc", "cursor": {"line": line, "column": 0}}))
            .await;
        match tokio::time::timeout(Duration::from_millis(300), bob.recv_until("cursor_move")).await {
            Ok(moved) => break moved,
            Err(_) => line += 1,
        }
        assert!(line < 100, "cross-instance delivery did not resume");
    };
    assert_eq!(moved["user_id"], "alice");
}

#[tokio::test]
async fn a_provider_on_one_instance_sees_a_json_member_of_another_as_awareness() {
    use futures_util::{SinkExt, StreamExt};
    use tandem::protocol::yjs::{self, Inbound};
    let Some((redis, postgres)) = scale_out_services() else {
        return;
    };
    let (a, b) = two_instances(&redis, &postgres).await;
    let mut alice = a
        .connect_with(&a.token_with("alice", |c| c.name = Some("Alice".into())), None)
        .await
        .unwrap();
    alice.join("doc").await;
    wait_members(&b, "doc", 1).await;
    let url = b.ws_url(&format!("/yjs/doc?token={}", b.token("bob")));
    let (mut provider, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut next_awareness = async || loop {
        let frame = tokio::time::timeout(WAIT, provider.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Binary(bytes) = frame
            && let Ok(Inbound::Awareness(update)) = yjs::decode(&bytes)
        {
            return tandem::crdt::awareness::decode(&update).unwrap();
        }
    };
    let welcome = next_awareness().await;
    let state: serde_json::Value = serde_json::from_str(&welcome[0].json).unwrap();
    assert_eq!(
        state["user"]["name"], "Alice",
        "the remote JSON member is in the welcome"
    );
    alice.recv_type("user_joined").await;
    alice
        .send(json!({"type": "cursor_move", "document_id": "doc", "cursor": {"line": 8, "column": 3}}))
        .await;
    let moved = next_awareness().await;
    let state: serde_json::Value = serde_json::from_str(&moved[0].json).unwrap();
    assert_eq!(state["cursor"], json!({"line": 8, "column": 3}));
    alice.stream.close(None).await.unwrap();
    let removed = next_awareness().await;
    assert!(
        removed[0].is_removal(),
        "the remote member's state is removed when it leaves"
    );
    let _ = provider
        .send(tokio_tungstenite::tungstenite::Message::Close(None))
        .await;
}

/// Issue 16: after a Redis outage the instances disagreed on who was present
/// for good (an instance reloaded the others' members before they had
/// republished theirs, and never heard of them again).
#[tokio::test]
async fn presence_is_the_same_everywhere_soon_after_redis_returns() {
    let Some((_, postgres)) = scale_out_services() else {
        return;
    };
    let port = free_port();
    let Some(mut redis) = PrivateRedis::start(port) else {
        note("NOTE: redis-server could not be started: the presence reconvergence test is SKIPPED");
        return;
    };
    let (a, b) = two_instances(&redis.url(), &postgres).await;
    let mut pa1 = a.connect("pa1").await;
    pa1.join("doc").await;
    let mut pb1 = b.connect("pb1").await;
    let mut pb2 = b.connect("pb2").await;
    pb1.join("doc").await;
    pb2.join("doc").await;
    let token = a.token("observer");
    let members = |app: &TestApp| {
        let token = token.clone();
        let app_url = app.url("/api/v1/presence/document/doc");
        async move {
            let body = get_json(&app_url, &token).await;
            let mut ids: Vec<String> = body["users"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u["user_id"].as_str().unwrap().to_owned())
                .collect();
            ids.sort();
            ids
        }
    };
    let everyone = vec!["pa1".to_owned(), "pb1".to_owned(), "pb2".to_owned()];
    eventually("everyone everywhere before the outage", || async {
        (members(&a).await == everyone && members(&b).await == everyone).then_some(())
    })
    .await;

    redis.stop();
    wait_redis(&a, "down").await;
    wait_redis(&b, "down").await;
    // Long enough for the subscribers' reconnect backoff to reach its cap,
    // so the instances come back at different moments (as in the report).
    tokio::time::sleep(Duration::from_secs(10)).await;
    let _redis_again = PrivateRedis::start(port).expect("restart redis");
    drop(redis);
    wait_redis(&a, "ok").await;
    wait_redis(&b, "ok").await;
    eventually("everyone everywhere after the outage", || async {
        (members(&a).await == everyone && members(&b).await == everyone).then_some(())
    })
    .await;
    // And it stays so (nothing reloads them away later).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(members(&a).await, everyone);
    assert_eq!(members(&b).await, everyone);
    pa1.assert_alive().await;
}

#[tokio::test]
async fn app_messages_cross_instances_on_the_socket_and_over_rest() {
    let Some((redis, postgres)) = scale_out_services() else {
        return;
    };
    let (a, b) = two_instances(&redis, &postgres).await;
    let mut alice = a.connect("alice").await;
    alice.join("doc").await;
    let mut bob_laptop = b.connect("bob").await;
    bob_laptop.join("doc").await;
    // Bob's phone is on alice's instance and in no document.
    let mut bob_phone = a.connect_with(&a.token("bob"), Some(PHONE_UA)).await.unwrap();
    wait_members(&a, "doc", 2).await;
    wait_members(&b, "doc", 2).await;

    alice
        .send(serde_json::json!({"type": "broadcast", "document_id": "doc", "event": "typing", "data": {"on": true}}))
        .await;
    let message = bob_laptop.recv_until("broadcast").await;
    assert_eq!(
        (message["user_id"].as_str(), message["data"]["on"].as_bool()),
        (Some("alice"), Some(true))
    );
    assert_eq!(
        message["connection_id"].as_str(),
        Some(alice.connection_id.as_str())
    );

    alice
        .send(serde_json::json!({"type": "send_to_user", "user_id": "bob", "event": "follow_me", "data": 7, "id": 1}))
        .await;
    assert_eq!(alice.recv_until("ack").await["id"], 1);
    for bob in [&mut bob_laptop, &mut bob_phone] {
        let direct = bob.recv_until("direct").await;
        assert_eq!(
            (direct["from_user_id"].as_str(), direct["data"].as_i64()),
            (Some("alice"), Some(7))
        );
    }

    let admin = a.token_with("ops", |c| c.role = tandem::auth::Role::Admin);
    let (status, body) = a
        .post(
            "/api/v1/users/bob/messages",
            Some(&admin),
            &serde_json::json!({"event": "notice", "data": "hi"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        serde_json::json!({"delivered": 1, "published": true}),
        "the phone here, the laptop there"
    );
    assert_eq!(bob_laptop.recv_until("direct").await["event"], "notice");
    assert_eq!(bob_phone.recv_until("direct").await["event"], "notice");

    let (status, body) = b
        .post(
            "/api/v1/documents/doc/broadcast",
            Some(&b.token("agent")),
            &serde_json::json!({"event": "saved", "data": null}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, serde_json::json!({"delivered": 1, "published": true}));
    let message = alice.recv_until("broadcast").await;
    assert_eq!(
        (message["user_id"].as_str(), message["event"].as_str()),
        (Some("agent"), Some("saved"))
    );
}

/// An instance hears only the documents it holds: one SUBSCRIBE per open
/// room (no pattern subscription to every document), dropped after the room
/// unloads, and taken again when it reopens.
#[tokio::test]
async fn an_instance_subscribes_only_to_the_documents_it_holds() {
    let Some((redis, postgres)) = scale_out_services() else {
        return;
    };
    let database = TestDatabase::create(&Backend::Postgres(postgres.clone())).await;
    let url = database.url.clone();
    let prefix = prefix();
    let tweak = |c: &mut tandem::Config| {
        c.redis_url = Some(redis.clone());
        c.redis_prefix = prefix.clone();
        c.room_grace_period = Duration::from_millis(200);
    };
    let a = spawn_app_on(database, tweak).await;
    let b = spawn_app_on(TestDatabase::shared(&url), tweak).await;
    wait_redis(&a, "ok").await;
    wait_redis(&b, "ok").await;
    let client = redis::Client::open(redis.as_str()).unwrap();
    let mut redis_conn = client.get_multiplexed_async_connection().await.unwrap();
    let channel = format!("{prefix}:doc:held");
    let subscribers = async |conn: &mut redis::aio::MultiplexedConnection| -> i64 {
        let reply: Vec<(String, i64)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(&channel)
            .query_async(conn)
            .await
            .unwrap();
        reply[0].1
    };
    let patterns: i64 = redis::cmd("PUBSUB")
        .arg("NUMPAT")
        .query_async(&mut redis_conn)
        .await
        .unwrap();
    assert_eq!(patterns, 0, "no instance pattern-subscribes to every document");
    assert_eq!(subscribers(&mut redis_conn).await, 0);

    let mut alice = a.connect("alice").await;
    alice.join("held").await;
    assert_eq!(
        subscribers(&mut redis_conn).await,
        1,
        "only the instance holding the room"
    );

    let mut bob = b.connect("bob").await;
    bob.join("held").await;
    assert_eq!(subscribers(&mut redis_conn).await, 2);
    let peer = YPeer::new(31);
    let update = peer.insert(0, "hello");
    alice
        .send(json!({"type": "sync_update", "document_id": "held", "update": b64::encode(&update), "id": 1}))
        .await;
    let relayed = bob.recv_until("sync_update").await;
    assert_eq!(relayed["user_id"], "alice");

    // Bob leaves; B's room unloads after the grace; the next event on the
    // channel makes B unsubscribe.
    bob.send(json!({"type": "leave_document", "document_id": "held"}))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let deadline = std::time::Instant::now() + WAIT;
    for edit in 2.. {
        let update = peer.insert(0, "x");
        alice
            .send(json!({"type": "sync_update", "document_id": "held", "update": b64::encode(&update), "id": edit}))
            .await;
        alice.recv_until("ack").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if subscribers(&mut redis_conn).await == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "B still subscribed after its room unloaded"
        );
    }

    // Reopened on B: subscribed again, and it hears the next edit.
    bob.join("held").await;
    assert_eq!(subscribers(&mut redis_conn).await, 2);
    let update = peer.insert(0, "again ");
    alice
        .send(json!({"type": "sync_update", "document_id": "held", "update": b64::encode(&update), "id": "last"}))
        .await;
    let relayed = bob.recv_until("sync_update").await;
    assert_eq!(relayed["user_id"], "alice");
}

/// A JSON op applied on one instance reaches members on another like any update.
#[tokio::test]
async fn ops_on_one_instance_reach_members_on_another() {
    let Some((redis, postgres)) = scale_out_services() else {
        return;
    };
    let (a, b) = two_instances(&redis, &postgres).await;
    let mut bob = b.connect("bob").await;
    bob.join("ops-doc").await;
    let (status, body) = a
        .post(
            "/api/v1/documents/ops-doc/ops",
            Some(&a.token("agent")),
            &json!({"ops": [{"op": "map_set", "path": ["board"], "key": "note", "value": "from A"}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let relayed = bob.recv_until("sync_update").await;
    assert_eq!(relayed["user_id"], "agent");
    let content = b.get_ok("/api/v1/documents/ops-doc/json", &b.token("bob")).await;
    assert_eq!(content["content"], json!({"board": {"note": "from A"}}));
}
