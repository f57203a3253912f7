//! One run's results: a human table and one JSON line.
//!
//! Fields keep the order they were added in for the table; the JSON line
//! carries the same keys, so scripts can append and compare runs.

use std::io::Write as _;

use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};

use crate::procstat::{CpuMark, Proc, RssSampler};

pub struct Report {
    fields: Vec<(String, Value)>,
}

impl Report {
    pub fn new(scenario: &str, protocol: &str, label: &str) -> Self {
        let mut report = Self { fields: Vec::new() };
        report.set("scenario", scenario);
        report.set("protocol", protocol);
        report.set("server", label);
        report.set("unix_time", chrono::Utc::now().timestamp());
        report
    }

    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        let value = value.into();
        match self.fields.iter_mut().find(|(k, _)| k == key) {
            Some(field) => field.1 = value,
            None => self.fields.push((key.to_owned(), value)),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// `<prefix>_p50_ms`, `_p99_ms`, `_max_ms` and `_count` of a histogram in µs.
    pub fn histogram(&mut self, prefix: &str, histogram: &Histogram<u64>) {
        let ms = |us: u64| (us as f64 / 1000.0 * 1000.0).round() / 1000.0;
        if histogram.is_empty() {
            self.set(&format!("{prefix}_count"), 0);
            return;
        }
        self.set(&format!("{prefix}_p50_ms"), ms(histogram.value_at_quantile(0.50)));
        self.set(&format!("{prefix}_p99_ms"), ms(histogram.value_at_quantile(0.99)));
        self.set(&format!("{prefix}_max_ms"), ms(histogram.max()));
        self.set(&format!("{prefix}_count"), histogram.len());
    }

    /// Server CPU over a window, its RSS now and the sampled peak, and our own CPU.
    pub fn resources(&mut self, server: Option<(Proc, &CpuMark, &RssSampler)>, loadgen: &CpuMark) {
        if let Some((process, cpu, rss)) = server {
            if let Some((seconds, percent)) = cpu.since() {
                self.set("server_cpu_s", round2(seconds));
                self.set("server_cpu_pct", round2(percent));
            }
            if let Some(steady) = process.rss_kib() {
                self.set("server_rss_steady_kib", steady);
            }
            self.set("server_rss_peak_kib", rss.peak_kib());
            if let Some(hwm) = process.hwm_kib() {
                // The kernel's peak since the server started (earlier runs included).
                self.set("server_rss_hwm_kib", hwm);
            }
        }
        if let Some((_, percent)) = loadgen.since() {
            self.set("loadgen_cpu_pct", round2(percent));
        }
    }

    pub fn json(&self) -> String {
        let map: Map<String, Value> = self.fields.iter().cloned().collect();
        Value::Object(map).to_string()
    }

    /// Print the table, then the JSON line; append the line to `json_out`.
    pub fn emit(&self, json_out: Option<&std::path::Path>) {
        let width = self.fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", "-".repeat(width + 24));
        for (key, value) in &self.fields {
            let shown = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let _ = writeln!(out, "{key:<width$}  {shown}");
        }
        let line = self.json();
        let _ = writeln!(out, "{line}");
        if let Some(path) = json_out {
            let appended = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut file| writeln!(file, "{line}"));
            if let Err(error) = appended {
                eprintln!("could not append to {}: {error}", path.display());
            }
        }
    }
}

pub fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// Error samples as a JSON array.
pub fn samples(samples: &[String]) -> Value {
    json!(samples)
}
