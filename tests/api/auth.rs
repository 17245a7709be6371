//! Access tokens: what is accepted, and every way a token is refused with 401.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agents_api::http::auth::JwtVerifier;

use axum::Router;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::RwLock;
use uuid::Uuid;

use crate::support::app::{JWT_SECRET, TestApp, claims_for, sign_hs256};

const JWKS: &str = include_str!("fixtures/jwks.json");
const RS256_DER: &[u8] = include_bytes!("fixtures/rs256.der");
const ES256_DER: &[u8] = include_bytes!("fixtures/es256.der");

async fn me_with(app: &TestApp, token: Option<&str>) -> crate::support::app::Response {
    app.send(Method::GET, "/v1/me", token, None).await
}

#[tokio::test]
async fn valid_token_is_accepted() {
    let app = TestApp::builder().spawn().await;
    let user = Uuid::now_v7();
    let r = me_with(&app, Some(&app.token(user))).await.expect(200);
    assert_eq!(r.body["user_id"], user.to_string());
}

#[tokio::test]
async fn missing_token_is_401_with_www_authenticate() {
    let app = TestApp::builder().spawn().await;
    let r = me_with(&app, None)
        .await
        .expect_problem(401, "unauthorized");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));

    // A non-bearer scheme is no token at all.
    let r = app
        .client
        .get(app.url("/v1/me"))
        .basic_auth("user", Some("password"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn refused_tokens_are_401() {
    let app = TestApp::builder().spawn().await;
    let user = Uuid::now_v7();
    let now = chrono::Utc::now().timestamp();
    let with = |patch: Value| {
        let mut claims = claims_for(user);
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        sign_hs256(&claims, JWT_SECRET)
    };
    let unsigned = {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims_for(user).to_string());
        format!("{header}.{payload}.")
    };
    let hs512 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS512),
        &claims_for(user),
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    let cases: Vec<(&str, String)> = vec![
        ("garbage", "not.a.jwt".into()),
        ("alg none", unsigned),
        (
            "expired",
            with(json!({"exp": now - 3600, "iat": now - 7200})),
        ),
        ("not yet valid", with(json!({"nbf": now + 3600}))),
        ("no exp", with(json!({"exp": null}))),
        ("wrong audience", with(json!({"aud": "someone-else"}))),
        ("no audience", with(json!({"aud": null}))),
        ("non-uuid sub", with(json!({"sub": "user-42"}))),
        // Accepted by the verifier, refused by PostgreSQL: these answered 500.
        ("urn sub", with(json!({"sub": format!("urn:uuid:{user}")}))),
        ("braced sub", with(json!({"sub": format!("{{{user}}}")}))),
        ("NUL in a claim", with(json!({"name": "a\u{0}b"}))),
        ("NUL in a key", with(json!({"x\u{0}": 1}))),
        (
            "exp of 2^63",
            with(json!({"exp": 9_223_372_036_854_775_808u64})),
        ),
        ("negative iat", with(json!({"iat": -1}))),
        ("fractional nbf", with(json!({"nbf": 1.5}))),
        ("no sub", with(json!({"sub": null}))),
        (
            "wrong signature",
            sign_hs256(&claims_for(user), "another-secret-another-secret-another"),
        ),
        ("other HMAC algorithm", hs512),
        (
            "RS256 without a JWKS",
            sign_rs256(&claims_for(user), "rsa-1"),
        ),
    ];
    for (case, token) in cases {
        let r = me_with(&app, Some(&token)).await;
        assert_eq!(r.status, 401, "{case}: {}", r.text);
        assert_eq!(r.body["code"], "unauthorized", "{case}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{case}");
    }
}

#[tokio::test]
async fn issuer_is_checked_when_configured() {
    let app = TestApp::builder()
        .configure(|env| {
            env.insert("JWT_ISSUER".into(), "https://auth.example.com".into());
        })
        .spawn()
        .await;
    let user = Uuid::now_v7();
    let mut claims = claims_for(user);
    me_with(&app, Some(&sign_hs256(&claims, JWT_SECRET)))
        .await
        .expect(401);
    claims["iss"] = "https://evil.example.com".into();
    me_with(&app, Some(&sign_hs256(&claims, JWT_SECRET)))
        .await
        .expect(401);
    claims["iss"] = "https://auth.example.com".into();
    me_with(&app, Some(&sign_hs256(&claims, JWT_SECRET)))
        .await
        .expect(200);
}

#[tokio::test]
async fn audience_check_can_be_disabled() {
    let app = TestApp::builder()
        .configure(|env| {
            env.insert("JWT_AUDIENCE".into(), String::new());
        })
        .spawn()
        .await;
    let mut claims = claims_for(Uuid::now_v7());
    claims.as_object_mut().unwrap().remove("aud");
    me_with(&app, Some(&sign_hs256(&claims, JWT_SECRET)))
        .await
        .expect(200);
}

