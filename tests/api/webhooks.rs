//! Kommo webhooks (spec §6, issue 5): the secret URL, Kommo's own form bodies and JSON,
//! replays (also two replicas racing), the account check, content types and sizes, the
//! IP allow-list behind trusted proxies, the per-connection rate limit, rotation, the
//! `kommo:webhook` job and the org's event listing — the real app with a fake Kommo.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_TYPE, USER_AGENT};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::fake_kommo::FakeKommo;
use crate::helpers::{OrgUsers, Response, TestApp, eventually, into_response};
use crate::kommo_support::{PUBLIC_BASE_URL, connected_org};

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

#[tokio::test]
async fn kommo_form_bodies_are_accepted_parsed_by_the_job_and_listed() {
    let h = Hooked::start(true, &[]).await;
    for body in [
        lead_added(LEAD_ID),
        lead_status_changed(LEAD_ID),
        contact_updated(CONTACT_ID),
        chat_message("Hello, is the offer still valid?"),
    ] {
        h.send_ok(body, "accepted").await;
    }

    let events = h.wait_events("", 4).await;
    for e in &events {
        assert_eq!(e["status"], "processed", "{e}");
        assert_eq!(e["kind"], "event", "{e}");
        assert_eq!(e["connection_id"], h.connection.to_string(), "{e}");
        assert!(e["delivery_id"].is_string(), "{e}");
        assert!(e["processed_at"].is_string(), "{e}");
        assert!(e["error"].is_null(), "{e}");
    }
    // Newest first, and four distinct deliveries.
    let listed = ids(&events);
    let mut sorted = listed.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(listed, sorted, "newest first");
    let deliveries: HashSet<&str> = events
        .iter()
        .filter_map(|e| e["delivery_id"].as_str())
        .collect();
    assert_eq!(deliveries.len(), 4);

    let added = event_of(&events, "leads", "add");
    assert_eq!(added["entity_id"], LEAD_ID);
    assert_eq!(added["payload"]["status_id"], STATUS_ID.to_string());
    assert_eq!(added["payload"]["pipeline_id"], PIPELINE_ID.to_string());
    assert_eq!(added["payload"]["name"], "Deal #1");

    let status = event_of(&events, "leads", "status");
    assert_eq!(status["entity_id"], LEAD_ID);
    assert_eq!(status["payload"]["status_id"], WON_STATUS_ID.to_string());
    assert_eq!(status["payload"]["old_status_id"], STATUS_ID.to_string());

    let contact = event_of(&events, "contacts", "update");
    assert_eq!(contact["entity_id"], CONTACT_ID);
    assert_eq!(contact["payload"]["name"], "Jane Roe");
    let fields = contact["payload"]["custom_fields"]
        .as_array()
        .unwrap_or_else(|| panic!("custom_fields as a list: {contact}"));
    assert_eq!(fields.len(), 2, "{contact}");
    assert_eq!(fields[0]["code"], "PHONE");
    assert_eq!(fields[0]["values"][0]["value"], "+15550100");
    assert_eq!(fields[1]["values"][0]["value"], "jane@example.com");

    let message = event_of(&events, "messages", "add");
    // Kommo's message ids are UUIDs, so there is no numeric entity id; the fields keep it.
    assert!(message["entity_id"].is_null(), "{message}");
    assert_eq!(message["payload"]["id"], MESSAGE_ID);
    assert_eq!(message["payload"]["chat_id"], CHAT_ID);
    assert_eq!(
        message["payload"]["text"],
        "Hello, is the offer still valid?"
    );
    assert_eq!(message["payload"]["author"]["name"], "Jane Roe");

    // One job per delivery, each finding one event.
    let jobs = h.wait_webhook_jobs(4).await;
    for job in &jobs {
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(
            job["result"],
            json!({"events": 1, "events_dropped": 0}),
            "{job}"
        );
        assert_eq!(job["attempts"], 1, "{job}");
    }
    assert_eq!(h.deliveries().await, 4);

    // Filters.
    let leads = h.events("?type=leads").await["data"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(leads.len(), 2, "{leads:?}");
    assert!(leads.iter().all(|e| e["type"] == "leads"));
    let contacts = h.events("?type=contacts").await;
    assert_eq!(contacts["data"].as_array().map(Vec::len), Some(1));
    let messages = h.events("?type=messages").await;
    assert_eq!(messages["data"].as_array().map(Vec::len), Some(1));
    let processed = h.events("?status=processed").await;
    assert_eq!(processed["data"].as_array().map(Vec::len), Some(4));
    let both = h.events("?type=leads&status=processed").await;
    assert_eq!(both["data"].as_array().map(Vec::len), Some(2));
    let failed = h.events("?status=failed").await;
    assert_eq!(failed["data"], json!([]));
    assert!(failed["next_cursor"].is_null());

    // Pagination: two pages of two, nothing repeated, nothing lost.
    let first = h.events("?limit=2").await;
    let first_page = first["data"].as_array().cloned().unwrap_or_default();
    assert_eq!(first_page.len(), 2, "{first}");
    let cursor = first["next_cursor"]
        .as_str()
        .unwrap_or_else(|| panic!("a next_cursor: {first}"));
    let second = h.events(&format!("?limit=2&cursor={cursor}")).await;
    let second_page = second["data"].as_array().cloned().unwrap_or_default();
    assert_eq!(second_page.len(), 2, "{second}");
    assert!(second["next_cursor"].is_null(), "{second}");
    let mut paged = ids(&first_page);
    paged.extend(ids(&second_page));
    assert_eq!(paged, listed);

    // Bad filters.
    let r = h
        .app
        .get(&h.events_path("?status=done"), h.users.member)
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(r.error_fields(), vec!["status"], "{}", r.text);
    h.app
        .get(&h.events_path("?cursor=not-a-cursor"), h.users.member)
        .await
        .expect_problem(400, "bad_request");
    h.app
        .get(&h.events_path("?limit=0"), h.users.member)
        .await
        .expect_problem(422, "validation_failed");
}

// ---------------------------------------------------------------------------------------
// 2. JSON
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn json_bodies_are_accepted_too() {
    let h = Hooked::start(true, &[]).await;
    let body = json!({
        "leads": {"add": [{"id": 4242, "status_id": STATUS_ID, "pipeline_id": PIPELINE_ID}]},
        "account": {"id": ACCOUNT_ID.to_string(), "subdomain": "acme"},
    });
    let r = h
        .send("application/json; charset=utf-8", body.to_string())
        .await
        .expect(200);
    assert_eq!(r.body, json!({"status": "accepted"}));
    assert_secret_absent(&r, &h.token);

    let events = h.wait_events("", 1).await;
    let e = &events[0];
    assert_eq!(e["type"], "leads");
    assert_eq!(e["subtype"], "add");
    assert_eq!(e["entity_id"], 4242);
    assert_eq!(e["status"], "processed");
    assert_eq!(e["payload"]["status_id"], STATUS_ID);

    // The same JSON again is a duplicate; a JSON body claiming another account is refused.
    let again = h.send(JSON, body.to_string()).await.expect(200);
    assert_eq!(again.body, json!({"status": "duplicate"}));
    let foreign = json!({"leads": {"add": [{"id": 1}]}, "account": {"id": 999}});
    h.send(JSON, foreign.to_string())
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(h.deliveries().await, 1);
}

// ---------------------------------------------------------------------------------------
// 3. Replays
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_replayed_body_is_answered_duplicate_and_processed_once() {
    let h = Hooked::start(true, &[]).await;
    let body = lead_added(LEAD_ID);
    h.send_ok(body.clone(), "accepted").await;
    h.send_ok(body.clone(), "duplicate").await;
    h.wait_events("", 1).await;
    // Also after it was processed.
    h.send_ok(body, "duplicate").await;
    // A different body of the same lead is new.
    h.send_ok(lead_status_changed(LEAD_ID), "accepted").await;

    let events = h.wait_events("", 2).await;
    assert_eq!(events.iter().filter(|e| e["subtype"] == "add").count(), 1);
    assert_eq!(h.wait_webhook_jobs(2).await.len(), 2);
    assert_eq!(h.deliveries().await, 2);
    // Nothing more shows up later.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.events("").await["data"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn two_replicas_racing_with_the_same_body_store_it_once() {
    let h = Hooked::start(true, &[]).await;
    let other = h.app.replica(true).await;
    const ROUNDS: i64 = 5;
    for round in 0..ROUNDS {
        let body = lead_added(LEAD_ID + round);
        let (a, b) = tokio::join!(
            post_webhook(&h.app, &h.path, Some(FORM), body.clone(), &[]),
            post_webhook(&other, &h.path, Some(FORM), body, &[]),
        );
        let a = a.expect(200);
        let b = b.expect(200);
        let mut statuses = vec![
            a.body["status"].as_str().unwrap_or_default().to_string(),
            b.body["status"].as_str().unwrap_or_default().to_string(),
        ];
        statuses.sort();
        assert_eq!(
            statuses,
            vec!["accepted", "duplicate"],
            "round {round}: {} / {}",
            a.text,
            b.text
        );
    }
    assert_eq!(h.deliveries().await, ROUNDS);
    let events = h.wait_events("", ROUNDS as usize).await;
    let leads: HashSet<i64> = events
        .iter()
        .filter_map(|e| e["entity_id"].as_i64())
        .collect();
    assert_eq!(leads.len(), ROUNDS as usize, "{events:?}");
    assert_eq!(h.wait_webhook_jobs(ROUNDS as usize).await.len(), 5);
}

#[tokio::test]
async fn a_body_older_than_24_hours_counts_as_new_again() {
    let h = Hooked::start(true, &[]).await;
    let body = lead_added(LEAD_ID);
    h.send_ok(body.clone(), "accepted").await;
    h.wait_events("", 1).await;
    let mut db = h.app.admin_db().await;
    sqlx::query(
        "UPDATE webhook_events SET received_at = now() - interval '25 hours'
         WHERE kind = 'delivery'",
    )
    .execute(&mut db)
    .await
    .expect("age the delivery");
    // Kommo resends a day later: the scheduler's housekeeping releases the digest
    // (it ticks every second in tests), then the body is new again.
    let started = Instant::now();
    loop {
        let released: bool = sqlx::query_scalar(
            "SELECT body_sha256 IS NULL FROM webhook_events WHERE kind = 'delivery'",
        )
        .fetch_one(&mut db)
        .await
        .expect("digest");
        if released {
            break;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "the digest of a 25 h old delivery was never released"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.send_ok(body, "accepted").await;
    h.wait_events("", 2).await;
    assert_eq!(h.deliveries().await, 2);
}

// ---------------------------------------------------------------------------------------
// 4. The secret URL
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn wrong_token_unknown_connection_and_malformed_urls_are_the_same_404() {
    let h = Hooked::start(false, &[]).await;
    let body = lead_added(LEAD_ID);
    let wrong = forged_token();

    let wrong_token = post_webhook(
        &h.app,
        &format!("/v1/kommo/webhooks/{}/{wrong}", h.connection),
        Some(FORM),
        body.clone(),
        &[],
    )
    .await
    .expect_problem(404, "not_found");
    assert_secret_absent(&wrong_token, &wrong);
    assert_secret_absent(&wrong_token, &h.token);

    let unknown = post_webhook(
        &h.app,
        &format!("/v1/kommo/webhooks/{}/{}", Uuid::now_v7(), h.token),
        Some(FORM),
        body.clone(),
        &[],
    )
    .await
    .expect_problem(404, "not_found");
    assert_secret_absent(&unknown, &h.token);
    assert_eq!(
        without_request_id(&wrong_token.body),
        without_request_id(&unknown.body),
        "a wrong token and an unknown connection must not be told apart"
    );
    assert_ne!(wrong_token.body["request_id"], unknown.body["request_id"]);
    // Nor by their headers (beyond the request id and the date).
    let header_names = |r: &Response| {
        let mut names: Vec<(String, String)> = r
            .headers
            .iter()
            .filter(|(n, _)| !matches!(n.as_str(), "x-request-id" | "date"))
            .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
            .collect();
        names.sort();
        names
    };
    assert_eq!(header_names(&wrong_token), header_names(&unknown));

    // The token of one connection does not open another one's URL, and a prefix or an
    // extension of the right token is wrong too.
    for token in [
        &h.token[..h.token.len() - 1],
        &format!("{}A", h.token),
        &h.token.to_uppercase(),
    ] {
        let r = post_webhook(
            &h.app,
            &format!("/v1/kommo/webhooks/{}/{token}", h.connection),
            Some(FORM),
            body.clone(),
            &[],
        )
        .await
        .expect_problem(404, "not_found");
        assert_eq!(
            without_request_id(&r.body),
            without_request_id(&unknown.body)
        );
    }

    let not_uuid = post_webhook(
        &h.app,
        &format!("/v1/kommo/webhooks/not-a-uuid/{}", h.token),
        Some(FORM),
        body.clone(),
        &[],
    )
    .await
    .expect_problem(404, "not_found");
    assert_secret_absent(&not_uuid, &h.token);
    assert_eq!(
        without_request_id(&not_uuid.body),
        without_request_id(&unknown.body)
    );

    // Without the token segment there is no such route at all.
    for path in [
        format!("/v1/kommo/webhooks/{}", h.connection),
        format!("/v1/kommo/webhooks/{}/", h.connection),
    ] {
        let r = post_webhook(&h.app, &path, Some(FORM), body.clone(), &[])
            .await
            .expect_problem(404, "not_found");
        assert_eq!(
            without_request_id(&r.body),
            without_request_id(&unknown.body)
        );
    }

    assert_eq!(h.deliveries().await, 0, "nothing stored for a bad URL");
    // The right URL works.
    h.send_ok(body, "accepted").await;
    assert_eq!(h.deliveries().await, 1);
}

// ---------------------------------------------------------------------------------------
// 5. The account check
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_body_from_another_kommo_account_is_refused_and_not_stored() {
    let h = Hooked::start(true, &[]).await;
    let r = h
        .send(FORM, lead_added_with(LEAD_ID, 29_085_955, "Deal #1"))
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(r.error_fields(), vec!["account[id]"], "{}", r.text);
    assert_secret_absent(&r, &h.token);
    assert_eq!(h.deliveries().await, 0);

    // The same lead from the right account is accepted (the refusal was not remembered
    // as a duplicate either).
    h.send_ok(lead_added(LEAD_ID), "accepted").await;
    let events = h.wait_events("", 1).await;
    assert_eq!(events[0]["entity_id"], LEAD_ID);
    assert_eq!(h.deliveries().await, 1);
    let jobs = h.wait_webhook_jobs(1).await;
    assert_eq!(jobs[0]["status"], "succeeded");
}

#[tokio::test]
async fn an_account_id_that_is_not_exactly_ours_is_refused() {
    let h = Hooked::start(false, &[]).await;
    let lead = format!("leads[add][0][id]={LEAD_ID}");
    for account in [
        format!("account[id]={ACCOUNT_ID}.0"),
        "account[id]=1e3".to_string(),
        format!("account[id][]={ACCOUNT_ID}"),
        format!("account[id]={ACCOUNT_ID}x"),
        format!("account[id]=%20{ACCOUNT_ID}"),
    ] {
        let r = h
            .send(FORM, format!("{lead}&{account}"))
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(
            r.error_fields(),
            vec!["account[id]"],
            "{account}: {}",
            r.text
        );
    }
    for body in [
        json!({"leads": {"add": [{"id": LEAD_ID}]}, "account": {"id": ACCOUNT_ID as f64}}),
        json!({"leads": {"add": [{"id": LEAD_ID}]}, "account": {"id": format!("{ACCOUNT_ID}x")}}),
    ] {
        h.send(JSON, body.to_string())
            .await
            .expect_problem(422, "validation_failed");
    }
    assert_eq!(h.deliveries().await, 0);
    h.send_ok(format!("{lead}&account[id]={ACCOUNT_ID}"), "accepted")
        .await;
}

// ---------------------------------------------------------------------------------------
// 5b. Hostile bodies: nesting, counts, fan-out
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_deeply_nested_body_is_refused_and_the_server_lives_on() {
    let h = Hooked::start(true, &[]).await;
    // ~9 KB, 3,000 levels: this overflowed the stack and aborted the process.
    let form = format!("a{}=1", "[b]".repeat(3_000));
    let r = h
        .send(FORM, form)
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(r.error_fields(), vec!["body"], "{}", r.text);
    let json_body = format!("{{\"a\":{}1{}}}", "[".repeat(200), "]".repeat(200));
    h.send(JSON, json_body)
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(h.deliveries().await, 0);
    // Still serving, and a normal body still goes through.
    h.send_ok(lead_added(LEAD_ID), "accepted").await;
    assert_eq!(h.wait_events("", 1).await.len(), 1);
}

#[tokio::test]
async fn one_delivery_makes_at_most_500_events_and_keeps_its_body() {
    let h = Hooked::start(true, &[("WEBHOOK_BODY_LIMIT_BYTES", "2000000")]).await;
    let mut body: String = (0..1_200)
        .map(|i| format!("leads[update][{i}][id]={}&", 1_000 + i))
        .collect();
    body.push_str(&format!("account[id]={ACCOUNT_ID}"));
    h.send_ok(body.clone(), "accepted").await;
    let jobs = h.wait_webhook_jobs(1).await;
    assert_eq!(jobs[0]["status"], "succeeded", "{}", jobs[0]);
    assert_eq!(jobs[0]["result"]["events"], 500, "{}", jobs[0]);
    assert_eq!(jobs[0]["result"]["events_dropped"], 700, "{}", jobs[0]);
    let stored: (i64, String) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM webhook_events WHERE kind = 'event'),
                (SELECT raw_body FROM webhook_events WHERE kind = 'delivery')",
    )
    .fetch_one(&mut h.app.admin_db().await)
    .await
    .unwrap();
    assert_eq!(stored.0, 500);
    assert_eq!(stored.1, body, "the whole body is kept");
}

#[tokio::test]
async fn a_stored_payload_too_deep_or_too_big_is_listed_without_it() {
    let h = Hooked::start(true, &[]).await;
    h.send_ok(lead_added(LEAD_ID), "accepted").await;
    h.wait_events("", 1).await;
    // Rows stored before the parser's bounds existed: 200 levels, and 100 KB.
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let big = json!({ "text": "x".repeat(100_000) }).to_string();
    for payload in [deep, big] {
        sqlx::query(
            "INSERT INTO webhook_events (id, org_id, connection_id, kind, type, subtype, payload, status)
             SELECT gen_random_uuid(), org_id, connection_id, 'event', 'leads', 'update', $1::jsonb, 'processed'
             FROM webhook_events WHERE kind = 'event' LIMIT 1",
        )
        .bind(payload)
        .execute(&mut h.app.admin_db().await)
        .await
        .unwrap();
    }
    let listed = h.events("").await;
    let data = listed["data"].as_array().unwrap();
    assert_eq!(data.len(), 3, "{listed}");
    let truncated: Vec<&Value> = data
        .iter()
        .filter(|e| e["payload_truncated"] == true)
        .collect();
    assert_eq!(truncated.len(), 2, "{listed}");
    assert!(truncated.iter().all(|e| e["payload"].is_null()));
    let whole = data
        .iter()
        .find(|e| e["payload_truncated"] == false)
        .unwrap();
    assert_eq!(whole["entity_id"], LEAD_ID);
    assert!(whole["payload"].is_object());
}

#[tokio::test]
async fn retention_deletes_old_deliveries_their_events_and_old_finished_jobs() {
    let h = Hooked::start(
        true,
        &[
            ("RETENTION_WEBHOOK_DAYS", "30"),
            ("RETENTION_JOBS_DAYS", "7"),
        ],
    )
    .await;
    h.send_ok(lead_added(LEAD_ID), "accepted").await;
    h.send_ok(lead_added(LEAD_ID + 1), "accepted").await;
    h.wait_events("", 2).await;
    h.wait_webhook_jobs(2).await;
    let mut db = h.app.admin_db().await;
    // One delivery 31 days old, and the job of the other finished 8 days ago.
    sqlx::query(
        "UPDATE webhook_events SET received_at = now() - interval '31 days'
         WHERE id = (SELECT delivery_id FROM webhook_events WHERE kind = 'event' AND entity_id = $1)",
    )
    .bind(LEAD_ID)
    .execute(&mut db)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE jobs SET finished_at = now() - interval '8 days'
         WHERE id = (SELECT id FROM jobs WHERE type = 'kommo:webhook' ORDER BY created_at DESC LIMIT 1)",
    )
    .execute(&mut db)
    .await
    .unwrap();
    let started = Instant::now();
    loop {
        let (events, deliveries, jobs): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM webhook_events WHERE kind = 'event'),
                    (SELECT count(*) FROM webhook_events WHERE kind = 'delivery'),
                    (SELECT count(*) FROM jobs WHERE type = 'kommo:webhook')",
        )
        .fetch_one(&mut db)
        .await
        .unwrap();
        if (events, deliveries, jobs) == (1, 1, 1) {
            break;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "retention left {events} events, {deliveries} deliveries, {jobs} jobs"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // What is left is the newer delivery's event.
    let listed = h.wait_events("", 1).await;
    assert_eq!(listed[0]["entity_id"], LEAD_ID + 1);
}

