//! Tokens from an identity provider: RS256/ES256/ES384/EdDSA keys from a
//! JWKS served over real HTTP, rotation with clients connected, refetch
//! limits under a flood of unknown kids, a provider that fails or hangs,
//! issuer/audience/claim names (Firebase-shaped tokens), forgeries.

use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream};
use serde_json::json;

use crate::{
    helpers::*,
    provider::{self, JwksServer, Mode},
};

const HOUR: Duration = Duration::from_secs(3600);

async fn app_with_jwks(server: &JwksServer, tweak: impl FnOnce(&mut tandem::Config)) -> TestApp {
    let url = server.url.clone();
    spawn_app_with(&Backend::Sqlite, move |config| {
        config.jwks_url = Some(url);
        tweak(config);
    })
    .await
}

#[tokio::test]
async fn tokens_of_every_key_type_in_the_jwks_are_accepted_beside_hs256() {
    let keys = [
        provider::rsa("rsa-1"),
        provider::es256("ec-1"),
        provider::es384("ec-2"),
        provider::ed25519("ed-1"),
    ];
    let server = JwksServer::start(&keys.iter().collect::<Vec<_>>()).await;
    let app = app_with_jwks(&server, |_| {}).await;
    for key in &keys {
        let token = key.sign(&provider::claims(&format!("user-{}", key.kid), HOUR));
        let mut client = app.connect_with(&token, None).await.expect("connect");
        client.join("doc").await;
        let (status, body) = app.get("/api/v1/presence/document/doc", Some(&token)).await;
        assert_eq!(status, 200, "{} {body}", key.kid);
    }
    // The HS256 secret keeps working beside the JWKS.
    app.connect("alice").await.join("doc").await;
    // PS256 with the RSA key: the JWK allows RS256 only (its "alg").
    let ps = tandem::auth::jwt::mint_with_pem(
        &keys[0].pem,
        Some(jsonwebtoken::Algorithm::PS256),
        Some("rsa-1"),
        &provider::claims("x", HOUR),
    )
    .unwrap();
    assert_eq!(upgrade_status(&app, &ps).await.0, 401);
}

#[tokio::test]
async fn forged_and_mismatched_tokens_are_refused() {
    let rsa = provider::rsa("rsa-1");
    let ec = provider::es256("ec-1");
    let server = JwksServer::start(&[&rsa, &ec]).await;
    let app = app_with_jwks(&server, |_| {}).await;
    let claims = provider::claims("mallory", HOUR);

    // HS256 "signed" with the public key's PEM (and its JWK) as the secret.
    let public_pem = {
        use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
        let private = rsa::RsaPrivateKey::from_pkcs8_pem(std::str::from_utf8(&rsa.pem).unwrap()).unwrap();
        private
            .to_public_key()
            .to_public_key_pem(Default::default())
            .unwrap()
            .into_bytes()
    };
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("rsa-1".into());
    let confused_jwk = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&serde_json::to_vec(&rsa.jwk).unwrap()),
    )
    .unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("rsa-1".into());
    let confused = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&public_pem),
    )
    .unwrap();
    // The EC key's kid on an RSA signature, and the RSA kid on an EC one.
    let wrong_family = tandem::auth::jwt::mint_with_pem(&rsa.pem, None, Some("ec-1"), &claims).unwrap();
    let wrong_family_2 = tandem::auth::jwt::mint_with_pem(&ec.pem, None, Some("rsa-1"), &claims).unwrap();
    // Another key pair under a known kid.
    let impostor = provider::other_rsa("rsa-1").sign(&claims);
    // alg none with a kid.
    let none = format!(
        "{}.{}.",
        base64_url(&json!({"alg": "none", "kid": "rsa-1"})),
        base64_url(&claims)
    );
    let mut future = claims.clone();
    future["nbf"] = (jsonwebtoken::get_current_timestamp() + 600).into();
    let mut expired = claims.clone();
    expired["exp"] = (jsonwebtoken::get_current_timestamp() - 600).into();
    for (token, fragment) in [
        (confused, "signature"),
        (confused_jwk, "signature"),
        (wrong_family, "does not match"),
        (wrong_family_2, "does not match"),
        (impostor, "signature"),
        (none, "malformed"),
        (rsa.sign(&future), "not valid yet"),
        (rsa.sign(&expired), "expired"),
        (provider::es256("nobody").sign(&claims), "kid"),
    ] {
        let (status, body) = upgrade_status(&app, &token).await;
        assert_eq!(status, 401, "{fragment}: {body}");
        assert_eq!(body["error"], "unauthorized");
        assert!(
            body["message"].as_str().unwrap().contains(fragment),
            "{fragment}: {body}"
        );
        let (status, body) = app.get("/api/v1/users/mallory/sessions", Some(&token)).await;
        assert_eq!(status, 401, "REST {fragment}: {body}");
    }
    assert_eq!(app.state.hub.connection_count(), 0);
}

