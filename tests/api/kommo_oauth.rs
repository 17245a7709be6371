//! Kommo credentials, connections made from a pasted token, and OAuth (start, the
//! frontend-server callback and the browser callback) against a fake Kommo: every
//! refusal, the one-time hashed state, SSRF refusal of foreign hosts, and secrets that
//! are stored encrypted and never shown.
//!
//! Every response these tests receive goes through `clean`, which fails the test when a
//! body (or a redirect `Location`) carries the client secret, a Kommo token or an
//! authorization code; the OAuth state and webhook token are checked where they are not
//! part of the answer by design.

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

use crate::fake_kommo::FakeKommo;
use crate::helpers::{OrgUsers, Response, TestApp, into_response};
use crate::kommo_support::{
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

/// Token requests the fake received for `DOMAIN`, their JSON bodies parsed.
fn token_requests(fake: &FakeKommo, domain: &str) -> Vec<Value> {
    fake.requests_to(domain, "/oauth2/access_token")
        .iter()
        .map(|r| serde_json::from_str(&r.body).expect("a JSON token request"))
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

#[tokio::test]
async fn credentials_are_unconfigured_until_put() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = app.org_with_roles().await;
    let r = get(&app, &creds_path(users.org, "kommo"), users.member)
        .await
        .expect(200);
    assert_eq!(
        r.body,
        json!({"provider": "kommo", "client_id": null, "redirect_uri": null,
               "configured": false, "updated_at": null})
    );
}

#[tokio::test]
async fn put_credentials_answers_without_the_secret_and_upserts() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = app.org_with_roles().await;
    let path = creds_path(users.org, "kommo");
    let before = Utc::now();
    let r = put(
        &app,
        &path,
        users.admin,
        json!({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "redirect_uri": REDIRECT_URI}),
    )
    .await
    .expect(200);
    assert_eq!(
        keys_of(&r.body),
        [
            "client_id",
            "configured",
            "provider",
            "redirect_uri",
            "updated_at"
        ]
    );
    assert_eq!(r.body["provider"], "kommo");
    assert_eq!(r.body["client_id"], CLIENT_ID);
    assert_eq!(r.body["redirect_uri"], REDIRECT_URI);
    assert_eq!(r.body["configured"], true);
    assert_time_near(&r.body["updated_at"], before, Duration::from_secs(30));

    // Any member reads them, still without the secret.
    let shown = get(&app, &path, users.member).await.expect(200);
    assert_eq!(shown.body, r.body);

    // A second PUT replaces them (one row); redirect_uri is optional.
    let r = put(
        &app,
        &path,
        users.owner,
        json!({"client_id": "second-client", "client_secret": format!("{CLIENT_SECRET}-2")}),
    )
    .await
    .expect(200);
    assert_eq!(r.body["client_id"], "second-client");
    assert_eq!(r.body["redirect_uri"], Value::Null);
    assert_eq!(r.body["configured"], true);
    let mut db = app.admin_db().await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM crm_credentials WHERE org_id = $1")
        .bind(users.org)
        .fetch_one(&mut db)
        .await
        .expect("count");
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn credentials_refuse_members_outsiders_and_other_providers() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = app.org_with_roles().await;
    put_credentials(&app, users.org, users.admin).await;
    let path = creds_path(users.org, "kommo");
    let body = json!({"client_id": "hijack", "client_secret": "hijack-secret"});

    // A member reads but does not write.
    put(&app, &path, users.member, body.clone())
        .await
        .expect_problem(403, "forbidden");
    delete(&app, &path, users.member)
        .await
        .expect_problem(403, "forbidden");

    // Another org's user sees nothing at all.
    let (stranger, _) = outsider(&app).await;
    get(&app, &path, stranger)
        .await
        .expect_problem(404, "not_found");
    put(&app, &path, stranger, body.clone())
        .await
        .expect_problem(404, "not_found");
    delete(&app, &path, stranger)
        .await
        .expect_problem(404, "not_found");

    // Only kommo exists.
    let other = creds_path(users.org, "salesforce");
    get(&app, &other, users.admin)
        .await
        .expect_problem(404, "not_found");
    put(&app, &other, users.admin, body.clone())
        .await
        .expect_problem(404, "not_found");
    delete(&app, &other, users.admin)
        .await
        .expect_problem(404, "not_found");

    // Nothing changed.
    let r = get(&app, &path, users.member).await.expect(200);
    assert_eq!(r.body["client_id"], CLIENT_ID);
    assert_eq!(r.body["configured"], true);
}

#[tokio::test]
async fn invalid_credentials_are_422_and_not_stored() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = app.org_with_roles().await;
    let path = creds_path(users.org, "kommo");
    let valid = json!({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "redirect_uri": REDIRECT_URI});
    let mut cases: Vec<(Value, &str)> = Vec::new();
    for bad_uri in [
        json!("not a url"),
        json!("ftp://app.example.com/cb"),
        json!("javascript:alert(1)"),
        json!(""),
        json!(42),
        // 4 MB was accepted, then echoed by the status endpoint and copied into audit rows.
        json!(format!("https://app.example.com/{}", "a".repeat(2_100))),
    ] {
        let mut body = valid.clone();
        body["redirect_uri"] = bad_uri;
        cases.push((body, "redirect_uri"));
    }
    let mut body = valid.clone();
    body["client_secret"] = json!("");
    cases.push((body, "client_secret"));
    let mut body = valid.clone();
    body.as_object_mut()
        .expect("object")
        .remove("client_secret");
    cases.push((body, "client_secret"));
    let mut body = valid.clone();
    body["client_id"] = json!("");
    cases.push((body, "client_id"));
    for unknown in ["org_id", "id", "client_secret_enc", "provider"] {
        let mut body = valid.clone();
        body[unknown] = json!("x");
        cases.push((body, unknown));
    }
    for (body, field) in cases {
        let r = put(&app, &path, users.admin, body.clone())
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(r.error_fields(), vec![field], "{body}: {}", r.text);
    }
    let r = get(&app, &path, users.admin).await.expect(200);
    assert_eq!(r.body["configured"], false);
}