#[tokio::test]
async fn retention_of_zero_days_keeps_everything() {
    let h = Hooked::start(
        true,
        &[
            ("RETENTION_WEBHOOK_DAYS", "0"),
            ("RETENTION_JOBS_DAYS", "0"),
        ],
    )
    .await;
    h.send_ok(lead_added(LEAD_ID), "accepted").await;
    h.wait_webhook_jobs(1).await;
    let mut db = h.app.admin_db().await;
    sqlx::query("UPDATE webhook_events SET received_at = now() - interval '3650 days'")
        .execute(&mut db)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE jobs SET finished_at = now() - interval '3650 days' WHERE finished_at IS NOT NULL",
    )
    .execute(&mut db)
    .await
    .unwrap();
    let count_jobs = "SELECT count(*) FROM jobs WHERE finished_at < now() - interval '3000 days'";
    let before: i64 = sqlx::query_scalar(count_jobs)
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert!(before >= 1);
    // Several scheduler ticks (JOB_HEARTBEAT_SECS=1 in these apps).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(h.deliveries().await, 1);
    let after: i64 = sqlx::query_scalar(count_jobs)
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(after, before);
}

// ---------------------------------------------------------------------------------------
// 6. Content types and sizes
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn other_content_types_get_415_and_large_bodies_413() {
    let h = Hooked::start(false, &[("WEBHOOK_BODY_LIMIT_BYTES", "2048")]).await;

    let r = h
        .send("text/plain", lead_added(LEAD_ID))
        .await
        .expect_problem(415, "unsupported_media_type");
    assert_secret_absent(&r, &h.token);
    post_webhook(&h.app, &h.path, None, lead_added(LEAD_ID), &[])
        .await
        .expect_problem(415, "unsupported_media_type");
    h.send("multipart/form-data; boundary=x", lead_added(LEAD_ID))
        .await
        .expect_problem(415, "unsupported_media_type");

    let big = lead_added_with(LEAD_ID, ACCOUNT_ID, &"x".repeat(4096));
    assert!(big.len() > 4096);
    let r = h
        .send(FORM, big)
        .await
        .expect_problem(413, "payload_too_large");
    assert_secret_absent(&r, &h.token);
    let big_json = json!({"leads": {"add": [{"id": 1, "name": "y".repeat(4096)}]}});
    h.send(JSON, big_json.to_string())
        .await
        .expect_problem(413, "payload_too_large");
    assert_eq!(h.deliveries().await, 0);

    // Just under the limit is fine.
    let fits = lead_added_with(LEAD_ID, ACCOUNT_ID, "small");
    assert!(fits.len() < 2048);
    h.send_ok(fits, "accepted").await;
    assert_eq!(h.deliveries().await, 1);
}

