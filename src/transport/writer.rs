//! A connection's writer task: it drains the connection's queue onto the
//! socket (several queued texts in one newline-delimited frame with
//! `?batch=1`), resolves latest-wins slots as it writes, and stops on close,
//! error, overflow, or when its session is parked (then without a close
//! frame, handing the queue back for the resume).

use std::sync::Arc;

use futures_util::SinkExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    protocol::codes::CloseCode,
    rooms::outbox::{Outgoing, QueuedBytes},
    transport::ws::{Message, Socket},
};

/// The sending half of a connection's socket, which only the writer uses.
pub(crate) type Sink = futures_util::stream::SplitSink<Socket, Message>;

/// How long the writer gets to deliver the close frame before the socket is dropped.
pub(crate) const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// What a writer drains: a message to send first, then the queue.
pub(crate) struct Queue {
    pub prelude: Option<Outgoing>,
    pub queue: mpsc::Receiver<Outgoing>,
    pub latest: Arc<crate::rooms::outbox::LatestMessages>,
    /// Each message's bytes stop counting against the queue's bound once
    /// its frames are handed to the socket.
    pub queued_bytes: Arc<QueuedBytes>,
}

/// Drain the queue onto the socket; stop on close, error, overflow, or
/// `stop` (which sends nothing more: the session is parked). Returns the
/// queue, for a parked session to keep filling.
pub(crate) async fn write_loop(
    mut sink: Sink,
    queue: Queue,
    overflowed: CancellationToken,
    stop: CancellationToken,
    batch: bool,
) -> mpsc::Receiver<Outgoing> {
    let Queue {
        prelude,
        mut queue,
        latest,
        queued_bytes,
    } = queue;
    // With `batch`, a message taken from the queue while batching that
    // cannot join the batch (not text) goes out next.
    let mut carried: Option<Outgoing> = prelude;
    'queue: loop {
        let next = match carried.take() {
            Some(next) => Some(next),
            None => tokio::select! {
                biased;
                _ = overflowed.cancelled() => break,
                _ = stop.cancelled() => break,
                next = queue.recv() => next,
            },
        };
        let Some(next) = next else { break };
        let Some(next) = resolve(next, &latest) else {
            continue;
        };
        let (next, len) = match next {
            Outgoing::Text(first) if batch && !queue.is_empty() => {
                let (text, len, rest) = batch_texts(first, &mut queue, &latest);
                carried = rest;
                (Outgoing::Text(text), len)
            }
            other => {
                let len = other.byte_len();
                (other, len)
            }
        };
        if let Outgoing::Close(code) = next {
            let _ =
                tokio::time::timeout(CLOSE_GRACE, sink.send(crate::transport::ws::close_message(code))).await;
            break;
        }
        for frame in crate::transport::ws::frames(next) {
            let sent = tokio::select! {
                biased;
                _ = overflowed.cancelled() => break 'queue,
                _ = stop.cancelled() => break 'queue,
                sent = sink.feed(frame) => sent,
            };
            if sent.is_err() {
                break 'queue;
            }
        }
        queued_bytes.release(len);
        // Flush once the queue is drained, so a burst costs one write.
        if queue.is_empty() && carried.is_none() {
            let flushed = tokio::select! {
                biased;
                _ = overflowed.cancelled() => break,
                _ = stop.cancelled() => break,
                flushed = sink.flush() => flushed,
            };
            if flushed.is_err() {
                break;
            }
        }
    }
    if stop.is_cancelled() {
        // Parked: the socket is dead; the queue is kept for the resume.
    } else if overflowed.is_cancelled() {
        // The client is not reading, so the close frame may not get through
        // either; it is worth a try even in the middle of a fragmented message
        // (control frames may be interleaved, RFC 6455 section 5.4).
        let close = crate::transport::ws::close_message(CloseCode::SlowConsumer);
        let _ = tokio::time::timeout(CLOSE_GRACE, sink.send(close)).await;
    } else {
        // Sends the reply tungstenite queued for a client's close frame, if any.
        let _ = tokio::time::timeout(CLOSE_GRACE, sink.close()).await;
    }
    queue
}

/// Most bytes of messages one batched frame holds: a burst of small
/// messages shares frames, a large one still goes alone.
const BATCH_BYTES: usize = 64 * 1024;

/// A queued message as it is written: a replaceable one's latest content.
fn resolve(message: Outgoing, latest: &crate::rooms::outbox::LatestMessages) -> Option<Outgoing> {
    match message {
        Outgoing::Latest(slot) => latest.take(&slot),
        other => Some(other),
    }
}

/// `first` and the text messages queued right behind it, newline-delimited
/// in one text (up to [`BATCH_BYTES`]); the queued bytes they weighed; and
/// the message that ended the batch if it could not join it.
fn batch_texts(
    first: crate::protocol::json::Encoded,
    queue: &mut mpsc::Receiver<Outgoing>,
    latest: &crate::rooms::outbox::LatestMessages,
) -> (crate::protocol::json::Encoded, usize, Option<Outgoing>) {
    let mut text = String::with_capacity(first.len() * 4);
    text.push_str(&first);
    let mut len = first.len();
    while text.len() < BATCH_BYTES {
        let Ok(message) = queue.try_recv() else { break };
        match resolve(message, latest) {
            Some(Outgoing::Text(more)) => {
                text.push('\n');
                text.push_str(&more);
                len += more.len();
            }
            Some(other) => return (text.into(), len, Some(other)),
            None => {}
        }
    }
    (text.into(), len, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_texts_share_a_frame_until_something_else_comes() {
        let (tx, mut rx) = mpsc::channel(8);
        let latest = crate::rooms::outbox::LatestMessages::default();
        for message in [
            Outgoing::Text("b".into()),
            Outgoing::Text("c".into()),
            Outgoing::Binary(Arc::from(&b"bin"[..])),
            Outgoing::Text("d".into()),
        ] {
            tx.try_send(message).unwrap();
        }
        let (text, len, rest) = batch_texts("a".into(), &mut rx, &latest);
        assert_eq!(&*text, "a\nb\nc");
        assert_eq!(
            len, 3,
            "what the three weighed in the queue, without the newlines"
        );
        assert!(
            matches!(rest, Some(Outgoing::Binary(_))),
            "the binary frame goes out next, alone"
        );
        let (text, _, rest) = batch_texts("d0".into(), &mut rx, &latest);
        assert_eq!(&*text, "d0\nd");
        assert!(rest.is_none());
    }
}