fn sign_rs256(claims: &Value, kid: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_der(RS256_DER)).unwrap()
}

fn sign_es256(claims: &Value, kid: &str) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(ES256_DER)).unwrap()
}

/// A JWKS endpoint whose key set the test can change, counting how often it is fetched.
struct FakeJwks {
    url: String,
    keys: Arc<RwLock<Vec<Value>>>,
    hits: Arc<AtomicUsize>,
}

async fn fake_jwks(initial: Vec<Value>) -> FakeJwks {
    let keys = Arc::new(RwLock::new(initial));
    let hits = Arc::new(AtomicUsize::new(0));
    let (k, h) = (keys.clone(), hits.clone());
    let router = Router::new().route(
        "/.well-known/jwks.json",
        get(move || {
            let (k, h) = (k.clone(), h.clone());
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                axum::Json(json!({ "keys": *k.read().await }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    FakeJwks {
        url: format!("http://{addr}/.well-known/jwks.json"),
        keys,
        hits,
    }
}

fn fixture_key(name: &str) -> Value {
    let all: Value = serde_json::from_str(JWKS).unwrap();
    all[name].clone()
}

#[tokio::test]
async fn rs256_and_es256_tokens_verify_through_the_jwks() {
    let jwks = fake_jwks(vec![fixture_key("rsa"), fixture_key("ec")]).await;
    let url = jwks.url.clone();
    let app = TestApp::builder()
        .configure(|env| {
            env.insert("JWT_JWKS_URL".into(), url);
        })
        .spawn()
        .await;
    let user = Uuid::now_v7();
    me_with(&app, Some(&sign_rs256(&claims_for(user), "rsa-1")))
        .await
        .expect(200);
    me_with(&app, Some(&sign_es256(&claims_for(user), "ec-1")))
        .await
        .expect(200);
    me_with(&app, Some(&sign_rs256(&claims_for(user), "rsa-1")))
        .await
        .expect(200);
    // The set is cached: three tokens, one fetch.
    assert_eq!(jwks.hits.load(Ordering::SeqCst), 1);

    // A token whose header claims another algorithm than its key's is refused.
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("ec-1".into());
    let confused = jsonwebtoken::encode(
        &header,
        &claims_for(user),
        &EncodingKey::from_rsa_der(RS256_DER),
    )
    .unwrap();
    me_with(&app, Some(&confused)).await.expect(401);
}

#[tokio::test]
async fn unknown_kid_refetches_the_jwks_once() {
    // The identity provider starts with only the EC key, then rotates in the RSA key.
    let jwks = fake_jwks(vec![fixture_key("ec")]).await;
    let url = jwks.url.clone();
    let app = TestApp::builder()
        .configure(|env| {
            env.insert("JWT_JWKS_URL".into(), url);
            env.remove("JWT_SECRET");
        })
        .spawn()
        .await;
    let user = Uuid::now_v7();
    me_with(&app, Some(&sign_es256(&claims_for(user), "ec-1")))
        .await
        .expect(200);
    assert_eq!(jwks.hits.load(Ordering::SeqCst), 1);

    jwks.keys.write().await.push(fixture_key("rsa"));
    // Within the back-off window an unknown kid does not hammer the provider...
    me_with(&app, Some(&sign_rs256(&claims_for(user), "rsa-1")))
        .await
        .expect(401);
    assert_eq!(jwks.hits.load(Ordering::SeqCst), 1);
    // ...and HS256 is refused outright when no secret is configured.
    me_with(&app, Some(&app.token(user))).await.expect(401);
}

#[tokio::test]
async fn unknown_kid_is_found_after_rotation() {
    let jwks = fake_jwks(vec![fixture_key("ec")]).await;
    let url = jwks.url.clone();
    let app = TestApp::builder()
        .env("JWT_JWKS_URL", &url)
        .adjust_state(|state| {
            // No back-off, so the rotation is picked up at once.
            let verifier = JwtVerifier::with_min_refetch(&state.config, Duration::ZERO).unwrap();
            state.unshared_mut().expect("state not yet shared").jwt = Arc::new(verifier);
        })
        .spawn()
        .await;
    let user = Uuid::now_v7();
    me_with(&app, Some(&sign_es256(&claims_for(user), "ec-1")))
        .await
        .expect(200);
    assert_eq!(jwks.hits.load(Ordering::SeqCst), 1);

    jwks.keys.write().await.push(fixture_key("rsa"));
    me_with(&app, Some(&sign_rs256(&claims_for(user), "rsa-1")))
        .await
        .expect(200);
    assert_eq!(jwks.hits.load(Ordering::SeqCst), 2);
    // Known keys are served from the cache again.
    me_with(&app, Some(&sign_es256(&claims_for(user), "ec-1")))
        .await
        .expect(200);
    assert_eq!(jwks.hits.load(Ordering::SeqCst), 2);
}
