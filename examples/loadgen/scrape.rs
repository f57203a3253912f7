//! The server's own counters, read from its Prometheus `/metrics` at the
//! edges of the measurement window: how many rows tandem wrote to its
//! database per second (presence, sessions, document updates, commits),
//! which no process statistic can tell.

use std::collections::HashMap;

use crate::report::{Report, round2};

/// Counters whose per-second rate a report carries, with the name it gets there.
const RATES: &[(&str, &str)] = &[
    ("tandem_presence_rows_written_total", "db_presence_rows_per_s"),
    ("tandem_session_rows_written_total", "db_session_rows_per_s"),
    ("tandem_updates_stored_total", "db_updates_stored_per_s"),
    ("tandem_commit_seconds_count", "db_commits_per_s"),
    ("tandem_redis_messages_received_total", "redis_received_per_s"),
    ("tandem_redis_messages_published_total", "redis_published_per_s"),
];

/// One scrape: every sample of the counters above, summed over their labels.
pub async fn counters(url: &str) -> Option<HashMap<&'static str, f64>> {
    let text = reqwest::get(url).await.ok()?.text().await.ok()?;
    let mut sums = HashMap::new();
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        if let Some(&(counter, _)) = RATES.iter().find(|(counter, _)| *counter == name)
            && let Ok(value) = value.parse::<f64>()
        {
            *sums.entry(counter).or_insert(0.0) += value;
        }
    }
    Some(sums)
}

/// The scrape at the window's start, when there is a `/metrics` to read.
pub async fn start(url: Option<&str>) -> Option<HashMap<&'static str, f64>> {
    counters(url?).await
}

/// Scrape again at the window's end and set each counter's rate over the
/// `seconds` since `before`.
pub async fn finish(
    report: &mut Report,
    url: Option<&str>,
    before: Option<HashMap<&'static str, f64>>,
    seconds: f64,
) {
    let (Some(url), Some(before)) = (url, before) else {
        return;
    };
    let Some(after) = counters(url).await else {
        return;
    };
    for &(counter, key) in RATES {
        if let (Some(a), Some(b)) = (before.get(counter), after.get(counter)) {
            report.set(key, round2((b - a) / seconds.max(1e-9)));
        }
    }
}
