//! The document log as every layer sees it: what is stored of a document,
//! the write a room queues for durability and what its sender hears back,
//! and the [`DocumentLog`] trait that storage implements on the database (and
//! tests implement in memory). Rooms talk to this trait only, so they never
//! import storage, and storage never imports rooms or encodes a message.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering},
    },
};

use super::ids::DocumentId;

/// A document as stored: snapshot plus the updates not folded into it.
#[derive(Debug, Default)]
pub struct StoredDocument {
    pub snapshot: Option<Vec<u8>>,
    pub updates: Vec<Vec<u8>>,
    /// Who writes under each Yjs client id of the document.
    pub authors: Vec<(u64, String)>,
    /// Bytes of `updates`.
    pub update_bytes: u64,
    /// When the document was last written (unix milliseconds), if ever.
    pub last_edit_ms: Option<i64>,
}

/// One document's standing with the log, shared by its room and the writer.
#[derive(Debug, Default)]
pub struct LogCounters {
    /// Updates applied in memory whose commit has not finished yet.
    pub unpersisted: AtomicUsize,
    /// Update rows stored since the snapshot (drives compaction).
    pub stored_updates: AtomicU64,
    /// Bytes of those rows.
    pub stored_bytes: AtomicU64,
    /// A compaction of this document is running.
    pub compacting: AtomicBool,
    /// When the document was last edited, here or on another instance (unix
    /// milliseconds; 0: never). The first edit after `--auto-version-after`
    /// of quiet saves a version first.
    pub last_edit_ms: AtomicI64,
}

impl LogCounters {
    /// Nothing in flight: every applied update is committed and no
    /// compaction runs, so the document may be unloaded.
    pub fn is_settled(&self) -> bool {
        self.unpersisted.load(Ordering::Acquire) == 0 && !self.compacting.load(Ordering::Acquire)
    }
}

/// What the sender of a queued write hears about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteEvent {
    /// The database is failing: applied, not durable yet (told at most once;
    /// `Committed` follows once a commit succeeds).
    NotDurableYet,
    /// Committed: durable.
    Committed,
    /// Given up at shutdown after the database kept failing.
    GaveUp,
}

/// An update a room applied, queued for its commit.
pub struct LogWrite {
    pub document_id: DocumentId,
    pub update: Arc<[u8]>,
    /// Yjs client ids this update claimed for its author.
    pub authors: Vec<(u64, Arc<str>)>,
    pub counters: Arc<LogCounters>,
    /// The user the update is attributed to.
    pub editor: Arc<str>,
    /// The document as it was before this update, when the update ends a
    /// quiet period: stored as an automatic version in the same transaction.
    pub version_before: Option<PriorState>,
    /// The document's state vector after this update, when webhooks report it.
    pub state_vector_after: Option<Vec<u8>>,
    /// Told what becomes of the write; called from the writer's task.
    pub notify: Box<dyn FnMut(WriteEvent) + Send>,
}

/// A whole document at one moment, to keep as a version.
#[derive(Debug, Clone)]
pub struct PriorState {
    /// The whole document as one Yjs v1 update.
    pub state: bytes::Bytes,
    pub state_vector: Vec<u8>,
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A place in the log's write queue, taken before an update is applied so
/// that nothing is applied that cannot be stored.
pub struct LogSlot<'a>(Box<dyn FnOnce(LogWrite) + Send + 'a>);

impl<'a> LogSlot<'a> {
    pub fn new(write: impl FnOnce(LogWrite) + Send + 'a) -> Self {
        Self(Box::new(write))
    }

    /// Queue the write in the place taken.
    pub fn write(self, write: LogWrite) {
        (self.0)(write)
    }
}

/// A boxed future, for the object-safe async method below.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where documents are stored: loaded on first use, written behind the
/// per-message path with group commit.
pub trait DocumentLog: Send + Sync {
    /// The stored document (snapshot, remaining updates, client-id authors).
    fn load<'a>(&'a self, document_id: &'a DocumentId) -> BoxFuture<'a, anyhow::Result<StoredDocument>>;

    /// A place in the write queue, or `None` when it is full (the caller
    /// refuses the update as busy).
    fn try_reserve(&self) -> Option<LogSlot<'_>>;
}
