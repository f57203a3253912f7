//! The one read loop both protocols run: it ends the connection on server
//! shutdown, on a queue overflow (a slow consumer), when it is ended from
//! outside (stale cleanup, too many errors), after the session TTL of
//! silence, and on the client's close frame or a broken socket; it pings on
//! every liveness tick, counts and rate-limits every data frame, and hands
//! the frames within the limit to the protocol's [`Protocol`] handler, which
//! never sees the socket.
//!
//! It takes the few things it needs ([`Signals`], [`Rules`], a clock)
//! rather than the application state, so it is tested below with an
//! in-memory stream of frames and tokio's paused clock.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use futures_util::{Stream, StreamExt};
use governor::DefaultDirectRateLimiter;
use tokio_util::sync::CancellationToken;

use crate::{
    model::ids::DocumentId,
    model::presence::LeaveReason,
    protocol::codes::CloseCode,
    rooms::{
        hub::{Counters, RevokeSignal},
        outbox::{Outbox, Outgoing},
    },
    transport::ws::Message,
};

/// A frame that carries data, text or binary; control frames are the loop's.
#[derive(Debug)]
pub(crate) enum DataFrame {
    Text(tokio_tungstenite::tungstenite::Utf8Bytes),
    Binary(bytes::Bytes),
}

/// What a protocol does with the frames of one connection.
pub(crate) trait Protocol {
    /// Any frame arrived, control frames included (the client is alive).
    fn heard(&mut self) {}
    /// How many messages a data frame holds, each counted by the rate limit
    /// (several when the client sends newline-delimited batches).
    fn messages_in(&self, _frame: &DataFrame) -> u32 {
        1
    }
    /// A data frame within the rate limit (already counted as processed).
    async fn frame(&mut self, frame: DataFrame);
    /// A data frame over the rate limit (counted as rejected, not handled).
    async fn rate_limited(&mut self) {}
    /// A liveness tick went by (the ping is already queued).
    fn tick(&mut self) {}
    /// Bad frames in a row; past the limit the connection closes with 4002.
    fn consecutive_errors(&self) -> u32;
    /// When the protocol next wants [`Protocol::deadline_passed`] called
    /// (the credential's expiry warning or end).
    fn deadline(&self) -> Option<tokio::time::Instant> {
        None
    }
    /// The deadline went by: `Some` ends the connection.
    async fn deadline_passed(&mut self) -> Option<Exit> {
        None
    }
    /// This connection may no longer be in these documents: `Some` ends it.
    async fn documents_revoked(&mut self, _documents: Vec<DocumentId>) -> Option<Exit> {
        None
    }
}

/// Sleep until `deadline`, or forever without one.
async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// How a connection ended: the close frame to send (if any) and what the
/// other members are told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Exit {
    pub close: Option<CloseCode>,
    pub reason: LeaveReason,
    /// The socket ended without a close frame from the client (network
    /// loss, 1006): the session may be parked for a resume.
    pub dropped: bool,
}

impl Exit {
    /// The server ends the connection with `close`.
    pub(crate) fn closing(close: CloseCode, reason: LeaveReason) -> Self {
        Self {
            close: Some(close),
            reason,
            dropped: false,
        }
    }
}

/// The signals that end a connection.
pub(crate) struct Signals<'a> {
    /// The server is stopping.
    pub shutdown: &'a CancellationToken,
    /// The connection's queue overflowed.
    pub overflowed: &'a CancellationToken,
    /// Ended from outside (stale cleanup, too many errors).
    pub end: &'a CancellationToken,
    /// Revocations: the whole connection (4005) or some documents.
    pub revoke: &'a RevokeSignal,
}

/// The connection's liveness and rate rules, from the configuration.
pub(crate) struct Rules<'a> {
    /// How often to ping and check for silence.
    pub tick: Duration,
    /// Silence after which the session times out.
    pub ttl: Duration,
    pub limiter: &'a DefaultDirectRateLimiter,
    pub max_consecutive_errors: u32,
}

impl<'a> Rules<'a> {
    pub(crate) fn new(config: &crate::config::Config, limiter: &'a DefaultDirectRateLimiter) -> Self {
        Self {
            tick: config.liveness_tick(),
            ttl: config.session_ttl,
            limiter,
            max_consecutive_errors: config.max_consecutive_errors,
        }
    }
}

/// When the client was last heard from: a reading of `clock` (ms), shared
/// with the stale-connection sweep.
pub(crate) struct Heard<'a, C> {
    pub last: &'a AtomicU64,
    pub clock: C,
}