// ---------------------------------------------------------------------------------------
// 7. IP allow-list and trusted proxies
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn an_address_outside_the_allow_list_gets_403() {
    let h = Hooked::start(false, &[("WEBHOOK_ALLOWED_CIDRS", "10.0.0.0/8")]).await;
    let r = h
        .send(FORM, lead_added(LEAD_ID))
        .await
        .expect_problem(403, "forbidden");
    assert_secret_absent(&r, &h.token);
    assert_eq!(h.deliveries().await, 0);
}

#[tokio::test]
async fn an_address_inside_the_allow_list_is_accepted() {
    let h = Hooked::start(false, &[("WEBHOOK_ALLOWED_CIDRS", "127.0.0.1/32")]).await;
    h.send_ok(lead_added(LEAD_ID), "accepted").await;
    assert_eq!(h.deliveries().await, 1);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_rightmost_untrusted_hop_is_checked() {
    let h = Hooked::start(
        false,
        &[
            ("TRUSTED_PROXIES", "127.0.0.1/32"),
            ("WEBHOOK_ALLOWED_CIDRS", "198.51.100.0/24"),
        ],
    )
    .await;
    let send = |lead: i64, xff: Option<&'static str>| {
        let headers: Vec<(&str, &str)> = xff.map(|v| ("x-forwarded-for", v)).into_iter().collect();
        let app = &h.app;
        let path = h.path.clone();
        async move { post_webhook(app, &path, Some(FORM), lead_added(lead), &headers).await }
    };

    let r = send(1, Some("198.51.100.7")).await.expect(200);
    assert_eq!(r.body, json!({"status": "accepted"}));
    // The client forged the first hop; our proxy appended the real one, which is allowed.
    let r = send(2, Some("203.0.113.5, 198.51.100.7")).await.expect(200);
    assert_eq!(r.body, json!({"status": "accepted"}));
    // The rightmost untrusted hop is 203.0.113.5, whatever the client claimed before it.
    send(3, Some("198.51.100.7, 203.0.113.5"))
        .await
        .expect_problem(403, "forbidden");
    // No header: the (trusted) peer itself is the client, and it is not allowed.
    send(4, None).await.expect_problem(403, "forbidden");
    // Garbage in the header: no proxy of ours wrote it.
    send(5, Some("not-an-ip"))
        .await
        .expect_problem(403, "forbidden");
    assert_eq!(h.deliveries().await, 2);
}

