//! What a connection is sent, and the bounded queue it waits in: rooms push
//! into a member's [`Outbox`] without waiting; the connection's writer task
//! drains it. A queue that overflows (by count or by bytes) marks its
//! connection too slow, and only that connection is closed.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::protocol::json::Encoded;

/// What a session's writer task sends on its socket.
#[derive(Debug, Clone)]
pub enum Outgoing {
    Text(Encoded),
    Binary(Arc<[u8]>),
    /// One message made of parts, some shared with other connections (a
    /// large document's encoding): written as fragments that slice them,
    /// never concatenated. Boxed: every queue slot is the size of the largest
    /// variant, and this one is rare.
    Parts(Box<MessageParts>),
    Ping,
    Close(crate::protocol::codes::CloseCode),
    /// A presence message a newer one may still replace (see
    /// [`crate::rooms::latest`]); the writer takes its content when it
    /// gets to it.
    Latest(Arc<crate::rooms::latest::Slot<Outgoing>>),
}

/// The parts of an [`Outgoing::Parts`] message, in order.
#[derive(Debug, Clone)]
pub struct MessageParts {
    /// A text message (else binary).
    pub text: bool,
    pub parts: Vec<bytes::Bytes>,
}

impl crate::rooms::latest::Weighed for Outgoing {
    fn byte_len(&self) -> usize {
        Outgoing::byte_len(self)
    }
}

/// A connection's queued presence messages that a newer one may replace.
pub type LatestMessages = crate::rooms::latest::Pending<Outgoing>;

impl Outgoing {
    /// The payload bytes this message keeps alive while queued. Shared bytes
    /// count in full: a queued message pins them whoever else holds them.
    pub fn byte_len(&self) -> usize {
        match self {
            Self::Text(text) => text.len(),
            Self::Binary(bytes) => bytes.len(),
            Self::Parts(message) => message.parts.iter().map(bytes::Bytes::len).sum(),
            // Counted as they are replaced; the writer releases what it writes.
            Self::Ping | Self::Close(_) | Self::Latest(_) => 0,
        }
    }
}

/// The bytes queued on one connection and not yet written to its socket,
/// against the connection's bound. The queue's message count is bounded by
/// its channel; this bounds what those messages weigh, so a client that asks
/// for a large document again and again without reading cannot pin more than
/// the bound.
#[derive(Debug)]
pub struct QueuedBytes {
    queued: AtomicUsize,
    limit: usize,
}

impl QueuedBytes {
    pub fn new(limit: usize) -> Self {
        Self {
            queued: AtomicUsize::new(0),
            limit,
        }
    }

    /// Count `len` more bytes as queued, unless that passes the bound. An
    /// empty queue takes any one message, so a document larger than the
    /// bound can still be sent to a client that reads it.
    pub fn reserve(&self, len: usize) -> bool {
        let mut queued = self.queued.load(Ordering::Acquire);
        loop {
            if queued > 0 && queued.saturating_add(len) > self.limit {
                return false;
            }
            match self.queued.compare_exchange_weak(
                queued,
                queued.saturating_add(len),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => queued = actual,
            }
        }
    }

    /// `len` bytes were written (or dropped): they no longer count.
    pub fn release(&self, len: usize) {
        self.queued.fetch_sub(len, Ordering::AcqRel);
    }

    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// The sending side of one connection's bounded queue.
#[derive(Debug, Clone)]
pub struct Outbox {
    queue: mpsc::Sender<Outgoing>,
    /// Fired when the queue overflows: the connection is too slow and is closed.
    overflowed: CancellationToken,
    /// What the queued messages weigh; the writer releases what it writes.
    bytes: Arc<QueuedBytes>,
    /// Queued presence messages a newer one may replace.
    latest: Arc<LatestMessages>,
    /// Set while the connection's socket is gone and its session waits to
    /// be resumed (see [`crate::rooms::parking`]).
    parked: Arc<ParkedQueue>,
}

/// A parked connection's queue: it keeps every message, in order, for the
/// replay on resume, up to its own bound. Past that bound, or the byte
/// bound, messages are dropped and the queue is marked lost (the resumed
/// client gets a fresh `presence_list` instead): a parked queue never
/// marks its connection too slow, since nobody is reading it yet.
#[derive(Debug, Default)]
struct ParkedQueue {
    on: std::sync::atomic::AtomicBool,
    lost: std::sync::atomic::AtomicBool,
    max_depth: AtomicUsize,
}

impl Outbox {
    pub fn new(
        queue: mpsc::Sender<Outgoing>,
        overflowed: CancellationToken,
        bytes: Arc<QueuedBytes>,
    ) -> Self {
        Self {
            queue,
            overflowed,
            bytes,
            latest: Arc::default(),
            parked: Arc::default(),
        }
    }