#[tokio::test]
async fn delete_credentials_is_204_then_404() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = app.org_with_roles().await;
    put_credentials(&app, users.org, users.admin).await;
    let path = creds_path(users.org, "kommo");
    let r = delete(&app, &path, users.admin).await.expect(204);
    assert_eq!(r.text, "");
    let r = get(&app, &path, users.admin).await.expect(200);
    assert_eq!(r.body["configured"], false);
    assert_eq!(r.body["client_id"], Value::Null);
    delete(&app, &path, users.admin)
        .await
        .expect_problem(404, "not_found");
    // Without credentials, OAuth cannot start.
    post(&app, &start_path(users.org), users.admin, json!({}))
        .await
        .expect_problem(409, "conflict");
}

#[tokio::test]
async fn client_secret_is_encrypted_for_its_row() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = app.org_with_roles().await;
    put_credentials(&app, users.org, users.admin).await;
    let (stranger, other_org) = outsider(&app).await;
    put(
        &app,
        &creds_path(other_org, "kommo"),
        stranger,
        json!({"client_id": "other-client", "client_secret": "the-other-orgs-secret"}),
    )
    .await
    .expect(200);

    let mut db = app.admin_db().await;
    let (id, blob, row_text): (Uuid, Vec<u8>, String) = sqlx::query_as(
        "SELECT id, client_secret_enc, row_to_json(c)::text FROM crm_credentials c
         WHERE org_id = $1",
    )
    .bind(users.org)
    .fetch_one(&mut db)
    .await
    .expect("the credentials row");
    assert!(!contains_bytes(&blob, CLIENT_SECRET.as_bytes()));
    assert!(!row_text.contains(CLIENT_SECRET), "{row_text}");
    assert!(
        !row_text.contains(&hex::encode(CLIENT_SECRET)),
        "{row_text}"
    );

    let keys = ring();
    let secret = keys
        .decrypt(&blob, id, crypto::CLIENT_SECRET)
        .expect("decrypts for its own row");
    assert_eq!(secret.expose_secret(), CLIENT_SECRET);
    assert!(keys.decrypt(&blob, id, crypto::ACCESS_TOKEN).is_err());

    // Copied into the other org's row, the ciphertext no longer opens.
    let other_id: Uuid = sqlx::query_scalar("SELECT id FROM crm_credentials WHERE org_id = $1")
        .bind(other_org)
        .fetch_one(&mut db)
        .await
        .expect("the other row");
    sqlx::query("UPDATE crm_credentials SET client_secret_enc = $1 WHERE id = $2")
        .bind(&blob)
        .bind(other_id)
        .execute(&mut db)
        .await
        .expect("copy the ciphertext");
    let copied: Vec<u8> =
        sqlx::query_scalar("SELECT client_secret_enc FROM crm_credentials WHERE id = $1")
            .bind(other_id)
            .fetch_one(&mut db)
            .await
            .expect("the copied blob");
    assert_eq!(copied, blob);
    assert!(matches!(
        keys.decrypt(&copied, other_id, crypto::CLIENT_SECRET),
        Err(crypto::CryptoError::Undecryptable(_))
    ));
}

