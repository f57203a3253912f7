//! Typed configuration: command line flags with environment fallbacks.
//!
//! This is the only place that reads the environment. Every duration is a
//! [`Duration`] parsed from human units (`30s`, `1m`, `500ms`).

use std::{fmt, net::SocketAddr, time::Duration};

use clap::{Args, Parser};

mod commands;
mod validate;

pub use validate::ConfigError;

pub use commands::{ApiKeyCommand, ApiKeyCreateArgs, Command, TokenArgs};

/// The command line of the `tandem` binary.
#[derive(Debug, Parser)]
#[command(name = "tandem", version, about = "Presence-first realtime gateway")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Server settings, also accepted without the `serve` subcommand.
    #[command(flatten)]
    pub config: Config,
}

/// A secret that never prints.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// The secret used when none is configured. Only good for a laptop: the
/// server refuses to listen beyond loopback with it.
pub const DEVELOPMENT_JWT_SECRET: &str = "tandem-development-secret-do-not-use-in-production";

/// Everything the server needs, from flags or the environment.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "TANDEM_BIND", default_value = "127.0.0.1:8080", global = true)]
    pub bind: SocketAddr,

    /// `sqlite://path?mode=rwc` (default, embedded) or `postgres://...`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://tandem.db?mode=rwc",
        global = true
    )]
    pub database_url: String,

    /// HS256 secret for JWTs. Without it a development secret is used (loopback only).
    #[arg(long, env = "TANDEM_JWT_SECRET", hide_env_values = true, global = true)]
    pub jwt_secret: Option<Secret>,

    /// A JWKS of the identity provider's public keys: an `http(s)://` URL or a
    /// file path. Tokens signed with them (RS*, PS256, ES256/384, EdDSA, by
    /// `kid`) are accepted beside (or instead of) HS256 ones.
    #[arg(long, env = "TANDEM_JWKS_URL", global = true)]
    pub jwks_url: Option<String>,
    /// A token naming an unknown `kid` re-fetches the JWKS at most once per this interval.
    #[arg(long, env = "TANDEM_JWKS_MIN_REFRESH", default_value = "30s", value_parser = humantime::parse_duration, global = true)]
    pub jwks_min_refresh: Duration,
    /// The JWKS is fetched again this often (key rotation).
    #[arg(long, env = "TANDEM_JWKS_REFRESH", default_value = "10m", value_parser = humantime::parse_duration, global = true)]
    pub jwks_refresh: Duration,
    /// When set, a token's `iss` must be this.
    #[arg(long, env = "TANDEM_JWT_ISSUER", global = true)]
    pub jwt_issuer: Option<String>,
    /// When set, a token's `aud` must include this.
    #[arg(long, env = "TANDEM_JWT_AUDIENCE", global = true)]
    pub jwt_audience: Option<String>,
    /// The claim that holds the user id (Firebase: `user_id`).
    #[arg(long, env = "TANDEM_JWT_USER_CLAIM", default_value = "sub", global = true)]
    pub jwt_user_claim: String,
    /// The claim that holds the display name.
    #[arg(long, env = "TANDEM_JWT_NAME_CLAIM", default_value = "name", global = true)]
    pub jwt_name_claim: String,
    /// The claim that holds the role. Supabase puts `authenticated` in `role`:
    /// point this at a custom claim (e.g. `tandem_role`) for such providers.
    #[arg(long, env = "TANDEM_JWT_ROLE_CLAIM", default_value = "role", global = true)]
    pub jwt_role_claim: String,
    /// How long before its token expires a `/ws` connection is sent `token_expiring`.
    #[arg(long, env = "TANDEM_TOKEN_EXPIRY_WARNING", default_value = "60s", value_parser = humantime::parse_duration, global = true)]
    pub token_expiry_warning: Duration,
    /// Redis for fan-out between instances; without it the gateway is single-instance.
    #[arg(long, env = "REDIS_URL", global = true)]
    pub redis_url: Option<String>,

    /// Prefix of every Redis key and channel this gateway uses.
    #[arg(long, env = "TANDEM_REDIS_PREFIX", default_value = "tandem", global = true)]
    pub redis_prefix: String,

    /// Lifetime of an instance's Redis heartbeat key, refreshed every third of
    /// it. Survivors check every third too; a key missing at two checks in a
    /// row means the instance is dead: its sessions end and its members leave.
    /// A dead instance's users are gone within about TTL + 2 checks (10 s by
    /// default); each instance costs Redis one SET every 2 s and one EXISTS
    /// per other instance every 2 s.
    #[arg(long, env = "TANDEM_INSTANCE_TTL", default_value = "6s", value_parser = humantime::parse_duration, global = true)]
    pub instance_ttl: Duration,

    /// Identity of this process in `user_sessions.instance_id`. Give each instance a
    /// stable one (e.g. the pod name) so a restarted instance cleans its own leftovers
    /// at once; by default a fresh id per process.
    #[arg(long, env = "TANDEM_INSTANCE_ID", global = true)]
    pub instance_id: Option<String>,

    /// Honour `X-Forwarded-For` for the client IP (only behind a trusted proxy).
    #[arg(long, env = "TANDEM_TRUST_PROXY", default_value_t = false, global = true)]
    pub trust_proxy: bool,

    /// Serve the demo page (`/demo`) and its token endpoint (`/demo/token`,
    /// which mints editor tokens for anyone who asks). On by itself with the
    /// development secret on loopback; never turn it on in production.
    #[arg(long, env = "TANDEM_DEMO", default_value_t = false, global = true)]
    pub demo: bool,

    /// Interval at which clients should send `heartbeat`, and the server pings.
    #[arg(long, env = "TANDEM_HEARTBEAT_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration, global = true)]
    pub heartbeat_interval: Duration,

    /// A session not heard from for this long is closed and cleaned up.
    #[arg(long, env = "TANDEM_SESSION_TTL", default_value = "90s", value_parser = humantime::parse_duration, global = true)]
    pub session_ttl: Duration,

    /// A `/ws` socket that drops without a close frame from the client keeps its session
    /// and presence this long: reconnecting with `?resume=<resume_token>` within it
    /// resumes the session without a leave or join for anyone. 0 turns resuming off.
    #[arg(long, env = "TANDEM_RESUME_GRACE", default_value = "15s", value_parser = humantime::parse_duration, global = true)]
    pub resume_grace: Duration,

    /// Messages kept for a dropped session to replay on resume; past this the client
    /// gets a fresh `presence_list` (`"resync":true`) per document instead.
    #[arg(long, env = "TANDEM_RESUME_BUFFER", default_value_t = 1024, global = true)]
    pub resume_buffer: usize,

    /// The first edit after this much quiet time saves the document as it was
    /// first (an automatic version); every compaction saves one too. 0 turns
    /// automatic versions off.
    #[arg(long, env = "TANDEM_AUTO_VERSION_AFTER", default_value = "10m", value_parser = humantime::parse_duration, global = true)]
    pub auto_version_after: Duration,

    /// Automatic versions kept per document; older ones are pruned. Versions
    /// saved through the API (labelled or not, and `before restore`) are always kept.
    #[arg(long, env = "TANDEM_KEEP_VERSIONS", default_value_t = 100, global = true)]
    pub keep_versions: u64,

    /// Where webhook events are POSTed (repeatable; comma-separated in the env var).
    #[arg(
        long = "webhook-url",
        env = "TANDEM_WEBHOOK_URL",
        value_delimiter = ',',
        global = true
    )]
    pub webhook_urls: Vec<String>,

    /// The HMAC-SHA256 key of the `Tandem-Signature` header. Required with --webhook-url.
    #[arg(long, env = "TANDEM_WEBHOOK_SECRET", hide_env_values = true, global = true)]
    pub webhook_secret: Option<Secret>,

    /// `document.updated` is sent at most once per document per this.
    #[arg(long, env = "TANDEM_WEBHOOK_DEBOUNCE", default_value = "2s", value_parser = humantime::parse_duration, global = true)]
    pub webhook_debounce: Duration,

    /// A delivery that keeps failing is retried (exponential backoff) for this
    /// long after its event, then marked failed.
    #[arg(long, env = "TANDEM_WEBHOOK_MAX_AGE", default_value = "24h", value_parser = humantime::parse_duration, global = true)]
    pub webhook_max_age: Duration,

    /// How often the stale-session sweep runs.
    #[arg(long, env = "TANDEM_CLEANUP_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration, global = true)]
    pub cleanup_interval: Duration,

    /// `is_editing` turns off by itself after this long without editing activity.
    #[arg(long, env = "TANDEM_EDITING_IDLE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration, global = true)]
    pub editing_idle_timeout: Duration,

    /// Cursor and selection changes are written to the database at most once per
    /// presence row per interval.
    #[arg(long, env = "TANDEM_PRESENCE_FLUSH_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration, global = true)]
    pub presence_flush_interval: Duration,

    /// A member's cursor and selection changes are relayed to the others at
    /// most this often (the last change in every interval always is); 0
    /// relays every change.
    #[arg(long, env = "TANDEM_PRESENCE_MAX_HZ", default_value_t = 30, global = true)]
    pub presence_max_hz: u32,

    /// Largest JSON control message, in bytes.
    #[arg(long, env = "TANDEM_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024, global = true)]
    pub max_message_bytes: usize,

    /// Largest decoded Yjs update, in bytes.
    #[arg(long, env = "TANDEM_MAX_UPDATE_BYTES", default_value_t = 1024 * 1024, global = true)]
    pub max_update_bytes: usize,

    /// Largest `data` of an app message (`broadcast`, `send_to_user` and their
    /// REST forms), in bytes of JSON.
    #[arg(long, env = "TANDEM_MAX_BROADCAST_BYTES", default_value_t = 16 * 1024, global = true)]
    pub max_broadcast_bytes: usize,

    /// Messages each connection may send per second, sustained.
    #[arg(
        long,
        env = "TANDEM_RATE_LIMIT_PER_SECOND",
        default_value_t = 100,
        global = true
    )]
    pub rate_limit_per_second: u32,

    /// Messages a connection may send in a burst above the sustained rate.
    #[arg(long, env = "TANDEM_RATE_LIMIT_BURST", default_value_t = 200, global = true)]
    pub rate_limit_burst: u32,

    /// Outgoing messages queued per connection before it counts as too slow and is closed.
    /// Queued broadcasts share their bytes, so depth is cheap; it must cover a burst such
    /// as a join storm (one `user_joined` per joiner) while the socket writes a large
    /// initial sync.
    #[arg(long, env = "TANDEM_SEND_QUEUE", default_value_t = 4096, global = true)]
    pub send_queue_capacity: usize,

    /// Bytes queued for one connection (not yet written to its socket) before it counts
    /// as too slow and is closed with 4001. Shared bytes (a document encoding every
    /// newcomer gets) count in full on each connection that queues them: that is what
    /// the connection pins. A single message larger than this is still sent when
    /// nothing else is queued.
    #[arg(long, env = "TANDEM_MAX_QUEUED_BYTES", default_value_t = 8 * 1024 * 1024, global = true)]
    pub max_queued_bytes: usize,

    /// A new TCP connection must send its first request's headers within this long,
    /// else it is dropped (silent and half-sent sockets).
    #[arg(long, env = "TANDEM_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration, global = true)]
    pub handshake_timeout: Duration,

    /// An HTTP connection with no traffic for this long is closed (a kept-alive
    /// connection between requests; upgraded WebSockets have their own liveness).
    #[arg(long, env = "TANDEM_HTTP_IDLE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration, global = true)]
    pub http_idle_timeout: Duration,

    /// Connections accepted whose first request has not arrived yet; past this, new
    /// connections are answered 503 and closed at once.
    #[arg(
        long,
        env = "TANDEM_MAX_PENDING_HANDSHAKES",
        default_value_t = 1024,
        global = true
    )]
    pub max_pending_handshakes: usize,

    /// Open WebSocket connections from one client IP (on this instance); past this an
    /// upgrade is refused with 429.
    #[arg(
        long,
        env = "TANDEM_MAX_CONNECTIONS_PER_IP",
        default_value_t = 1000,
        global = true
    )]
    pub max_connections_per_ip: usize,

    /// Open WebSocket connections of one user (on this instance); past this an
    /// upgrade is refused with 429.
    #[arg(
        long,
        env = "TANDEM_MAX_CONNECTIONS_PER_USER",
        default_value_t = 100,
        global = true
    )]
    pub max_connections_per_user: usize,

    /// REST (`/api/v1/...`) requests per second, sustained, per client IP and per token.
    #[arg(
        long,
        env = "TANDEM_REST_RATE_LIMIT_PER_SECOND",
        default_value_t = 100,
        global = true
    )]
    pub rest_rate_limit_per_second: u32,

    /// REST requests a client IP or token may make in a burst above the sustained rate.
    #[arg(
        long,
        env = "TANDEM_REST_RATE_LIMIT_BURST",
        default_value_t = 200,
        global = true
    )]
    pub rest_rate_limit_burst: u32,

    /// Documents one connection may be joined to at once.
    #[arg(
        long,
        env = "TANDEM_MAX_DOCUMENTS_PER_CONNECTION",
        default_value_t = 64,
        global = true
    )]
    pub max_documents_per_connection: usize,

    /// Errors a connection may cause in a row before it is closed.
    #[arg(
        long,
        env = "TANDEM_MAX_CONSECUTIVE_ERRORS",
        default_value_t = 50,
        global = true
    )]
    pub max_consecutive_errors: u32,

    /// How long an empty room keeps its document in memory before unloading it.
    #[arg(long, env = "TANDEM_ROOM_GRACE_PERIOD", default_value = "30s", value_parser = humantime::parse_duration, global = true)]
    pub room_grace_period: Duration,

    /// Compact a document once it has more than this many updates since its snapshot.
    #[arg(
        long,
        env = "TANDEM_COMPACT_AFTER_UPDATES",
        default_value_t = 500,
        global = true
    )]
    pub compact_after_updates: u64,

    /// ... or once those updates add up to more than this many bytes.
    #[arg(long, env = "TANDEM_COMPACT_AFTER_BYTES", default_value_t = 4 * 1024 * 1024, global = true)]
    pub compact_after_bytes: u64,

    /// Updates whose dependencies are missing, kept per document before the sender must resync.
    #[arg(long, env = "TANDEM_MAX_PENDING_UPDATE_BYTES", default_value_t = 1024 * 1024, global = true)]
    pub max_pending_update_bytes: usize,

    /// Inactive sessions older than this are deleted by the sweep (with their presence rows).
    #[arg(long, env = "TANDEM_SESSION_RETENTION", default_value = "7days", value_parser = humantime::parse_duration, global = true)]
    pub session_retention: Duration,

    /// How long graceful shutdown waits for connections to close and data to flush.
    #[arg(long, env = "TANDEM_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration, global = true)]
    pub shutdown_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Cli::parse_from(["tandem"]).config
    }
}