/// Read `stream` until the connection ends; `heard` is refreshed on every
/// frame.
pub(crate) async fn read_loop<S, E>(
    stream: &mut S,
    handler: &mut impl Protocol,
    outbox: &Outbox,
    signals: Signals<'_>,
    rules: Rules<'_>,
    heard: Heard<'_, impl Fn() -> u64>,
    counters: &Counters,
) -> Exit
where
    S: Stream<Item = Result<Message, E>> + Unpin,
    E: std::fmt::Display + AsReadError,
{
    let ttl_ms = rules.ttl.as_millis() as u64;
    let mut tick = tokio::time::interval(rules.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.reset();
    let exit = Exit::closing;
    let dropped = Exit {
        close: None,
        reason: LeaveReason::Disconnected,
        dropped: true,
    };
    loop {
        let deadline = handler.deadline();
        tokio::select! {
            biased;
            _ = signals.shutdown.cancelled() => return exit(CloseCode::GoingAway, LeaveReason::Disconnected),
            _ = signals.overflowed.cancelled() => {
                metrics::counter!("tandem_queue_overflows_total").increment(1);
                tracing::info!("closing slow consumer");
                return exit(CloseCode::SlowConsumer, LeaveReason::Disconnected);
            }
            _ = signals.end.cancelled() => {
                return if handler.consecutive_errors() > rules.max_consecutive_errors {
                    exit(CloseCode::TooManyErrors, LeaveReason::Disconnected)
                } else {
                    exit(CloseCode::SessionEnded, LeaveReason::Timeout)
                };
            }
            _ = signals.revoke.all.cancelled() => {
                tracing::info!("connection revoked");
                return exit(CloseCode::Revoked, LeaveReason::Revoked);
            }
            _ = signals.revoke.documents_added.notified() => {
                let documents = signals.revoke.take_documents();
                if let Some(exit) = handler.documents_revoked(documents).await {
                    return exit;
                }
            }
            _ = until(deadline) => {
                if let Some(exit) = handler.deadline_passed().await {
                    return exit;
                }
            }
            _ = tick.tick() => {
                let silent_ms = (heard.clock)().saturating_sub(heard.last.load(Ordering::Relaxed));
                if silent_ms > ttl_ms {
                    tracing::info!(silent_ms, "session timed out");
                    return exit(CloseCode::SessionTimeout, LeaveReason::Timeout);
                }
                outbox.push(Outgoing::Ping);
                handler.tick();
            }
            frame = stream.next() => {
                let frame = match frame {
                    Some(Ok(frame)) => frame,
                    Some(Err(error)) => {
                        if let Some(close) = error.close_code() {
                            tracing::debug!(%error, code = close.code(), "closing on a bad frame");
                            return exit(close, LeaveReason::Disconnected);
                        }
                        tracing::debug!(%error, "socket error");
                        return dropped;
                    }
                    None => return dropped,
                };
                heard.last.store((heard.clock)(), Ordering::Relaxed);
                handler.heard();
                let data = match frame {
                    Message::Text(text) => DataFrame::Text(text),
                    Message::Binary(bytes) => DataFrame::Binary(bytes),
                    Message::Close(_) => {
                        return Exit { close: None, reason: LeaveReason::Disconnected, dropped: false };
                    }
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                };
                let messages = handler.messages_in(&data).max(1);
                counters.messages_processed.fetch_add(u64::from(messages), Ordering::Relaxed);
                let allowed = match std::num::NonZeroU32::new(messages) {
                    Some(n) if messages > 1 => matches!(rules.limiter.check_n(n), Ok(Ok(()))),
                    _ => rules.limiter.check().is_ok(),
                };
                if !allowed {
                    counters.messages_rejected.fetch_add(u64::from(messages), Ordering::Relaxed);
                    metrics::counter!("tandem_rate_limited_total").increment(1);
                    handler.rate_limited().await;
                    continue;
                }
                handler.frame(data).await;
            }
        }
    }
}

/// A read error that warrants a close frame (a frame too big, bad UTF-8, a
/// protocol violation) rather than just dropping the socket.
pub(crate) trait AsReadError {
    fn close_code(&self) -> Option<CloseCode>;
}

impl AsReadError for tokio_tungstenite::tungstenite::Error {
    fn close_code(&self) -> Option<CloseCode> {
        crate::transport::ws::close_for_read_error(self)
    }
}

#[cfg(test)]
mod tests {
    //! The lifecycle on an in-memory stream of frames, with tokio's clock
    //! paused: no socket, no server.
    use std::sync::Arc;

    use futures_util::stream;
    use governor::{Quota, RateLimiter};
    use tokio::sync::mpsc;

    use super::*;
    use crate::rooms::outbox::QueuedBytes;

    #[derive(Debug, Clone)]
    struct BrokenPipe;
    impl std::fmt::Display for BrokenPipe {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("broken pipe")
        }
    }
    impl AsReadError for BrokenPipe {
        fn close_code(&self) -> Option<CloseCode> {
            None
        }
    }

    /// Records what the loop hands it.
    #[derive(Default)]
    struct Recorder {
        frames: Vec<String>,
        heard: u32,
        rate_limited: u32,
        ticks: u32,
        errors: u32,
    }

    impl Protocol for Recorder {
        fn heard(&mut self) {
            self.heard += 1;
        }
        async fn frame(&mut self, frame: DataFrame) {
            self.frames.push(match frame {
                DataFrame::Text(text) => text.as_str().to_owned(),
                DataFrame::Binary(bytes) => format!("{} bytes", bytes.len()),
            });
        }
        async fn rate_limited(&mut self) {
            self.rate_limited += 1;
        }
        fn tick(&mut self) {
            self.ticks += 1;
        }
        fn consecutive_errors(&self) -> u32 {
            self.errors
        }
    }

    struct Harness {
        shutdown: CancellationToken,
        overflowed: CancellationToken,
        end: CancellationToken,
        revoke: RevokeSignal,
        limiter: DefaultDirectRateLimiter,
        counters: Counters,
        last_heard: AtomicU64,
        started: tokio::time::Instant,
        outbox: Outbox,
        queue: mpsc::Receiver<Outgoing>,
    }

    const TICK: Duration = Duration::from_secs(10);
    const TTL: Duration = Duration::from_secs(30);
    const MAX_ERRORS: u32 = 5;

    impl Harness {
        fn new(burst: u32) -> Self {
            let (sender, queue) = mpsc::channel(64);
            let overflowed = CancellationToken::new();
            let outbox = Outbox::new(sender, overflowed.clone(), Arc::new(QueuedBytes::new(1 << 20)));
            let quota = Quota::per_second(std::num::NonZeroU32::MIN)
                .allow_burst(std::num::NonZeroU32::new(burst).unwrap());
            Self {
                shutdown: CancellationToken::new(),
                overflowed,
                end: CancellationToken::new(),
                revoke: RevokeSignal::default(),
                limiter: RateLimiter::direct(quota),
                counters: Counters::default(),
                last_heard: AtomicU64::new(0),
                started: tokio::time::Instant::now(),
                outbox,
                queue,
            }
        }

        async fn run<S>(&self, frames: &mut S, handler: &mut Recorder) -> Exit
        where
            S: Stream<Item = Result<Message, BrokenPipe>> + Unpin,
        {
            read_loop(
                frames,
                handler,
                &self.outbox,
                Signals {
                    shutdown: &self.shutdown,
                    overflowed: &self.overflowed,
                    end: &self.end,
                    revoke: &self.revoke,
                },
                Rules {
                    tick: TICK,
                    ttl: TTL,
                    limiter: &self.limiter,
                    max_consecutive_errors: MAX_ERRORS,
                },
                Heard {
                    last: &self.last_heard,
                    clock: || self.started.elapsed().as_millis() as u64,
                },
                &self.counters,
            )
            .await
        }

        fn pings(&mut self) -> usize {
            std::iter::from_fn(|| self.queue.try_recv().ok())
                .filter(|message| matches!(message, Outgoing::Ping))
                .count()
        }
    }

    fn text(s: &str) -> Result<Message, BrokenPipe> {
        Ok(Message::text(s))
    }

    /// Frames, then a stream that never ends (an open, silent socket).
    fn then_silence(
        frames: Vec<Result<Message, BrokenPipe>>,
    ) -> impl Stream<Item = Result<Message, BrokenPipe>> + Unpin {
        stream::iter(frames).chain(stream::pending())
    }

    fn closed(close: CloseCode, reason: LeaveReason) -> Exit {
        Exit {
            close: Some(close),
            reason,
            dropped: false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_pinged_every_tick_then_timed_out() {
        let mut harness = Harness::new(10);
        let mut handler = Recorder::default();
        let exit = harness.run(&mut then_silence(vec![]), &mut handler).await;
        assert_eq!(exit, closed(CloseCode::SessionTimeout, LeaveReason::Timeout));
        // Silence passes the 30 s TTL at the fourth 10 s tick: three pings.
        assert_eq!((harness.pings(), handler.ticks), (3, 3));
        assert_eq!(harness.started.elapsed(), Duration::from_secs(40));
    }

    #[tokio::test(start_paused = true)]
    async fn any_frame_keeps_the_client_alive_control_frames_included() {
        let harness = Harness::new(10);
        let mut handler = Recorder::default();
        let (sender, receiver) = mpsc::unbounded_channel();
        let mut frames = Box::pin(stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|frame| (frame, receiver))
        }));
        let feeder = tokio::spawn(async move {
            for _ in 0..6 {
                tokio::time::sleep(Duration::from_secs(20)).await;
                let _ = sender.send(Ok(Message::Pong(Default::default())));
            }
            tokio::time::sleep(Duration::from_secs(20)).await;
            let _ = sender.send(Ok(Message::Close(None)));
        });
        let exit = harness.run(&mut frames, &mut handler).await;
        feeder.await.unwrap();
        assert_eq!(
            exit,
            Exit {
                close: None,
                reason: LeaveReason::Disconnected,
                dropped: false,
            }
        );
        // Two minutes and more, never 30 s silent; pongs are not data.
        assert_eq!((handler.heard, handler.frames.len()), (7, 0));
        assert_eq!(harness.counters.messages_processed.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn data_frames_past_the_burst_are_counted_and_not_handled() {
        let harness = Harness::new(3);
        let mut handler = Recorder::default();
        let frames: Vec<_> = (0..5)
            .map(|i| text(&format!("m{i}")))
            .chain([Ok(Message::binary(vec![1, 2]))])
            .collect();
        let exit = harness
            .run(
                &mut stream::iter(frames).chain(stream::iter([Err(BrokenPipe)])),
                &mut handler,
            )
            .await;
        assert_eq!(
            exit,
            Exit {
                close: None,
                reason: LeaveReason::Disconnected,
                dropped: true,
            },
            "a socket error is a dropped socket (it may be resumed)"
        );
        assert_eq!(handler.frames, ["m0", "m1", "m2"]);
        assert_eq!(handler.rate_limited, 3);
        let counted = |c: &AtomicU64| c.load(Ordering::Relaxed);
        assert_eq!(
            (
                counted(&harness.counters.messages_processed),
                counted(&harness.counters.messages_rejected)
            ),
            (6, 3)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn each_signal_ends_the_connection_with_its_own_close() {
        type Fire = fn(&Harness);
        let cases: [(Fire, u32, Exit); 4] = [
            (
                |h| h.shutdown.cancel(),
                0,
                closed(CloseCode::GoingAway, LeaveReason::Disconnected),
            ),
            (
                |h| h.overflowed.cancel(),
                0,
                closed(CloseCode::SlowConsumer, LeaveReason::Disconnected),
            ),
            (
                |h| h.end.cancel(),
                0,
                closed(CloseCode::SessionEnded, LeaveReason::Timeout),
            ),
            (
                |h| h.end.cancel(),
                MAX_ERRORS + 1,
                closed(CloseCode::TooManyErrors, LeaveReason::Disconnected),
            ),
        ];
        for (fire, errors, expected) in cases {
            let harness = Harness::new(10);
            let mut handler = Recorder {
                errors,
                ..Recorder::default()
            };
            fire(&harness);
            // Signals win over frames already waiting (a biased select).
            let exit = harness
                .run(&mut then_silence(vec![text("late")]), &mut handler)
                .await;
            assert_eq!(exit, expected);
            assert!(handler.frames.is_empty());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_close_frame_or_the_end_of_the_stream_is_a_disconnect() {
        // A close frame from the client ends the session; the end of the
        // stream without one is a dropped socket, which may be resumed.
        for (tail, dropped) in [
            (vec![Ok(Message::Close(None)), text("after close")], false),
            (vec![], true),
        ] {
            let harness = Harness::new(10);
            let mut handler = Recorder::default();
            let mut frames = stream::iter([vec![text("hello")], tail].concat());
            let exit = harness.run(&mut frames, &mut handler).await;
            assert_eq!(
                exit,
                Exit {
                    close: None,
                    reason: LeaveReason::Disconnected,
                    dropped,
                }
            );
            assert_eq!(handler.frames, ["hello"]);
        }
    }
}
