//! JWT verification on every upgrade, REST call and `refresh_token`, and
//! minting for `tandem token`.
//!
//! The token header never chooses how it is checked: HS256 tokens are
//! verified only with tandem's own secret, and every other algorithm only
//! with the JWKS key its `kid` names, and only if that key's type (and
//! declared `alg`) allows it. So an HS256 token "signed" with a public key's
//! bytes, or `alg: none`, fails. `exp` is required, `nbf` honoured (5 s
//! leeway), `iss`/`aud` checked when configured, and the user id and name
//! are read from configurable claims (providers differ).

use std::{sync::Arc, time::Duration};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{AuthError, Identity, Role, api_keys::ApiKeys, jwks::Jwks};
use crate::model::revocation::DenyList;
use crate::{config::Secret, model::text::truncate_utf8};

/// Longest accepted user id: it is stored in an indexed column.
const MAX_USER_ID_BYTES: usize = 256;
/// Longest accepted display name.
const MAX_NAME_BYTES: usize = 256;
/// Longest accepted token; anything larger is not a token.
const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Clock skew allowed on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 5;

/// Claims tandem writes when it mints a token (`tandem token`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

impl Claims {
    /// Claims for a user, valid for `ttl` from now.
    pub fn for_user(user_id: &str, ttl: Duration) -> Self {
        let now = jsonwebtoken::get_current_timestamp();
        Self {
            sub: user_id.to_owned(),
            exp: now + ttl.as_secs().max(1),
            nbf: None,
            iat: Some(now),
            name: None,
            docs: None,
            role: Role::Editor,
            iss: None,
            aud: None,
        }
    }
}

/// Sign `claims` with an HS256 secret.
pub fn mint_hs256(secret: &Secret, claims: &impl Serialize) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.expose().as_bytes()),
    )
}

/// Sign `claims` with a PEM private key, as an identity provider would.
/// `alg` defaults by key type: RS256, ES256 or ES384, EdDSA.
pub fn mint_with_pem(
    pem: &[u8],
    alg: Option<Algorithm>,
    kid: Option<&str>,
    claims: &impl Serialize,
) -> Result<String, jsonwebtoken::errors::Error> {
    let header = |alg: Algorithm| {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        header
    };
    if let Ok(key) = EncodingKey::from_rsa_pem(pem) {
        return jsonwebtoken::encode(&header(alg.unwrap_or(Algorithm::RS256)), claims, &key);
    }
    if let Ok(key) = EncodingKey::from_ed_pem(pem) {
        return jsonwebtoken::encode(&header(alg.unwrap_or(Algorithm::EdDSA)), claims, &key);
    }
    let key = EncodingKey::from_ec_pem(pem)?;
    match alg {
        Some(alg) => jsonwebtoken::encode(&header(alg), claims, &key),
        // A PKCS#8 PEM does not name its curve: P-256 signs ES256, P-384 only ES384.
        None => jsonwebtoken::encode(&header(Algorithm::ES256), claims, &key)
            .or_else(|_| jsonwebtoken::encode(&header(Algorithm::ES384), claims, &key)),
    }
}

/// How tokens are checked, from the configuration.
pub struct VerifierSettings {
    /// HS256 secret; `None` refuses HS256 tokens.
    pub secret: Option<Secret>,
    pub jwks: Option<Arc<Jwks>>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub user_claim: String,
    pub name_claim: String,
    /// The claim that holds the role (`editor`, `viewer`, `admin`).
    pub role_claim: String,
    /// API keys (`tk_...`); `None` refuses them.
    pub api_keys: Option<Arc<ApiKeys>>,
}

/// Verifies tokens (and API keys) into identities.
pub struct Verifier {
    secret: Option<DecodingKey>,
    jwks: Option<Arc<Jwks>>,
    api_keys: Option<Arc<ApiKeys>>,
    issuer: Option<String>,
    audience: Option<String>,
    user_claim: String,
    name_claim: String,
    role_claim: String,
    /// Credentials revoked by an admin, until their entries lapse.
    deny: Arc<DenyList>,
}

impl Verifier {
    pub fn new(settings: VerifierSettings) -> Self {
        Self {
            secret: settings
                .secret
                .map(|secret| DecodingKey::from_secret(secret.expose().as_bytes())),
            jwks: settings.jwks,
            api_keys: settings.api_keys,
            issuer: settings.issuer,
            audience: settings.audience,
            user_claim: settings.user_claim,
            name_claim: settings.name_claim,
            role_claim: settings.role_claim,
            deny: Arc::default(),
        }
    }

    /// The deny list revocations add to.
    pub fn deny_list(&self) -> &Arc<DenyList> {
        &self.deny
    }

