//! Who is calling: tokens and API keys verified into an [`Identity`].
//!
//! - [`jwt`]: JWT verification (HS256 with tandem's secret, and the public
//!   keys of an identity provider's JWKS) with configurable claim names, and
//!   minting for `tandem token`.
//! - [`jwks`]: the JWKS key cache: fetched from a URL or a file, refreshed on
//!   a schedule and, rate-limited, on an unknown `kid`.
//! - [`api_keys`]: API keys (`tk_...`) for agents and backends, stored hashed
//!   and verified through a bounded cache.

pub mod api_keys;
pub mod jwks;
pub mod jwt;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::ids::DocumentId;

pub use jwt::{Claims, Verifier};

/// User ids of API keys are `apikey:<id>`; no token may claim one.
pub const API_KEY_USER_PREFIX: &str = "apikey:";

/// What a token may do with a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads and writes documents.
    #[default]
    Editor,
    /// Reads documents and shares presence; every document update is refused.
    Viewer,
    /// An editor that may also call the admin API (revocation).
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Editor => "editor",
            Self::Viewer => "viewer",
            Self::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "editor" => Ok(Self::Editor),
            "viewer" => Ok(Self::Viewer),
            "admin" => Ok(Self::Admin),
            other => Err(format!(
                "unknown role {other:?}: expected editor, viewer or admin"
            )),
        }
    }
}

/// An authenticated caller, as the rest of the gateway sees it.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user_id: Arc<str>,
    pub name: Option<Arc<str>>,
    pub role: Role,
    /// Document ids or `prefix*` patterns; `None` means every document.
    docs: Option<Arc<[String]>>,
    /// When the credential stops being valid (seconds since the epoch);
    /// `None` for an API key without an expiry.
    pub expires_at: Option<u64>,
    /// When the token was issued (`iat`), if it says.
    pub issued_at: Option<u64>,
    /// A fingerprint of the token itself (a revoked session's token is
    /// denied by it); `None` for API keys, which are revoked in their table.
    pub fingerprint: Option<Arc<str>>,
}

impl Identity {
    pub fn new(
        user_id: Arc<str>,
        name: Option<Arc<str>>,
        role: Role,
        docs: Option<Vec<String>>,
        expires_at: Option<u64>,
    ) -> Self {
        Self {
            user_id,
            name,
            role,
            docs: docs.map(Into::into),
            expires_at,
            issued_at: None,
            fingerprint: None,
        }
    }

    /// What a revocation needs to deny this identity's credential.
    pub fn credential(&self) -> crate::model::revocation::Credential {
        crate::model::revocation::Credential {
            fingerprint: self.fingerprint.as_deref().map(str::to_owned),
            issued_at: self.issued_at,
            expires_at: self.expires_at,
        }
    }

    /// The identity of `token`: remembers its fingerprint, taken over the
    /// signed part only (header and claims). An ECDSA signature can be
    /// rewritten into another valid one (`s` -> `n - s`): the same token
    /// must not get a second fingerprint that way.
    pub fn with_token(mut self, token: &str) -> Self {
        use sha2::Digest;
        let signed = token.rsplit_once('.').map_or(token, |(signed, _)| signed);
        let digest = sha2::Sha256::digest(signed.as_bytes());
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        self.fingerprint = Some(hex.into());
        self
    }

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
        matches!(self.role, Role::Editor | Role::Admin)
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// An API key's identity (JWTs carry a fingerprint of the token).
    pub fn is_api_key(&self) -> bool {
        self.fingerprint.is_none()
    }
}

/// Why a credential was refused. The message is safe to send to the client.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing token: pass ?token=<jwt> or an Authorization: Bearer header")]
    Missing,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet (its nbf is in the future)")]
    NotYetValid,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token was issued by another issuer")]
    WrongIssuer,
    #[error("token is meant for another audience")]
    WrongAudience,
    #[error("token names a key (kid) the JWKS does not hold")]
    UnknownKey,
    #[error("this credential has been revoked")]
    Revoked,
    #[error("unknown API key")]
    UnknownApiKey,
    /// The credential could not be checked (the API key store failed); the
    /// client may retry.
    #[error("the credential could not be checked right now; retry")]
    Unavailable,
    #[error("token is malformed: {0}")]
    Malformed(String),
}