#[tokio::test]
async fn a_forged_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let h = Hooked::start(false, &[("WEBHOOK_ALLOWED_CIDRS", "198.51.100.0/24")]).await;
    let r = post_webhook(
        &h.app,
        &h.path,
        Some(FORM),
        lead_added(LEAD_ID),
        &[("x-forwarded-for", "198.51.100.7")],
    )
    .await
    .expect_problem(403, "forbidden");
    assert_secret_absent(&r, &h.token);
    post_webhook(
        &h.app,
        &h.path,
        Some(FORM),
        lead_added(LEAD_ID),
        &[
            ("x-real-ip", "198.51.100.7"),
            ("forwarded", "for=198.51.100.7"),
        ],
    )
    .await
    .expect_problem(403, "forbidden");
    assert_eq!(h.deliveries().await, 0);
}

// ---------------------------------------------------------------------------------------
// 8. Rate limit per connection
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn webhooks_are_rate_limited_per_connection() {
    let h = Hooked::start(false, &[("RATE_LIMIT_WEBHOOK_PER_MIN", "3")]).await;
    for lead in 0..3 {
        h.send_ok(lead_added(LEAD_ID + lead), "accepted").await;
    }
    let r = h
        .send(FORM, lead_added(LEAD_ID + 3))
        .await
        .expect_problem(429, "rate_limited");
    assert_secret_absent(&r, &h.token);
    let retry_after: u64 = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("a Retry-After header: {:?}", r.headers))
        .parse()
        .expect("Retry-After in seconds");
    // 3 a minute: the next one is allowed within 20 s.
    assert!((1..=20).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(h.deliveries().await, 3, "a refused webhook is not stored");

    // Another connection (another org, another account) has its own budget.
    let (_, _, other_path, other_token) = connect(&h.app, &h.fake, "beta.kommo.com").await;
    for lead in 0..3 {
        let r = post_webhook(
            &h.app,
            &other_path,
            Some(FORM),
            lead_added(LEAD_ID + lead),
            &[],
        )
        .await
        .expect(200);
        assert_eq!(r.body, json!({"status": "accepted"}));
        assert_secret_absent(&r, &other_token);
    }
    // The first one is still limited.
    h.send(FORM, lead_added(LEAD_ID + 4))
        .await
        .expect_problem(429, "rate_limited");
    assert_eq!(h.deliveries().await, 6);
}

