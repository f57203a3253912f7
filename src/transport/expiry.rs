//! A connection's credential lifetime: `token_expiring` ahead of the
//! token's `exp` (JSON connections, which can refresh in-band), and the end
//! of the connection at `exp` plus the verification leeway (4004).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::auth::jwt::LEEWAY_SECS;

/// What is due when the deadline passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// Tell the client its token expires at this time (unix seconds).
    Warn(u64),
    /// The token expired: close the connection.
    End,
}

/// The expiry of one connection's credential.
#[derive(Debug)]
pub(crate) struct Expiry {
    expires_at: Option<u64>,
    /// How long before `exp` to warn; `None` never warns (`/yjs`).
    warn_before: Option<Duration>,
    warned: bool,
}

fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

#[cfg(test)]
fn unix_now() -> u64 {
    unix_now_ms() / 1000
}

/// The instant of a unix time (seconds), from now; milliseconds so the
/// wake-up is never early (an early one would find nothing due and spin).
fn instant_of(unix_seconds: u64) -> Instant {
    Instant::now() + Duration::from_millis((unix_seconds * 1000).saturating_sub(unix_now_ms()))
}

impl Expiry {
    pub(crate) fn new(expires_at: Option<u64>, warn_before: Option<Duration>) -> Self {
        Self {
            expires_at,
            warn_before,
            warned: false,
        }
    }

    /// A refreshed credential: its expiry replaces the old one.
    pub(crate) fn renew(&mut self, expires_at: Option<u64>) {
        self.expires_at = expires_at;
        self.warned = false;
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        let expires_at = self.expires_at?;
        match self.warn_before {
            Some(before) if !self.warned => Some(instant_of(expires_at.saturating_sub(before.as_secs()))),
            _ => Some(instant_of(expires_at + LEEWAY_SECS)),
        }
    }

    /// The deadline passed: warn once, then end.
    pub(crate) fn passed(&mut self) -> Option<Due> {
        let expires_at = self.expires_at?;
        if self.warn_before.is_some() && !self.warned {
            self.warned = true;
            return Some(Due::Warn(expires_at));
        }
        (unix_now_ms() >= (expires_at + LEEWAY_SECS) * 1000).then_some(Due::End)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn warns_once_then_ends_after_the_leeway() {
        let exp = unix_now() + 120;
        let mut expiry = Expiry::new(Some(exp), Some(Duration::from_secs(60)));
        let warn_at = expiry.deadline().unwrap();
        let in_60 = Instant::now() + Duration::from_secs(60);
        assert!(warn_at <= in_60 + Duration::from_secs(1) && warn_at + Duration::from_secs(1) >= in_60);
        assert_eq!(expiry.passed(), Some(Due::Warn(exp)));
        let end_at = expiry.deadline().unwrap();
        assert!(end_at >= Instant::now() + Duration::from_secs(120));
        // Not yet (wall clock): nothing due.
        assert_eq!(expiry.passed(), None);
        expiry.renew(Some(exp + 3600));
        assert_eq!(expiry.passed(), Some(Due::Warn(exp + 3600)));
        let mut forever = Expiry::new(None, Some(Duration::from_secs(60)));
        assert_eq!(forever.deadline(), None);
        assert_eq!(forever.passed(), None);
        let mut past = Expiry::new(Some(unix_now() - 10), None);
        assert_eq!(past.passed(), Some(Due::End));
    }
}
