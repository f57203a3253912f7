//! The floor: the smallest useful WebSocket broadcast relay, to measure what
//! this machine can do for the fan-out shape with no protocol work at all.
//!
//! Clients connect to `ws://HOST:PORT/<room>`; every text or binary frame a
//! client sends goes, unparsed, to every other client of the same room. It
//! does what a good relay must do and nothing else:
//! - a frame is received once and its bytes are shared by every recipient
//!   (tungstenite's `Utf8Bytes` / `Bytes` clone by reference count);
//! - each client has a bounded queue drained by its own writer task, which
//!   batches whatever is queued into one flush; a client whose queue is full
//!   is dropped from its room (its socket closes), so a slow reader never
//!   holds up the others;
//! - the WebSocket buffers are set explicitly (4 KiB read buffer): the 128 KiB
//!   default read buffer would dominate the memory per idle connection.
//!
//! ```sh
//! cargo run --release --example floor -- --bind 127.0.0.1:9000
//! ```

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::{net::TcpListener, sync::mpsc};
use tokio_tungstenite::tungstenite::{
    Message,
    handshake::server::{Request, Response},
    protocol::WebSocketConfig,
};

/// Frames waiting for one client before it counts as too slow (as in tandem).
const QUEUE_CAPACITY: usize = 512;

#[derive(Debug, Parser)]
#[command(about = "Minimal WebSocket broadcast relay (the benchmark floor)")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    bind: SocketAddr,
    /// Leave Nagle's algorithm on (no TCP_NODELAY), to measure what it costs:
    /// small frames then wait for the peer's delayed ACK (up to 40 ms on Linux).
    #[arg(long)]
    nagle: bool,
}

/// One connected client as its room sees it: where to queue its frames.
struct Peer {
    id: u64,
    queue: mpsc::Sender<Message>,
}

/// The clients of one room. A plain mutex: it is held only to copy frames
/// into queues (`try_send`, never awaited).
type Room = Arc<Mutex<Vec<Peer>>>;

/// Every room by name; a room is removed when its last client leaves.
#[derive(Default)]
struct Rooms {
    by_name: Mutex<HashMap<String, Room>>,
    next_id: AtomicU64,
}

impl Rooms {
    fn join(&self, name: &str, queue: mpsc::Sender<Message>) -> (Room, u64) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let room = {
            let mut rooms = lock(&self.by_name);
            rooms.entry(name.to_owned()).or_default().clone()
        };
        lock(&room).push(Peer { id, queue });
        (room, id)
    }

    fn leave(&self, name: &str, room: &Room, id: u64) {
        let now_empty = {
            let mut peers = lock(room);
            peers.retain(|peer| peer.id != id);
            peers.is_empty()
        };
        if now_empty {
            let mut rooms = lock(&self.by_name);
            // Someone may have joined between the two locks: check again.
            if rooms.get(name).is_some_and(|r| lock(r).is_empty()) {
                rooms.remove(name);
            }
        }
    }
}

/// A poisoned lock only means another connection panicked mid-broadcast; the
/// peer list is still valid.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Small, explicit buffers: a relay of small frames needs no more.
fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(Some(64 * 1024))
        .max_frame_size(Some(64 * 1024))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.bind).await?;
    eprintln!("floor relay listening on ws://{}/<room>", listener.local_addr()?);
    let rooms = Arc::new(Rooms::default());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                match accepted {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(!args.nagle);
                        tokio::spawn(serve(stream, rooms.clone()));
                    }
                    // Out of file descriptors and the like: keep serving the others.
                    Err(error) => eprintln!("accept failed: {error}"),
                }
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// One client: upgrade, join the room named by the path, relay until it leaves.
async fn serve(stream: tokio::net::TcpStream, rooms: Arc<Rooms>) {
    let mut room_name = String::new();
    // The callback's error type is tungstenite's (an HTTP response), not ours.
    #[allow(clippy::result_large_err)]
    let capture_path = |request: &Request, response: Response| {
        room_name = request.uri().path().trim_start_matches('/').to_owned();
        Ok(response)
    };
    let socket =
        match tokio_tungstenite::accept_hdr_async_with_config(stream, capture_path, Some(websocket_config()))
            .await
        {
            Ok(socket) => socket,
            Err(_) => return,
        };
    let (mut sink, mut frames) = socket.split();
    let (queue, mut outgoing) = mpsc::channel::<Message>(QUEUE_CAPACITY);
    let (room, id) = rooms.join(&room_name, queue);

    // Writer: drain the queue, batching whatever is already waiting into one flush.
    let writer = tokio::spawn(async move {
        while let Some(first) = outgoing.recv().await {
            if sink.feed(first).await.is_err() {
                return;
            }
            while let Ok(next) = outgoing.try_recv() {
                if sink.feed(next).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
        // The room dropped us (too slow) or the reader ended: close politely.
        let _ = sink.close().await;
    });

    while let Some(Ok(frame)) = frames.next().await {
        match frame {
            Message::Text(_) | Message::Binary(_) => broadcast(&room, id, &frame),
            Message::Close(_) => break,
            // Pings are answered by tungstenite itself.
            _ => {}
        }
    }
    rooms.leave(&room_name, &room, id);
    let _ = writer.await;
}

/// Queue `frame` for every other client of the room; drop clients that are too slow.
fn broadcast(room: &Room, from: u64, frame: &Message) {
    let mut peers = lock(room);
    peers.retain(|peer| {
        if peer.id == from {
            return true;
        }
        match peer.queue.try_send(frame.clone()) {
            Ok(()) => true,
            // Full: too slow, dropping its sender ends its writer. Closed: already gone.
            Err(_) => false,
        }
    });
}
