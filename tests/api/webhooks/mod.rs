//! Kommo webhooks (spec §6, issue 5): the secret URL, Kommo's own form bodies and JSON,
//! replays (also two replicas racing), the account check, content types and sizes, the
//! IP allow-list behind trusted proxies, the per-connection rate limit, rotation, the
//! `kommo:webhook` job and the org's event listing — the real app with a fake Kommo.

mod delivery;
mod parsing;
mod retention;
mod security;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_TYPE, USER_AGENT};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::app::{OrgUsers, Response, TestApp, eventually, into_response};
use crate::support::fake_kommo::FakeKommo;
use crate::support::kommo::{PUBLIC_BASE_URL, connected_org};

const PATIENCE: Duration = Duration::from_secs(30);
const DOMAIN: &str = "acme.kommo.com";
/// The Kommo account id `connected_org` registers.
const ACCOUNT_ID: i64 = 31_000_001;
const FORM: &str = "application/x-www-form-urlencoded";
const JSON: &str = "application/json";
const KOMMO_AGENT: &str = "amoCRM-Webhooks/3.0";
const WEBHOOK_JOB: &str = "kommo:webhook";

const LEAD_ID: i64 = 25_399_013;
const STATUS_ID: i64 = 36_341_584;
const WON_STATUS_ID: i64 = 142;
const PIPELINE_ID: i64 = 3_104_455;
const CONTACT_ID: i64 = 18_452_107;
const MESSAGE_ID: &str = "8c6f2b3e-1c2d-4e5f-9a0b-1c2d3e4f5a6b";
const CHAT_ID: &str = "4f1e9a72-0b3c-4d5e-8f60-718293a4b5c6";

// ---------------------------------------------------------------------------------------
// Kommo's bodies, as its `amoCRM-Webhooks/3.0` sender posts them: form-encoded, brackets
// percent-encoded, every value a string.
// ---------------------------------------------------------------------------------------

