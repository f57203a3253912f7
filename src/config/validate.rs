//! Checks of the settings that clap's types cannot express (zero
//! intervals, the development secret on a public address, webhook URLs),
//! and the errors they give at start-up.

use std::{net::SocketAddr, time::Duration};

use super::Config;

/// What is wrong with a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "refusing to listen on {0} with the development JWT secret: set TANDEM_JWT_SECRET (or --jwt-secret)"
    )]
    DevelopmentSecretOnPublicAddress(SocketAddr),
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    #[error("session TTL ({ttl:?}) must be longer than the heartbeat interval ({heartbeat:?})")]
    TtlShorterThanHeartbeat { ttl: Duration, heartbeat: Duration },
    #[error("--demo mints HS256 tokens: set TANDEM_JWT_SECRET next to the JWKS URL")]
    DemoWithoutSecret,
    #[error("--webhook-url {0:?} is not an http:// or https:// URL with a host")]
    BadWebhookUrl(String),
    #[error("--webhook-url needs --webhook-secret (TANDEM_WEBHOOK_SECRET): every delivery is signed")]
    WebhookWithoutSecret,
}

impl Config {
    /// Check the settings that cannot be expressed as clap types.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.jwt_secret.is_none() && self.jwks_url.is_none() && !self.bind.ip().is_loopback() {
            return Err(ConfigError::DevelopmentSecretOnPublicAddress(self.bind));
        }
        if self.demo && self.jwt_secret.is_none() && self.jwks_url.is_some() {
            return Err(ConfigError::DemoWithoutSecret);
        }
        for (name, value) in [
            ("heartbeat interval", self.heartbeat_interval),
            ("session TTL", self.session_ttl),
            ("cleanup interval", self.cleanup_interval),
            ("editing idle timeout", self.editing_idle_timeout),
            ("presence flush interval", self.presence_flush_interval),
            ("handshake timeout", self.handshake_timeout),
            ("HTTP idle timeout", self.http_idle_timeout),
            ("JWKS refresh", self.jwks_refresh),
            ("JWKS min refresh", self.jwks_min_refresh),
        ] {
            if value.is_zero() {
                return Err(ConfigError::Zero(name));
            }
        }
        for (name, value) in [
            ("max message bytes", self.max_message_bytes),
            ("max update bytes", self.max_update_bytes),
            ("max broadcast bytes", self.max_broadcast_bytes),
            ("send queue capacity", self.send_queue_capacity),
            ("max documents per connection", self.max_documents_per_connection),
            ("max queued bytes", self.max_queued_bytes),
            ("max pending handshakes", self.max_pending_handshakes),
            ("max connections per IP", self.max_connections_per_ip),
            ("max connections per user", self.max_connections_per_user),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.rate_limit_per_second == 0 || self.rate_limit_burst == 0 {
            return Err(ConfigError::Zero("rate limit"));
        }
        if self.rest_rate_limit_per_second == 0 || self.rest_rate_limit_burst == 0 {
            return Err(ConfigError::Zero("REST rate limit"));
        }
        for url in &self.webhook_urls {
            let parsed = reqwest::Url::parse(url).ok();
            let valid = parsed
                .as_ref()
                .is_some_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
            if !valid || url.len() > 2048 {
                return Err(ConfigError::BadWebhookUrl(url.clone()));
            }
        }
        if !self.webhook_urls.is_empty() && self.webhook_secret.is_none() {
            return Err(ConfigError::WebhookWithoutSecret);
        }
        if self.session_ttl <= self.heartbeat_interval {
            return Err(ConfigError::TtlShorterThanHeartbeat {
                ttl: self.session_ttl,
                heartbeat: self.heartbeat_interval,
            });
        }
        Ok(())
    }
}