    /// Keep what comes for the replay on resume: up to `max_depth`
    /// messages in all, none of them replaced by a newer one.
    pub fn park(&self, max_depth: usize) {
        self.parked.max_depth.store(max_depth, Ordering::Release);
        self.parked.lost.store(false, Ordering::Release);
        self.parked.on.store(true, Ordering::Release);
    }

    /// Back to a live queue; whether messages were dropped while parked.
    pub fn unpark(&self) -> bool {
        self.parked.on.store(false, Ordering::Release);
        self.parked.lost.swap(false, Ordering::AcqRel)
    }

    fn is_parked(&self) -> bool {
        self.parked.on.load(Ordering::Acquire)
    }

    /// The queue cannot take a message: a live connection is too slow and
    /// is closed; a parked one has lost its replay.
    fn overflow(&self) {
        if self.is_parked() {
            if !self.parked.lost.swap(true, Ordering::AcqRel) {
                tracing::info!("resume buffer overflowed; the resumed client gets a fresh presence list");
            }
        } else {
            self.overflowed.cancel();
        }
    }

    /// Drop everything `queue` (this outbox's receiving side) holds, its
    /// bytes released: a lost replay is replaced by fresh state.
    pub fn discard_queued(&self, queue: &mut mpsc::Receiver<Outgoing>) {
        while let Ok(message) = queue.try_recv() {
            let message = match message {
                Outgoing::Latest(slot) => self.latest.take(&slot),
                other => Some(other),
            };
            if let Some(message) = message {
                self.bytes.release(message.byte_len());
            }
        }
    }

    /// Count bytes of a message that goes out ahead of the queue (the
    /// writer releases them once written, like any other).
    pub fn count_unqueued(&self, len: usize) {
        self.bytes.queued.fetch_add(len, Ordering::AcqRel);
    }

    /// The replaceable messages, for the writer.
    pub fn latest(&self) -> Arc<LatestMessages> {
        self.latest.clone()
    }

    /// What a writer draining this queue watches and releases: the
    /// overflow signal and the queued bytes.
    pub fn writer_handles(&self) -> (CancellationToken, Arc<QueuedBytes>) {
        (self.overflowed.clone(), self.bytes.clone())
    }

    /// Queue a presence message that replaces a still-queued one of the
    /// same member, stream and document (latest wins). With nothing queued
    /// it is an ordinary push. Returns false if it was not queued.
    pub fn push_latest(&self, key: &crate::rooms::latest::LatestKey, message: Outgoing) -> bool {
        use crate::rooms::latest::Replaced;
        if self.depth() == 0 || self.is_parked() {
            return self.push(message);
        }
        let len = message.byte_len();
        match self.latest.replace_or_enqueue(key, message, |slot| {
            if !self.reserve(len) {
                return false;
            }
            if self.queue.try_send(Outgoing::Latest(slot)).is_ok() {
                return true;
            }
            // Full: too slow even with presence coalesced; closed: gone.
            self.bytes.release(len);
            if !self.queue.is_closed() {
                self.overflow();
            }
            false
        }) {
            Replaced::Replaced(old) => {
                if len >= old {
                    // Over the byte bound only by growth of one message: mark slow.
                    self.reserve(len - old)
                } else {
                    self.bytes.release(old - len);
                    true
                }
            }
            Replaced::Queued => true,
            Replaced::NotQueued => false,
        }
    }

    /// Count the message's bytes, or mark the connection too slow if they do
    /// not fit under its bound.
    fn reserve(&self, len: usize) -> bool {
        if self.bytes.reserve(len) {
            return true;
        }
        if !self.overflowed.is_cancelled() && !self.is_parked() {
            tracing::info!(
                queued_bytes = self.bytes.queued(),
                message_bytes = len,
                max_queued_bytes = self.bytes.limit(),
                "send queue over its byte bound"
            );
        }
        self.overflow();
        false
    }

