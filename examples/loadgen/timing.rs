//! Clocks, the send-time side table and per-task statistics.
//!
//! Every client runs in one process, so a sender records when it sent
//! sequence number `seq` and a receiver looks that time up: latency is
//! measured on one clock, without putting timestamps on the wire. The side
//! table is lock-free (atomics), and each task keeps its own histograms and
//! counters, merged once at the end: a shared lock here would make the tails
//! we report the load generator's, not the server's.

use std::{
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// The process clock every task shares.
pub fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// Microseconds since [`epoch`].
pub fn now_us() -> u64 {
    micros_of(Instant::now())
}

pub fn micros_of(instant: Instant) -> u64 {
    instant.saturating_duration_since(epoch()).as_micros() as u64
}

/// When each sequence number was sent: a ring indexed by `seq`, with the
/// sequence number stored beside the time so a slot reused by a later
/// message is never mistaken for the one asked about.
pub struct SendTable {
    seqs: Box<[AtomicU64]>,
    times: Box<[AtomicU64]>,
    mask: u64,
}

impl SendTable {
    /// A table holding at least the last `capacity` sends.
    pub fn new(capacity: usize) -> Self {
        let size = capacity.max(1024).next_power_of_two();
        Self {
            seqs: (0..size).map(|_| AtomicU64::new(u64::MAX)).collect(),
            times: (0..size).map(|_| AtomicU64::new(0)).collect(),
            mask: size as u64 - 1,
        }
    }

    pub fn record(&self, seq: u64, sent_us: u64) {
        let slot = (seq & self.mask) as usize;
        self.times[slot].store(sent_us, Ordering::Relaxed);
        self.seqs[slot].store(seq, Ordering::Release);
    }

    pub fn lookup(&self, seq: u64) -> Option<u64> {
        let slot = (seq & self.mask) as usize;
        (self.seqs[slot].load(Ordering::Acquire) == seq).then(|| self.times[slot].load(Ordering::Relaxed))
    }
}

/// A histogram of microseconds from 1 µs to 10 minutes, 3 significant figures.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("static histogram bounds are valid")
}

/// The measurement window every task of a run shares: sends and deliveries
/// count only inside it, after the warm-up.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start: Instant,
    pub end: Instant,
}

impl Window {
    pub fn after(warmup: Duration, duration: Duration) -> Self {
        let start = Instant::now() + warmup;
        Self {
            start,
            end: start + duration,
        }
    }

    pub fn contains(&self, at: Instant) -> bool {
        at >= self.start && at < self.end
    }

    pub fn contains_us(&self, at_us: u64) -> bool {
        at_us >= micros_of(self.start) && at_us < micros_of(self.end)
    }

    pub fn seconds(&self) -> f64 {
        (self.end - self.start).as_secs_f64()
    }
}

/// What one client task measured; merged into the run's totals.
pub struct Stats {
    /// Delivery latency (sender to a sampled receiver).
    pub latency: Histogram<u64>,
    /// With two servers: deliveries whose sender is on the other server
    /// (`latency` then holds the same-server ones).
    pub latency_cross: Histogram<u64>,
    /// Time from sending an update to its acknowledgement.
    pub ack: Histogram<u64>,
    /// Connect plus protocol handshake.
    pub handshake: Histogram<u64>,
    pub sent: u64,
    pub delivered: u64,
    /// Deliveries the sends should cause (sends × other members).
    pub expected: u64,
    pub errors: u64,
    pub disconnects: u64,
    /// A few error descriptions, for the report.
    pub error_samples: Vec<String>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            latency: histogram(),
            latency_cross: histogram(),
            ack: histogram(),
            handshake: histogram(),
            sent: 0,
            delivered: 0,
            expected: 0,
            errors: 0,
            disconnects: 0,
            error_samples: Vec::new(),
        }
    }
}

impl Stats {
    pub fn error(&mut self, what: impl Into<String>) {
        self.errors += 1;
        if self.error_samples.len() < 3 {
            self.error_samples.push(what.into());
        }
    }

    pub fn disconnect(&mut self, what: impl Into<String>) {
        self.disconnects += 1;
        if self.error_samples.len() < 3 {
            self.error_samples.push(what.into());
        }
    }

    pub fn merge(&mut self, other: &Stats) {
        // Same bounds everywhere, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.latency_cross.add(&other.latency_cross);
        let _ = self.ack.add(&other.ack);
        let _ = self.handshake.add(&other.handshake);
        self.sent += other.sent;
        self.delivered += other.delivered;
        self.expected += other.expected;
        self.errors += other.errors;
        self.disconnects += other.disconnects;
        for sample in &other.error_samples {
            if self.error_samples.len() < 5 && !self.error_samples.contains(sample) {
                self.error_samples.push(sample.clone());
            }
        }
    }
}

/// Record `value_us` (clamped to at least 1 µs, the histogram's floor).
pub fn record(histogram: &mut Histogram<u64>, value_us: u64) {
    let _ = histogram.record(value_us.max(1));
}
