//! Kommo credentials, connections made from a pasted token, and OAuth (start, the
//! frontend-server callback and the browser callback) against a fake Kommo: every
//! refusal, the one-time hashed state, SSRF refusal of foreign hosts, and secrets that
//! are stored encrypted and never shown.
//!
//! Every response these tests receive goes through `clean`, which fails the test when a
//! body (or a redirect `Location`) carries the client secret, a Kommo token or an
//! authorization code; the OAuth state and webhook token are checked where they are not
//! part of the answer by design.

mod connections;
mod credentials;
mod oauth_callback;
mod oauth_start;

use std::collections::HashMap;
use std::time::Duration;

use agents_api::config::EncryptionKey;
use agents_api::crypto::{self, KeyRing};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretBox};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::support::app::{OrgUsers, Response, TestApp, into_response};
use crate::support::fake_kommo::FakeKommo;
use crate::support::kommo::{
    CLIENT_ID, CLIENT_SECRET, FRONTEND_URL, REDIRECT_URI, TEST_KEY, put_credentials,
};

const DOMAIN: &str = "acme.kommo.com";
const ACCOUNT_ID: i64 = 31_000_777;
const WEBHOOK_PREFIX: &str = "https://api.example.com/v1/kommo/webhooks/";

/// Markers of secrets that no response body of this file may contain: the integration's
/// client secret and the fake Kommo's access tokens, refresh tokens and codes.
const NEVER_SHOWN: [&str; 4] = [CLIENT_SECRET, "fk_at_", "fk_rt_", "fk_code_"];

// ---------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------

/// Fails when the body or `Location` of `r` shows a secret; returns `r`.
fn clean(r: Response, what: &str) -> Response {
    let location = r.header("location").unwrap_or("").to_owned();
    for secret in NEVER_SHOWN {
        assert!(
            !r.text.contains(secret),
            "{what}: the body shows a secret ({secret}…): {}",
            r.text
        );
        assert!(
            !location.contains(secret),
            "{what}: the Location shows a secret ({secret}…): {location}"
        );
    }
    r
}

/// Fails when the body of `r` contains any of `secrets`.
#[track_caller]
fn assert_hides(r: &Response, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !r.text.contains(secret),
            "the body shows a secret ({secret}): {}",
            r.text
        );
    }
}

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    user: Option<Uuid>,
    body: Option<Value>,
) -> Response {
    let token = user.map(|u| app.token(u));
    let what = format!("{method} {path}");
    clean(app.send(method, path, token.as_deref(), body).await, &what)
}

async fn get(app: &TestApp, path: &str, user: Uuid) -> Response {
    send(app, Method::GET, path, Some(user), None).await
}

async fn post(app: &TestApp, path: &str, user: Uuid, body: Value) -> Response {
    send(app, Method::POST, path, Some(user), Some(body)).await
}

async fn put(app: &TestApp, path: &str, user: Uuid, body: Value) -> Response {
    send(app, Method::PUT, path, Some(user), Some(body)).await
}

async fn delete(app: &TestApp, path: &str, user: Uuid) -> Response {
    send(app, Method::DELETE, path, Some(user), None).await
}

/// A user who belongs to an org of their own only.
async fn outsider(app: &TestApp) -> (Uuid, Uuid) {
    let user = Uuid::now_v7();
    let org = app.create_org(user).await;
    (user, org)
}

fn creds_path(org: Uuid, provider: &str) -> String {
    format!("/v1/orgs/{org}/crm/credentials/{provider}")
}

fn connections_path(org: Uuid) -> String {
    format!("/v1/orgs/{org}/crm/connections")
}

fn connection_path(org: Uuid, id: &str) -> String {
    format!("/v1/orgs/{org}/crm/connections/{id}")
}

fn start_path(org: Uuid) -> String {
    format!("/v1/orgs/{org}/kommo/oauth/start")
}

const CALLBACK: &str = "/v1/kommo/oauth/callback";

/// The ring the test app encrypts with (`ENCRYPTION_KEYS=test:TEST_KEY`).
fn ring() -> KeyRing {
    let bytes: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(TEST_KEY)
        .expect("TEST_KEY is base64")
        .try_into()
        .expect("TEST_KEY is 32 bytes");
    KeyRing::new(&[EncryptionKey {
        id: "test".into(),
        key: SecretBox::new(Box::new(bytes)),
    }])
    .expect("a key ring")
}

fn sha256(s: &str) -> Vec<u8> {
    Sha256::digest(s.as_bytes()).to_vec()
}

fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn is_base64url(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The secret path segment of a webhook URL of `connection_id`, after checking its shape.
#[track_caller]
fn webhook_token(webhook_url: &Value, connection_id: &str) -> String {
    let url = webhook_url.as_str().expect("webhook_url is a string");
    let prefix = format!("{WEBHOOK_PREFIX}{connection_id}/");
    let token = url
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("webhook_url {url} does not start with {prefix}"));
    assert_eq!(token.len(), 43, "256-bit base64url token: {url}");
    assert!(is_base64url(token), "{url}");
    token.to_owned()
}