// ---------------------------------------------------------------------------------------
// 9. Rotation
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn rotating_the_secret_retires_the_old_url() {
    let h = Hooked::start(false, &[]).await;
    h.send_ok(lead_added(LEAD_ID), "accepted").await;
    let rotate = format!(
        "/v1/orgs/{}/crm/connections/{}/webhook-secret",
        h.users.org, h.connection
    );

    h.app
        .post(&rotate, h.users.member, json!({}))
        .await
        .expect_problem(403, "forbidden");
    // The member's attempt changed nothing.
    h.send_ok(lead_added(LEAD_ID + 1), "accepted").await;

    let r = h
        .app
        .post(&rotate, h.users.admin, json!({}))
        .await
        .expect(200);
    assert_secret_absent(&r, &h.token);
    let url = r.body["webhook_url"]
        .as_str()
        .unwrap_or_else(|| panic!("a webhook_url: {}", r.text));
    let (new_path, new_token) = split_webhook_url(url, h.connection);
    assert_ne!(new_token, h.token);

    let old = h
        .send(FORM, lead_added(LEAD_ID + 2))
        .await
        .expect_problem(404, "not_found");
    assert_secret_absent(&old, &h.token);
    let r = post_webhook(&h.app, &new_path, Some(FORM), lead_added(LEAD_ID + 2), &[])
        .await
        .expect(200);
    assert_eq!(r.body, json!({"status": "accepted"}));
    assert_secret_absent(&r, &new_token);

    // The owner may rotate too; an unknown connection is 404.
    let r = h
        .app
        .post(&rotate, h.users.owner, json!({}))
        .await
        .expect(200);
    let (_, newest) = split_webhook_url(r.body["webhook_url"].as_str().unwrap(), h.connection);
    assert_ne!(newest, new_token);
    post_webhook(&h.app, &new_path, Some(FORM), lead_added(LEAD_ID + 3), &[])
        .await
        .expect_problem(404, "not_found");
    h.app
        .post(
            &format!(
                "/v1/orgs/{}/crm/connections/{}/webhook-secret",
                h.users.org,
                Uuid::now_v7()
            ),
            h.users.admin,
            json!({}),
        )
        .await
        .expect_problem(404, "not_found");
    assert_eq!(h.deliveries().await, 3);
}

