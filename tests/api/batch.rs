//! `/ws?batch=1`: newline-delimited JSON both ways. The server puts several
//! queued messages in one text frame; the client may send several messages
//! in one frame, each answered and each counted by the rate limit. Without
//! `batch=1` nothing changes.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

/// Every message of the next text frame.
async fn next_frame(client: &mut Client) -> Vec<Value> {
    loop {
        let frame = tokio::time::timeout(WAIT, client.stream.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("frame");
        if let Message::Text(text) = frame {
            return text
                .split('\n')
                .map(|line| serde_json::from_str(line).unwrap())
                .collect();
        }
    }
}

#[tokio::test]
async fn a_batching_reader_gets_queued_messages_in_shared_frames_and_in_order() {
    let app = spawn_app_with(&Backend::Sqlite, |config| {
        config.rate_limit_per_second = 100_000;
        config.rate_limit_burst = 100_000;
    })
    .await;
    let mut alice = app.connect_tuned("alice", "&batch=1", Some(4096)).await;
    alice
        .stream
        .send(Message::text(
            json!({"type": "join_document", "document_id": "doc"}).to_string(),
        ))
        .await
        .unwrap();
    let mut bob = app.connect("bob").await;
    bob.join("doc").await;
    // Alice does not read while bob sends: what she has not taken waits in
    // her queue, and goes out batched when she reads again.
    let data = "x".repeat(400);
    const SENT: usize = 4000;
    for n in 0..SENT {
        let frame =
            json!({"type": "broadcast", "document_id": "doc", "event": "n", "data": {"n": n, "pad": data}});
        bob.stream.feed(Message::text(frame.to_string())).await.unwrap();
    }
    bob.stream.flush().await.unwrap();
    let (mut frames, mut seen, mut largest) = (0, Vec::new(), 0);
    while seen.len() < SENT {
        let messages = next_frame(&mut alice).await;
        frames += 1;
        largest = largest.max(messages.len());
        seen.extend(
            messages
                .iter()
                .filter(|m| m["type"] == "broadcast")
                .map(|m| m["data"]["n"].as_u64().unwrap() as usize),
        );
    }
    assert_eq!(seen, (0..SENT).collect::<Vec<_>>(), "all of them, in order");
    assert!(
        largest > 1,
        "some frames held several messages ({frames} frames for {SENT} broadcasts)"
    );
    assert!(frames < SENT, "{frames} frames for {SENT} broadcasts");
}

#[tokio::test]
async fn a_batching_client_may_send_several_messages_in_one_frame() {
    let app = spawn_app().await;
    let mut alice = app.connect_tuned("alice", "&batch=1", None).await;
    let frame = [
        json!({"type": "join_document", "document_id": "doc", "id": 1}),
        json!({"type": "cursor_move", "document_id": "doc", "cursor": {"line": 1, "column": 2}, "id": 2}),
        json!({"type": "nonsense", "id": 3}),
        json!({"type": "heartbeat", "id": 4}),
    ]
    .iter()
    .map(Value::to_string)
    .collect::<Vec<_>>()
    .join("\n");
    alice.stream.send(Message::text(frame)).await.unwrap();
    let mut replies = Vec::new();
    while replies.len() < 4 {
        for message in next_frame(&mut alice).await {
            if message.get("id").is_some() && message["type"] != "sync_step1" {
                replies.push((
                    message["type"].as_str().unwrap().to_owned(),
                    message["id"].clone(),
                ));
            }
        }
    }
    assert_eq!(
        replies,
        [
            ("presence_list".to_owned(), json!(1)),
            ("ack".to_owned(), json!(2)),
            ("error".to_owned(), json!(3)),
            ("heartbeat_ack".to_owned(), json!(4)),
        ]
    );
    // Each line counts against the rate limit: 300 in one frame is over the burst.
    let flood = vec![json!({"type": "heartbeat"}).to_string(); 300].join("\n");
    alice.stream.send(Message::text(flood)).await.unwrap();
    let mut codes = Vec::new();
    while !codes.contains(&"rate_limited".to_owned()) {
        for message in next_frame(&mut alice).await {
            codes.push(message["code"].as_str().unwrap_or_default().to_owned());
        }
    }
}

#[tokio::test]
async fn without_batch_a_frame_is_one_message() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    let two = format!(
        "{}\n{}",
        json!({"type": "heartbeat", "id": 1}),
        json!({"type": "heartbeat", "id": 2})
    );
    alice.send_raw(Message::text(two)).await;
    let error = alice.recv_type("error").await;
    assert_eq!(error["code"], "invalid_json", "{error}");
    alice.assert_alive().await;
}
