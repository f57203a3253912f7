//! JWT claims: verification on every upgrade and REST call, minting for `tandem token`.
//!
//! The algorithm is pinned to HS256 by configuration; the token header can only
//! name it, never choose another. `exp` and `sub` are required; a token whose
//! `nbf` is still in the future is refused (RFC 7519 section 4.1.5).

use std::{sync::Arc, time::Duration};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

use crate::{
    config::Secret,
    model::{ids::DocumentId, text::truncate_utf8},
};

/// Longest accepted `sub`: it is stored in an indexed column.
const MAX_USER_ID_BYTES: usize = 256;
/// Longest accepted display name.
const MAX_NAME_BYTES: usize = 256;
/// Longest accepted token; anything larger is not one of ours.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// What a token may do with a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads and writes documents.
    #[default]
    Editor,
    /// Reads documents and shares presence; every document update is refused.
    Viewer,
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "editor" => Ok(Self::Editor),
            "viewer" => Ok(Self::Viewer),
            other => Err(format!("unknown role {other:?}: expected editor or viewer")),
        }
    }
}

/// The claims tandem reads. Unknown claims are ignored.
///
/// `sub` and `exp` default when absent only so that decoding gets as far as
/// validation, which names the missing claim (`missing required claim "exp"`)
/// instead of failing the whole token as not a JWT.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    #[serde(default)]
    pub sub: String,
    #[serde(default)]
    pub exp: u64,
    /// Not valid before this time (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Document ids or `prefix*` patterns; absent means every document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docs: Option<Vec<String>>,
    #[serde(default)]
    pub role: Role,
}

/// An authenticated caller, as the rest of the gateway sees it.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user_id: Arc<str>,
    pub name: Option<Arc<str>>,
    pub role: Role,
    docs: Option<Arc<[String]>>,
}

impl Identity {
    /// Whether the token's `docs` claim lets this caller open `document`.
    pub fn may_access(&self, document: &DocumentId) -> bool {
        let Some(patterns) = &self.docs else {
            return true;
        };
        patterns.iter().any(|pattern| match pattern.strip_suffix('*') {
            Some(prefix) => document.as_str().starts_with(prefix),
            None => pattern == document.as_str(),
        })
    }

    pub fn may_write(&self) -> bool {
        self.role == Role::Editor
    }
}

/// Why a token was refused. The message is safe to send to the client.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing token: pass ?token=<jwt> or an Authorization: Bearer header")]
    Missing,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet (its nbf is in the future)")]
    NotYetValid,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token is malformed: {0}")]
    Malformed(String),
}

/// Verifies and mints HS256 tokens with one secret.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl JwtKeys {
    pub fn new(secret: &Secret) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(secret.expose().as_bytes()),
            decoding: DecodingKey::from_secret(secret.expose().as_bytes()),
            validation,
        }
    }

    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed("token is too long".into()));
        }
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map_err(|error| {
                match error.kind() {
                    ErrorKind::ExpiredSignature => AuthError::Expired,
                    ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                    ErrorKind::InvalidSignature => AuthError::BadSignature,
                    ErrorKind::InvalidAlgorithm => {
                        AuthError::Malformed("only HS256 tokens are accepted".into())
                    }
                    ErrorKind::MissingRequiredClaim(claim) => {
                        AuthError::Malformed(format!("missing required claim {claim:?}"))
                    }
                    _ => AuthError::Malformed("not a valid JWT".into()),
                }
            })?;
        let claims = data.claims;
        if claims.sub.is_empty() || claims.sub.len() > MAX_USER_ID_BYTES {
            return Err(AuthError::Malformed(format!(
                "sub must be 1 to {MAX_USER_ID_BYTES} bytes"
            )));
        }
        if claims.sub.chars().any(char::is_control) {
            return Err(AuthError::Malformed("sub contains control characters".into()));
        }
        let name = claims
            .name
            .map(|name| truncate_utf8(&name, MAX_NAME_BYTES).into());
        Ok(Identity {
            user_id: claims.sub.into(),
            name,
            role: claims.role,
            docs: claims.docs.map(Into::into),
        })
    }

    /// Sign a token for `claims`.
    pub fn mint(&self, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
    }

    /// Claims for a user, valid for `ttl` from now.
    pub fn claims_for(user_id: &str, ttl: Duration) -> Claims {
        let now = jsonwebtoken::get_current_timestamp();
        Claims {
            sub: user_id.to_owned(),
            exp: now + ttl.as_secs().max(1),
            nbf: None,
            iat: Some(now),
            name: None,
            docs: None,
            role: Role::Editor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> JwtKeys {
        JwtKeys::new(&Secret::new("test-secret"))
    }

    #[test]
    fn minted_token_verifies_with_its_claims() {
        let mut claims = JwtKeys::claims_for("alice", Duration::from_secs(60));
        claims.name = Some("Alice".into());
        claims.docs = Some(vec!["team-*".into(), "readme".into()]);
        claims.role = Role::Viewer;
        let identity = keys().verify(&keys().mint(&claims).unwrap()).unwrap();
        assert_eq!(&*identity.user_id, "alice");
        assert_eq!(identity.name.as_deref(), Some("Alice"));
        assert!(!identity.may_write());
        assert!(identity.may_access(&DocumentId::parse("team-42").unwrap()));
        assert!(identity.may_access(&DocumentId::parse("readme").unwrap()));
        assert!(!identity.may_access(&DocumentId::parse("readme2").unwrap()));
        assert!(!identity.may_access(&DocumentId::parse("other").unwrap()));
    }

    #[test]
    fn token_signed_with_another_secret_is_refused() {
        let other = JwtKeys::new(&Secret::new("other"));
        let token = other
            .mint(&JwtKeys::claims_for("alice", Duration::from_secs(60)))
            .unwrap();
        assert_eq!(keys().verify(&token).unwrap_err(), AuthError::BadSignature);
    }

    #[test]
    fn expired_token_is_refused() {
        let mut claims = JwtKeys::claims_for("alice", Duration::from_secs(60));
        claims.exp = jsonwebtoken::get_current_timestamp() - 120;
        let token = keys().mint(&claims).unwrap();
        assert_eq!(keys().verify(&token).unwrap_err(), AuthError::Expired);
    }

    #[test]
    fn token_not_valid_yet_is_refused() {
        let mut claims = JwtKeys::claims_for("alice", Duration::from_secs(600));
        claims.nbf = Some(jsonwebtoken::get_current_timestamp() + 300);
        let token = keys().mint(&claims).unwrap();
        assert_eq!(keys().verify(&token).unwrap_err(), AuthError::NotYetValid);
        claims.nbf = Some(jsonwebtoken::get_current_timestamp() - 300);
        assert!(keys().verify(&keys().mint(&claims).unwrap()).is_ok());
    }

    #[test]
    fn token_with_another_algorithm_is_refused() {
        let claims = JwtKeys::claims_for("alice", Duration::from_secs(60));
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(b"test-secret"),
        )
        .unwrap();
        assert!(matches!(keys().verify(&token), Err(AuthError::Malformed(_))));
    }

    #[test]
    fn garbage_and_empty_tokens_are_refused() {
        assert_eq!(keys().verify("").unwrap_err(), AuthError::Missing);
        assert!(matches!(keys().verify("a.b.c"), Err(AuthError::Malformed(_))));
        assert!(matches!(
            keys().verify(&"x".repeat(100_000)),
            Err(AuthError::Malformed(_))
        ));
    }
}