// ---------------------------------------------------------------------------------------
// 10. Bodies that cannot be parsed
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn an_unparseable_body_is_kept_and_fails_visibly() {
    let h = Hooked::start(true, &[]).await;
    h.send_ok("[x]=1", "accepted").await;
    let r = h.send(JSON, "{").await.expect(200);
    assert_eq!(r.body, json!({"status": "accepted"}));

    let failed = h.wait_events("", 2).await;
    for e in &failed {
        assert_eq!(e["status"], "failed", "{e}");
        assert_eq!(e["kind"], "delivery", "{e}");
        assert!(e["processed_at"].is_string(), "{e}");
    }
    let errors: Vec<&str> = failed.iter().filter_map(|e| e["error"].as_str()).collect();
    assert_eq!(errors.len(), 2, "{failed:?}");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("form") && e.contains("[x]")),
        "{errors:?}"
    );
    assert!(errors.iter().any(|e| e.contains("JSON")), "{errors:?}");
    let listed = h.events("?status=failed").await;
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(2), "{listed}");
    assert_eq!(h.events("?status=processed").await["data"], json!([]));

    // The raw bodies are kept.
    let mut db = h.app.admin_db().await;
    let mut bodies: Vec<String> = sqlx::query_scalar(
        "SELECT raw_body FROM webhook_events WHERE kind = 'delivery' AND status = 'failed'",
    )
    .fetch_all(&mut db)
    .await
    .expect("raw bodies");
    bodies.sort();
    assert_eq!(bodies, vec!["[x]=1", "{"]);

    // The jobs failed, with the same errors, and were not retried.
    let jobs = h.wait_webhook_jobs(2).await;
    let mut job_errors: Vec<&str> = Vec::new();
    for job in &jobs {
        assert_eq!(job["status"], "failed", "{job}");
        assert_eq!(job["attempts"], 1, "{job}");
        job_errors.push(job["error"].as_str().unwrap_or_else(|| panic!("{job}")));
    }
    job_errors.sort();
    let mut errors = errors;
    errors.sort();
    assert_eq!(job_errors, errors);

    // A good body is still processed afterwards.
    h.send_ok(lead_added(LEAD_ID), "accepted").await;
    let processed = h.wait_events("?status=processed", 1).await;
    assert_eq!(processed[0]["entity_id"], LEAD_ID);
}