/// An org (owner, admin, member) with the integration's credentials and a Kommo account
/// at `DOMAIN` in the fake.
async fn org_with_credentials(app: &TestApp, fake: &FakeKommo) -> OrgUsers {
    fake.add_account(DOMAIN, ACCOUNT_ID);
    let users = app.org_with_roles().await;
    let r = put_credentials(app, users.org, users.admin).await;
    assert!(!r.to_string().contains(CLIENT_SECRET));
    users
}

/// `POST …/oauth/start` as `user`; returns the state.
async fn start_oauth(app: &TestApp, org: Uuid, user: Uuid) -> String {
    let r = post(app, &start_path(org), user, json!({}))
        .await
        .expect(200);
    r.body["state"].as_str().expect("state").to_owned()
}

/// `POST /v1/kommo/oauth/callback` as `user` (None: without a token).
async fn callback(
    app: &TestApp,
    user: Option<Uuid>,
    code: &str,
    state: &str,
    referer: &str,
) -> Response {
    let r = send(
        app,
        Method::POST,
        CALLBACK,
        user,
        Some(json!({"code": code, "state": state, "referer": referer})),
    )
    .await;
    assert_hides(&r, &[state, code]);
    r
}

/// `GET /v1/kommo/oauth/callback?…` as a browser (no token, redirects not followed);
/// returns the response and the query of its `Location` (checked to be `FRONTEND_URL`).
async fn browser_callback(
    app: &TestApp,
    query: &[(&str, &str)],
) -> (Response, HashMap<String, String>) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let url = reqwest::Url::parse_with_params(&app.url(CALLBACK), query).expect("url");
    let r = into_response(client.get(url).send().await.expect("request")).await;
    let r = clean(r, "GET /v1/kommo/oauth/callback").expect(302);
    let location = r.header("location").expect("a Location").to_owned();
    for (key, value) in query {
        if matches!(*key, "state" | "code") {
            assert!(
                !location.contains(value),
                "the redirect repeats the {key}: {location}"
            );
        }
    }
    let target = url::Url::parse(&location).expect("Location is a URL");
    assert_eq!(
        format!(
            "{}://{}{}",
            target.scheme(),
            target.host_str().unwrap_or(""),
            target.path()
        ),
        FRONTEND_URL,
        "{location}"
    );
    let params: HashMap<String, String> = target.query_pairs().into_owned().collect();
    (r, params)
}

#[track_caller]
fn assert_redirect_error(params: &HashMap<String, String>, reason: &str) {
    let expected: HashMap<String, String> = [("status", "error"), ("reason", reason)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(params, &expected);
}

/// Token requests the fake received for `DOMAIN`: their form fields (RFC 6749, as the
/// `oauth2` crate sends them) as one JSON object each.
fn token_requests(fake: &FakeKommo, domain: &str) -> Vec<Value> {
    fake.requests_to(domain, "/oauth2/access_token")
        .iter()
        .map(|r| {
            let fields: serde_json::Map<String, Value> =
                url::form_urlencoded::parse(r.body.as_bytes())
                    .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
                    .collect();
            assert!(
                !fields.is_empty(),
                "a form-encoded token request: {}",
                r.body
            );
            Value::Object(fields)
        })
        .collect()
}

/// `(type, status, payload.connection_id)` of an org's jobs, oldest first.
async fn jobs_of(app: &TestApp, org: Uuid) -> Vec<(String, String, Option<String>)> {
    let mut db = app.admin_db().await;
    sqlx::query_as(
        "SELECT type, status, payload ->> 'connection_id' FROM jobs WHERE org_id = $1
         ORDER BY created_at, type",
    )
    .bind(org)
    .fetch_all(&mut db)
    .await
    .expect("jobs")
}

async fn oauth_state_count(app: &TestApp) -> i64 {
    let mut db = app.admin_db().await;
    sqlx::query_scalar("SELECT count(*) FROM oauth_states")
        .fetch_one(&mut db)
        .await
        .expect("count")
}

async fn connection_count(app: &TestApp, org: Uuid) -> i64 {
    let mut db = app.admin_db().await;
    sqlx::query_scalar("SELECT count(*) FROM crm_connections WHERE org_id = $1")
        .bind(org)
        .fetch_one(&mut db)
        .await
        .expect("count")
}

/// Makes every stored OAuth state expired.
async fn expire_states(app: &TestApp) {
    let mut db = app.admin_db().await;
    sqlx::query("UPDATE oauth_states SET expires_at = now() - interval '1 minute'")
        .execute(&mut db)
        .await
        .expect("expire the states");
}

#[track_caller]
fn assert_time_near(value: &Value, expected: DateTime<Utc>, slack: Duration) {
    let at: DateTime<Utc> = value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is not a time"))
        .parse()
        .unwrap_or_else(|e| panic!("{value}: {e}"));
    let diff = (at - expected).num_milliseconds().unsigned_abs();
    assert!(
        diff <= slack.as_millis() as u64,
        "{at} is not within {slack:?} of {expected}"
    );
}

fn keys_of(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value
        .as_object()
        .unwrap_or_else(|| panic!("{value} is not an object"))
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

// ---------------------------------------------------------------------------------------
// credentials
// ---------------------------------------------------------------------------------------
