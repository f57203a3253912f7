//! Replays the attack shapes of the Trust review against a running tandem
//! and checks that it stays alive and responsive throughout.
//!
//! ```sh
//! cargo run --release --example attack -- --addr 127.0.0.1:8080 --jwt-secret "$S" \
//!     --server-pid "$(pgrep -n tandem)" --duration 3m
//! cargo run --example attack -- --smoke --addr 127.0.0.1:8080 --jwt-secret "$S"   # CI: 20 s
//! ```
//!
//! Hostile clients with ordinary editor tokens send mutated and crafted Yjs
//! updates on `/ws` and `/yjs`, values nested 100,000 deep, delete sets and
//! updates that wait for missing dependencies, a `sync_step1` flood without
//! reading, garbage frames, floods past the rate limit, silent and half-sent
//! TCP connections and a REST read flood. Meanwhile a canary (another user)
//! edits its own document once a second and must get every ack, and every
//! REST read, within `--patience`. Exit status 1 if the canary ever fails or
//! the server process dies; every loop is bounded by the deadline.

// Shared with the load generator; only the RSS reading is used here.
#[path = "loadgen/procstat.rs"]
#[allow(dead_code)]
mod procstat;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::{io::AsyncWriteExt, net::TcpStream};
use tokio_tungstenite::tungstenite::Message;
use yrs::{Text, Transact};

#[derive(Debug, Parser)]
#[command(about = "Replay hostile inputs against a running tandem; fail if it stops answering")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    #[arg(long, env = "TANDEM_JWT_SECRET")]
    jwt_secret: String,
    /// The server's pid: its RSS is reported and its death is a failure.
    #[arg(long)]
    server_pid: Option<u32>,
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// How long the canary waits for an ack or a REST answer.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    patience: Duration,
    /// 20 seconds with a 10-second patience, for CI (a debug build on a
    /// shared machine: liveness is judged there, not latency).
    #[arg(long)]
    smoke: bool,
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

struct Target {
    addr: String,
    secret: tandem::config::Secret,
    deadline: Instant,
    /// Frames the attackers got onto the wire.
    sent: AtomicU64,
}

impl Target {
    fn token(&self, user: &str) -> String {
        let claims = tandem::auth::Claims::for_user(user, Duration::from_secs(3600));
        tandem::auth::jwt::mint_hs256(&self.secret, &claims).expect("mint a token")
    }

    fn live(&self) -> bool {
        Instant::now() < self.deadline
    }

    async fn ws(&self, user: &str, path: &str) -> Option<Socket> {
        let url = format!("ws://{}{path}?token={}", self.addr, self.token(user));
        let connected =
            tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(url)).await;
        match connected {
            Ok(Ok((socket, _))) => Some(socket),
            _ => None,
        }
    }

    /// A JSON client that joined `document`, with its reads drained in the background.
    async fn json_member(
        self: &Arc<Self>,
        user: &str,
        document: &str,
    ) -> Option<futures_util::stream::SplitSink<Socket, Message>> {
        let socket = self.ws(user, "/ws").await?;
        let (mut sink, mut stream) = socket.split();
        let join = json!({"type": "join_document", "document_id": document}).to_string();
        sink.send(Message::text(join)).await.ok()?;
        tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
        Some(sink)
    }
}

use tandem::crdt::craft::var;

/// One string item of `client` at `clock` after `origin` (or under root `content`).
fn string_item(client: u128, clock: u128, origin: Option<(u128, u128)>, text: &str) -> Vec<u8> {
    tandem::crdt::craft::string_item(client, clock, origin, "content", text)
}