    /// Queue a message without waiting. Returns false if it was not queued.
    pub fn push(&self, message: Outgoing) -> bool {
        if self.is_parked() && self.depth() >= self.parked.max_depth.load(Ordering::Acquire) {
            self.overflow();
            return false;
        }
        let len = message.byte_len();
        if !self.reserve(len) {
            return false;
        }
        match self.queue.try_send(message) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.bytes.release(len);
                self.overflow();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.bytes.release(len);
                false
            }
        }
    }

    /// Messages waiting in the queue (for the metrics' queue depths).
    pub fn depth(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// Bytes the waiting messages weigh.
    pub fn queued_bytes(&self) -> usize {
        self.bytes.queued()
    }

    pub fn text(&self, text: Encoded) -> bool {
        self.push(Outgoing::Text(text))
    }

    /// Queue a reply to this connection's own message, waiting up to
    /// `patience` for a free slot; a client that reads nothing for that long
    /// is marked too slow, as is one whose queued bytes would pass the bound
    /// (waiting would let a client that never reads pin them for `patience`).
    /// Returns false if it was not queued.
    pub async fn push_waiting(&self, message: Outgoing, patience: std::time::Duration) -> bool {
        let len = message.byte_len();
        if !self.reserve(len) {
            return false;
        }
        match tokio::time::timeout(patience, self.queue.send(message)).await {
            Ok(Ok(())) => true,
            Ok(Err(_)) => {
                self.bytes.release(len);
                false
            }
            Err(_) => {
                self.bytes.release(len);
                self.overflow();
                false
            }
        }
    }
}

#[cfg(test)]
mod latest_wins {
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::{
        model::ids::DocumentId,
        rooms::latest::{LatestKey, Stream},
    };
    use uuid::Uuid;

    fn key(sender: u128, stream: Stream) -> LatestKey {
        LatestKey {
            sender: Uuid::from_u128(sender),
            document: DocumentId::parse("d").unwrap(),
            stream,
        }
    }

    /// What a writer would write, in order.
    fn drain(rx: &mut tokio::sync::mpsc::Receiver<Outgoing>, pending: &LatestMessages) -> Vec<String> {
        let mut written = Vec::new();
        while let Ok(message) = rx.try_recv() {
            let message = match message {
                Outgoing::Latest(slot) => match pending.take(&slot) {
                    Some(message) => message,
                    None => continue,
                },
                other => other,
            };
            if let Outgoing::Text(text) = message {
                written.push(text.to_string());
            }
        }
        written
    }

    #[test]
    fn a_queued_cursor_is_replaced_by_the_same_members_newer_one() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let bytes = Arc::new(QueuedBytes::new(1 << 20));
        let outbox = Outbox::new(tx, CancellationToken::new(), bytes.clone());
        // An empty queue is written at once: nothing to coalesce with.
        assert!(outbox.push_latest(&key(1, Stream::Cursor), Outgoing::Text("a0".into())));
        for n in 1..1000 {
            assert!(outbox.push_latest(&key(1, Stream::Cursor), Outgoing::Text(format!("a{n}").into())));
            assert!(outbox.push_latest(&key(2, Stream::Cursor), Outgoing::Text(format!("b{n}").into())));
        }
        assert!(outbox.push_latest(&key(1, Stream::Selection), Outgoing::Text("s1".into())));
        assert!(outbox.text("update".into()), "other messages queue as ever");
        assert_eq!(outbox.depth(), 5, "2,000 moves took 4 slots of 8");
        assert_eq!(
            bytes.queued(),
            "a0a999b999s1update".len(),
            "replaced bytes are released"
        );
        let pending = outbox.latest();
        assert_eq!(drain(&mut rx, &pending), ["a0", "a999", "b999", "s1", "update"]);
        // Taken slots are forgotten: the next move queues anew.
        assert!(outbox.text("x".into()));
        assert!(outbox.push_latest(&key(1, Stream::Cursor), Outgoing::Text("a1000".into())));
        assert_eq!(drain(&mut rx, &pending), ["x", "a1000"]);
    }

    #[test]
    fn a_full_queue_still_marks_the_reader_too_slow() {
        let (tx, _rx) = tokio::sync::mpsc::channel(2);
        let overflowed = CancellationToken::new();
        let outbox = Outbox::new(tx, overflowed.clone(), Arc::new(QueuedBytes::new(1 << 20)));
        assert!(outbox.text("one".into()));
        assert!(outbox.text("two".into()));
        assert!(!outbox.push_latest(&key(1, Stream::Cursor), Outgoing::Text("c".into())));
        assert!(overflowed.is_cancelled());
    }
}
