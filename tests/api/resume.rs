//! Resume across a dropped socket (`connected.resume_token`,
//! `--resume-grace`, `--resume-buffer`): the drop is a real TCP cut through
//! a relay, no close frame.

use std::time::Duration;

use entity::user_sessions;
use sea_orm::EntityTrait;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::*;

/// Alice through a relay (to be cut) and Bob directly, both in `doc`.
async fn alice_and_bob(app: &TestApp, doc: &str) -> (Relay, Client, Value, Client) {
    let relay = Relay::start(app.addr).await;
    let (mut alice, connected) = Client::open_at(relay.addr, &app.token("alice"), "").await;
    assert_eq!(connected["resumed"], false);
    alice.join(doc).await;
    let mut bob = app.connect("bob").await;
    bob.join(doc).await;
    alice.recv_type("user_joined").await;
    (relay, alice, connected, bob)
}

async fn cut_and_wait_parked(app: &TestApp, relay: Relay) {
    relay.cut();
    eventually("the session is parked", || async {
        (app.state.hub.parking.len() == 1).then_some(())
    })
    .await;
}

async fn cursor(client: &mut Client, doc: &str, line: u64) {
    client
        .send(json!({"type": "cursor_move", "document_id": doc, "cursor": {"line": line, "column": 0}}))
        .await;
}

fn token_of(connected: &Value) -> String {
    connected["resume_token"]
        .as_str()
        .expect("connected carries a resume_token")
        .to_owned()
}

#[tokio::test]
async fn a_resume_within_the_grace_keeps_the_session_and_replays_what_was_missed_in_order() {
    let app = spawn_app().await;
    let (relay, _alice, connected, mut bob) = alice_and_bob(&app, "doc").await;
    let resume_token = token_of(&connected);
    cut_and_wait_parked(&app, relay).await;

    // Moves made while Alice is away; spaced past the presence rate limit.
    for line in 1..=3 {
        cursor(&mut bob, "doc", line).await;
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let (mut alice, connected) =
        Client::open_at(app.addr, &app.token("alice"), &format!("&resume={resume_token}")).await;
    assert_eq!(connected["resumed"], true, "{connected}");
    assert_eq!(alice.session_id, connected["session_id"]);
    assert_ne!(
        connected["resume_token"],
        resume_token.as_str(),
        "a fresh token for the next drop"
    );
    for line in 1..=3 {
        let moved = alice.recv_type("cursor_move").await;
        assert_eq!(moved["cursor"]["line"], line, "in order: {moved}");
        assert_eq!(moved["user_id"], "bob");
    }
    let step1 = alice.recv_type("sync_step1").await;
    assert_eq!(step1["document_id"], "doc");

    // Nobody saw Alice leave or come back, and she is still in the room.
    bob.expect_silence(Duration::from_millis(300)).await;
    cursor(&mut alice, "doc", 42).await;
    let moved = bob.recv_type("cursor_move").await;
    assert_eq!(moved["user_id"], "alice");
    assert_eq!(moved["cursor"]["line"], 42);
    assert_eq!(app.state.hub.parking.len(), 0);

    // The session row counts the resume.
    let session_id: Uuid = alice.session_id.parse().unwrap();
    let db = app.database.connect().await;
    let row = eventually("the row records the resume", || async {
        user_sessions::Entity::find_by_id(session_id)
            .one(&db)
            .await
            .unwrap()
            .filter(|row| row.resumed_count == 1)
    })
    .await;
    assert!(row.disconnected_at.is_none());
}

#[tokio::test]
async fn without_a_resume_in_the_grace_the_others_see_a_normal_leave_and_the_token_is_dead() {
    let app = spawn_app_with(&Backend::Sqlite, |config| {
        config.resume_grace = Duration::from_millis(500);
    })
    .await;
    let (relay, _alice, connected, mut bob) = alice_and_bob(&app, "doc").await;
    let resume_token = token_of(&connected);
    cut_and_wait_parked(&app, relay).await;
    let left = bob.recv_type("user_left").await;
    assert_eq!(left["reason"], "disconnected");
    assert_eq!(left["last_device"], true);

    let (_alice, again) =
        Client::open_at(app.addr, &app.token("alice"), &format!("&resume={resume_token}")).await;
    assert_eq!(again["resumed"], false);
    assert_ne!(again["session_id"], connected["session_id"], "a new session");
}

#[tokio::test]
async fn a_client_close_frame_still_leaves_at_once() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    alice.join("doc").await;
    let mut bob = app.connect("bob").await;
    bob.join("doc").await;
    alice.stream.close(None).await.unwrap();
    let left = bob.recv_type("user_left").await;
    assert_eq!(left["reason"], "disconnected");
    assert!(app.state.hub.parking.is_empty());
}