fn base64_url(value: &serde_json::Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

#[tokio::test]
async fn a_flood_of_unknown_kids_fetches_the_jwks_at_most_once_per_interval() {
    let rsa = provider::rsa("rsa-1");
    let server = JwksServer::start(&[&rsa]).await;
    let app = app_with_jwks(&server, |_| {}).await;
    assert_eq!(server.fetches(), 1, "the start-up fetch");
    // The kid is looked up before any signature is checked: one signed
    // token's payload and signature under 10,000 headers.
    let signed = provider::es256("unknown").sign(&provider::claims("flood", HOUR));
    let (_, rest) = signed.split_once('.').unwrap();
    let tokens: Vec<String> = (0..10_000)
        .map(|i| {
            format!(
                "{}.{rest}",
                base64_url(&json!({"alg": "ES256", "kid": format!("kid-{i}")}))
            )
        })
        .collect();
    let client = reqwest::Client::new();
    let refused = stream::iter(tokens)
        .map(|token| {
            let client = client.clone();
            let url = app.url(&format!("/ws?token={token}"));
            async move {
                client
                    .get(url)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            }
        })
        .buffer_unordered(64)
        .filter(|status| std::future::ready(*status == 401))
        .count()
        .await;
    assert_eq!(refused, 10_000);
    // At most one fetch per 30 s min-refresh interval, the start-up one included.
    assert!(server.fetches() <= 2, "{} fetches", server.fetches());
    // A known key still works throughout.
    app.connect_with(&rsa.sign(&provider::claims("alice", HOUR)), None)
        .await
        .expect("known key");
}

#[tokio::test]
async fn keys_rotate_while_clients_stay_connected() {
    let old = provider::rsa("2026-old");
    let server = JwksServer::start(&[&old]).await;
    let app = app_with_jwks(&server, |config| {
        config.jwks_min_refresh = Duration::from_millis(200);
        config.jwks_refresh = Duration::from_millis(500);
    })
    .await;
    let mut alice = app
        .connect_with(&old.sign(&provider::claims("alice", HOUR)), None)
        .await
        .unwrap();
    alice.join("doc").await;
    // The provider publishes a new key and drops the old one.
    let new = provider::ed25519("2026-new");
    server.set_keys(&[&new]);
    tokio::time::sleep(Duration::from_millis(250)).await;
    // A token of the new key is accepted at once (an unknown kid refetches).
    let mut bob = app
        .connect_with(&new.sign(&provider::claims("bob", HOUR)), None)
        .await
        .expect("new key accepted");
    bob.join("doc").await;
    // Alice, connected with the old key, is still there and hears bob.
    let joined = alice.recv_until("user_joined").await;
    assert_eq!(joined["user"]["user_id"], "bob");
    // After the scheduled refresh the old key is gone for new connections.
    eventually("the old key is refused", || async {
        (upgrade_status(&app, &old.sign(&provider::claims("carol", HOUR)))
            .await
            .0
            == 401)
            .then_some(())
    })
    .await;
    alice.assert_alive().await;
}

#[tokio::test]
async fn a_provider_that_fails_or_hangs_later_leaves_the_last_good_keys() {
    let rsa = provider::rsa("rsa-1");
    let server = JwksServer::start(&[&rsa]).await;
    let app = app_with_jwks(&server, |config| {
        config.jwks_min_refresh = Duration::from_millis(100);
    })
    .await;
    for mode in [Mode::Fail, Mode::Hang] {
        server.set_mode(mode);
        tokio::time::sleep(Duration::from_millis(150)).await;
        let started = Instant::now();
        let unknown = provider::es256("new-key").sign(&provider::claims("bob", HOUR));
        let (status, body) = upgrade_status(&app, &unknown).await;
        assert_eq!(status, 401, "{body}");
        // Bounded: the fetch timeout, not the provider, decides.
        assert!(
            started.elapsed() < tandem::auth::jwks::FETCH_TIMEOUT + Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        app.connect_with(&rsa.sign(&provider::claims("alice", HOUR)), None)
            .await
            .expect("the last good key still verifies");
    }
}

#[tokio::test]
async fn a_jwks_that_cannot_be_fetched_at_start_stops_the_start() {
    let database = TestDatabase::create(&Backend::Sqlite).await;
    let mut config = test_config(&database.url);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    config.jwks_url = Some(format!("http://{closed}/jwks.json"));
    let error = match tandem::Application::build(config).await {
        Err(error) => format!("{error:#}"),
        Ok(_) => panic!("started without its JWKS"),
    };
    assert!(error.contains("could not fetch the JWKS from http://"), "{error}");

    let mut config = test_config(&database.url);
    config.jwks_url = Some("/nonexistent/jwks.json".into());
    assert!(tandem::Application::build(config).await.is_err());
}

#[tokio::test]
async fn malformed_and_symmetric_keys_in_the_jwks_are_skipped_and_the_rest_used() {
    let ed = provider::ed25519("ed-1");
    let server = JwksServer::start(&[]).await;
    server.set_raw(vec![
        json!({"kty": "RSA", "kid": "broken", "n": 3}),
        json!({"kty": "oct", "kid": "shared", "k": "c2VjcmV0"}),
        json!("garbage"),
        ed.jwk.clone(),
    ]);
    let app = app_with_jwks(&server, |_| {}).await;
    app.connect_with(&ed.sign(&provider::claims("alice", HOUR)), None)
        .await
        .expect("the good key is used");
    // A token HMAC-signed with the oct key's secret names its kid: refused.
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("shared".into());
    let token = jsonwebtoken::encode(
        &header,
        &provider::claims("mallory", HOUR),
        &jsonwebtoken::EncodingKey::from_secret(b"secret"),
    )
    .unwrap();
    assert_eq!(upgrade_status(&app, &token).await.0, 401);
}

#[tokio::test]
async fn firebase_shaped_tokens_with_issuer_audience_and_user_id_claim() {
    let google = provider::rsa("firebase-kid-1");
    let server = JwksServer::start(&[&google]).await;
    let app = app_with_jwks(&server, |config| {
        config.jwt_secret = None;
        config.jwt_issuer = Some("https://securetoken.google.com/tandem-demo".into());
        config.jwt_audience = Some("tandem-demo".into());
        config.jwt_user_claim = "user_id".into();
    })
    .await;
    let token = google.sign(&provider::firebase_claims("tandem-demo", "u-ada", HOUR));
    let mut ada = app.connect_with(&token, None).await.expect("firebase token");
    let list = ada.join("doc").await;
    assert_eq!(list["users"][0]["user_id"], "u-ada");
    assert_eq!(list["users"][0]["name"], "Ada Lovelace");

    let other_project = google.sign(&provider::firebase_claims("someone-else", "u-ada", HOUR));
    let (status, body) = upgrade_status(&app, &other_project).await;
    assert_eq!(status, 401);
    assert!(body["message"].as_str().unwrap().contains("issuer"), "{body}");
    let mut wrong_audience = provider::firebase_claims("tandem-demo", "u-ada", HOUR);
    wrong_audience["aud"] = "another-app".into();
    let (status, body) = upgrade_status(&app, &google.sign(&wrong_audience)).await;
    assert_eq!(status, 401);
    assert!(body["message"].as_str().unwrap().contains("audience"), "{body}");
    // Without a secret, HS256 tokens (the development kind) are refused.
    assert_eq!(upgrade_status(&app, &app.token("alice")).await.0, 401);
}

#[tokio::test]
async fn tandem_token_mints_provider_shaped_tokens_with_a_pem_key() {
    let key = provider::es256("cli-key");
    let server = JwksServer::start(&[&key]).await;
    let app = app_with_jwks(&server, |config| {
        config.jwt_issuer = Some("https://issuer.example".into());
        config.jwt_audience = Some("my-app".into());
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("provider.pem");
    std::fs::write(&pem, &key.pem).unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["token", "ops", "--role", "admin", "--kid", "cli-key"])
        .args(["--iss", "https://issuer.example", "--aud", "my-app", "--key"])
        .arg(&pem)
        .env_remove("TANDEM_JWT_SECRET")
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(
        (header.alg, header.kid.as_deref()),
        (jsonwebtoken::Algorithm::ES256, Some("cli-key"))
    );
    // An admin: the admin API answers it.
    let (status, reply) = app
        .post(
            "/api/v1/admin/revoke",
            Some(&token),
            &json!({"user_id": "nobody"}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    app.connect_with(&token, None)
        .await
        .expect("the CLI's token connects");
}