/// The crafted shapes of the review: wrapped clocks, ids past 2^53, self origins.
fn crafted() -> Vec<Vec<u8>> {
    let mut updates = vec![string_item(1, 0, None, "abc")];
    for clock in [(1u128 << 31) - 1, 1 << 31, (1 << 53) - 2, 1 << 64, (1 << 64) + 3] {
        updates.push(string_item(3, clock, Some((1, 2)), "first"));
    }
    updates.push(string_item((1 << 53) - 1, 0, Some((1, 2)), "!"));
    updates.push(string_item(1 << 53, 0, Some((1, 2)), "!"));
    updates.push(string_item(4, 0, Some((4, 0)), "self"));
    updates.push(string_item(4, 3, Some((4, 9)), "later"));
    updates
}

/// `[[[[...]]]]` 100,000 deep in a Y.Array item.
fn nested() -> Vec<u8> {
    let mut out = Vec::new();
    for value in [1u128, 1, 99, 0] {
        var(&mut out, value);
    }
    out.push(0x08);
    var(&mut out, 1);
    var(&mut out, 1);
    out.push(b'a');
    var(&mut out, 1);
    for _ in 0..100_000 {
        out.push(117);
        var(&mut out, 1);
    }
    out.push(126);
    var(&mut out, 0);
    out
}

/// A delete set of `ranges` ranges naming items nobody has.
fn unknown_deletions(client: u128, ranges: usize) -> Vec<u8> {
    tandem::crdt::craft::deletions(client, 0, ranges)
}

/// Real edits, to mutate.
fn seeds() -> Vec<Vec<u8>> {
    let doc = yrs::Doc::with_client_id(11);
    let text = doc.get_or_insert_text("content");
    let mut seeds = Vec::new();
    for (index, piece) in ["hello", " world", "é🎉", " again"].iter().enumerate() {
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, (index * 2) as u32, piece);
        seeds.push(txn.encode_update_v1());
    }
    let mut txn = doc.transact_mut();
    text.remove_range(&mut txn, 1, 3);
    seeds.push(txn.encode_update_v1());
    seeds
}

use tandem::crdt::craft::Mutator;

fn sync_update(document: &str, update: &[u8]) -> Message {
    Message::text(
        json!({"type": "sync_update", "document_id": document, "update": STANDARD.encode(update)})
            .to_string(),
    )
}