#[tokio::test]
async fn another_users_or_a_made_up_token_starts_a_new_session_and_leaves_the_owners_intact() {
    let app = spawn_app().await;
    let (relay, _alice, connected, mut bob) = alice_and_bob(&app, "doc").await;
    let resume_token = token_of(&connected);
    let alice_session = connected["session_id"].clone();
    cut_and_wait_parked(&app, relay).await;

    let (_mallory, stolen) = Client::open_at(
        app.addr,
        &app.token("mallory"),
        &format!("&resume={resume_token}"),
    )
    .await;
    assert_eq!(stolen["resumed"], false);
    assert_ne!(stolen["session_id"], alice_session);
    let (_alice2, made_up) = Client::open_at(app.addr, &app.token("alice"), "&resume=not-a-token").await;
    assert_eq!(made_up["resumed"], false);
    let (_alice3, too_long) = Client::open_at(
        app.addr,
        &app.token("alice"),
        &format!("&resume={}", "x".repeat(4000)),
    )
    .await;
    assert_eq!(too_long["resumed"], false);

    // The owner still resumes with it.
    let (_alice, resumed) =
        Client::open_at(app.addr, &app.token("alice"), &format!("&resume={resume_token}")).await;
    assert_eq!(resumed["resumed"], true);
    assert_eq!(resumed["session_id"], alice_session);
    bob.expect_silence(Duration::from_millis(300)).await;

    // Used once: a second resume with the same token is a new session.
    let (_again, again) =
        Client::open_at(app.addr, &app.token("alice"), &format!("&resume={resume_token}")).await;
    assert_eq!(again["resumed"], false);
}