    /// A verifier for HS256 tokens of `secret` with the default claims.
    pub fn hs256(secret: &Secret) -> Self {
        Self::new(VerifierSettings {
            secret: Some(secret.clone()),
            jwks: None,
            issuer: None,
            audience: None,
            user_claim: "sub".into(),
            name_claim: "name".into(),
            role_claim: "role".into(),
            api_keys: None,
        })
    }

    pub fn jwks(&self) -> Option<&Arc<Jwks>> {
        self.jwks.as_ref()
    }

    /// The API keys, to create, revoke or invalidate them; `None` when this
    /// verifier refuses API keys.
    pub fn api_keys(&self) -> Option<&Arc<ApiKeys>> {
        self.api_keys.as_ref()
    }

    /// Check a token: its signature, times, issuer and audience, then its
    /// claims. A `tk_...` credential is an API key and is checked as one.
    /// Either is then refused if a revocation denies it.
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let identity = self.verify_credential(token).await?;
        if self.deny.denies(
            &identity.user_id,
            &identity.credential(),
            jsonwebtoken::get_current_timestamp(),
        ) {
            return Err(AuthError::Revoked);
        }
        Ok(identity)
    }

    async fn verify_credential(&self, token: &str) -> Result<Identity, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed("token is too long".into()));
        }
        // A JWT starts with its base64url header (`eyJ`), never with `tk_`.
        if token.starts_with(super::api_keys::KEY_PREFIX) {
            return match &self.api_keys {
                Some(api_keys) => api_keys.verify(token).await,
                None => Err(AuthError::Malformed("API keys are not accepted here".into())),
            };
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::Malformed("not a valid JWT (or an unsupported alg)".into()))?;
        let (key, alg) = match header.alg {
            Algorithm::HS256 => match &self.secret {
                Some(secret) => (KeyRef::Secret(secret), Algorithm::HS256),
                None => {
                    return Err(AuthError::Malformed(
                        "HS256 tokens are not accepted here: sign with a JWKS key".into(),
                    ));
                }
            },
            Algorithm::HS384 | Algorithm::HS512 => {
                return Err(AuthError::Malformed(
                    "of the HMAC algorithms only HS256 is accepted".into(),
                ));
            }
            alg => {
                let Some(jwks) = &self.jwks else {
                    return Err(AuthError::Malformed(
                        "only HS256 tokens are accepted (no JWKS is configured)".into(),
                    ));
                };
                let Some(kid) = header.kid.as_deref() else {
                    return Err(AuthError::Malformed(
                        "a token signed with a public key needs a kid".into(),
                    ));
                };
                let key = jwks.find(kid).await.ok_or(AuthError::UnknownKey)?;
                if !key.algorithms.contains(&alg) {
                    return Err(AuthError::Malformed(format!(
                        "alg {alg:?} does not match its key"
                    )));
                }
                (KeyRef::Public(key), alg)
            }
        };
        let mut validation = Validation::new(alg);
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        match &self.issuer {
            Some(issuer) => {
                validation.set_issuer(&[issuer]);
                validation.required_spec_claims.insert("iss".into());
            }
            None => validation.iss = None,
        }
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        let decoding = match &key {
            KeyRef::Secret(secret) => *secret,
            KeyRef::Public(public) => &public.key,
        };
        let data =
            jsonwebtoken::decode::<Map<String, Value>>(token, decoding, &validation).map_err(|error| {
                match error.kind() {
                    ErrorKind::ExpiredSignature => AuthError::Expired,
                    ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                    ErrorKind::InvalidSignature => AuthError::BadSignature,
                    ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
                    ErrorKind::InvalidAudience => AuthError::WrongAudience,
                    ErrorKind::MissingRequiredClaim(claim) => {
                        AuthError::Malformed(format!("missing required claim {claim:?}"))
                    }
                    ErrorKind::InvalidAlgorithm => AuthError::Malformed("alg does not match its key".into()),
                    _ => AuthError::Malformed("not a valid JWT".into()),
                }
            })?;
        Ok(self.identity(data.claims)?.with_token(token))
    }

    /// The identity the claims describe.
    fn identity(&self, claims: Map<String, Value>) -> Result<Identity, AuthError> {
        let malformed = |message: String| AuthError::Malformed(message);
        let user_id = match claims.get(&self.user_claim) {
            Some(Value::String(id)) => id.as_str(),
            Some(_) => return Err(malformed(format!("claim {:?} must be a string", self.user_claim))),
            None => return Err(malformed(format!("missing required claim {:?}", self.user_claim))),
        };
        if user_id.is_empty() || user_id.len() > MAX_USER_ID_BYTES {
            return Err(malformed(format!(
                "claim {:?} must be 1 to {MAX_USER_ID_BYTES} bytes",
                self.user_claim
            )));
        }
        if user_id.chars().any(char::is_control) {
            return Err(malformed(format!(
                "claim {:?} contains control characters",
                self.user_claim
            )));
        }
        if user_id.starts_with(super::API_KEY_USER_PREFIX) {
            // That namespace belongs to API keys: a token cannot pose as one.
            return Err(malformed(format!(
                "claim {:?} may not start with {:?}",
                self.user_claim,
                super::API_KEY_USER_PREFIX
            )));
        }
        let name = match claims.get(&self.name_claim) {
            Some(Value::String(name)) => Some(truncate_utf8(name, MAX_NAME_BYTES).into()),
            _ => None,
        };
        let docs = match claims.get("docs") {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .map(|item| item.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| malformed("claim \"docs\" must be an array of strings".into()))?,
            ),
            Some(_) => return Err(malformed("claim \"docs\" must be an array of strings".into())),
        };
        let role = match claims.get(&self.role_claim) {
            None | Some(Value::Null) => Role::Editor,
            Some(Value::String(role)) => role.parse().map_err(malformed)?,
            Some(_) => return Err(malformed(format!("claim {:?} must be a string", self.role_claim))),
        };
        let expires_at = claims.get("exp").and_then(unix_seconds);
        let mut identity = Identity::new(user_id.into(), name, role, docs, expires_at);
        identity.issued_at = claims.get("iat").and_then(unix_seconds);
        Ok(identity)
    }
}

