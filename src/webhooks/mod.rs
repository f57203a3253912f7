//! Webhook delivery: a tracked task that claims due rows of the outbox
//! (`storage::webhooks`), POSTs each event as signed JSON, deletes it on a
//! 2xx and otherwise retries with exponential backoff until
//! `--webhook-max-age`, when it is marked failed. At-least-once: a row is
//! deleted only after its 2xx, and a claim is a lease (an instance killed
//! mid-delivery leaves rows that are claimed again when the lease ends).

pub mod sign;

use std::{sync::Arc, time::Duration};

use chrono::{TimeDelta, Utc};
use entity::webhook_outbox;
use sea_orm::DatabaseConnection;
use tokio_util::sync::CancellationToken;

use crate::{config::Secret, storage::webhooks};

/// How long one delivery may take.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// A claim's lease: longer than a delivery, short enough that a crashed
/// instance's rows are retried soon.
const LEASE: Duration = Duration::from_secs(15);
/// Deliveries claimed at once.
const CLAIM_BATCH: u64 = 64;
/// Pause between claims when there was nothing due.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// How often the outbox's pending and failed rows are counted for `/metrics`.
const COUNT_EVERY: Duration = Duration::from_secs(5);
/// Backoff between attempts: 1 s doubling to at most this.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// What the deliverer needs.
pub struct Deliverer {
    pub db: DatabaseConnection,
    pub secret: Secret,
    pub instance_id: Arc<str>,
    pub max_age: Duration,
    pub http: reqwest::Client,
}

/// The body of a delivery: `{"id","type","created_at","data"}`.
pub fn body(row: &webhook_outbox::Model) -> String {
    let data: serde_json::Value = serde_json::from_str(&row.data).unwrap_or(serde_json::Value::Null);
    serde_json::json!({
        "id": row.event_id.to_string(),
        "type": row.event_type,
        "created_at": row.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": data,
    })
    .to_string()
}

/// When attempt `attempts` (1-based) is retried.
fn backoff(attempts: i32) -> Duration {
    let exponent = attempts.clamp(1, 20) as u32 - 1;
    Duration::from_secs(1u64 << exponent).min(MAX_BACKOFF)
}

impl Deliverer {
    pub fn new(db: DatabaseConnection, secret: Secret, instance_id: Arc<str>, max_age: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(DELIVERY_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self {
            db,
            secret,
            instance_id,
            max_age,
            http,
        }
    }

    /// Deliver until `stop`. In-flight deliveries are abandoned at stop:
    /// their rows stay and are claimed again when the lease ends.
    pub async fn run(self, stop: CancellationToken) {
        let mut failing_logged = false;
        let mut counted = tokio::time::Instant::now() - COUNT_EVERY;
        loop {
            if counted.elapsed() >= COUNT_EVERY {
                counted = tokio::time::Instant::now();
                if let Ok((pending, failed)) = webhooks::counts(&self.db).await {
                    metrics::gauge!("tandem_webhooks_pending").set(pending as f64);
                    metrics::gauge!("tandem_webhooks_failed").set(failed as f64);
                }
            }
            let claimed = tokio::select! {
                _ = stop.cancelled() => return,
                claimed = webhooks::claim(&self.db, &self.instance_id, LEASE, CLAIM_BATCH) => claimed,
            };
            let rows = match claimed {
                Ok(rows) => {
                    failing_logged = false;
                    rows
                }
                Err(error) => {
                    if !failing_logged {
                        tracing::warn!(error = format!("{error:#}"), "claiming webhook deliveries failed");
                        failing_logged = true;
                    }
                    Vec::new()
                }
            };
            if rows.is_empty() {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                }
                continue;
            }
            // Each row is the head of its own queue: deliver them at once.
            let deliveries = rows.iter().map(|row| self.deliver(row));
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = futures_util::future::join_all(deliveries) => {}
            }
        }
    }

    async fn deliver(&self, row: &webhook_outbox::Model) {
        let body = body(row);
        let signature = sign::header(&self.secret, Utc::now().timestamp(), &body);
        let sent = self
            .http
            .post(&row.target)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(sign::HEADER, signature)
            .header("Tandem-Event-Id", row.event_id.to_string())
            .body(body)
            .send()
            .await;
        let outcome = match sent {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!("HTTP {}", response.status().as_u16())),
            Err(error) if error.is_timeout() => Err(format!("timed out after {DELIVERY_TIMEOUT:?}")),
            Err(error) => Err(format!("request failed: {}", error_chain(&error))),
        };
        let stored = match outcome {
            Ok(()) => {
                metrics::counter!("tandem_webhooks_delivered_total").increment(1);
                webhooks::delivered(&self.db, row.seq).await
            }
            Err(error) => {
                let attempts = row.attempts + 1;
                let retry_at = Utc::now() + TimeDelta::from_std(backoff(attempts)).unwrap_or_default();
                let deadline = row.created_at + TimeDelta::from_std(self.max_age).unwrap_or(TimeDelta::MAX);
                let retry = (retry_at <= deadline).then_some(retry_at);
                if retry.is_none() {
                    tracing::warn!(target_url = %row.target, event = %row.event_type, event_id = %row.event_id, %error, attempts, "webhook delivery failed for good");
                    metrics::counter!("tandem_webhooks_failed_total").increment(1);
                } else {
                    tracing::debug!(target_url = %row.target, event_id = %row.event_id, %error, attempts, "webhook delivery failed; will retry");
                    metrics::counter!("tandem_webhook_attempts_failed_total").increment(1);
                }
                webhooks::attempt_failed(&self.db, row.seq, &error, retry).await
            }
        };
        if let Err(error) = stored {
            // The lease ends and the row is claimed again: at least once holds.
            tracing::warn!(
                error = format!("{error:#}"),
                "recording a webhook delivery failed"
            );
        }
    }
}

/// An error with its sources, for the operator (never sent to a client).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
