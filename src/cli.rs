//! The `tandem` subcommands besides serving: `token` (mint a JWT for
//! debugging, HS256 or with a provider-like private key).

use anyhow::Context;

use crate::{
    auth::{Claims, jwt},
    config::{Config, TokenArgs},
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

/// `tandem apikey ...`.
pub async fn apikey(_config: Config, _command: crate::config::ApiKeyCommand) -> anyhow::Result<()> {
    anyhow::bail!("API keys are not implemented yet")
}
