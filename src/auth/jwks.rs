//! The identity provider's public keys (a JWKS), cached by `kid`.
//!
//! Fetched at start (a failure there stops the start with a clear message),
//! again every `--jwks-refresh` (key rotation), and when a token names a
//! `kid` the cache lacks, but then at most once per `--jwks-min-refresh`
//! however many such tokens arrive: a flood of made-up kids costs the
//! provider one request per interval. A fetch that fails later keeps the last
//! good keys and is logged once until one succeeds again.
//!
//! Only public keys are taken: RSA (RS256/384/512, PS256/384/512), EC P-256
//! (ES256) and P-384 (ES384), and Ed25519 (EdDSA). Symmetric (`oct`) keys,
//! encryption keys and malformed entries are skipped, the rest used.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use jsonwebtoken::{Algorithm, DecodingKey, jwk::Jwk};

/// How long one fetch may take before the last good keys are used instead.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest JWKS document read.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Where the JWKS comes from.
#[derive(Debug, Clone)]
pub enum JwksSource {
    Http(String),
    File(PathBuf),
}

impl JwksSource {
    pub fn parse(location: &str) -> Self {
        if location.starts_with("http://") || location.starts_with("https://") {
            Self::Http(location.to_owned())
        } else {
            Self::File(PathBuf::from(
                location.strip_prefix("file://").unwrap_or(location),
            ))
        }
    }
}

impl std::fmt::Display for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Http(url) => f.write_str(url),
            Self::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Why a JWKS could not be read.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("could not fetch the JWKS from {location}: {reason}")]
    Fetch { location: String, reason: String },
    #[error("the JWKS at {location} is not a JSON object with a \"keys\" array")]
    NotAJwks { location: String },
}

/// One usable public key and the algorithms a token may name for it.
pub struct PublicKey {
    pub key: DecodingKey,
    pub algorithms: Vec<Algorithm>,
}

type KeyMap = HashMap<String, Arc<PublicKey>>;

/// The cached key set.
pub struct Jwks {
    source: JwksSource,
    client: reqwest::Client,
    keys: RwLock<Arc<KeyMap>>,
    /// Serialises fetches; holds when the last one started.
    fetching: tokio::sync::Mutex<Option<Instant>>,
    min_refresh: Duration,
    /// The last fetch failed (logged once until one succeeds).
    failing: AtomicBool,
    /// Fetches made, for tests and `/stats`.
    fetches: AtomicU64,
}

impl Jwks {
    /// Fetch the key set once; an error here is a start-up error.
    pub async fn load(source: JwksSource, min_refresh: Duration) -> Result<Self, JwksError> {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|error| JwksError::Fetch {
                location: source.to_string(),
                reason: error.to_string(),
            })?;
        let jwks = Self {
            source,
            client,
            keys: RwLock::new(Arc::new(KeyMap::new())),
            fetching: tokio::sync::Mutex::new(None),
            min_refresh,
            failing: AtomicBool::new(false),
            fetches: AtomicU64::new(0),
        };
        let keys = jwks.fetch().await?;
        tracing::info!(source = %jwks.source, keys = keys.len(), "JWKS loaded");
        jwks.store(keys);
        *jwks.fetching.lock().await = Some(Instant::now());
        Ok(jwks)
    }

    /// The key named `kid`, if cached.
    pub fn cached(&self, kid: &str) -> Option<Arc<PublicKey>> {
        self.snapshot().get(kid).cloned()
    }

    /// The key named `kid`, re-fetching the set first if it is unknown and
    /// no fetch started within the min-refresh interval.
    pub async fn find(&self, kid: &str) -> Option<Arc<PublicKey>> {
        if let Some(key) = self.cached(kid) {
            return Some(key);
        }
        {
            let mut last = self.fetching.lock().await;
            // Another caller may have fetched while this one waited.
            if let Some(key) = self.cached(kid) {
                return Some(key);
            }
            if last.is_some_and(|at| at.elapsed() < self.min_refresh) {
                return None;
            }
            *last = Some(Instant::now());
            self.fetch_and_store().await;
        }
        self.cached(kid)
    }

    /// The scheduled refresh.
    pub async fn refresh(&self) {
        let mut last = self.fetching.lock().await;
        *last = Some(Instant::now());
        self.fetch_and_store().await;
    }

    /// Fetches made since start (the start-up one included).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Number of usable keys held.
    pub fn len(&self) -> usize {
        self.snapshot().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn snapshot(&self) -> Arc<KeyMap> {
        match self.keys.read() {
            Ok(keys) => keys.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn store(&self, keys: KeyMap) {
        let keys = Arc::new(keys);
        match self.keys.write() {
            Ok(mut slot) => *slot = keys,
            Err(poisoned) => *poisoned.into_inner() = keys,
        }
    }

    async fn fetch_and_store(&self) {
        match self.fetch().await {
            Ok(keys) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(source = %self.source, "JWKS fetched again");
                }
                self.store(keys);
            }
            Err(error) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(%error, "JWKS refresh failed; keeping the last good keys");
                }
            }
        }
    }

    async fn fetch(&self) -> Result<KeyMap, JwksError> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let fail = |reason: String| JwksError::Fetch {
            location: self.source.to_string(),
            reason,
        };
        let body = match &self.source {
            JwksSource::Http(url) => {
                let response = self
                    .client
                    .get(url)
                    .send()
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                if !response.status().is_success() {
                    return Err(fail(format!("HTTP status {}", response.status())));
                }
                if response
                    .content_length()
                    .is_some_and(|len| len > MAX_JWKS_BYTES as u64)
                {
                    return Err(fail("the JWKS is larger than 1 MiB".into()));
                }
                let bytes = response.bytes().await.map_err(|e| fail(e.to_string()))?;
                bytes.to_vec()
            }
            JwksSource::File(path) => tokio::fs::read(path).await.map_err(|e| fail(e.to_string()))?,
        };
        if body.len() > MAX_JWKS_BYTES {
            return Err(fail("the JWKS is larger than 1 MiB".into()));
        }
        parse(&body).ok_or_else(|| JwksError::NotAJwks {
            location: self.source.to_string(),
        })
    }
}