// ---------------------------------------------------------------------------------------
// connections from a pasted token
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn pasted_token_connection_is_checked_stored_encrypted_and_queues_a_sync() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = org_with_credentials(&app, &fake).await;
    let (access, refresh) = fake.issue_tokens(DOMAIN);
    let before = Utc::now();
    let r = post(
        &app,
        &connections_path(users.org),
        users.admin,
        json!({"base_domain": DOMAIN, "access_token": access, "refresh_token": refresh,
               "expires_in": 86400}),
    )
    .await
    .expect(201);
    let id = r.body["id"].as_str().expect("id").to_owned();
    assert_eq!(r.body["org_id"], users.org.to_string());
    assert_eq!(r.body["provider"], "kommo");
    assert_eq!(r.body["base_domain"], DOMAIN);
    assert_eq!(r.body["account_id"], ACCOUNT_ID);
    assert_eq!(r.body["status"], "connected");
    assert_eq!(r.body["last_error"], Value::Null);
    assert_time_near(
        &r.body["token_expires_at"],
        before + chrono::Duration::seconds(86400),
        Duration::from_secs(30),
    );
    assert_eq!(r.body["sync"]["pipelines"]["status"], "queued");
    for field in ["access_token", "refresh_token", "client_secret"] {
        assert!(r.body.get(field).is_none(), "{}", r.text);
    }
    let hook = webhook_token(&r.body["webhook_url"], &id);
    let jobs = r.body["jobs"].as_array().expect("jobs");
    assert_eq!(jobs.len(), 1, "{}", r.text);
    assert_eq!(jobs[0]["type"], "crm:sync-pipelines");
    assert_eq!(jobs[0]["status"], "queued");
    assert_eq!(jobs[0]["payload"]["connection_id"], id.as_str());
    assert_eq!(
        jobs_of(&app, users.org).await,
        vec![(
            "crm:sync-pipelines".to_owned(),
            "queued".to_owned(),
            Some(id.clone())
        )]
    );

    // Kommo checked the token (and only that happened).
    let calls = fake.requests();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].base_domain, DOMAIN);
    assert_eq!(
        (calls[0].method.as_str(), calls[0].path.as_str()),
        ("GET", "/api/v4/account")
    );
    assert_eq!(
        calls[0].authorization.as_deref(),
        Some(format!("Bearer {access}").as_str())
    );

    // Reads never show the webhook URL or a token.
    let shown = get(&app, &connection_path(users.org, &id), users.member)
        .await
        .expect(200);
    assert_eq!(shown.body["id"], id.as_str());
    assert_eq!(shown.body["status"], "connected");
    assert_eq!(shown.body["account_id"], ACCOUNT_ID);
    assert!(shown.body.get("webhook_url").is_none(), "{}", shown.text);
    assert!(shown.body.get("jobs").is_none(), "{}", shown.text);
    assert_hides(&shown, &[&hook, &access, &refresh]);
    let list = get(&app, &connections_path(users.org), users.member)
        .await
        .expect(200);
    let data = list.body["data"].as_array().expect("data");
    assert_eq!(data.len(), 1, "{}", list.text);
    assert_eq!(data[0]["id"], id.as_str());
    assert!(data[0].get("webhook_url").is_none(), "{}", list.text);
    assert_eq!(list.body["next_cursor"], Value::Null);
    assert_hides(&list, &[&hook, &access, &refresh]);
    let list = get(
        &app,
        &format!("{}?provider=kommo", connections_path(users.org)),
        users.member,
    )
    .await
    .expect(200);
    assert_eq!(list.body["data"][0]["id"], id.as_str());

    // At rest: ciphertexts for this row, the webhook token only as its SHA-256.
    let mut db = app.admin_db().await;
    let (access_enc, refresh_enc, hook_hash, row_text): (Vec<u8>, Vec<u8>, Vec<u8>, String) =
        sqlx::query_as(
            "SELECT access_token_enc, refresh_token_enc, webhook_token_hash, row_to_json(c)::text
             FROM crm_connections c WHERE id = $1::uuid",
        )
        .bind(&id)
        .fetch_one(&mut db)
        .await
        .expect("the connection row");
    for secret in [&access, &refresh, &hook] {
        assert!(!contains_bytes(&access_enc, secret.as_bytes()));
        assert!(!contains_bytes(&refresh_enc, secret.as_bytes()));
        assert!(!row_text.contains(secret.as_str()), "{row_text}");
        assert!(!row_text.contains(&hex::encode(secret)), "{row_text}");
    }
    assert_eq!(hook_hash, sha256(&hook));
    let row_id: Uuid = id.parse().expect("uuid");
    let keys = ring();
    let opened = keys
        .decrypt(&access_enc, row_id, crypto::ACCESS_TOKEN)
        .expect("access token decrypts");
    assert_eq!(opened.expose_secret(), access);
    let opened = keys
        .decrypt(&refresh_enc, row_id, crypto::REFRESH_TOKEN)
        .expect("refresh token decrypts");
    assert_eq!(opened.expose_secret(), refresh);
    assert!(
        keys.decrypt(&access_enc, row_id, crypto::REFRESH_TOKEN)
            .is_err()
    );

    // Deleted: gone.
    let r = delete(&app, &connection_path(users.org, &id), users.admin)
        .await
        .expect(204);
    assert_eq!(r.text, "");
    get(&app, &connection_path(users.org, &id), users.admin)
        .await
        .expect_problem(404, "not_found");
    delete(&app, &connection_path(users.org, &id), users.admin)
        .await
        .expect_problem(404, "not_found");
    let list = get(&app, &connections_path(users.org), users.admin)
        .await
        .expect(200);
    assert_eq!(list.body["data"], json!([]));
}

#[tokio::test]
async fn long_lived_token_connection_has_no_refresh_token_or_expiry() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = org_with_credentials(&app, &fake).await;
    let (access, _) = fake.issue_tokens(DOMAIN);
    let r = post(
        &app,
        &connections_path(users.org),
        users.owner,
        json!({"provider": "kommo", "base_domain": DOMAIN, "access_token": access}),
    )
    .await
    .expect(201);
    assert_eq!(r.body["status"], "connected");
    assert_eq!(r.body["account_id"], ACCOUNT_ID);
    assert_eq!(r.body["token_expires_at"], Value::Null);
    assert_eq!(r.body["has_refresh_token"], false);
    let id = r.body["id"].as_str().expect("id");
    webhook_token(&r.body["webhook_url"], id);
}

#[tokio::test]
async fn a_token_kommo_refuses_is_422_and_nothing_is_stored() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = org_with_credentials(&app, &fake).await;
    fake.issue_tokens(DOMAIN);
    let refused = "fk_at_this-token-was-never-issued";
    let r = post(
        &app,
        &connections_path(users.org),
        users.admin,
        json!({"base_domain": DOMAIN, "access_token": refused}),
    )
    .await
    .expect_problem(422, "validation_failed");
    assert_eq!(r.error_fields(), vec!["access_token"], "{}", r.text);
    // Kommo was asked (and said 401).
    assert_eq!(fake.requests_to(DOMAIN, "/api/v4/account").len(), 1);
    assert_eq!(connection_count(&app, users.org).await, 0);
    assert_eq!(jobs_of(&app, users.org).await, vec![]);
    let list = get(&app, &connections_path(users.org), users.admin)
        .await
        .expect(200);
    assert_eq!(list.body["data"], json!([]));
}

