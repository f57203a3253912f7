//! Criterion micro-benchmarks of the per-message hot path, through the
//! library: decode a client `cursor_move` frame, route it through a room
//! (presence update + fan-out into every member's bounded outbox) and encode
//! the broadcast. The load generator measures the same path end to end over
//! sockets; these isolate the CPU cost per message and per recipient.
//!
//! ```sh
//! cargo bench --bench hot_path
//! ```

use std::{hint::black_box, sync::Arc};

use chrono::Utc;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tandem::{
    model::device::DeviceType,
    model::ids::DocumentId,
    model::presence::Cursor,
    model::presence::Presence,
    protocol::json::{ClientMessage, DecodeLimits, ServerMessage, decode_client_frame},
    rooms::outbox::Outbox,
    rooms::outbox::Outgoing,
    rooms::outbox::QueuedBytes,
    rooms::{
        member::{Member, MemberKind},
        room::{PresenceChange, RoomState},
    },
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The server's defaults (64 KiB control frames, 1 MiB Yjs payloads).
const LIMITS: DecodeLimits = DecodeLimits {
    max_message_bytes: 64 * 1024,
    max_update_bytes: 1024 * 1024,
    max_broadcast_bytes: 16 * 1024,
};

/// What a client sends when its cursor moves.
const CURSOR_FRAME: &str = r#"{"type":"cursor_move","document_id":"doc-1","cursor":{"line":12,"column":4}}"#;

fn presence(index: usize) -> Presence {
    let now = Utc::now();
    Presence {
        user_id: format!("user-{index}").into(),
        name: Some(format!("User {index}").into()),
        session_id: Uuid::now_v7(),
        connection_id: Uuid::now_v7(),
        device_type: DeviceType::Desktop,
        is_editing: false,
        cursor: None,
        selection: None,
        joined_at: now,
        last_seen_at: now,
    }
}

/// A room of `members` JSON members and the receiving ends of their outboxes
/// (drained after every message, as their writer tasks would).
fn room(members: usize) -> (RoomState, Vec<Uuid>, Vec<mpsc::Receiver<Outgoing>>) {
    let document_id = DocumentId::parse("doc-1").expect("valid document id");
    let mut room = RoomState::default();
    let mut ids = Vec::new();
    let mut receivers = Vec::new();
    for index in 0..members {
        let (sender, receiver) = mpsc::channel(1024);
        let member = Member::new(
            presence(index),
            // No byte bound: the bench drains the receivers without a writer to release bytes.
            Outbox::new(
                sender,
                CancellationToken::new(),
                Arc::new(QueuedBytes::new(usize::MAX)),
            ),
            MemberKind::Json,
        );
        ids.push(member.presence.connection_id);
        room.join(&document_id, member, None);
        receivers.push(receiver);
    }
    for receiver in &mut receivers {
        while receiver.try_recv().is_ok() {}
    }
    (room, ids, receivers)
}

fn drain(receivers: &mut [mpsc::Receiver<Outgoing>]) {
    for receiver in receivers {
        while let Ok(message) = receiver.try_recv() {
            black_box(message);
        }
    }
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1));
    group.bench_function("cursor_move", |b| {
        b.iter(|| decode_client_frame(black_box(CURSOR_FRAME), LIMITS).expect("valid frame"))
    });
    group.finish();
}

fn encode(c: &mut Criterion) {
    let document_id = DocumentId::parse("doc-1").expect("valid document id");
    let connection_id = Uuid::now_v7();
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(1));
    group.bench_function("cursor_move_broadcast", |b| {
        b.iter(|| {
            ServerMessage::CursorMove {
                document_id: black_box(&document_id),
                user_id: "user-0",
                connection_id,
                cursor: Cursor { line: 12, column: 4 },
            }
            .encode()
        })
    });
    group.finish();
}

/// Route a cursor move through a room: presence update, encode once,
/// fan out to every other member's queue.
fn route(c: &mut Criterion) {
    let document_id = DocumentId::parse("doc-1").expect("valid document id");
    let mut group = c.benchmark_group("route");
    for members in [10usize, 200] {
        let (mut room, ids, mut receivers) = room(members);
        let first = PresenceChange::Cursor(Cursor { line: 0, column: 0 });
        room.change_presence(&document_id, ids[0], first, Utc::now());
        assert!(
            broadcast_is_shared(&mut receivers[1..]),
            "a broadcast is encoded once and shared"
        );
        group.throughput(Throughput::Elements(members as u64 - 1));
        group.bench_with_input(BenchmarkId::new("cursor_move", members), &members, |b, _| {
            let mut column = 0;
            b.iter(|| {
                column += 1;
                let change = PresenceChange::Cursor(Cursor { line: 1, column });
                black_box(room.change_presence(&document_id, ids[0], change, Utc::now()));
                drain(&mut receivers);
            })
        });
    }
    group.finish();
}

/// The whole per-message path: decode the frame, then route it.
fn decode_and_route(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_and_route");
    for members in [10usize, 200] {
        let (mut room, ids, mut receivers) = room(members);
        group.throughput(Throughput::Elements(members as u64 - 1));
        group.bench_with_input(BenchmarkId::new("cursor_move", members), &members, |b, _| {
            b.iter(|| {
                let frame = decode_client_frame(black_box(CURSOR_FRAME), LIMITS).expect("valid frame");
                if let ClientMessage::CursorMove { document_id, cursor } = frame.message {
                    black_box(room.change_presence(
                        &document_id,
                        ids[0],
                        PresenceChange::Cursor(cursor),
                        Utc::now(),
                    ));
                }
                drain(&mut receivers);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decode, encode, route, decode_and_route);
criterion_main!(benches);

/// The room's serialize-once claim: every recipient gets the same allocation.
fn broadcast_is_shared(receivers: &mut [mpsc::Receiver<Outgoing>]) -> bool {
    let texts: Vec<Arc<str>> = receivers
        .iter_mut()
        .filter_map(|r| match r.try_recv() {
            Ok(Outgoing::Text(text)) => Some(text),
            _ => None,
        })
        .collect();
    texts.windows(2).all(|w| Arc::ptr_eq(&w[0], &w[1]))
}