/// The usable keys of a JWKS document, or `None` if it is not one.
pub fn parse(body: &[u8]) -> Option<KeyMap> {
    #[derive(serde::Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let document: Document = serde_json::from_slice(body).ok()?;
    let mut keys = KeyMap::new();
    for entry in document.keys {
        match usable_key(entry) {
            Ok((kid, key)) => {
                keys.insert(kid, Arc::new(key));
            }
            Err(reason) => tracing::warn!(reason, "skipping a JWKS key"),
        }
    }
    Some(keys)
}

fn usable_key(entry: serde_json::Value) -> Result<(String, PublicKey), &'static str> {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, KeyAlgorithm, PublicKeyUse};
    let jwk: Jwk = serde_json::from_value(entry).map_err(|_| "malformed key")?;
    let kid = jwk.common.key_id.clone().ok_or("key without a kid")?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err("encryption key");
    }
    let family: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return Err("unsupported elliptic curve"),
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            vec![Algorithm::EdDSA]
        }
        AlgorithmParameters::OctetKeyPair(_) => return Err("unsupported OKP curve"),
        // A shared secret has no place in a public key set: accepting one
        // would let anyone who can read the JWKS sign tokens.
        AlgorithmParameters::OctetKey(_) => return Err("symmetric key"),
        _ => return Err("unknown key type"),
    };
    let algorithms = match jwk.common.key_algorithm {
        None => family,
        Some(declared) => {
            let declared = match declared {
                KeyAlgorithm::RS256 => Algorithm::RS256,
                KeyAlgorithm::RS384 => Algorithm::RS384,
                KeyAlgorithm::RS512 => Algorithm::RS512,
                KeyAlgorithm::PS256 => Algorithm::PS256,
                KeyAlgorithm::PS384 => Algorithm::PS384,
                KeyAlgorithm::PS512 => Algorithm::PS512,
                KeyAlgorithm::ES256 => Algorithm::ES256,
                KeyAlgorithm::ES384 => Algorithm::ES384,
                KeyAlgorithm::EdDSA => Algorithm::EdDSA,
                _ => return Err("unsupported key algorithm"),
            };
            if !family.contains(&declared) {
                return Err("key algorithm does not match its key type");
            }
            vec![declared]
        }
    };
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| "malformed key material")?;
    Ok((kid, PublicKey { key, algorithms }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_malformed_and_kidless_keys_are_skipped_and_the_rest_kept() {
        let body = serde_json::json!({"keys": [
            {"kty": "oct", "kid": "secret", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "broken"},
            {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "EC", "crv": "P-256", "kid": "ec", "alg": "ES384",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            "not even an object"
        ]});
        let keys = parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(keys.keys().collect::<Vec<_>>(), vec!["ed"]);
        assert_eq!(keys["ed"].algorithms, vec![Algorithm::EdDSA]);
        assert!(parse(b"{\"keys\": 3}").is_none());
        assert!(parse(b"[]").is_none());
    }

    #[test]
    fn file_and_url_sources_are_told_apart() {
        assert!(matches!(
            JwksSource::parse("https://x/jwks.json"),
            JwksSource::Http(_)
        ));
        assert!(matches!(JwksSource::parse("/etc/jwks.json"), JwksSource::File(_)));
        assert!(
            matches!(JwksSource::parse("file:///etc/jwks.json"), JwksSource::File(p) if p == std::path::Path::new("/etc/jwks.json"))
        );
    }
}