#[tokio::test]
async fn foreign_base_domains_are_refused_without_calling_anyone() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = org_with_credentials(&app, &fake).await;
    let (access, refresh) = fake.issue_tokens(DOMAIN);
    for domain in [
        "evil.com",
        "acme.kommo.com.evil.com",
        "127.0.0.1:9999",
        "a.b.kommo.com",
        "kommo.com",
        "localhost",
        "ACME.kommo.com",
        "acme.kommo.com:443",
        "acme.kommo.com/api",
        "http://acme.kommo.com",
        "acme.kommo.com@evil.com",
        "-acme.kommo.com",
        "",
    ] {
        let r = post(
            &app,
            &connections_path(users.org),
            users.admin,
            json!({"base_domain": domain, "access_token": access, "refresh_token": refresh}),
        )
        .await
        .expect_problem(422, "validation_failed");
        assert_eq!(
            r.error_fields(),
            vec!["base_domain"],
            "{domain}: {}",
            r.text
        );
        assert_hides(&r, &[&access, &refresh]);
    }
    // ~9.2e15 seconds overflowed the expiry time: a panic, answered 500.
    for expires_in in [json!(9_300_000_000_000_000i64), json!(i64::MAX), json!(0)] {
        let r = post(
            &app,
            &connections_path(users.org),
            users.admin,
            json!({"base_domain": DOMAIN, "access_token": access, "expires_in": expires_in}),
        )
        .await
        .expect_problem(422, "validation_failed");
        assert_eq!(r.error_fields(), vec!["expires_in"], "{}", r.text);
    }
    assert!(
        fake.requests().is_empty(),
        "the service called out: {:?}",
        fake.requests()
    );
    assert_eq!(connection_count(&app, users.org).await, 0);
}

#[tokio::test]
async fn connections_refuse_members_and_other_orgs() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = org_with_credentials(&app, &fake).await;
    let (access, refresh) = fake.issue_tokens(DOMAIN);
    let body = json!({"base_domain": DOMAIN, "access_token": access, "refresh_token": refresh});

    post(
        &app,
        &connections_path(users.org),
        users.member,
        body.clone(),
    )
    .await
    .expect_problem(403, "forbidden");
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());
    let (stranger, stranger_org) = outsider(&app).await;
    post(&app, &connections_path(users.org), stranger, body.clone())
        .await
        .expect_problem(404, "not_found");
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());

    let r = post(&app, &connections_path(users.org), users.admin, body)
        .await
        .expect(201);
    let id = r.body["id"].as_str().expect("id").to_owned();

    // Another org's user, through this org or through their own.
    for path in [
        connection_path(users.org, &id),
        connection_path(stranger_org, &id),
    ] {
        get(&app, &path, stranger)
            .await
            .expect_problem(404, "not_found");
        delete(&app, &path, stranger)
            .await
            .expect_problem(404, "not_found");
    }
    get(&app, &connections_path(users.org), stranger)
        .await
        .expect_problem(404, "not_found");
    let theirs = get(&app, &connections_path(stranger_org), stranger)
        .await
        .expect(200);
    assert_eq!(theirs.body["data"], json!([]));
    get(
        &app,
        &format!("/v1/orgs/{}/crm/status?provider=kommo", users.org),
        stranger,
    )
    .await
    .expect_problem(404, "not_found");

    // A member reads but cannot delete.
    get(&app, &connection_path(users.org, &id), users.member)
        .await
        .expect(200);
    delete(&app, &connection_path(users.org, &id), users.member)
        .await
        .expect_problem(403, "forbidden");
    let r = get(&app, &connection_path(users.org, &id), users.admin)
        .await
        .expect(200);
    assert_eq!(r.body["status"], "connected");
}

#[tokio::test]
async fn crm_status_reflects_credentials_and_connection() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    fake.add_account(DOMAIN, ACCOUNT_ID);
    let users = app.org_with_roles().await;
    let status = format!("/v1/orgs/{}/crm/status?provider=kommo", users.org);

    let r = get(&app, &status, users.member).await.expect(200);
    assert_eq!(
        r.body,
        json!({
            "provider": "kommo", "credentials_configured": false, "connection_configured": false,
            "connection": null,
            "credentials": {"provider": "kommo", "client_id": null, "redirect_uri": null,
                            "configured": false, "updated_at": null},
            "sync": {},
        })
    );

    put_credentials(&app, users.org, users.admin).await;
    let r = get(&app, &status, users.member).await.expect(200);
    assert_eq!(r.body["credentials_configured"], true);
    assert_eq!(r.body["connection_configured"], false);
    assert_eq!(r.body["connection"], Value::Null);
    assert_eq!(r.body["credentials"]["client_id"], CLIENT_ID);
    assert_eq!(r.body["credentials"]["redirect_uri"], REDIRECT_URI);
    assert_eq!(r.body["credentials"]["configured"], true);

    let (access, refresh) = fake.issue_tokens(DOMAIN);
    let created = post(
        &app,
        &connections_path(users.org),
        users.admin,
        json!({"base_domain": DOMAIN, "access_token": access, "refresh_token": refresh,
               "expires_in": 86400}),
    )
    .await
    .expect(201);
    let hook = webhook_token(
        &created.body["webhook_url"],
        created.body["id"].as_str().expect("id"),
    );
    let r = get(&app, &status, users.member).await.expect(200);
    assert_eq!(r.body["provider"], "kommo");
    assert_eq!(r.body["credentials_configured"], true);
    assert_eq!(r.body["connection_configured"], true);
    assert_eq!(r.body["connection"]["id"], created.body["id"]);
    assert_eq!(r.body["connection"]["status"], "connected");
    assert_eq!(r.body["connection"]["account_id"], ACCOUNT_ID);
    assert!(r.body["connection"].get("webhook_url").is_none());
    assert_eq!(r.body["sync"]["pipelines"]["status"], "queued");
    assert_hides(&r, &[&hook, &access, &refresh]);

    // Without `provider` it is kommo; other providers do not exist.
    let r = get(
        &app,
        &format!("/v1/orgs/{}/crm/status", users.org),
        users.member,
    )
    .await
    .expect(200);
    assert_eq!(r.body["connection_configured"], true);
    get(
        &app,
        &format!("/v1/orgs/{}/crm/status?provider=salesforce", users.org),
        users.member,
    )
    .await
    .expect_problem(404, "not_found");

    // Deleted connection and credentials: back to nothing.
    delete(
        &app,
        &connection_path(users.org, created.body["id"].as_str().expect("id")),
        users.admin,
    )
    .await
    .expect(204);
    delete(&app, &creds_path(users.org, "kommo"), users.admin)
        .await
        .expect(204);
    let r = get(&app, &status, users.member).await.expect(200);
    assert_eq!(r.body["credentials_configured"], false);
    assert_eq!(r.body["connection_configured"], false);
    assert_eq!(r.body["connection"], Value::Null);
}

