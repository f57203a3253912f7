//! The TCP acceptor the server runs on: poem's own, plus `TCP_NODELAY` on every
//! socket and a deadline and a cap on connections still in their handshake.
//!
//! A realtime gateway writes many small frames (a cursor move is ~150 bytes). With Nagle's
//! algorithm on, a small write that follows an unacknowledged one waits for the peer's delayed
//! ACK, which adds ~40 ms to the tail of delivery; the load generator measured exactly that.
//!
//! Before its first request's headers are complete a connection has proved
//! nothing (no token is needed to open a socket), yet holds a file
//! descriptor. So each new connection must send those headers within the
//! handshake timeout or it is dropped, and at most `max_pending` connections
//! may be at that stage at once: past that, a new connection is answered 503
//! and closed at once rather than letting silent sockets lock everyone out.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use poem::{
    http::uri::Scheme,
    listener::{Acceptor, TcpAcceptor},
    web::{LocalAddr, RemoteAddr},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};

use crate::model::throttle::LogThrottle;

/// Most bytes written to a socket and not yet sent that the kernel holds
/// before the socket stops being writable (`TCP_NOTSENT_LOWAT`).
const NOTSENT_LOWAT: u32 = 16 * 1024;

/// A slow reader's backlog should wait in tandem's send queue, where a newer
/// cursor replaces an older one, not in the kernel's send buffer (which
/// autotunes to megabytes and sends everything in it, however stale). In a
/// 200-member room at 10 Hz a reader ten times too slow had, at the end of
/// the run, cursors 11 s old and 17,000 messages still to read without the
/// cap, 1.6 s and 363 with it (BENCHMARKS.md, slow readers). Bulk transfers
/// (a large document's sync) still stream: the writer is woken as soon as
/// the unsent part drops below the mark.
fn keep_unsent_small(stream: &TcpStream) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(error) = socket2::SockRef::from(stream).set_tcp_notsent_lowat(NOTSENT_LOWAT) {
        tracing::debug!(%error, "could not set TCP_NOTSENT_LOWAT");
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = (stream, NOTSENT_LOWAT);
}

/// Limits on connections that have not sent their first request yet.
#[derive(Debug, Clone, Copy)]
pub struct HandshakeLimits {
    /// The first request's headers must be complete within this long.
    pub timeout: Duration,
    /// Connections at that stage at once; past it, new ones get a 503.
    pub max_pending: usize,
}

/// Accepts connections like [`TcpAcceptor`], disables Nagle's algorithm on
/// each, and enforces [`HandshakeLimits`].
pub struct GatewayAcceptor {
    inner: TcpAcceptor,
    limits: HandshakeLimits,
    pending: Arc<AtomicUsize>,
    refusals: LogThrottle,
    /// The whole 503 answer, built once.
    refusal: Vec<u8>,
}

impl GatewayAcceptor {
    pub fn from_tokio(listener: TcpListener, limits: HandshakeLimits) -> io::Result<Self> {
        let body = serde_json::json!({
            "error": "too_many_connections",
            "message": "the server has too many connections that have not completed their handshake; retry shortly",
        })
        .to_string();
        let refusal = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes();
        Ok(Self {
            inner: TcpAcceptor::from_tokio(listener)?,
            limits,
            pending: Arc::new(AtomicUsize::new(0)),
            refusals: LogThrottle::new(),
            refusal,
        })
    }

    /// Answer 503 and close. One non-blocking write: a fresh socket's send
    /// buffer always has room for it, and a refusal must cost no task.
    fn refuse(&self, stream: TcpStream, remote: &RemoteAddr) {
        let _ = stream.try_write(&self.refusal);
        metrics::counter!("tandem_handshakes_refused_total").increment(1);
        if let Some(suppressed) = self.refusals.ready() {
            tracing::warn!(
                remote_addr = %remote,
                pending = self.pending.load(Ordering::Relaxed),
                max_pending_handshakes = self.limits.max_pending,
                suppressed,
                "connection refused: too many pending handshakes"
            );
        }
    }
}

impl Acceptor for GatewayAcceptor {
    type Io = Handshaking;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(Handshaking, LocalAddr, RemoteAddr, Scheme)> {
        loop {
            let (stream, local, remote, scheme) = self.inner.accept().await?;
            // Only this loop adds to the count, so checking then adding cannot race.
            if self.pending.load(Ordering::Acquire) >= self.limits.max_pending {
                self.refuse(stream, &remote);
                continue;
            }
            if let Err(error) = stream.set_nodelay(true) {
                // The connection still works, only with Nagle's delays; not worth refusing it.
                tracing::debug!(%error, "could not set TCP_NODELAY");
            }
            keep_unsent_small(&stream);
            self.pending.fetch_add(1, Ordering::AcqRel);
            let pending = Pending {
                deadline: Box::pin(tokio::time::sleep(self.limits.timeout)),
                _slot: PendingSlot(self.pending.clone()),
                newlines: 0,
            };
            let stream = Handshaking {
                inner: stream,
                pending: Some(Box::new(pending)),
            };
            return Ok((stream, local, remote, scheme));
        }
    }
}

/// A place in the pending count, given back when dropped.
struct PendingSlot(Arc<AtomicUsize>);

impl Drop for PendingSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The state of a connection whose first request's headers are not complete yet.
struct Pending {
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// Held, not read: dropping the pending state gives the place back.
    _slot: PendingSlot,
    /// Line ends in a row seen so far (`\r` ignored): two end the headers.
    newlines: u8,
}

impl Pending {
    /// Whether `bytes` complete the headers (an empty line: `\r\n\r\n` or `\n\n`).
    fn headers_done(&mut self, bytes: &[u8]) -> bool {
        for &byte in bytes {
            match byte {
                b'\n' => {
                    self.newlines += 1;
                    if self.newlines == 2 {
                        return true;
                    }
                }
                b'\r' => {}
                _ => self.newlines = 0,
            }
        }
        false
    }
}

/// A TCP stream that fails its reads once the handshake timeout passes
/// before the first request's headers are in; after that it is a plain
/// stream (the pending state is freed, so a long-lived connection keeps one
/// empty pointer of it).
pub struct Handshaking {
    inner: TcpStream,
    pending: Option<Box<Pending>>,
}

impl AsyncRead for Handshaking {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(pending) = &mut this.pending
            && pending.deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request headers not complete within the handshake timeout",
            )));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(pending)) = (&result, &mut this.pending)
            && pending.headers_done(&buf.filled()[before..])
        {
            this.pending = None;
        }
        result
    }
}

impl AsyncWrite for Handshaking {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending() -> Pending {
        Pending {
            deadline: Box::pin(tokio::time::sleep(Duration::from_secs(1))),
            _slot: PendingSlot(Arc::new(AtomicUsize::new(1))),
            newlines: 0,
        }
    }

    #[tokio::test]
    async fn the_end_of_the_headers_is_found_across_reads() {
        let mut p = pending();
        assert!(!p.headers_done(b"GET / HTTP/1.1\r\nHost: x\r"));
        assert!(p.headers_done(b"\n\r\n"));
        let mut p = pending();
        assert!(!p.headers_done(b"GET / HTTP/1.1\nHost: x\n"));
        assert!(p.headers_done(b"\n"));
        let mut p = pending();
        assert!(!p.headers_done(b"GET / HTTP/1.1\r\nA: b\r\nC: d\r\n"));
    }

    #[tokio::test]
    async fn a_slot_is_given_back_when_dropped() {
        let count = Arc::new(AtomicUsize::new(1));
        drop(PendingSlot(count.clone()));
        assert_eq!(count.load(Ordering::Relaxed), 0);
    }
}
