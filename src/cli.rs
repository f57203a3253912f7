//! The `tandem` subcommands besides serving: `token` (mint a JWT for
//! debugging, HS256 or with a provider-like private key) and `apikey`
//! (create, list and revoke API keys in the gateway's database).

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};

use crate::{
    auth::{
        Claims,
        api_keys::{ApiKeys, KeySpec, RevokeOutcome},
        jwt,
    },
    config::{ApiKeyCommand, Config, TokenArgs},
};

/// The token `tandem token` prints.
pub fn token(config: &Config, args: &TokenArgs) -> anyhow::Result<String> {
    let mut claims = Claims::for_user(&args.user_id, args.ttl);
    claims.name = args.name.clone();
    claims.docs = (!args.docs.is_empty()).then(|| args.docs.clone());
    claims.role = args.role.parse().map_err(anyhow::Error::msg)?;
    claims.iss = args.iss.clone();
    claims.aud = args.aud.clone();
    match &args.key {
        Some(path) => {
            let pem = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
            let alg = match &args.alg {
                Some(alg) => Some(alg.parse().map_err(|_| anyhow::anyhow!("unknown alg {alg:?}"))?),
                None => None,
            };
            jwt::mint_with_pem(&pem, alg, args.kid.as_deref(), &claims)
                .context("sign with the key (RSA, EC P-256/P-384 or Ed25519 PEM)")
        }
        None => {
            if config.jwt_secret.is_none() {
                eprintln!("tandem: no TANDEM_JWT_SECRET set; signing with the development secret");
            }
            Ok(jwt::mint_hs256(&config.jwt_secret_or_development(), &claims)?)
        }
    }
}

/// `tandem apikey ...`, against the database the gateway uses (migrated
/// first, so it works before the gateway ever ran). `create` prints only the
/// key on stdout, so `KEY=$(tandem apikey create ...)` captures it; what
/// else there is to say goes to stderr.
pub async fn apikey(config: Config, command: ApiKeyCommand) -> anyhow::Result<()> {
    let db = crate::storage::db::connect_and_migrate(&config.database_url)
        .await
        .context("connect to the database")?;
    let keys = ApiKeys::new(db.clone());
    let result = run_apikey(&config, &keys, command).await;
    db.close().await.ok();
    result
}

async fn run_apikey(config: &Config, keys: &ApiKeys, command: ApiKeyCommand) -> anyhow::Result<()> {
    match command {
        ApiKeyCommand::Create(args) => {
            let created = keys
                .create(KeySpec {
                    name: args.name,
                    docs: (!args.docs.is_empty()).then_some(args.docs),
                    role: args.role.parse().map_err(anyhow::Error::msg)?,
                    ttl: args.ttl,
                })
                .await?;
            eprintln!(
                "tandem: created API key {} ({:?}); it is shown once and cannot be recovered",
                created.row.id, created.row.name
            );
            println!("{}", created.key.expose());
        }
        ApiKeyCommand::List => {
            let now = Utc::now();
            let rows: Vec<[String; 9]> = keys
                .list()
                .await?
                .into_iter()
                .map(|row| {
                    let status = match (row.revoked_at, row.expires_at) {
                        (Some(_), _) => "revoked",
                        (None, Some(at)) if at <= now => "expired",
                        _ => "active",
                    };
                    let docs = crate::storage::api_keys::decode_docs(&row)
                        .map(|docs| docs.map_or_else(|| "*".to_owned(), |docs| docs.join(",")))
                        .unwrap_or_else(|_| "?".to_owned());
                    [
                        row.id.to_string(),
                        row.name,
                        row.role,
                        docs,
                        status.to_owned(),
                        time(Some(row.created_at)),
                        time(row.expires_at),
                        time(row.revoked_at),
                        time(row.last_used_at),
                    ]
                })
                .collect();
            let header = [
                "ID",
                "NAME",
                "ROLE",
                "DOCS",
                "STATUS",
                "CREATED",
                "EXPIRES",
                "REVOKED",
                "LAST USED",
            ]
            .map(str::to_owned);
            print_table(&header, &rows);
        }
        ApiKeyCommand::Revoke { id } => {
            match keys.revoke(&id).await? {
                RevokeOutcome::AlreadyRevoked => println!("API key {id} was already revoked"),
                _ => println!("revoked API key {id}"),
            }
            // Running gateways close the key's connections and drop it from
            // their caches now (through Redis); without Redis, within 30 s
            // for new requests, and `POST /api/v1/admin/revoke` closes them.
            if let (Some(url), Some(user_id)) = (&config.redis_url, crate::auth::api_keys::key_user_id(&id)) {
                match crate::cluster::revoke::publish_from_outside(url, &config.redis_prefix, user_id).await {
                    Ok(()) => println!("told the running gateways to close its connections"),
                    Err(error) => {
                        eprintln!("tandem: could not reach redis to close its connections: {error:#}")
                    }
                }
            }
        }
    }
    Ok(())
}

fn time(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(
        || "-".to_owned(),
        |at| at.to_rfc3339_opts(SecondsFormat::Secs, true),
    )
}

/// Columns padded to their widest cell, two spaces apart.
fn print_table<const N: usize>(header: &[String; N], rows: &[[String; N]]) {
    let mut widths = header.each_ref().map(|cell| cell.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in std::iter::once(header).chain(rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}