// ---------------------------------------------------------------------------------------
// OAuth start
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn oauth_start_needs_credentials() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = app.org_with_roles().await;
    post(&app, &start_path(users.org), users.admin, json!({}))
        .await
        .expect_problem(409, "conflict");
    assert_eq!(oauth_state_count(&app).await, 0);
}

#[tokio::test]
async fn oauth_start_returns_kommos_authorize_url_and_stores_only_a_hash() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = org_with_credentials(&app, &fake).await;
    let before = Utc::now();
    let r = post(&app, &start_path(users.org), users.admin, json!({}))
        .await
        .expect(200);
    assert_eq!(keys_of(&r.body), ["auth_url", "expires_at", "state"]);
    let state = r.body["state"].as_str().expect("state").to_owned();
    assert_eq!(state.len(), 43, "{state}");
    assert!(is_base64url(&state), "{state}");
    assert_eq!(
        r.body["auth_url"],
        format!(
            "https://www.kommo.com/oauth?client_id={CLIENT_ID}&state={state}&mode=post_message"
        )
    );
    assert_time_near(
        &r.body["expires_at"],
        before + chrono::Duration::minutes(15),
        Duration::from_secs(30),
    );

    // A new state each time.
    let second = start_oauth(&app, users.org, users.owner).await;
    assert_ne!(second, state);

    // Stored: the SHA-256 of the state, bound to user, org and redirect URI; no plaintext.
    let mut db = app.admin_db().await;
    let rows: Vec<(Uuid, Uuid, Vec<u8>, String, String)> = sqlx::query_as(
        "SELECT org_id, user_id, state_hash, redirect_uri, row_to_json(s)::text
         FROM oauth_states s ORDER BY created_at",
    )
    .fetch_all(&mut db)
    .await
    .expect("states");
    assert_eq!(rows.len(), 2);
    let (org_id, user_id, hash, redirect_uri, text) = &rows[0];
    assert_eq!(*org_id, users.org);
    assert_eq!(*user_id, users.admin);
    assert_eq!(*hash, sha256(&state));
    assert_eq!(redirect_uri, REDIRECT_URI);
    for (.., hash, _, text) in &rows {
        for s in [&state, &second] {
            assert!(!text.contains(s.as_str()), "{text}");
            assert!(!contains_bytes(hash, s.as_bytes()));
            assert!(!text.contains(&hex::encode(s)), "{text}");
        }
    }
    assert!(text.contains(&users.org.to_string()), "{text}");
    assert_eq!(rows[1].2, sha256(&second));
    assert_eq!(rows[1].1, users.owner);
}

#[tokio::test]
async fn oauth_start_refuses_members_outsiders_and_bad_redirects() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = org_with_credentials(&app, &fake).await;
    post(&app, &start_path(users.org), users.member, json!({}))
        .await
        .expect_problem(403, "forbidden");
    let (stranger, _) = outsider(&app).await;
    post(&app, &start_path(users.org), stranger, json!({}))
        .await
        .expect_problem(404, "not_found");
    for body in [
        json!({"redirect_uri": "not a url"}),
        json!({"redirect_uri": "ftp://app.example.com/cb"}),
    ] {
        let r = post(&app, &start_path(users.org), users.admin, body)
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(r.error_fields(), vec!["redirect_uri"], "{}", r.text);
    }
    let r = post(
        &app,
        &start_path(users.org),
        users.admin,
        json!({"org_id": users.org}),
    )
    .await
    .expect_problem(422, "validation_failed");
    assert_eq!(r.error_fields(), vec!["org_id"], "{}", r.text);
    send(
        &app,
        Method::POST,
        &start_path(users.org),
        None,
        Some(json!({})),
    )
    .await
    .expect_problem(401, "unauthorized");
    assert_eq!(oauth_state_count(&app).await, 0);
}

