//! CPU time and memory of a process, from /proc.
//!
//! The server under test is sampled in the background (its resident set size
//! every 100 ms, for the peak) and read at the edges of the measurement window
//! (CPU time). The load generator reads itself the same way, so a report shows
//! when the load generator, not the server, was the limit.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

/// Clock ticks per second of /proc/<pid>/stat times; 100 on every Linux
/// platform Rust targets in practice (USER_HZ).
const TICKS_PER_SECOND: f64 = 100.0;

/// What a process is called in /proc: a pid, or ourselves.
#[derive(Debug, Clone, Copy)]
pub enum Proc {
    Pid(u32),
    Myself,
}

impl Proc {
    fn path(self, file: &str) -> String {
        match self {
            Proc::Pid(pid) => format!("/proc/{pid}/{file}"),
            Proc::Myself => format!("/proc/self/{file}"),
        }
    }

    /// User plus system CPU time, all threads, in seconds.
    pub fn cpu_seconds(self) -> Option<f64> {
        let stat = std::fs::read_to_string(self.path("stat")).ok()?;
        // The command name is in parentheses and may contain spaces: split after it.
        let after_name = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // Fields 14 and 15 of stat (utime, stime) are 11 and 12 after the name.
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        Some((utime + stime) / TICKS_PER_SECOND)
    }

    /// A `Vm*` line of /proc/<pid>/status, in KiB.
    fn status_kib(self, key: &str) -> Option<u64> {
        let status = std::fs::read_to_string(self.path("status")).ok()?;
        status
            .lines()
            .find(|line| line.starts_with(key))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    pub fn rss_kib(self) -> Option<u64> {
        self.status_kib("VmRSS:")
    }

    /// The kernel's high-water mark since the process started.
    pub fn hwm_kib(self) -> Option<u64> {
        self.status_kib("VmHWM:")
    }
}

/// Samples a process's RSS in the background and keeps the peak.
pub struct RssSampler {
    peak_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssSampler {
    pub fn start(process: Proc) -> Self {
        let peak_kib = Arc::new(AtomicU64::new(process.rss_kib().unwrap_or(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let (peak, stopped) = (peak_kib.clone(), stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while !stopped.load(Ordering::Relaxed) {
                tick.tick().await;
                if let Some(rss) = process.rss_kib() {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
            }
        });
        Self { peak_kib, stop }
    }

    pub fn peak_kib(&self) -> u64 {
        self.peak_kib.load(Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// CPU used by a process between two readings.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    process: Proc,
    seconds: Option<f64>,
    at: std::time::Instant,
}

impl CpuMark {
    pub fn now(process: Proc) -> Self {
        Self {
            process,
            seconds: process.cpu_seconds(),
            at: std::time::Instant::now(),
        }
    }

    /// (CPU seconds used since the mark, as a percentage of one core).
    pub fn since(&self) -> Option<(f64, f64)> {
        let used = self.process.cpu_seconds()? - self.seconds?;
        let wall = self.at.elapsed().as_secs_f64();
        Some((used, if wall > 0.0 { 100.0 * used / wall } else { 0.0 }))
    }
}