#[tokio::test]
async fn an_overflowed_replay_is_replaced_by_a_fresh_presence_list() {
    let app = spawn_app_with(&Backend::Sqlite, |config| {
        config.resume_buffer = 4;
    })
    .await;
    let (relay, _alice, connected, mut bob) = alice_and_bob(&app, "doc").await;
    let resume_token = token_of(&connected);
    cut_and_wait_parked(&app, relay).await;
    for line in 1..=10 {
        cursor(&mut bob, "doc", line).await;
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    // The last move has reached the room before Alice comes back.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (mut alice, connected) =
        Client::open_at(app.addr, &app.token("alice"), &format!("&resume={resume_token}")).await;
    assert_eq!(connected["resumed"], true);
    let list = alice.recv_type("presence_list").await;
    assert_eq!(list["resync"], true);
    assert_eq!(list["document_id"], "doc");
    let users = list["users"].as_array().unwrap();
    let bob_there = users
        .iter()
        .find(|user| user["user_id"] == "bob")
        .expect("bob listed");
    assert_eq!(bob_there["cursor"]["line"], 10, "the latest cursor: {bob_there}");
    assert!(users.iter().any(|user| user["user_id"] == "alice"));
    alice.recv_until("sync_step1").await;
    bob.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn with_a_zero_grace_there_is_no_token_and_a_drop_leaves_at_once() {
    let app = spawn_app_with(&Backend::Sqlite, |config| {
        config.resume_grace = Duration::ZERO;
    })
    .await;
    let relay = Relay::start(app.addr).await;
    let (mut alice, connected) = Client::open_at(relay.addr, &app.token("alice"), "").await;
    assert!(connected.get("resume_token").is_none(), "{connected}");
    alice.join("doc").await;
    let mut bob = app.connect("bob").await;
    bob.join("doc").await;
    relay.cut();
    let left = bob.recv_type("user_left").await;
    assert_eq!(left["reason"], "disconnected");
}

#[tokio::test]
async fn a_parked_session_revoked_or_swept_ends_with_a_leave() {
    let app = spawn_app().await;
    let (relay, alice, _connected, mut bob) = alice_and_bob(&app, "doc").await;
    cut_and_wait_parked(&app, relay).await;
    // Ended from outside (what the stale sweep and admin end do).
    let session_id: Uuid = alice.session_id.parse().unwrap();
    app.state
        .hub
        .connection(session_id)
        .expect("still registered")
        .end
        .cancel();
    let left = bob.recv_type("user_left").await;
    assert_eq!(left["reason"], "timeout");
    eventually("the parked session is gone", || async {
        app.state.hub.parking.is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_session_resumes_on_another_instance_without_a_leave_or_a_join() {
    let Some((redis, postgres)) = scale_out_services() else {
        return;
    };
    let (a, b) = crate::scale_out::two_instances(&redis, &postgres).await;
    let mut carol = a.connect("carol").await;
    carol.join("doc").await;
    let mut bob = b.connect("bob").await;
    bob.join("doc").await;
    carol.recv_type("user_joined").await;
    let relay = Relay::start(a.addr).await;
    let (mut alice, connected) = Client::open_at(relay.addr, &a.token("alice"), "").await;
    alice.join("doc").await;
    carol.recv_type("user_joined").await;
    bob.recv_type("user_joined").await;
    let resume_token = token_of(&connected);
    cut_and_wait_parked(&a, relay).await;

    let (mut alice, resumed) =
        Client::open_at(b.addr, &b.token("alice"), &format!("&resume={resume_token}")).await;
    assert_eq!(resumed["resumed"], true, "{resumed}");
    assert_eq!(resumed["session_id"], connected["session_id"]);
    let list = alice.recv_until("presence_list").await;
    assert_eq!(list["resync"], true);
    let mut users: Vec<_> = list["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|user| user["user_id"].as_str().unwrap().to_owned())
        .collect();
    users.sort();
    assert_eq!(users, ["alice", "bob", "carol"], "{list}");
    alice.recv_until("sync_step1").await;
    assert!(a.state.hub.parking.is_empty(), "A let go of it");

    // Nobody on either instance saw Alice leave or join.
    bob.expect_silence(Duration::from_millis(500)).await;
    carol.expect_silence(Duration::from_millis(100)).await;
    let (_, presence) = a
        .get("/api/v1/presence/document/doc", Some(&a.token("observer")))
        .await;
    assert_eq!(
        presence["users"].as_array().unwrap().len(),
        3,
        "no ghost: {presence}"
    );

    // She is live on B: both instances hear her, and her leave.
    cursor(&mut alice, "doc", 7).await;
    assert_eq!(bob.recv_type("cursor_move").await["cursor"]["line"], 7);
    assert_eq!(carol.recv_type("cursor_move").await["cursor"]["line"], 7);
    alice.stream.close(None).await.unwrap();
    for observer in [&mut bob, &mut carol] {
        let left = observer.recv_type("user_left").await;
        assert_eq!(left["user_id"], "alice");
        assert_eq!(left["last_device"], true);
    }
}

#[tokio::test]
async fn a_user_at_the_connection_cap_can_still_resume() {
    let app = spawn_app_with(&Backend::Sqlite, |config| {
        config.max_connections_per_user = 1;
    })
    .await;
    let relay = Relay::start(app.addr).await;
    let (mut alice, connected) = Client::open_at(relay.addr, &app.token("alice"), "").await;
    alice.join("doc").await;
    let resume_token = token_of(&connected);
    cut_and_wait_parked(&app, relay).await;
    // The parked session holds the one slot: a new session is refused...
    let (status, body) = upgrade_status(&app, &app.token("alice")).await;
    assert_eq!(status, 429, "{body}");
    // ...but the resume takes it over.
    let (_alice, resumed) =
        Client::open_at(app.addr, &app.token("alice"), &format!("&resume={resume_token}")).await;
    assert_eq!(resumed["resumed"], true);
    eventually("the parked session's slot is freed", || async {
        (app.state.caps.user_connections("alice") == 1).then_some(())
    })
    .await;
}