// ---------------------------------------------------------------------------------------
// POST /v1/kommo/oauth/callback
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn oauth_callback_connects_the_account_and_queues_both_syncs() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = org_with_credentials(&app, &fake).await;
    let state = start_oauth(&app, users.org, users.admin).await;
    let code = fake.issue_code(DOMAIN);
    let before = Utc::now();
    let r = callback(&app, Some(users.admin), &code, &state, DOMAIN)
        .await
        .expect(200);
    assert_eq!(keys_of(&r.body), ["connection", "webhook_url"]);
    let connection = &r.body["connection"];
    let id = connection["id"].as_str().expect("id").to_owned();
    assert_eq!(connection["org_id"], users.org.to_string());
    assert_eq!(connection["provider"], "kommo");
    assert_eq!(connection["base_domain"], DOMAIN);
    assert_eq!(connection["account_id"], ACCOUNT_ID);
    assert_eq!(connection["status"], "connected");
    assert_eq!(connection["has_refresh_token"], true);
    assert_eq!(connection["last_error"], Value::Null);
    assert_time_near(
        &connection["token_expires_at"],
        before + chrono::Duration::seconds(86400),
        Duration::from_secs(30),
    );
    assert_eq!(connection["sync"]["pipelines"]["status"], "queued");
    assert_eq!(connection["sync"]["contacts"]["status"], "queued");
    for field in ["access_token", "refresh_token"] {
        assert!(connection.get(field).is_none(), "{}", r.text);
    }
    let hook = webhook_token(&r.body["webhook_url"], &id);

    // The code was exchanged as Kommo expects, then the account was read with the token.
    let exchanges = token_requests(&fake, DOMAIN);
    assert_eq!(exchanges.len(), 1, "{exchanges:?}");
    assert_eq!(
        exchanges[0],
        json!({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
               "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI})
    );
    let (access, refresh) = fake.current_tokens(DOMAIN);
    let account = fake.requests_to(DOMAIN, "/api/v4/account");
    assert_eq!(account.len(), 1);
    assert_eq!(
        account[0].authorization.as_deref(),
        Some(format!("Bearer {access}").as_str())
    );
    assert_hides(&r, &[&access, &refresh]);

    // Both syncs queued for the new connection.
    let mut jobs = jobs_of(&app, users.org).await;
    jobs.sort();
    assert_eq!(
        jobs,
        vec![
            (
                "crm:sync-contacts".to_owned(),
                "queued".to_owned(),
                Some(id.clone())
            ),
            (
                "crm:sync-pipelines".to_owned(),
                "queued".to_owned(),
                Some(id.clone())
            ),
        ]
    );

    // The tokens are stored encrypted for the row; the state is gone.
    let mut db = app.admin_db().await;
    let (access_enc, refresh_enc, hook_hash, row_text): (Vec<u8>, Vec<u8>, Vec<u8>, String) =
        sqlx::query_as(
            "SELECT access_token_enc, refresh_token_enc, webhook_token_hash, row_to_json(c)::text
             FROM crm_connections c WHERE id = $1::uuid",
        )
        .bind(&id)
        .fetch_one(&mut db)
        .await
        .expect("the connection row");
    for secret in [&access, &refresh, &hook, &code] {
        assert!(!contains_bytes(&access_enc, secret.as_bytes()));
        assert!(!contains_bytes(&refresh_enc, secret.as_bytes()));
        assert!(!row_text.contains(secret.as_str()), "{row_text}");
    }
    assert_eq!(hook_hash, sha256(&hook));
    let row_id: Uuid = id.parse().expect("uuid");
    let keys = ring();
    assert_eq!(
        keys.decrypt(&access_enc, row_id, crypto::ACCESS_TOKEN)
            .expect("decrypts")
            .expose_secret(),
        access
    );
    assert_eq!(
        keys.decrypt(&refresh_enc, row_id, crypto::REFRESH_TOKEN)
            .expect("decrypts")
            .expose_secret(),
        refresh
    );
    assert_eq!(oauth_state_count(&app).await, 0);

    // The connection reads like any other, without the webhook URL.
    let shown = get(&app, &connection_path(users.org, &id), users.member)
        .await
        .expect(200);
    assert_eq!(shown.body["status"], "connected");
    assert!(shown.body.get("webhook_url").is_none());
    assert_hides(&shown, &[&hook, &state]);

    // Replaying the state (even with a fresh, valid code) is refused, never a 500.
    let another_code = fake.issue_code(DOMAIN);
    callback(&app, Some(users.admin), &another_code, &state, DOMAIN)
        .await
        .expect_problem(400, "bad_request");
    assert_eq!(token_requests(&fake, DOMAIN).len(), 1);
    assert_eq!(connection_count(&app, users.org).await, 1);
}

#[tokio::test]
async fn a_state_is_consumed_once_under_concurrent_callbacks() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = org_with_credentials(&app, &fake).await;
    let state = start_oauth(&app, users.org, users.admin).await;
    let token = app.token(users.admin);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let request = app
            .client
            .post(app.url(CALLBACK))
            .bearer_auth(&token)
            .json(&json!({"code": fake.issue_code(DOMAIN), "state": state, "referer": DOMAIN}));
        tasks.spawn(async move { into_response(request.send().await.expect("request")).await });
    }
    let mut statuses = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let r = clean(r.expect("task"), "POST /v1/kommo/oauth/callback");
        if r.status.as_u16() != 200 {
            let r = r.expect_problem(400, "bad_request");
            statuses.push(r.status.as_u16());
        } else {
            statuses.push(200);
        }
    }
    statuses.sort();
    assert_eq!(statuses, [200, 400, 400, 400, 400, 400, 400, 400]);
    assert_eq!(token_requests(&fake, DOMAIN).len(), 1);
    assert_eq!(connection_count(&app, users.org).await, 1);
}

#[tokio::test]
async fn another_users_callback_is_refused_and_leaves_the_state_usable() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = org_with_credentials(&app, &fake).await;
    let state = start_oauth(&app, users.org, users.admin).await;
    let code = fake.issue_code(DOMAIN);
    let (stranger, _) = outsider(&app).await;
    // Neither another admin of the same org, nor its owner, nor a stranger.
    for other in [users.owner, users.member, stranger] {
        callback(&app, Some(other), &code, &state, DOMAIN)
            .await
            .expect_problem(400, "bad_request");
    }
    assert!(token_requests(&fake, DOMAIN).is_empty());
    assert_eq!(oauth_state_count(&app).await, 1);
    assert_eq!(connection_count(&app, users.org).await, 0);

    let r = callback(&app, Some(users.admin), &code, &state, DOMAIN)
        .await
        .expect(200);
    assert_eq!(r.body["connection"]["status"], "connected");
    assert_eq!(r.body["connection"]["account_id"], ACCOUNT_ID);
}

