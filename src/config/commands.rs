//! The `tandem` subcommands besides serving, and their arguments: `token`
//! (mint a JWT for debugging) and `apikey` (manage API keys).

use std::time::Duration;

use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default).
    Serve,
    /// Print a signed JWT for a user, for debugging with wscat or curl.
    Token(TokenArgs),
    /// Manage API keys for agents and backends.
    #[command(subcommand)]
    Apikey(ApiKeyCommand),
}

/// `tandem apikey ...`: keys are stored hashed in the database the gateway uses.
#[derive(Debug, Clone, Subcommand)]
pub enum ApiKeyCommand {
    /// Create a key and print it once (`tk_...`); only its hash is stored.
    Create(ApiKeyCreateArgs),
    /// List the keys (never the keys themselves).
    List,
    /// Revoke a key by id: it stops working at once, on every instance.
    Revoke {
        /// The key's id, as `apikey list` shows it.
        id: String,
    },
}

#[derive(Debug, Clone, Args)]
pub struct ApiKeyCreateArgs {
    /// A name for the key; connections made with it show this name.
    #[arg(long)]
    pub name: String,
    /// A document id or `prefix*` pattern the key may open (repeatable; none means any).
    #[arg(long = "doc")]
    pub docs: Vec<String>,
    /// `editor`, `viewer` or `admin`.
    #[arg(long, default_value = "editor")]
    pub role: String,
    /// Lifetime of the key; without it the key lasts until revoked.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ttl: Option<Duration>,
}

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The user id (`sub` claim).
    pub user_id: String,
    /// Display name (`name` claim).
    #[arg(long)]
    pub name: Option<String>,
    /// Lifetime of the token.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// A document id or `prefix*` pattern the token may join (repeatable; none means any).
    #[arg(long = "doc")]
    pub docs: Vec<String>,
    /// `editor` (may write documents), `viewer` (read-only) or `admin` (also the admin API).
    #[arg(long, default_value = "editor")]
    pub role: String,
    /// Sign with this private key (PEM: RSA, EC P-256/P-384 or Ed25519)
    /// instead of the HS256 secret, as an identity provider would.
    #[arg(long)]
    pub key: Option<std::path::PathBuf>,
    /// The `kid` header naming the key in the JWKS (with `--key`).
    #[arg(long)]
    pub kid: Option<String>,
    /// The algorithm for `--key` (default: RS256, ES256/ES384 or EdDSA by key type).
    #[arg(long)]
    pub alg: Option<String>,
    /// The `iss` claim.
    #[arg(long)]
    pub iss: Option<String>,
    /// The `aud` claim.
    #[arg(long)]
    pub aud: Option<String>,
}
