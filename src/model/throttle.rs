//! A log line at most once per second, the rest counted: refusing a flood
//! (connections over a cap, requests over a rate) must not become a flood of
//! log lines.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Instant,
};

/// Lets a log line through at most once per second and counts the rest, so
/// refusing a flood does not become a flood of log lines.
pub struct LogThrottle {
    start: Instant,
    /// Milliseconds since `start` before which nothing more is logged.
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl LogThrottle {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines suppressed since the last one)` when a line may be logged now.
    pub fn ready(&self) -> Option<u64> {
        let now = self.start.elapsed().as_millis() as u64;
        let next = self.next_ms.load(Ordering::Acquire);
        if now < next
            || self
                .next_ms
                .compare_exchange(next, now + 1000, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

impl Default for LogThrottle {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throttle_lets_one_line_through_and_counts_the_rest() {
        let throttle = LogThrottle::new();
        assert_eq!(throttle.ready(), Some(0));
        assert_eq!(throttle.ready(), None);
        assert_eq!(throttle.ready(), None);
        throttle.next_ms.store(0, Ordering::Release);
        assert_eq!(throttle.ready(), Some(2));
    }
}