fn form(pairs: &[(&str, String)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

fn account_pairs(account_id: i64) -> Vec<(&'static str, String)> {
    vec![
        ("account[subdomain]", "acme".into()),
        ("account[id]", account_id.to_string()),
        ("account[_links][self]", "https://acme.kommo.com".into()),
    ]
}

/// `leads[add]`: a deal was created.
fn lead_added(lead_id: i64) -> String {
    lead_added_with(lead_id, ACCOUNT_ID, "Deal #1")
}

fn lead_added_with(lead_id: i64, account_id: i64, name: &str) -> String {
    let mut pairs: Vec<(&str, String)> = vec![
        ("leads[add][0][id]", lead_id.to_string()),
        ("leads[add][0][name]", name.into()),
        ("leads[add][0][status_id]", STATUS_ID.to_string()),
        ("leads[add][0][price]", "1500".into()),
        ("leads[add][0][responsible_user_id]", "8512345".into()),
        ("leads[add][0][last_modified]", "1732615200".into()),
        ("leads[add][0][modified_user_id]", "8512345".into()),
        ("leads[add][0][created_user_id]", "8512345".into()),
        ("leads[add][0][date_create]", "1732615200".into()),
        ("leads[add][0][pipeline_id]", PIPELINE_ID.to_string()),
        ("leads[add][0][account_id]", account_id.to_string()),
        ("leads[add][0][created_at]", "1732615200".into()),
        ("leads[add][0][updated_at]", "1732615200".into()),
    ];
    pairs.extend(account_pairs(account_id));
    form(&pairs)
}

/// `leads[status]`: a deal moved to another stage (here: won).
fn lead_status_changed(lead_id: i64) -> String {
    let mut pairs: Vec<(&str, String)> = vec![
        ("leads[status][0][id]", lead_id.to_string()),
        ("leads[status][0][name]", "Deal #1".into()),
        ("leads[status][0][status_id]", WON_STATUS_ID.to_string()),
        ("leads[status][0][old_status_id]", STATUS_ID.to_string()),
        ("leads[status][0][pipeline_id]", PIPELINE_ID.to_string()),
        ("leads[status][0][old_pipeline_id]", PIPELINE_ID.to_string()),
        ("leads[status][0][price]", "1500".into()),
        ("leads[status][0][responsible_user_id]", "8512345".into()),
        ("leads[status][0][last_modified]", "1732618800".into()),
        ("leads[status][0][modified_user_id]", "8512345".into()),
        ("leads[status][0][account_id]", ACCOUNT_ID.to_string()),
        ("leads[status][0][updated_at]", "1732618800".into()),
    ];
    pairs.extend(account_pairs(ACCOUNT_ID));
    form(&pairs)
}

/// `contacts[update]`: a contact's name and custom fields (phone, email) changed.
fn contact_updated(contact_id: i64) -> String {
    let mut pairs: Vec<(&str, String)> = vec![
        ("contacts[update][0][id]", contact_id.to_string()),
        ("contacts[update][0][name]", "Jane Roe".into()),
        ("contacts[update][0][first_name]", "Jane".into()),
        ("contacts[update][0][last_name]", "Roe".into()),
        ("contacts[update][0][responsible_user_id]", "8512345".into()),
        ("contacts[update][0][date_create]", "1732615200".into()),
        ("contacts[update][0][last_modified]", "1732622400".into()),
        ("contacts[update][0][created_user_id]", "8512345".into()),
        ("contacts[update][0][modified_user_id]", "8512345".into()),
        ("contacts[update][0][account_id]", ACCOUNT_ID.to_string()),
        ("contacts[update][0][custom_fields][0][id]", "512345".into()),
        (
            "contacts[update][0][custom_fields][0][name]",
            "Phone".into(),
        ),
        (
            "contacts[update][0][custom_fields][0][code]",
            "PHONE".into(),
        ),
        (
            "contacts[update][0][custom_fields][0][values][0][value]",
            "+15550100".into(),
        ),
        (
            "contacts[update][0][custom_fields][0][values][0][enum]",
            "1045".into(),
        ),
        ("contacts[update][0][custom_fields][1][id]", "512347".into()),
        (
            "contacts[update][0][custom_fields][1][name]",
            "Email".into(),
        ),
        (
            "contacts[update][0][custom_fields][1][code]",
            "EMAIL".into(),
        ),
        (
            "contacts[update][0][custom_fields][1][values][0][value]",
            "jane@example.com".into(),
        ),
        ("contacts[update][0][type]", "contact".into()),
    ];
    pairs.extend(account_pairs(ACCOUNT_ID));
    form(&pairs)
}

/// `message[add]`: an incoming chat message (Kommo's message ids are UUIDs).
fn chat_message(text: &str) -> String {
    let mut pairs: Vec<(&str, String)> = vec![
        ("message[add][0][id]", MESSAGE_ID.into()),
        ("message[add][0][chat_id]", CHAT_ID.into()),
        ("message[add][0][talk_id]", "2817".into()),
        ("message[add][0][contact_id]", CONTACT_ID.to_string()),
        ("message[add][0][text]", text.into()),
        ("message[add][0][created_at]", "1732626000".into()),
        ("message[add][0][element_type]", "2".into()),
        ("message[add][0][entity_type]", "lead".into()),
        ("message[add][0][element_id]", LEAD_ID.to_string()),
        ("message[add][0][entity_id]", LEAD_ID.to_string()),
        ("message[add][0][type]", "incoming".into()),
        (
            "message[add][0][author][id]",
            "0b8e3f4a-5c6d-4e7f-8091-a2b3c4d5e6f7".into(),
        ),
        ("message[add][0][author][type]", "external".into()),
        ("message[add][0][author][name]", "Jane Roe".into()),
        ("message[add][0][origin]", "telegram".into()),
    ];
    pairs.extend(account_pairs(ACCOUNT_ID));
    form(&pairs)
}

// ---------------------------------------------------------------------------------------
// Set-up and requests
// ---------------------------------------------------------------------------------------

/// The path and the token of a webhook URL the API handed out.
fn split_webhook_url(url: &str, connection: Uuid) -> (String, String) {
    let path = url
        .strip_prefix(PUBLIC_BASE_URL)
        .unwrap_or_else(|| panic!("{url} is not under {PUBLIC_BASE_URL}"))
        .to_string();
    let prefix = format!("/v1/kommo/webhooks/{connection}/");
    let token = path
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{path} does not start with {prefix}"))
        .to_string();
    assert!(
        token.len() >= 43 && !token.contains('/'),
        "a 256-bit token: {token}"
    );
    (path, token)
}

/// One connected Kommo account and its webhook URL.
struct Hooked {
    app: TestApp,
    fake: FakeKommo,
    users: OrgUsers,
    connection: Uuid,
    /// `/v1/kommo/webhooks/{connection}/{token}`.
    path: String,
    token: String,
}

impl Hooked {
    async fn start(with_jobs: bool, extra: &[(&str, &str)]) -> Hooked {
        let fake = FakeKommo::start().await;
        let app = TestApp::builder()
            .with_kommo(&fake)
            .jobs(with_jobs)
            .envs(extra)
            .spawn()
            .await;
        let (users, connection, path, token) = connect(&app, &fake, DOMAIN).await;
        Hooked {
            app,
            fake,
            users,
            connection,
            path,
            token,
        }
    }

    /// Posts `body` as Kommo does (its user agent, the given content type).
    async fn send(&self, content_type: &str, body: impl Into<String>) -> Response {
        post_webhook(&self.app, &self.path, Some(content_type), body, &[]).await
    }

    /// Posts a form body and expects `{"status": status}`.
    async fn send_ok(&self, body: impl Into<String>, status: &str) -> Response {
        let r = self.send(FORM, body).await.expect(200);
        assert_eq!(r.body, json!({ "status": status }), "{}", r.text);
        assert_secret_absent(&r, &self.token);
        r
    }

    fn events_path(&self, query: &str) -> String {
        format!("/v1/orgs/{}/webhook-events{query}", self.users.org)
    }

    async fn events(&self, query: &str) -> Value {
        let r = self
            .app
            .get(&self.events_path(query), self.users.member)
            .await
            .expect(200);
        assert_secret_absent(&r, &self.token);
        r.body
    }

    /// Waits until the listing (with `query`) holds `n` rows and none is still pending.
    async fn wait_events(&self, query: &str, n: usize) -> Vec<Value> {
        let what = format!("{n} processed events at {query}");
        eventually(&what, PATIENCE, || async {
            let body = self.events(query).await;
            let data = body["data"].as_array().cloned().unwrap_or_default();
            if data.len() >= n && data.iter().all(|e| e["status"] != "received") {
                assert_eq!(data.len(), n, "more events than expected: {body}");
                return Ok(data);
            }
            Err(body.to_string())
        })
        .await
    }

    /// The org's `kommo:webhook` jobs once all of them (at least `n`) have finished.
    async fn wait_webhook_jobs(&self, n: usize) -> Vec<Value> {
        let path = format!(
            "/v1/orgs/{}/jobs?type={WEBHOOK_JOB}&limit=100",
            self.users.org
        );
        let started = Instant::now();
        loop {
            let body = self
                .app
                .get(&path, self.users.member)
                .await
                .expect(200)
                .body;
            let jobs = body["data"].as_array().cloned().unwrap_or_default();
            let finished = jobs.iter().all(|j| {
                matches!(
                    j["status"].as_str(),
                    Some("succeeded" | "failed" | "cancelled")
                )
            });
            if jobs.len() >= n && finished {
                assert_eq!(jobs.len(), n, "more webhook jobs than expected: {body}");
                return jobs;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "timed out waiting for {n} finished webhook jobs: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn deliveries(&self) -> i64 {
        count_deliveries(&self.app).await
    }
}

/// `connected_org` on `domain`: the users, the connection id, its webhook path and token.
async fn connect(
    app: &TestApp,
    fake: &FakeKommo,
    domain: &str,
) -> (OrgUsers, Uuid, String, String) {
    let (users, created) = connected_org(app, fake, domain).await;
    let connection: Uuid = created["id"]
        .as_str()
        .or_else(|| created["connection"]["id"].as_str())
        .unwrap_or_else(|| panic!("no connection id: {created}"))
        .parse()
        .expect("uuid");
    let url = created["webhook_url"]
        .as_str()
        .unwrap_or_else(|| panic!("no webhook_url: {created}"));
    let (path, token) = split_webhook_url(url, connection);
    (users, connection, path, token)
}

async fn post_webhook(
    app: &TestApp,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<String>,
    headers: &[(&str, &str)],
) -> Response {
    let mut request = app
        .client
        .post(app.url(path))
        .header(USER_AGENT, KOMMO_AGENT)
        .body(body.into());
    if let Some(content_type) = content_type {
        request = request.header(CONTENT_TYPE, content_type);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    into_response(request.send().await.expect("webhook request")).await
}

async fn count_deliveries(app: &TestApp) -> i64 {
    let mut db = app.admin_db().await;
    sqlx::query_scalar("SELECT count(*) FROM webhook_events WHERE kind = 'delivery'")
        .fetch_one(&mut db)
        .await
        .expect("count deliveries")
}

/// Neither the body nor any header of `r` carries `secret`.
#[track_caller]
fn assert_secret_absent(r: &Response, secret: &str) {
    assert!(
        !r.text.contains(secret),
        "the webhook token leaked into a body: {}",
        r.text
    );
    for (name, value) in &r.headers {
        assert!(
            !String::from_utf8_lossy(value.as_bytes()).contains(secret),
            "the webhook token leaked into the {name} header"
        );
    }
}

/// The problem document without its per-request id.
fn without_request_id(body: &Value) -> Value {
    let mut body = body.clone();
    let id = body
        .as_object_mut()
        .and_then(|o| o.remove("request_id"))
        .unwrap_or(Value::Null);
    assert!(id.is_string(), "a request_id: {body}");
    body
}

/// A token of the right shape that is not the connection's.
fn forged_token() -> String {
    use base64::Engine as _;
    let bytes: Vec<u8> = Uuid::new_v4()
        .as_bytes()
        .iter()
        .chain(Uuid::new_v4().as_bytes())
        .copied()
        .collect();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn event_of<'a>(events: &'a [Value], kind: &str, subtype: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["type"] == kind && e["subtype"] == subtype)
        .unwrap_or_else(|| panic!("no {kind}/{subtype} event in {events:?}"))
}

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().expect("event id").to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------
// 1. Kommo's real bodies, the job, the listing
// ---------------------------------------------------------------------------------------