// ---------------------------------------------------------------------------------------
// 11. Org isolation
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn another_org_cannot_see_the_events() {
    let h = Hooked::start(true, &[]).await;
    h.send_ok(lead_added(LEAD_ID), "accepted").await;
    h.wait_events("", 1).await;

    let stranger = Uuid::now_v7();
    let own_org = h.app.create_org(stranger).await;
    h.app
        .get(&h.events_path(""), stranger)
        .await
        .expect_problem(404, "not_found");
    h.app
        .get(&h.events_path("?type=leads"), stranger)
        .await
        .expect_problem(404, "not_found");
    let own = h
        .app
        .get(&format!("/v1/orgs/{own_org}/webhook-events"), stranger)
        .await
        .expect(200);
    assert_eq!(own.body["data"], json!([]), "{}", own.text);
    assert!(own.body["next_cursor"].is_null());
    // Anonymous: 401.
    h.app
        .send(reqwest::Method::GET, &h.events_path(""), None, None)
        .await
        .expect_problem(401, "unauthorized");

    // A connection of another org (with its own events) does not leak into ours.
    let (other_users, _, other_path, _) = connect(&h.app, &h.fake, "beta.kommo.com").await;
    post_webhook(
        &h.app,
        &other_path,
        Some(FORM),
        contact_updated(CONTACT_ID),
        &[],
    )
    .await
    .expect(200);
    let started = Instant::now();
    loop {
        let theirs = h
            .app
            .get(
                &format!("/v1/orgs/{}/webhook-events", other_users.org),
                other_users.member,
            )
            .await
            .expect(200)
            .body;
        if theirs["data"].as_array().map(Vec::len) == Some(1) {
            assert_eq!(theirs["data"][0]["type"], "contacts");
            break;
        }
        assert!(started.elapsed() < PATIENCE, "{theirs}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ours = h.events("").await;
    assert_eq!(ours["data"].as_array().map(Vec::len), Some(1), "{ours}");
    assert_eq!(ours["data"][0]["type"], "leads");
}

// ---------------------------------------------------------------------------------------
// Slow senders
// ---------------------------------------------------------------------------------------

/// A webhook whose body trickles in must not hold a database connection meanwhile: the
/// pool is small (5 here), and a handful of slow senders would otherwise starve every
/// other request.
#[tokio::test]
async fn slow_webhook_bodies_do_not_hold_database_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let h = Hooked::start(false, &[("DATABASE_MAX_CONNECTIONS", "5")]).await;
    let mut slow = Vec::new();
    for lead in 0..6 {
        let body = lead_added(LEAD_ID + lead);
        let mut stream = tokio::net::TcpStream::connect(h.app.addr)
            .await
            .expect("connect");
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {KOMMO_AGENT}\r\n\
             Content-Type: {FORM}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            h.path,
            h.app.addr,
            body.len()
        );
        stream.write_all(head.as_bytes()).await.expect("head");
        stream
            .write_all(&body.as_bytes()[..10])
            .await
            .expect("first bytes");
        slow.push((stream, body));
    }
    // Let the handlers reach the body.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    let listed = h
        .app
        .get(&h.events_path(""), h.users.member)
        .await
        .expect(200);
    assert_eq!(listed.body["data"], json!([]));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the listing waited {:?} for a database connection",
        started.elapsed()
    );

    // The slow senders finish and are accepted.
    for (mut stream, body) in slow {
        stream
            .write_all(&body.as_bytes()[10..])
            .await
            .expect("rest of the body");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("answer");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains(r#"{"status":"accepted"}"#), "{answer}");
        assert!(!answer.contains(&h.token), "{answer}");
    }
    assert_eq!(h.deliveries().await, 6);
}

