//! Slow readers in the fan-out: a member that reads ten times slower than
//! its room sends (a phone on a bad network), over a small receive buffer
//! so what it has not read waits in the server's queue. Measures what the
//! server does with it: how much it still delivers, how old the cursors it
//! reads are, how stale its picture of the room is when the run ends (the
//! age of each member's latest cursor it has by then), how much backlog it
//! still has to read, whether it is disconnected, and whether the last
//! cursor it gets from each member is that member's last position.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;

use crate::{
    report::{Report, round2},
    timing::{SendTable, Window, histogram, micros_of, record},
    wire::{Client, Event},
};

/// A slow reader's socket receive buffer: small, so its backlog waits in
/// the server (Linux doubles it and keeps a floor of about 4.6 KB).
pub const RECV_BUFFER: u32 = 4 * 1024;
/// After sending stops, the slow reader reads at full speed until it heard
/// nothing for this long (its backlog is drained), at most `CATCH_UP_MAX`.
const QUIET: Duration = Duration::from_secs(1);
const CATCH_UP_MAX: Duration = Duration::from_secs(20);

/// Who sent each sequence number, and each member's last one.
pub struct Senders {
    of_seq: Box<[AtomicU32]>,
    mask: u64,
    last_sent: Box<[AtomicU64]>,
}

impl Senders {
    pub fn new(capacity: usize, members: usize) -> Self {
        let size = capacity.max(1024).next_power_of_two();
        Self {
            of_seq: (0..size).map(|_| AtomicU32::new(u32::MAX)).collect(),
            mask: size as u64 - 1,
            last_sent: (0..members).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn record(&self, seq: u64, sender: usize) {
        self.of_seq[(seq & self.mask) as usize].store(sender as u32, Ordering::Relaxed);
        self.last_sent[sender].fetch_max(seq, Ordering::Relaxed);
    }

    fn sender_of(&self, seq: u64) -> Option<usize> {
        let sender = self.of_seq[(seq & self.mask) as usize].load(Ordering::Relaxed);
        (sender != u32::MAX).then_some(sender as usize)
    }
}

/// The slow member of one room.
pub struct SlowReader {
    pub table: Arc<SendTable>,
    pub senders: Arc<Senders>,
    pub window: Window,
    /// Time to "process" one message while the room sends: the room's
    /// message rate divided by the slow factor.
    pub per_message: Duration,
    /// The members whose cursors it should end up with.
    pub room: Vec<usize>,
}

#[derive(Default)]
pub struct SlowStats {
    delivered: u64,
    latency: Option<Histogram<u64>>,
    /// At the end of the window, how old each member's latest cursor known
    /// to the reader was (its send time to the window's end).
    staleness: Option<Histogram<u64>>,
    /// Presence messages read after the window (the backlog), and how long
    /// reading them took.
    backlog: u64,
    catch_up: Duration,
    disconnected: bool,
    fresh: u64,
    expected_fresh: u64,
    error: Option<String>,
}

impl SlowReader {
    pub async fn run(self, mut client: Client) -> SlowStats {
        let mut stats = SlowStats {
            latency: Some(histogram()),
            staleness: Some(histogram()),
            ..Default::default()
        };
        let mut last_seen: HashMap<usize, u64> = HashMap::new();
        let mut at_window_end: Option<HashMap<usize, u64>> = None;
        let mut events = Vec::new();
        let mut last_heard = Instant::now();
        loop {
            let now = Instant::now();
            if now >= self.window.end
                && (now.duration_since(last_heard) > QUIET || now > self.window.end + CATCH_UP_MAX)
            {
                break;
            }
            let frame = match tokio::time::timeout(QUIET, client.recv()).await {
                Err(_) => continue,
                Ok(Some(Ok(frame))) => frame,
                Ok(Some(Err(error))) => {
                    stats.disconnected = true;
                    stats.error = Some(format!("receive failed: {error}"));
                    break;
                }
                Ok(None) => {
                    stats.disconnected = true;
                    stats.error = Some("closed by server".into());
                    break;
                }
            };
            client.decode(&frame, true, &mut events);
            let now = Instant::now();
            if now >= self.window.end && at_window_end.is_none() {
                at_window_end = Some(last_seen.clone());
            }
            let mut presence = 0u32;
            for event in events.drain(..) {
                if let Event::Presence { seq: Some(seq) } = event {
                    presence += 1;
                    last_heard = now;
                    if self.window.contains(now) {
                        stats.delivered += 1;
                    } else if now >= self.window.end {
                        stats.backlog += 1;
                        stats.catch_up = now.duration_since(self.window.end);
                    }
                    if let Some(sent) = self.table.lookup(seq)
                        && self.window.contains_us(sent)
                        && let Some(latency) = &mut stats.latency
                    {
                        record(latency, micros_of(now).saturating_sub(sent));
                    }
                    if let Some(sender) = self.senders.sender_of(seq) {
                        let seen = last_seen.entry(sender).or_default();
                        *seen = (*seen).max(seq);
                    }
                }
            }
            if now < self.window.end && presence > 0 {
                tokio::time::sleep(self.per_message * presence).await;
            }
        }
        let end_us = micros_of(self.window.end);
        let known = at_window_end.unwrap_or_else(|| last_seen.clone());
        for sender in &self.room {
            // A member never heard from by the window's end counts as old as the run.
            let sent = known
                .get(sender)
                .and_then(|seq| self.table.lookup(*seq))
                .unwrap_or(micros_of(self.window.start));
            if let Some(staleness) = &mut stats.staleness {
                record(staleness, end_us.saturating_sub(sent).max(1));
            }
        }
        for sender in &self.room {
            let last_sent = self.senders.last_sent[*sender].load(Ordering::Relaxed);
            if last_sent == 0 {
                continue;
            }
            stats.expected_fresh += 1;
            if last_seen.get(sender) == Some(&last_sent) {
                stats.fresh += 1;
            }
        }
        client.close().await;
        stats
    }
}

/// Add the slow readers' figures to `report`.
pub fn report(report: &mut Report, readers: Vec<SlowStats>, seconds: f64) {
    if readers.is_empty() {
        return;
    }
    let count = readers.len() as f64;
    let mut latency = histogram();
    let mut staleness = histogram();
    let (mut delivered, mut fresh, mut expected, mut disconnects, mut backlog) = (0, 0, 0, 0, 0);
    let mut catch_up = Duration::ZERO;
    let mut errors = Vec::new();
    for reader in readers {
        delivered += reader.delivered;
        fresh += reader.fresh;
        expected += reader.expected_fresh;
        disconnects += u64::from(reader.disconnected);
        if let Some(h) = &reader.latency {
            latency.add(h).ok();
        }
        if let Some(h) = &reader.staleness {
            staleness.add(h).ok();
        }
        backlog += reader.backlog;
        catch_up = catch_up.max(reader.catch_up);
        errors.extend(reader.error);
    }
    report.set("slow_readers", count);
    report.set("slow_delivered_per_s", round2(delivered as f64 / seconds / count));
    report.histogram("slow_latency", &latency);
    report.histogram("slow_staleness", &staleness);
    report.set("slow_backlog_per_reader", round2(backlog as f64 / count));
    report.set("slow_catch_up_ms", round2(catch_up.as_secs_f64() * 1000.0));
    report.set(
        "slow_fresh_ratio",
        round2(if expected > 0 {
            fresh as f64 / expected as f64
        } else {
            0.0
        }),
    );
    report.set("slow_disconnects", disconnects);
    errors.truncate(3);
    report.set("slow_errors", errors);
}