#[tokio::test]
async fn unknown_and_expired_states_are_400() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = org_with_credentials(&app, &fake).await;
    let code = fake.issue_code(DOMAIN);

    // Unknown: never issued, or its hash presented instead.
    let state = start_oauth(&app, users.org, users.admin).await;
    let unknown = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([9u8; 32]);
    let hashed = hex::encode(sha256(&state));
    for bogus in [unknown.as_str(), hashed.as_str(), "not-a-state"] {
        callback(&app, Some(users.admin), &code, bogus, DOMAIN)
            .await
            .expect_problem(400, "bad_request");
    }
    assert!(token_requests(&fake, DOMAIN).is_empty());

    // Expired.
    expire_states(&app).await;
    callback(&app, Some(users.admin), &code, &state, DOMAIN)
        .await
        .expect_problem(400, "bad_request");
    assert!(token_requests(&fake, DOMAIN).is_empty());
    assert_eq!(connection_count(&app, users.org).await, 0);

    // A malformed body is not a state problem: 422 naming the field.
    let r = send(
        &app,
        Method::POST,
        CALLBACK,
        Some(users.admin),
        Some(json!({"code": code, "referer": DOMAIN})),
    )
    .await
    .expect_problem(422, "validation_failed");
    assert_eq!(r.error_fields(), vec!["state"], "{}", r.text);
}

#[tokio::test]
async fn a_foreign_referer_is_422_and_reaches_no_host() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = org_with_credentials(&app, &fake).await;
    for referer in [
        "evil.com",
        "acme.kommo.com.evil.com",
        "127.0.0.1:9999",
        "a.b.kommo.com",
    ] {
        let state = start_oauth(&app, users.org, users.admin).await;
        let code = fake.issue_code(DOMAIN);
        let r = callback(&app, Some(users.admin), &code, &state, referer)
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(r.error_fields(), vec!["referer"], "{referer}: {}", r.text);
    }
    assert!(
        fake.requests().is_empty(),
        "the service called out: {:?}",
        fake.requests()
    );
    assert_eq!(connection_count(&app, users.org).await, 0);
}

#[tokio::test]
async fn a_code_kommo_refuses_is_400() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = org_with_credentials(&app, &fake).await;
    let state = start_oauth(&app, users.org, users.admin).await;
    callback(
        &app,
        Some(users.admin),
        "fk_code_never-issued",
        &state,
        DOMAIN,
    )
    .await
    .expect_problem(400, "bad_request");
    // Kommo was asked and refused; nothing was stored or queued.
    assert_eq!(token_requests(&fake, DOMAIN).len(), 1);
    assert!(fake.requests_to(DOMAIN, "/api/").is_empty());
    assert_eq!(connection_count(&app, users.org).await, 0);
    assert_eq!(jobs_of(&app, users.org).await, vec![]);

    // A code issued for another account is refused the same way.
    fake.add_account("other.kommo.com", 31_000_888);
    let state = start_oauth(&app, users.org, users.admin).await;
    let code = fake.issue_code("other.kommo.com");
    callback(&app, Some(users.admin), &code, &state, DOMAIN)
        .await
        .expect_problem(400, "bad_request");
    assert_eq!(connection_count(&app, users.org).await, 0);
}

#[tokio::test]
async fn the_callback_needs_a_token() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = org_with_credentials(&app, &fake).await;
    let state = start_oauth(&app, users.org, users.admin).await;
    let code = fake.issue_code(DOMAIN);
    let r = callback(&app, None, &code, &state, DOMAIN)
        .await
        .expect_problem(401, "unauthorized");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert!(fake.requests().is_empty());
    // The state was not touched.
    assert_eq!(oauth_state_count(&app).await, 1);
    callback(&app, Some(users.admin), &code, &state, DOMAIN)
        .await
        .expect(200);
}

/// A user who is no longer an admin of the org cannot complete a flow they started
/// while they were: the state is bound to the user *and* the org, and connecting an
/// account is a write.
#[tokio::test]
async fn a_user_removed_from_the_org_cannot_complete_the_flow() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = org_with_credentials(&app, &fake).await;
    let state = start_oauth(&app, users.org, users.admin).await;
    delete(
        &app,
        &format!("/v1/orgs/{}/members/{}", users.org, users.admin),
        users.owner,
    )
    .await
    .expect(204);
    let code = fake.issue_code(DOMAIN);
    let r = callback(&app, Some(users.admin), &code, &state, DOMAIN).await;
    assert!(
        matches!(r.status.as_u16(), 400 | 403 | 404),
        "a former admin completed OAuth for the org: {} {}",
        r.status,
        r.text
    );
    assert!(token_requests(&fake, DOMAIN).is_empty());
    assert_eq!(connection_count(&app, users.org).await, 0);
}

/// The same, through the browser callback, for an admin demoted to member: the state
/// must not let them connect an account.
#[tokio::test]
async fn a_user_demoted_to_member_cannot_complete_the_flow_in_the_browser() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = org_with_credentials(&app, &fake).await;
    let state = start_oauth(&app, users.org, users.admin).await;
    put(
        &app,
        &format!("/v1/orgs/{}/members/{}", users.org, users.admin),
        users.owner,
        json!({"role": "member"}),
    )
    .await
    .expect(200);
    let code = fake.issue_code(DOMAIN);
    let (_, params) = browser_callback(
        &app,
        &[("code", &code), ("state", &state), ("referer", DOMAIN)],
    )
    .await;
    assert_eq!(
        params.get("status").map(String::as_str),
        Some("error"),
        "a demoted admin connected an account: {params:?}"
    );
    assert!(token_requests(&fake, DOMAIN).is_empty());
    assert_eq!(connection_count(&app, users.org).await, 0);
}

