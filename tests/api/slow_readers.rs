//! Slow readers get the latest presence, not a disconnect: in a room of 200
//! members moving their cursors at 10 Hz, a member reading ten times slower
//! than that (here a hundred times) stays connected, and the last cursor it gets from each member
//! is that member's last position (older ones still queued were replaced).

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

const MEMBERS: usize = 200;
const MOVES: u32 = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_ten_times_slower_than_a_200_member_room_stays_connected_with_the_latest_cursors() {
    let app = spawn_app_with(&Backend::Sqlite, |config| {
        // Small enough that a backlog of old cursors overflows it (what the
        // kernel's socket buffers hold aside): room for the 200 joins and two
        // cursors per member, not for 6,000 cursors.
        config.send_queue_capacity = 1024;
        config.max_queued_bytes = 256 * 1024;
    })
    .await;
    let mut slow = app.connect_tuned("slow", "", Some(4096)).await;
    slow.join("big").await;
    let mut members = Vec::new();
    for n in 0..MEMBERS {
        let mut member = app.connect(&format!("m{n}")).await;
        member.join("big").await;
        members.push(member);
    }
    // Everyone moves at 10 Hz for 3 s; only the slow member reads, at a
    // small fraction of the rate it is sent to (2,000 messages/s arrive, it
    // takes 20).
    let senders = tokio::spawn(async move {
        for line in 0..MOVES {
            let tick = Instant::now();
            for member in &mut members {
                let frame = json!({"type": "cursor_move", "document_id": "big", "cursor": {"line": line, "column": 1}});
                member
                    .stream
                    .feed(Message::text(frame.to_string()))
                    .await
                    .unwrap();
            }
            for member in &mut members {
                member.stream.flush().await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(100).saturating_sub(tick.elapsed())).await;
        }
        members
    });
    let mut last_line: std::collections::HashMap<String, u64> = Default::default();
    let mut read = 0;
    let mut note = |message: &Value| {
        if message["type"] == "cursor_move" {
            last_line.insert(
                message["user_id"].as_str().unwrap().to_owned(),
                message["cursor"]["line"].as_u64().unwrap(),
            );
        }
        assert_ne!(message["type"], "user_left", "nobody was closed: {message}");
    };
    while !senders.is_finished() {
        let message = slow.recv().await;
        note(&message);
        read += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let members = senders.await.unwrap();
    // Drain what is left, quickly now.
    while let Ok(Some(Ok(frame))) =
        tokio::time::timeout(Duration::from_millis(1500), slow.stream.next()).await
    {
        match frame {
            Message::Text(text) => {
                note(&serde_json::from_str(&text).unwrap());
                read += 1;
            }
            Message::Close(close) => panic!("the slow reader was closed: {close:?}"),
            _ => {}
        }
    }
    assert_eq!(
        app.state.hub.connection_count(),
        MEMBERS + 1,
        "every member is still connected"
    );
    assert_eq!(last_line.len(), MEMBERS, "a cursor from every member");
    for (user, line) in &last_line {
        assert_eq!(
            *line,
            u64::from(MOVES - 1),
            "{user}'s last cursor is its last position"
        );
    }
    // How many it read depends on what the kernel's socket buffers took
    // before the server's queue had to hold anything (at this volume, most
    // of it); that a queued cursor is replaced is shown without sockets in
    // `rooms::latest`'s tests.
    assert!(read >= MEMBERS, "it read {read} messages");
    slow.assert_alive().await;
    drop(members);
}

#[tokio::test]
async fn cursors_are_relayed_at_most_presence_max_hz_and_the_last_one_always_is() {
    let app = spawn_app_with(&Backend::Sqlite, |config| config.presence_max_hz = 10).await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    alice.join("doc").await;
    bob.join("doc").await;
    alice.recv_type("user_joined").await;
    // 100 moves in about a second: ten times the allowed rate.
    let started = Instant::now();
    for line in 0..100u32 {
        alice
            .send(json!({"type": "cursor_move", "document_id": "doc", "cursor": {"line": line, "column": 0}}))
            .await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sending = started.elapsed();
    let mut lines = Vec::new();
    while let Ok(Some(Ok(Message::Text(text)))) =
        tokio::time::timeout(Duration::from_millis(500), bob.stream.next()).await
    {
        let message: Value = serde_json::from_str(&text).unwrap();
        if message["type"] == "cursor_move" {
            lines.push(message["cursor"]["line"].as_u64().unwrap());
        }
    }
    let allowed = (sending.as_secs_f64() * 10.0).ceil() as usize + 2;
    assert!(
        (5..=allowed).contains(&lines.len()),
        "{} moves relayed in {sending:?} at 10 Hz: {lines:?}",
        lines.len()
    );
    assert_eq!(
        lines.last(),
        Some(&99),
        "the trailing edge sends the last position"
    );
    assert!(lines.windows(2).all(|w| w[0] < w[1]), "in order: {lines:?}");
    // REST sees the latest at once, relayed or not.
    let (_, body) = app
        .get("/api/v1/presence/document/doc", Some(&app.token("bob")))
        .await;
    let alice_row = body["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["user_id"] == "alice")
        .unwrap();
    assert_eq!(alice_row["cursor"]["line"], 99);
}