/// A NumericDate (RFC 7519), which may have a fraction: whole seconds, as
/// jsonwebtoken reads it for its own `exp` check.
fn unix_seconds(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(|v| v as u64)
    })
}

enum KeyRef<'a> {
    Secret(&'a DecodingKey),
    Public(Arc<super::jwks::PublicKey>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ids::DocumentId;

    fn secret() -> Secret {
        Secret::new("test-secret")
    }

    fn verify(token: &str) -> Result<Identity, AuthError> {
        let verifier = Verifier::hs256(&secret());
        futures_util::FutureExt::now_or_never(verifier.verify(token)).expect("no JWKS: never waits")
    }

    #[test]
    fn minted_token_verifies_with_its_claims() {
        let mut claims = Claims::for_user("alice", Duration::from_secs(60));
        claims.name = Some("Alice".into());
        claims.docs = Some(vec!["team-*".into(), "readme".into()]);
        claims.role = Role::Viewer;
        let identity = verify(&mint_hs256(&secret(), &claims).unwrap()).unwrap();
        assert_eq!(&*identity.user_id, "alice");
        assert_eq!(identity.name.as_deref(), Some("Alice"));
        assert_eq!(identity.expires_at, Some(claims.exp));
        assert!(!identity.may_write());
        assert!(identity.may_access(&DocumentId::parse("team-42").unwrap()));
        assert!(identity.may_access(&DocumentId::parse("readme").unwrap()));
        assert!(!identity.may_access(&DocumentId::parse("readme2").unwrap()));
        assert!(!identity.may_access(&DocumentId::parse("other").unwrap()));
    }

    #[test]
    fn token_signed_with_another_secret_is_refused() {
        let token = mint_hs256(
            &Secret::new("other"),
            &Claims::for_user("alice", Duration::from_secs(60)),
        )
        .unwrap();
        assert_eq!(verify(&token).unwrap_err(), AuthError::BadSignature);
    }

    #[test]
    fn expired_and_not_yet_valid_tokens_are_refused() {
        let mut claims = Claims::for_user("alice", Duration::from_secs(600));
        claims.exp = jsonwebtoken::get_current_timestamp() - 120;
        assert_eq!(
            verify(&mint_hs256(&secret(), &claims).unwrap()).unwrap_err(),
            AuthError::Expired
        );
        let mut claims = Claims::for_user("alice", Duration::from_secs(600));
        claims.nbf = Some(jsonwebtoken::get_current_timestamp() + 300);
        assert_eq!(
            verify(&mint_hs256(&secret(), &claims).unwrap()).unwrap_err(),
            AuthError::NotYetValid
        );
        claims.nbf = Some(jsonwebtoken::get_current_timestamp() - 300);
        assert!(verify(&mint_hs256(&secret(), &claims).unwrap()).is_ok());
    }

    #[test]
    fn other_hmac_algorithms_none_and_garbage_are_refused() {
        let claims = Claims::for_user("alice", Duration::from_secs(60));
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(b"test-secret"),
        )
        .unwrap();
        assert!(matches!(verify(&hs512), Err(AuthError::Malformed(_))));
        // alg none: header {"alg":"none"}, no signature.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSIsImV4cCI6OTk5OTk5OTk5OX0.";
        assert!(matches!(verify(none), Err(AuthError::Malformed(_))));
        // RS256 without a JWKS configured.
        let rs = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJhbGljZSIsImV4cCI6OTk5OTk5OTk5OX0.c2ln";
        assert!(matches!(verify(rs), Err(AuthError::Malformed(_))));
        assert_eq!(verify("").unwrap_err(), AuthError::Missing);
        assert!(matches!(verify("a.b.c"), Err(AuthError::Malformed(_))));
        assert!(matches!(
            verify(&"x".repeat(100_000)),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn api_keys_are_refused_when_the_verifier_has_none() {
        let error = verify("tk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").unwrap_err();
        assert_eq!(
            error,
            AuthError::Malformed("API keys are not accepted here".into())
        );
    }

    #[test]
    fn claims_of_the_wrong_shape_are_refused() {
        let now = jsonwebtoken::get_current_timestamp();
        for claims in [
            serde_json::json!({"exp": now + 60}),
            serde_json::json!({"sub": 42, "exp": now + 60}),
            serde_json::json!({"sub": "", "exp": now + 60}),
            serde_json::json!({"sub": "a\u{7}b", "exp": now + 60}),
            serde_json::json!({"sub": "apikey:1", "exp": now + 60}),
            serde_json::json!({"sub": "alice", "exp": now + 60, "role": "root"}),
            serde_json::json!({"sub": "alice", "exp": now + 60, "docs": "all"}),
            serde_json::json!({"sub": "alice", "exp": now + 60, "docs": [1]}),
            serde_json::json!({"sub": "alice"}),
        ] {
            let token = mint_hs256(&secret(), &claims).unwrap();
            assert!(matches!(verify(&token), Err(AuthError::Malformed(_))), "{claims}");
        }
    }

    #[test]
    fn the_fingerprint_covers_the_signed_part_only() {
        // An ECDSA signature can be rewritten into another valid one: the
        // token must keep its fingerprint (a revoked session's token stays out).
        let with = |token: &str| {
            Identity::new("u".into(), None, Role::Editor, None, None)
                .with_token(token)
                .fingerprint
        };
        assert_eq!(with("aGVhZA.Y2xhaW1z.c2lnMQ"), with("aGVhZA.Y2xhaW1z.c2lnMg"));
        assert_ne!(with("aGVhZA.Y2xhaW1z.c2lnMQ"), with("aGVhZA.Y2xhaW0y.c2lnMQ"));
    }

    #[test]
    fn fractional_times_and_a_custom_role_claim_are_read() {
        let verifier = Verifier::new(VerifierSettings {
            secret: Some(secret()),
            jwks: None,
            issuer: None,
            audience: None,
            user_claim: "sub".into(),
            name_claim: "name".into(),
            role_claim: "tandem_role".into(),
            api_keys: None,
        });
        let now = jsonwebtoken::get_current_timestamp();
        // Supabase-shaped: "role" says "authenticated", which is not ours.
        let claims = serde_json::json!({"sub": "u1", "role": "authenticated", "tandem_role": "viewer",
            "exp": (now + 60) as f64 + 0.5, "iat": now as f64});
        let token = mint_hs256(&secret(), &claims).unwrap();
        let identity = futures_util::FutureExt::now_or_never(verifier.verify(&token))
            .unwrap()
            .unwrap();
        assert_eq!(identity.role, Role::Viewer);
        assert_eq!(
            identity.expires_at,
            Some(now + 60),
            "a fractional exp still expires the connection"
        );
        assert_eq!(identity.issued_at, Some(now));
    }

    #[test]
    fn issuer_audience_and_claim_names_are_configurable() {
        let verifier = Verifier::new(VerifierSettings {
            secret: Some(secret()),
            jwks: None,
            issuer: Some("https://securetoken.google.com/proj".into()),
            audience: Some("proj".into()),
            user_claim: "user_id".into(),
            name_claim: "name".into(),
            role_claim: "role".into(),
            api_keys: None,
        });
        let check = |claims: serde_json::Value| {
            let token = mint_hs256(&secret(), &claims).unwrap();
            futures_util::FutureExt::now_or_never(verifier.verify(&token)).unwrap()
        };
        let now = jsonwebtoken::get_current_timestamp();
        let good = serde_json::json!({"iss": "https://securetoken.google.com/proj", "aud": "proj",
            "user_id": "u1", "sub": "u1", "name": "Ada", "exp": now + 60});
        let identity = check(good.clone()).unwrap();
        assert_eq!(
            (&*identity.user_id, identity.name.as_deref()),
            ("u1", Some("Ada"))
        );
        let mut wrong = good.clone();
        wrong["iss"] = "https://evil".into();
        assert_eq!(check(wrong).unwrap_err(), AuthError::WrongIssuer);
        let mut wrong = good.clone();
        wrong["aud"] = "other".into();
        assert_eq!(check(wrong).unwrap_err(), AuthError::WrongAudience);
        let mut missing = good;
        missing.as_object_mut().unwrap().remove("aud");
        assert!(matches!(check(missing), Err(AuthError::Malformed(_))));
    }
}
