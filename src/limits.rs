//! Caps on what one client may hold or do: open WebSocket connections per
//! client IP and per user, REST requests per second per client IP and per
//! token, and a throttle for the log lines a refusal writes.
//!
//! A permit is taken when an upgrade is accepted and released when its
//! session ends (the permit is dropped), so the counts are exactly the open
//! connections of this instance. The counts live under a plain mutex that is
//! only held to add or subtract one, never across an `.await`.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    net::IpAddr,
    num::NonZeroU32,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use crate::model::throttle::LogThrottle;

use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};

/// Document loads REST requests run at once: half of SQLite's shared pool
/// of four, so joins and session writes always find a connection.
pub const REST_LOADS_AT_ONCE: usize = 2;
/// How long a REST request waits for one of those before it is told to retry.
pub const REST_LOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why an upgrade was refused. The message is safe to send to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapError {
    #[error("this IP address already has {limit} open connections (the per-IP limit); close one first")]
    PerIp { limit: usize },
    #[error("this user already has {limit} open connections (the per-user limit); close one first")]
    PerUser { limit: usize },
}

impl CapError {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::PerIp { .. } => "per_ip",
            Self::PerUser { .. } => "per_user",
        }
    }
}

#[derive(Default)]
struct Counts {
    by_ip: HashMap<Arc<str>, usize>,
    by_user: HashMap<Arc<str>, usize>,
}

/// Open WebSocket connections per client IP and per user, against their caps.
pub struct ConnectionCaps {
    max_per_ip: usize,
    max_per_user: usize,
    counts: Mutex<Counts>,
    /// Refusals are logged at most once per second (a flood is one line, with a count).
    pub log: LogThrottle,
}

impl ConnectionCaps {
    pub fn new(max_per_ip: usize, max_per_user: usize) -> Self {
        Self {
            max_per_ip,
            max_per_user,
            counts: Mutex::new(Counts::default()),
            log: LogThrottle::new(),
        }
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Count one more connection for `ip` and `user`, unless either is at its cap.
    pub fn acquire(
        self: &Arc<Self>,
        ip: Option<&str>,
        user: &Arc<str>,
    ) -> Result<ConnectionPermit, CapError> {
        let mut counts = self.counts();
        if let Some(ip) = ip
            && counts.by_ip.get(ip).copied().unwrap_or(0) >= self.max_per_ip
        {
            return Err(CapError::PerIp {
                limit: self.max_per_ip,
            });
        }
        if counts.by_user.get(user).copied().unwrap_or(0) >= self.max_per_user {
            return Err(CapError::PerUser {
                limit: self.max_per_user,
            });
        }
        Ok(self.count(&mut counts, ip, user))
    }

    /// Count one more connection past the caps: a resume, which takes over
    /// a parked session whose own permit is freed once it is handed over,
    /// so the count is back within the caps a moment later.
    pub fn acquire_for_resume(self: &Arc<Self>, ip: Option<&str>, user: &Arc<str>) -> ConnectionPermit {
        let mut counts = self.counts();
        self.count(&mut counts, ip, user)
    }

    fn count(self: &Arc<Self>, counts: &mut Counts, ip: Option<&str>, user: &Arc<str>) -> ConnectionPermit {
        let ip: Option<Arc<str>> = ip.map(Into::into);
        if let Some(ip) = &ip {
            *counts.by_ip.entry(ip.clone()).or_insert(0) += 1;
        }
        *counts.by_user.entry(user.clone()).or_insert(0) += 1;
        ConnectionPermit {
            caps: self.clone(),
            ip,
            user: user.clone(),
        }
    }

    /// Open connections counted for `user` (for tests and diagnostics).
    pub fn user_connections(&self, user: &str) -> usize {
        self.counts().by_user.get(user).copied().unwrap_or(0)
    }
}

/// One counted connection; dropping it (when the session ends) frees the slot.
pub struct ConnectionPermit {
    caps: Arc<ConnectionCaps>,
    ip: Option<Arc<str>>,
    user: Arc<str>,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        fn decrement(map: &mut HashMap<Arc<str>, usize>, key: &str) {
            if let Some(count) = map.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    // Forget the key, so the maps only hold clients that are connected.
                    map.remove(key);
                }
            }
        }
        let mut counts = self.caps.counts();
        if let Some(ip) = &self.ip {
            decrement(&mut counts.by_ip, ip);
        }
        decrement(&mut counts.by_user, &self.user);
    }
}

/// REST requests per second, sustained and in a burst, per client IP and per
/// token. Tokens are keyed by a keyed hash, so the limiter never holds one.
pub struct RestRateLimit {
    by_ip: DefaultKeyedRateLimiter<IpAddr>,
    by_token: DefaultKeyedRateLimiter<u64>,
    token_hasher: RandomState,
    clock: DefaultClock,
    /// Refusals are logged at most once per second.
    pub log: LogThrottle,
}

impl RestRateLimit {
    pub fn new(per_second: u32, burst: u32) -> Self {
        let quota = Quota::per_second(NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        Self {
            by_ip: RateLimiter::keyed(quota),
            by_token: RateLimiter::keyed(quota),
            token_hasher: RandomState::new(),
            clock: DefaultClock::default(),
            log: LogThrottle::new(),
        }
    }

    /// Count one request; `Err(wait)` if the IP or the token is over its rate.
    pub fn check(&self, ip: Option<IpAddr>, token: Option<&str>) -> Result<(), Duration> {
        if let Some(ip) = ip {
            self.by_ip
                .check_key(&ip)
                .map_err(|until| until.wait_time_from(self.clock.now()))?;
        }
        if let Some(token) = token {
            let key = self.token_hasher.hash_one(token);
            self.by_token
                .check_key(&key)
                .map_err(|until| until.wait_time_from(self.clock.now()))?;
        }
        Ok(())
    }

    /// Forget clients whose buckets are full again, so the maps only hold
    /// recent ones (called by a background task).
    pub fn forget_idle(&self) {
        self.by_ip.retain_recent();
        self.by_token.retain_recent();
        self.by_ip.shrink_to_fit();
        self.by_token.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_open_connections_and_free_them_on_drop() {
        let caps = Arc::new(ConnectionCaps::new(3, 2));
        let alice: Arc<str> = "alice".into();
        let bob: Arc<str> = "bob".into();
        let first = caps.acquire(Some("10.0.0.1"), &alice).unwrap();
        let _second = caps.acquire(Some("10.0.0.1"), &alice).unwrap();
        assert_eq!(
            caps.acquire(Some("10.0.0.2"), &alice).err(),
            Some(CapError::PerUser { limit: 2 })
        );
        let _third = caps.acquire(Some("10.0.0.1"), &bob).unwrap();
        assert_eq!(
            caps.acquire(Some("10.0.0.1"), &bob).err(),
            Some(CapError::PerIp { limit: 3 })
        );
        drop(first);
        assert_eq!(caps.user_connections("alice"), 1);
        assert!(caps.acquire(None, &alice).is_ok());
    }

    #[test]
    fn rest_requests_over_the_burst_are_refused_per_ip_and_per_token() {
        let limit = RestRateLimit::new(1, 2);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(limit.check(Some(ip), None).is_ok());
        assert!(limit.check(Some(ip), None).is_ok());
        let wait = limit.check(Some(ip), None).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        // Another IP is not affected; one token from many IPs is.
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(limit.check(Some(other), Some("t")).is_ok());
        assert!(limit.check(None, Some("t")).is_ok());
        assert!(limit.check(None, Some("t")).is_err());
        limit.forget_idle();
    }
}
