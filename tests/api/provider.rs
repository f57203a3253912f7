//! A stand-in identity provider for the tests: real RSA, EC (P-256, P-384)
//! and Ed25519 keys generated here, their JWKS served by a real local HTTP
//! server that counts its fetches and can be made to hang or fail, and
//! tokens signed with the private keys as a provider would.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::Algorithm;
use poem::{EndpointExt, Response, Route, get, handler, http::StatusCode, listener::TcpListener, web::Data};
use serde_json::{Value, json};

/// One signing key: its private PEM and its public JWK.
#[derive(Clone)]
pub struct Key {
    pub kid: String,
    pub alg: Algorithm,
    pub pem: Vec<u8>,
    pub jwk: Value,
}

impl Key {
    /// A token for `claims`, signed with this key and naming its kid.
    pub fn sign(&self, claims: &Value) -> String {
        tandem::auth::jwt::mint_with_pem(&self.pem, Some(self.alg), Some(&self.kid), claims).expect("sign")
    }

    /// The same key material under another kid.
    pub fn renamed(&self, kid: &str) -> Self {
        let mut key = self.clone();
        key.kid = kid.to_owned();
        key.jwk["kid"] = kid.into();
        key
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A new RSA-2048 key pair (RS256, its JWK declaring `alg`).
fn generate_rsa() -> Key {
    use rsa::{pkcs8::EncodePrivateKey, traits::PublicKeyParts};
    let private = rsa::RsaPrivateKey::new(&mut rand_core06::OsRng, 2048).expect("rsa key");
    let public = private.to_public_key();
    Key {
        kid: String::new(),
        alg: Algorithm::RS256,
        pem: private
            .to_pkcs8_pem(Default::default())
            .unwrap()
            .as_bytes()
            .to_vec(),
        jwk: json!({"kty": "RSA", "use": "sig", "alg": "RS256",
            "n": b64(&public.n().to_bytes_be()), "e": b64(&public.e().to_bytes_be())}),
    }
}

/// An RSA key (generation is the slow part: made once per process,
/// renamed per use).
pub fn rsa(kid: &str) -> Key {
    static KEY: OnceLock<Key> = OnceLock::new();
    KEY.get_or_init(generate_rsa).renamed(kid)
}

/// Another RSA key pair than [`rsa`]'s.
pub fn other_rsa(kid: &str) -> Key {
    static KEY: OnceLock<Key> = OnceLock::new();
    KEY.get_or_init(generate_rsa).renamed(kid)
}

pub fn es256(kid: &str) -> Key {
    use p256::{elliptic_curve::sec1::ToEncodedPoint, pkcs8::EncodePrivateKey};
    let secret = p256::SecretKey::random(&mut rand_core06::OsRng);
    let point = secret.public_key().to_encoded_point(false);
    Key {
        kid: kid.into(),
        alg: Algorithm::ES256,
        pem: secret
            .to_pkcs8_pem(Default::default())
            .unwrap()
            .as_bytes()
            .to_vec(),
        jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid,
            "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap())}),
    }
}

pub fn es384(kid: &str) -> Key {
    use p384::{elliptic_curve::sec1::ToEncodedPoint, pkcs8::EncodePrivateKey};
    let secret = p384::SecretKey::random(&mut rand_core06::OsRng);
    let point = secret.public_key().to_encoded_point(false);
    Key {
        kid: kid.into(),
        alg: Algorithm::ES384,
        pem: secret
            .to_pkcs8_pem(Default::default())
            .unwrap()
            .as_bytes()
            .to_vec(),
        jwk: json!({"kty": "EC", "crv": "P-384", "kid": kid, "alg": "ES384",
            "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap())}),
    }
}

pub fn ed25519(kid: &str) -> Key {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let signing = ed25519_dalek::SigningKey::generate(&mut rand_core06::OsRng);
    Key {
        kid: kid.into(),
        alg: Algorithm::EdDSA,
        pem: signing
            .to_pkcs8_pem(Default::default())
            .unwrap()
            .as_bytes()
            .to_vec(),
        jwk: json!({"kty": "OKP", "crv": "Ed25519", "kid": kid,
            "x": b64(signing.verifying_key().as_bytes())}),
    }
}

/// What the JWKS server answers.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Serve,
    /// Never answer (until the test ends).
    Hang,
    /// 500 Internal Server Error.
    Fail,
}

struct Shared {
    keys: Mutex<Vec<Value>>,
    fetches: AtomicU64,
    mode: Mutex<Mode>,
    stopped: AtomicBool,
}

/// A JWKS endpoint on a real local port.
pub struct JwksServer {
    pub url: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    pub async fn start(keys: &[&Key]) -> Self {
        let shared = Arc::new(Shared {
            keys: Mutex::new(Vec::new()),
            fetches: AtomicU64::new(0),
            mode: Mutex::new(Mode::Serve),
            stopped: AtomicBool::new(false),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        drop(listener);
        let app = Route::new()
            .at("/.well-known/jwks.json", get(jwks))
            .data(shared.clone());
        let server = tokio::spawn(async move {
            let _ = poem::Server::new(TcpListener::bind(addr)).run(app).await;
        });
        let server = Self {
            url: format!("http://{addr}/.well-known/jwks.json"),
            shared,
            server,
        };
        server.set_keys(keys);
        // Wait until it answers.
        for _ in 0..100 {
            if reqwest::get(&server.url).await.is_ok() {
                server.shared.fetches.store(0, Ordering::SeqCst);
                return server;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("JWKS server did not start");
    }

    pub fn set_keys(&self, keys: &[&Key]) {
        *self.shared.keys.lock().unwrap() = keys.iter().map(|key| key.jwk.clone()).collect();
    }

    /// Serve raw JWK entries (malformed ones included).
    pub fn set_raw(&self, entries: Vec<Value>) {
        *self.shared.keys.lock().unwrap() = entries;
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    pub fn fetches(&self) -> u64 {
        self.shared.fetches.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.server.abort();
    }
}

#[handler]
async fn jwks(Data(shared): Data<&Arc<Shared>>) -> Response {
    shared.fetches.fetch_add(1, Ordering::SeqCst);
    let mode = *shared.mode.lock().unwrap();
    match mode {
        Mode::Serve => {
            let keys = shared.keys.lock().unwrap().clone();
            Response::builder()
                .content_type("application/json")
                .body(json!({ "keys": keys }).to_string())
        }
        Mode::Fail => Response::builder()
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .finish(),
        Mode::Hang => {
            while !shared.stopped.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Response::builder()
                .status(StatusCode::SERVICE_UNAVAILABLE)
                .finish()
        }
    }
}

/// Claims shaped like a Firebase ID token for `project`.
pub fn firebase_claims(project: &str, user_id: &str, ttl: Duration) -> Value {
    let now = jsonwebtoken::get_current_timestamp();
    json!({
        "iss": format!("https://securetoken.google.com/{project}"),
        "aud": project,
        "auth_time": now - 30,
        "user_id": user_id,
        "sub": user_id,
        "iat": now,
        "exp": now + ttl.as_secs(),
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "email_verified": true,
        "firebase": {"identities": {"email": ["ada@example.com"]}, "sign_in_provider": "password"}
    })
}

/// Plain claims: `sub`, `exp` in `ttl`.
pub fn claims(user_id: &str, ttl: Duration) -> Value {
    let now = jsonwebtoken::get_current_timestamp();
    json!({"sub": user_id, "exp": now + ttl.as_secs(), "iat": now})
}