#[tokio::test]
async fn oauth_reconnects_the_same_account_in_place() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = org_with_credentials(&app, &fake).await;
    let (access, refresh) = fake.issue_tokens(DOMAIN);
    let pasted = post(
        &app,
        &connections_path(users.org),
        users.admin,
        json!({"base_domain": DOMAIN, "access_token": access, "refresh_token": refresh}),
    )
    .await
    .expect(201);
    let state = start_oauth(&app, users.org, users.admin).await;
    let code = fake.issue_code(DOMAIN);
    let r = callback(&app, Some(users.admin), &code, &state, DOMAIN)
        .await
        .expect(200);
    // Upserted by (provider, base_domain): the same connection, with the new tokens.
    assert_eq!(r.body["connection"]["id"], pasted.body["id"]);
    assert_eq!(r.body["connection"]["status"], "connected");
    assert_eq!(connection_count(&app, users.org).await, 1);
    let (new_access, _) = fake.current_tokens(DOMAIN);
    assert_ne!(new_access, access);
    let mut db = app.admin_db().await;
    let (id, access_enc): (Uuid, Vec<u8>) =
        sqlx::query_as("SELECT id, access_token_enc FROM crm_connections WHERE org_id = $1")
            .bind(users.org)
            .fetch_one(&mut db)
            .await
            .expect("the connection");
    assert_eq!(
        ring()
            .decrypt(&access_enc, id, crypto::ACCESS_TOKEN)
            .expect("decrypts")
            .expose_secret(),
        new_access
    );
}

// ---------------------------------------------------------------------------------------
// GET /v1/kommo/oauth/callback (the browser)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn browser_callback_connects_and_redirects_to_the_frontend() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = org_with_credentials(&app, &fake).await;
    let state = start_oauth(&app, users.org, users.admin).await;
    let code = fake.issue_code(DOMAIN);
    // As Kommo sends it, with its extra parameters.
    let (r, params) = browser_callback(
        &app,
        &[
            ("code", &code),
            ("state", &state),
            ("referer", DOMAIN),
            ("platform", "2"),
            ("client_id", CLIENT_ID),
        ],
    )
    .await;
    assert_hides(&r, &[&state, &code]);
    assert_eq!(params.len(), 2, "{params:?}");
    assert_eq!(params["status"], "connected", "{params:?}");
    let id = params["connection_id"].clone();
    id.parse::<Uuid>().expect("connection_id is a UUID");

    let exchanges = token_requests(&fake, DOMAIN);
    assert_eq!(exchanges.len(), 1);
    assert_eq!(exchanges[0]["grant_type"], "authorization_code");
    assert_eq!(exchanges[0]["redirect_uri"], REDIRECT_URI);
    assert_eq!(exchanges[0]["code"], code.as_str());

    let shown = get(&app, &connection_path(users.org, &id), users.member)
        .await
        .expect(200);
    assert_eq!(shown.body["status"], "connected");
    assert_eq!(shown.body["account_id"], ACCOUNT_ID);
    assert_eq!(shown.body["base_domain"], DOMAIN);
    let mut types: Vec<String> = jobs_of(&app, users.org)
        .await
        .into_iter()
        .map(|(t, s, c)| {
            assert_eq!(s, "queued");
            assert_eq!(c.as_deref(), Some(id.as_str()));
            t
        })
        .collect();
    types.sort();
    assert_eq!(types, ["crm:sync-contacts", "crm:sync-pipelines"]);

    // Replayed: the error redirect.
    let again = fake.issue_code(DOMAIN);
    let (_, params) = browser_callback(
        &app,
        &[("code", &again), ("state", &state), ("referer", DOMAIN)],
    )
    .await;
    assert_redirect_error(&params, "invalid_state");
    assert_eq!(token_requests(&fake, DOMAIN).len(), 1);
}

#[tokio::test]
async fn browser_callback_access_denied_consumes_the_state() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = org_with_credentials(&app, &fake).await;
    let state = start_oauth(&app, users.org, users.admin).await;
    let (_, params) =
        browser_callback(&app, &[("error", "access_denied"), ("state", &state)]).await;
    assert_redirect_error(&params, "access_denied");
    assert_eq!(oauth_state_count(&app).await, 0);

    // The state no longer works, from either callback.
    let code = fake.issue_code(DOMAIN);
    callback(&app, Some(users.admin), &code, &state, DOMAIN)
        .await
        .expect_problem(400, "bad_request");
    let (_, params) = browser_callback(
        &app,
        &[("code", &code), ("state", &state), ("referer", DOMAIN)],
    )
    .await;
    assert_redirect_error(&params, "invalid_state");
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());
    assert_eq!(connection_count(&app, users.org).await, 0);
}

#[tokio::test]
async fn browser_callback_refusals_redirect_with_a_reason() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = org_with_credentials(&app, &fake).await;
    let code = fake.issue_code(DOMAIN);

    // Unknown or missing state.
    let unknown = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([3u8; 32]);
    let (_, params) = browser_callback(
        &app,
        &[("code", &code), ("state", &unknown), ("referer", DOMAIN)],
    )
    .await;
    assert_redirect_error(&params, "invalid_state");
    let (_, params) = browser_callback(&app, &[("code", &code), ("referer", DOMAIN)]).await;
    assert_redirect_error(&params, "invalid_state");
    let (_, params) = browser_callback(&app, &[("error", "access_denied")]).await;
    assert_redirect_error(&params, "invalid_state");

    // Expired.
    let state = start_oauth(&app, users.org, users.admin).await;
    expire_states(&app).await;
    let (_, params) = browser_callback(
        &app,
        &[("code", &code), ("state", &state), ("referer", DOMAIN)],
    )
    .await;
    assert_redirect_error(&params, "invalid_state");
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());

    // A foreign referer reaches no host.
    let state = start_oauth(&app, users.org, users.admin).await;
    let (_, params) = browser_callback(
        &app,
        &[("code", &code), ("state", &state), ("referer", "evil.com")],
    )
    .await;
    assert_redirect_error(&params, "invalid_referer");
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());

    // A code Kommo refuses.
    let state = start_oauth(&app, users.org, users.admin).await;
    let (_, params) = browser_callback(
        &app,
        &[
            ("code", "fk_code_never-issued"),
            ("state", &state),
            ("referer", DOMAIN),
        ],
    )
    .await;
    assert_redirect_error(&params, "invalid_code");
    assert_eq!(token_requests(&fake, DOMAIN).len(), 1);
    assert_eq!(connection_count(&app, users.org).await, 0);
}