/// Mutated, crafted, nested and dangling updates on the JSON endpoint.
async fn json_updates(target: Arc<Target>, worker: u64) {
    let seeds = seeds();
    let crafted = crafted();
    let mut mutator = Mutator(0x9E37_79B9_7F4A_7C15 ^ worker);
    let mut round = 0u64;
    while target.live() {
        let Some(mut sink) = target.json_member(&format!("mallory-{worker}"), "target").await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        while target.live() {
            round += 1;
            let update = match round % 50 {
                0 => nested(),
                1 => unknown_deletions(u128::from(round), 20_000),
                2..=9 => crafted[(round as usize) % crafted.len()].clone(),
                _ => mutator.mutate(&seeds[(round as usize) % seeds.len()]),
            };
            if sink.send(sync_update("target", &update)).await.is_err() {
                break;
            }
            target.sent.fetch_add(1, Ordering::Relaxed);
            if round.is_multiple_of(20) {
                // Stay near the rate limit, so most frames reach the decoder.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Mutated updates as y-websocket frames on `/yjs`.
async fn yjs_updates(target: Arc<Target>) {
    let seeds = seeds();
    let mut mutator = Mutator(0x2545_F491_4F6C_DD1D);
    let mut round = 0u64;
    while target.live() {
        let Some(socket) = target.ws("mallory-yjs", "/yjs/target").await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let (mut sink, mut stream) = socket.split();
        tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
        while target.live() {
            round += 1;
            let update = mutator.mutate(&seeds[(round as usize) % seeds.len()]);
            let mut frame = vec![0, 2];
            var(&mut frame, update.len() as u128);
            frame.extend_from_slice(&update);
            if sink.send(Message::binary(frame)).await.is_err() {
                break;
            }
            target.sent.fetch_add(1, Ordering::Relaxed);
            if round.is_multiple_of(20) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// `sync_step1` with an empty and a stale state vector, never reading.
async fn never_reads(target: Arc<Target>) {
    while target.live() {
        let Some(mut socket) = target.ws("mallory-reader", "/ws").await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let join = json!({"type": "join_document", "document_id": "big"}).to_string();
        if socket.send(Message::text(join)).await.is_err() {
            continue;
        }
        for round in 0u64.. {
            if !target.live() {
                return;
            }
            let state_vector = if round % 2 == 0 { vec![0] } else { vec![1, 11, 1] };
            let step1 = json!({"type": "sync_step1", "document_id": "big", "state_vector": STANDARD.encode(state_vector)});
            if socket.send(Message::text(step1.to_string())).await.is_err() {
                break;
            }
            target.sent.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Garbage text, binary on the JSON endpoint, and a flood past the rate limit.
async fn garbage(target: Arc<Target>) {
    let frames = [
        Message::text("{"),
        Message::text("[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]"),
        Message::text(r#"{"type":"sync_update","document_id":"target","update":"!!!not base64"}"#),
        Message::text(r#"{"type":"cursor_move","document_id":"../../etc","cursor":{"line":-1}}"#),
        Message::binary(vec![0xff; 64]),
    ];
    while target.live() {
        let Some(socket) = target.ws("mallory-garbage", "/ws").await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let (mut sink, mut stream) = socket.split();
        tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
        for round in 0usize.. {
            if !target.live() || sink.send(frames[round % frames.len()].clone()).await.is_err() {
                break;
            }
            target.sent.fetch_add(1, Ordering::Relaxed);
            if round % 500 == 499 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Silent TCP connections and requests whose headers never end.
async fn silent_sockets(target: Arc<Target>, count: usize) {
    let mut held = Vec::new();
    for index in 0..count {
        if !target.live() {
            break;
        }
        if let Ok(Ok(mut stream)) =
            tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(&target.addr)).await
        {
            if index % 2 == 0 {
                let _ = stream
                    .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
                    .await;
            }
            held.push(stream);
        }
    }
    while target.live() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(held);
}

/// Reads of documents that do not exist, each a new id.
async fn rest_reads(target: Arc<Target>) {
    let client = reqwest::Client::new();
    let token = target.token("mallory-rest");
    for round in 0u64.. {
        if !target.live() {
            return;
        }
        let url = format!("http://{}/api/v1/documents/ghost-{round}", target.addr);
        let _ = client.get(url).bearer_auth(&token).send().await;
        target.sent.fetch_add(1, Ordering::Relaxed);
    }
}

/// Edits its own document once a second: every ack and every read must come
/// within the patience. Returns the number of failures.
async fn canary(target: Arc<Target>, patience: Duration, pid: Option<u32>) -> u64 {
    let client = reqwest::Client::new();
    let token = target.token("canary");
    let doc = yrs::Doc::with_client_id(777);
    let text = doc.get_or_insert_text("content");
    let mut failures = 0;
    let mut socket: Option<Socket> = None;
    let mut round = 0u64;
    while target.live() {
        round += 1;
        if let Some(pid) = pid
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            eprintln!("canary: the server process {pid} is gone");
            return failures + 1;
        }
        if socket.is_none() {
            socket = target.ws("canary", "/ws").await;
            if let Some(open) = socket.as_mut() {
                let join = json!({"type": "join_document", "document_id": "canary"}).to_string();
                if open.send(Message::text(join)).await.is_err() {
                    socket = None;
                }
            }
            if socket.is_none() {
                eprintln!("canary: could not connect");
                failures += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        let update = {
            let mut txn = doc.transact_mut();
            text.push(&mut txn, "x");
            txn.encode_update_v1()
        };
        let open = socket.as_mut().expect("connected above");
        let id = format!("c{round}");
        let message = json!({"type": "sync_update", "document_id": "canary", "update": STANDARD.encode(&update), "id": id});
        let acked = tokio::time::timeout(patience, async {
            open.send(Message::text(message.to_string())).await.ok()?;
            while let Some(Ok(frame)) = open.next().await {
                if let Message::Text(text) = frame
                    && let Ok(value) = serde_json::from_str::<Value>(&text)
                    && value["type"] == "ack"
                    && value["id"] == id.as_str()
                {
                    return Some(());
                }
            }
            None
        })
        .await;
        if !matches!(acked, Ok(Some(()))) {
            eprintln!("canary: no ack for {id} within {patience:?}");
            failures += 1;
            socket = None;
        }
        let url = format!("http://{}/api/v1/documents/canary/text/content", target.addr);
        let read = tokio::time::timeout(patience, client.get(url).bearer_auth(&token).send()).await;
        match read {
            Ok(Ok(response)) if response.status().is_success() || response.status().as_u16() == 429 => {}
            other => {
                eprintln!("canary: REST read failed: {other:?}");
                failures += 1;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    failures
}

/// Put ~1 MB into the document the never-reading client asks for.
async fn seed_big_document(target: &Target) {
    let Some(mut socket) = target.ws("seeder", "/ws").await else {
        return;
    };
    let join = json!({"type": "join_document", "document_id": "big"}).to_string();
    let _ = socket.send(Message::text(join)).await;
    let doc = yrs::Doc::with_client_id(55);
    let text = doc.get_or_insert_text("content");
    for chunk in 0..4 {
        let update = {
            let mut txn = doc.transact_mut();
            text.push(&mut txn, &"lorem ipsum ".repeat(20_000));
            txn.encode_update_v1()
        };
        let id = format!("seed-{chunk}");
        let message = json!({"type": "sync_update", "document_id": "big", "update": STANDARD.encode(&update), "id": id});
        let _ = socket.send(Message::text(message.to_string())).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(Ok(Message::Text(text))) = socket.next().await {
                if text.contains(&format!("\"id\":\"{id}\"")) {
                    break;
                }
            }
        })
        .await;
    }
    let _ = socket.close(None).await;
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let duration = if args.smoke {
        Duration::from_secs(20)
    } else {
        args.duration
    };
    let patience = if args.smoke {
        args.patience.max(Duration::from_secs(10))
    } else {
        args.patience
    };
    let secret = tandem::config::Secret::new(args.jwt_secret.clone());
    let server = args.server_pid.map(procstat::Proc::Pid);
    let rss_before = server.and_then(|p| p.rss_kib());
    seed_big_document(&Target {
        addr: args.addr.clone(),
        secret: secret.clone(),
        deadline: Instant::now() + Duration::from_secs(60),
        sent: AtomicU64::new(0),
    })
    .await;
    let target = Arc::new(Target {
        addr: args.addr.clone(),
        secret,
        deadline: Instant::now() + duration,
        sent: AtomicU64::new(0),
    });
    let mut attackers = tokio::task::JoinSet::new();
    for worker in 0..3 {
        attackers.spawn(json_updates(target.clone(), worker));
    }
    attackers.spawn(yjs_updates(target.clone()));
    attackers.spawn(never_reads(target.clone()));
    attackers.spawn(garbage(target.clone()));
    attackers.spawn(silent_sockets(target.clone(), 300));
    attackers.spawn(rest_reads(target.clone()));
    let failures = canary(target.clone(), patience, args.server_pid).await;
    // Every attacker loop ends at the deadline; give stragglers a moment.
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while attackers.join_next().await.is_some() {}
    })
    .await;
    attackers.abort_all();
    let rss_after = server.and_then(|p| p.rss_kib());
    println!(
        "{}",
        json!({
            "attack_seconds": duration.as_secs(),
            "hostile_frames_sent": target.sent.load(Ordering::Relaxed),
            "canary_failures": failures,
            "server_rss_kib_before": rss_before,
            "server_rss_kib_after": rss_after,
        })
    );
    if failures > 0 {
        eprintln!("attack: the canary failed {failures} time(s)");
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}