// ---------------------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------------------

/// Everything written by a subscriber, kept for inspection.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

/// The test's runtime has one thread, so a thread-local subscriber sees the app's
/// handlers and job workers too.
#[tokio::test]
async fn the_token_never_reaches_the_logs() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let h = Hooked::start(true, &[("RATE_LIMIT_WEBHOOK_PER_MIN", "5")]).await;
    // Other tests' threads may have registered callsites (the access log's among them)
    // while this subscriber was being installed, caching "no interest"; ask again.
    tracing::callsite::rebuild_interest_cache();
    let wrong = forged_token();
    h.send_ok(lead_added(LEAD_ID), "accepted").await;
    h.send_ok(lead_added(LEAD_ID), "duplicate").await;
    h.send_ok("[x]=1", "accepted").await;
    h.send("text/plain", "hello")
        .await
        .expect_problem(415, "unsupported_media_type");
    h.send(FORM, lead_added_with(LEAD_ID, 1, "x"))
        .await
        .expect_problem(422, "validation_failed");
    // Until the connection's budget (5 a minute) is spent, whichever of the requests
    // above counted against it.
    let mut limited = None;
    let mut more = 0;
    for lead in 1..=6 {
        let r = h.send(FORM, lead_added(LEAD_ID + lead)).await;
        if r.status == 429 {
            limited = Some(r);
            break;
        }
        r.expect(200);
        more += 1;
    }
    limited
        .expect("a 429 within 6 more webhooks")
        .expect_problem(429, "rate_limited");
    post_webhook(
        &h.app,
        &format!("/v1/kommo/webhooks/{}/{wrong}", h.connection),
        Some(FORM),
        lead_added(LEAD_ID),
        &[],
    )
    .await
    .expect_problem(404, "not_found");
    post_webhook(
        &h.app,
        &format!("/v1/kommo/webhooks/not-a-uuid/{wrong}"),
        Some(FORM),
        lead_added(LEAD_ID),
        &[],
    )
    .await
    .expect_problem(404, "not_found");
    // The lead, the unparseable body, and the extra leads.
    h.wait_events("", 2 + more).await;
    h.wait_webhook_jobs(2 + more).await;

    let text = logs.text();
    assert!(
        text.contains("/v1/kommo/webhooks/"),
        "the access log names the route: {text}"
    );
    for secret in [&h.token, &wrong] {
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(secret.as_str()))
            .collect();
        assert!(lines.is_empty(), "the token is in the logs: {lines:#?}");
    }
}