impl Config {
    /// Defaults, ignoring the environment: what tests and embedders start from.
    pub fn defaults_without_env() -> Self {
        // clap reads env fallbacks while parsing; reset the ones that select
        // real infrastructure so a developer's shell cannot leak into tests.
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: "sqlite://tandem.db?mode=rwc".into(),
            jwt_secret: None,
            jwks_url: None,
            jwt_issuer: None,
            jwt_audience: None,
            redis_url: None,
            instance_id: None,
            webhook_urls: Vec::new(),
            webhook_secret: None,
            ..Self::default()
        }
    }

    /// Whether `/demo` is served: asked for, or implied by running with the
    /// development secret (which only listens on loopback).
    pub fn demo_enabled(&self) -> bool {
        self.demo || (self.jwt_secret.is_none() && self.jwks_url.is_none() && self.bind.ip().is_loopback())
    }

    /// The configured secret, or the development one.
    pub fn jwt_secret_or_development(&self) -> Secret {
        self.jwt_secret
            .clone()
            .unwrap_or_else(|| Secret::new(DEVELOPMENT_JWT_SECRET))
    }

    /// Largest WebSocket message the transport accepts: a maximal update in
    /// base64 plus its JSON envelope. Anything between the control-message
    /// limit and this gets a `too_large` error instead of a dropped socket.
    pub fn max_frame_bytes(&self) -> usize {
        (self.max_update_bytes.div_ceil(3) * 4 + 4096).max(self.max_message_bytes)
    }

    /// How often a connection checks its liveness and the server pings: the
    /// heartbeat interval, but at least three times per session TTL so a
    /// silent session is noticed within a third of its TTL.
    pub fn liveness_tick(&self) -> Duration {
        self.heartbeat_interval.min(self.session_ttl / 3)
    }

    /// How long a connection's replies to its own messages may wait for
    /// room in its queue before the reader gives up on them. A client that
    /// reads nothing for this long is as good as silent, so it is the
    /// session TTL: one setting, two uses, one name for each.
    pub fn reply_patience(&self) -> Duration {
        self.session_ttl
    }
}
