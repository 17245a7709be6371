//! Kommo sync, token refresh, rate limiting and messages against a fake Kommo: the real
//! app (and replicas of it) with job workers, PostgreSQL and Redis.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::fake_kommo::FakeKommo;
use crate::helpers::{OrgUsers, Response, TestApp, eventually, into_response};
use crate::kommo_support::{
    CLIENT_ID, CLIENT_SECRET, FRONTEND_URL, REDIRECT_URI, TEST_KEY, connected_org,
};

const PATIENCE: Duration = Duration::from_secs(30);
const DOMAIN: &str = "acme.kommo.com";
const FIRST_CONTACT_ID: i64 = 5_000_001;

/// An app with job workers, a fake Kommo, and an org connected to `DOMAIN` whose first
/// (automatic) pipelines sync is already done, so it cannot interfere with the test.
struct Connected {
    app: TestApp,
    fake: FakeKommo,
    users: OrgUsers,
    connection: Uuid,
}

impl Connected {
    async fn start() -> Connected {
        let fake = FakeKommo::start().await;
        let app = TestApp::builder()
            .with_kommo(&fake)
            .with_jobs()
            .spawn()
            .await;
        let (users, connection) = connect(&app, &fake, DOMAIN).await;
        Connected {
            app,
            fake,
            users,
            connection,
        }
    }

    fn path(&self, rest: &str) -> String {
        connection_path(self.users.org, self.connection, rest)
    }

    async fn connection(&self) -> Value {
        self.app
            .get(&self.path(""), self.users.member)
            .await
            .expect(200)
            .body
    }

    /// Queues a sync of `scope` and returns its jobs.
    async fn sync(&self, scope: &str) -> Vec<Value> {
        let r = self
            .app
            .post(
                &self.path("/sync"),
                self.users.admin,
                json!({"scope": scope}),
            )
            .await
            .expect(202);
        r.body["jobs"].as_array().expect("jobs").clone()
    }

    async fn finished(&self, job: &Value) -> Value {
        wait_job(&self.app, self.users.org, self.users.member, job).await
    }

    /// Runs a sync of `scope` and asserts that every job of it succeeded at once.
    async fn sync_ok(&self, scope: &str) -> Vec<Value> {
        let mut done = Vec::new();
        for job in self.sync(scope).await {
            let job = self.finished(&job).await;
            assert_eq!(job["status"], "succeeded", "{job}");
            assert_eq!(job["attempts"], 1, "{job}");
            done.push(job);
        }
        done
    }
}

/// `connected_org`, then waits for the jobs the connection queued; returns the users and
/// the connection id.
async fn connect(app: &TestApp, fake: &FakeKommo, domain: &str) -> (OrgUsers, Uuid) {
    let (users, created) = connected_org(app, fake, domain).await;
    assert_eq!(created["status"], "connected", "{created}");
    for job in created["jobs"].as_array().expect("jobs") {
        let done = wait_job(app, users.org, users.member, job).await;
        assert_eq!(done["status"], "succeeded", "{done}");
    }
    let id = created["id"].as_str().expect("id").parse().expect("uuid");
    (users, id)
}

fn connection_path(org: Uuid, connection: Uuid, rest: &str) -> String {
    format!("/v1/orgs/{org}/crm/connections/{connection}{rest}")
}

fn is_finished(job: &Value) -> bool {
    matches!(
        job["status"].as_str(),
        Some("succeeded" | "failed" | "cancelled")
    )
}

/// Polls the job until it succeeded, failed or was cancelled.
async fn wait_job(app: &TestApp, org: Uuid, user: Uuid, job: &Value) -> Value {
    let path = format!(
        "/v1/orgs/{org}/jobs/{}",
        job["id"].as_str().expect("job id")
    );
    eventually(&format!("job {path} to finish"), PATIENCE, || async {
        let current = app.get(&path, user).await.expect(200).body;
        is_finished(&current).then_some(current)
    })
    .await
}

fn time(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a time: {value}"))
        .parse()
        .unwrap_or_else(|e| panic!("not a time: {value}: {e}"))
}

/// Equal up to PostgreSQL's microseconds.
#[track_caller]
fn assert_close(a: DateTime<Utc>, b: DateTime<Utc>) {
    assert!(
        (a - b).abs() < chrono::Duration::milliseconds(1),
        "{a} and {b} differ"
    );
}

/// The job's run time as the jobs API reports it.
fn run_time(job: &Value) -> chrono::Duration {
    time(&job["finished_at"]) - time(&job["started_at"])
}

/// Every contact of the connection, through the paginated API (`limit` a page).
async fn all_contacts(c: &Connected, limit: usize) -> (Vec<Value>, usize) {
    let mut contacts = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = c.path(&format!("/contacts?limit={limit}"));
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let page = c.app.get(&path, c.users.member).await.expect(200).body;
        pages += 1;
        let data = page["data"].as_array().expect("data");
        assert!(data.len() <= limit, "{} rows on a page", data.len());
        contacts.extend(data.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => {
                assert_eq!(data.len(), limit, "a page before the last is full");
                cursor = Some(next.to_owned());
            }
            None => break,
        }
        assert!(pages < 100, "the contacts listing never ends");
    }
    (contacts, pages)
}

/// `(external_id, name, sort)` of each stage of a synced pipeline.
fn stages(pipeline: &Value) -> Vec<(i64, String, i64)> {
    pipeline["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| {
            (
                s["external_id"].as_i64().expect("external_id"),
                s["name"].as_str().expect("name").to_owned(),
                s["sort"].as_i64().expect("sort"),
            )
        })
        .collect()
}

fn stage(id: i64, name: &str, sort: i64) -> (i64, String, i64) {
    (id, name.to_owned(), sort)
}

/// The `page` parameter of each contacts request the fake saw, in order.
fn contact_pages(fake: &FakeKommo, domain: &str) -> Vec<String> {
    fake.requests_to(domain, "/api/v4/contacts")
        .iter()
        .map(|r| {
            let params: HashMap<String, String> = url::form_urlencoded::parse(r.query.as_bytes())
                .into_owned()
                .collect();
            assert_eq!(
                params.get("limit").map(String::as_str),
                Some("250"),
                "{r:?}"
            );
            params.get("page").cloned().unwrap_or_default()
        })
        .collect()
}

#[tokio::test]
async fn pipelines_and_contacts_sync() {
    let c = Connected::start().await;
    c.fake.set_contact_count(DOMAIN, 510);

    let jobs = c.sync("all").await;
    let types: Vec<&str> = jobs.iter().map(|j| j["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["crm:sync-pipelines", "crm:sync-contacts"]);
    for job in &jobs {
        assert_eq!(job["status"], "queued", "{job}");
        assert_eq!(job["payload"], json!({"connection_id": c.connection}));
    }
    let mut results = Vec::new();
    for job in &jobs {
        let done = c.finished(job).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(done["attempts"], 1, "{done}");
        results.push(done["result"]["count"].clone());
    }
    assert_eq!(results, [json!(2), json!(510)]);

    // Kommo's pipelines with their stages, in Kommo's order.
    let pipelines = c.app.get(&c.path("/pipelines"), c.users.member).await;
    let pipelines = pipelines.expect(200).body["data"].clone();
    let pipelines = pipelines.as_array().expect("data");
    assert_eq!(pipelines.len(), 2, "{pipelines:?}");
    let sales = &pipelines[0];
    assert_eq!(
        (
            &sales["external_id"],
            &sales["name"],
            &sales["sort"],
            &sales["is_main"],
            &sales["is_archive"]
        ),
        (
            &json!(1001),
            &json!("Sales"),
            &json!(1),
            &json!(true),
            &json!(false)
        )
    );
    assert_eq!(
        stages(sales),
        [
            stage(1, "New", 10),
            stage(142, "Closed - won", 10000),
            stage(143, "Closed - lost", 11000)
        ]
    );
    assert_eq!(sales["stages"][0]["color"], "#99ccff");
    let partners = &pipelines[1];
    assert_eq!(
        (
            &partners["external_id"],
            &partners["name"],
            &partners["is_main"]
        ),
        (&json!(1002), &json!("Partners"), &json!(false))
    );
    assert_eq!(
        stages(partners),
        [
            stage(2, "Contacted", 10),
            stage(142, "Closed - won", 10000),
            stage(143, "Closed - lost", 11000)
        ]
    );

    // All 510 contacts, each once, through pages of 100.
    let (contacts, pages) = all_contacts(&c, 100).await;
    assert_eq!(pages, 6);
    let external: BTreeSet<i64> = contacts
        .iter()
        .map(|c| c["external_id"].as_i64().unwrap())
        .collect();
    assert_eq!(contacts.len(), 510);
    assert_eq!(
        external,
        (FIRST_CONTACT_ID..FIRST_CONTACT_ID + 510).collect::<BTreeSet<_>>()
    );
    let second = contacts
        .iter()
        .find(|c| c["external_id"] == FIRST_CONTACT_ID + 1)
        .unwrap();
    assert_eq!(second["name"], "Contact 2");
    assert_eq!(second["first_name"], "Contact");
    assert_eq!(second["last_name"], "2");
    assert_eq!(second["responsible_user_id"], 6_000_001);
    assert_eq!(
        time(&second["external_created_at"]),
        DateTime::from_timestamp(1_700_000_060, 0).unwrap()
    );
    assert_eq!(
        time(&second["external_updated_at"]),
        DateTime::from_timestamp(1_700_003_660, 0).unwrap()
    );
    assert_eq!(second["custom_fields"][0]["field_code"], "PHONE");
    assert_eq!(
        second["custom_fields"][1]["values"][0]["value"],
        "contact2@example.com"
    );

    // Kommo was paged 250 at a time and the sync stopped after the last page.
    let pages = contact_pages(&c.fake, DOMAIN);
    assert!(
        pages == ["1", "2", "3"] || pages == ["1", "2", "3", "4"],
        "contacts pages requested: {pages:?}"
    );

    let connection = c.connection().await;
    let sync = &connection["sync"];
    assert_eq!(sync["status"], "completed", "{sync}");
    for (part, count) in [("pipelines", 2), ("contacts", 510)] {
        assert_eq!(sync[part]["status"], "completed", "{sync}");
        assert_eq!(sync[part]["count"], count, "{sync}");
        assert!(time(&sync[part]["finished_at"]) >= time(&sync[part]["started_at"]));
        assert!(sync[part]["error"].is_null(), "{sync}");
    }

    // Again, after Kommo's pipelines changed: contacts are upserted (the same 510 rows),
    // pipelines replaced.
    c.fake.set_pipelines(
        DOMAIN,
        json!([{
            "id": 2001, "name": "Renewals", "sort": 5, "is_main": true, "is_archive": false,
            "is_unsorted_on": false, "account_id": 31_000_001,
            "_embedded": {"statuses": [
                {"id": 21, "name": "Due", "sort": 10, "color": "#fffeb2", "type": 0,
                 "pipeline_id": 2001, "is_editable": true},
                {"id": 22, "name": "Renewed", "sort": 20, "color": "#ccff66", "type": 0,
                 "pipeline_id": 2001, "is_editable": true},
                {"id": 142, "name": "Closed - won", "sort": 10000, "color": "#CCFF66",
                 "type": 1, "pipeline_id": 2001, "is_editable": false},
                {"id": 143, "name": "Closed - lost", "sort": 11000, "color": "#D5D8DB",
                 "type": 2, "pipeline_id": 2001, "is_editable": false},
            ]},
        }]),
    );
    let ids_before: HashSet<String> = contacts
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    let done = c.sync_ok("all").await;
    assert_eq!(done[0]["result"]["count"], 1);
    assert_eq!(done[1]["result"]["count"], 510);

    let pipelines = c.app.get(&c.path("/pipelines"), c.users.member).await;
    let pipelines = pipelines.expect(200).body["data"].clone();
    let pipelines = pipelines.as_array().expect("data");
    assert_eq!(pipelines.len(), 1, "old pipelines are gone: {pipelines:?}");
    assert_eq!(pipelines[0]["external_id"], 2001);
    assert_eq!(pipelines[0]["name"], "Renewals");
    assert_eq!(
        stages(&pipelines[0]),
        [
            stage(21, "Due", 10),
            stage(22, "Renewed", 20),
            stage(142, "Closed - won", 10000),
            stage(143, "Closed - lost", 11000)
        ]
    );
    assert_eq!(pipelines[0]["stages"][3]["type"], 2);

    let (again, _) = all_contacts(&c, 100).await;
    let ids_after: HashSet<String> = again
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(again.len(), 510);
    assert_eq!(ids_after, ids_before, "contacts are updated in place");
    let sync = c.connection().await["sync"].clone();
    assert_eq!(sync["pipelines"]["count"], 1, "{sync}");
    assert_eq!(sync["contacts"]["count"], 510, "{sync}");

    // Refusals.
    let path = c.path("/sync");
    for bad in [
        json!({"scope": "everything"}),
        json!({}),
        json!({"scope": "all", "extra": 1}),
    ] {
        let r = c.app.post(&path, c.users.admin, bad.clone()).await;
        let r = r.expect_problem(422, "validation_failed");
        assert!(!r.error_fields().is_empty(), "{bad}: {}", r.text);
    }
    let r = c
        .app
        .post(&path, c.users.admin, json!({"scope": "everything"}))
        .await;
    assert_eq!(r.error_fields(), ["scope"], "{}", r.text);
    c.app
        .post(&path, c.users.member, json!({"scope": "all"}))
        .await
        .expect_problem(403, "forbidden");
    let stranger = Uuid::now_v7();
    let other_org = c.app.create_org(stranger).await;
    c.app
        .post(&path, stranger, json!({"scope": "all"}))
        .await
        .expect_problem(404, "not_found");
    // The connection is not in the stranger's own org either.
    let foreign = connection_path(other_org, c.connection, "/sync");
    c.app
        .post(&foreign, stranger, json!({"scope": "all"}))
        .await
        .expect_problem(404, "not_found");
    for listing in ["/pipelines", "/contacts"] {
        let foreign = connection_path(other_org, c.connection, listing);
        c.app
            .get(&foreign, stranger)
            .await
            .expect_problem(404, "not_found");
    }
    let unknown = connection_path(c.users.org, Uuid::now_v7(), "/sync");
    c.app
        .post(&unknown, c.users.admin, json!({"scope": "all"}))
        .await
        .expect_problem(404, "not_found");
    // Refused requests queued nothing.
    let listed = c
        .app
        .get(
            &format!("/v1/orgs/{}/jobs?limit=100", c.users.org),
            c.users.admin,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(listed["data"].as_array().unwrap().len(), 5, "{listed}");
}

#[tokio::test]
async fn stale_access_token_is_refreshed_once_and_the_call_retried() {
    let c = Connected::start().await;
    let before = c.connection().await;
    let (stale_access, _) = c.fake.current_tokens(DOMAIN);
    assert!(c.fake.refresh_attempts().is_empty());
    let seen_before = c.fake.requests_to(DOMAIN, "/api/v4/leads/pipelines").len();
    c.fake.expire_access_token(DOMAIN);

    let done = c.sync_ok("pipelines").await;
    assert_eq!(done[0]["result"]["count"], 2);

    let attempts = c.fake.refresh_attempts();
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert!(attempts[0].accepted && !attempts[0].stale, "{attempts:?}");
    // The refused call, then the same call with the new token.
    let (current_access, _) = c.fake.current_tokens(DOMAIN);
    let calls: Vec<Option<String>> = c.fake.requests_to(DOMAIN, "/api/v4/leads/pipelines")
        [seen_before..]
        .iter()
        .map(|r| r.authorization.clone())
        .collect();
    assert_eq!(
        calls,
        [
            Some(format!("Bearer {stale_access}")),
            Some(format!("Bearer {current_access}"))
        ]
    );

    let after = c.connection().await;
    assert_eq!(after["status"], "connected", "{after}");
    assert!(after["last_error"].is_null(), "{after}");
    assert!(
        time(&after["token_expires_at"]) > time(&before["token_expires_at"]),
        "{before} → {after}"
    );
    let pipelines = c.app.get(&c.path("/pipelines"), c.users.member).await;
    assert_eq!(
        pipelines.expect(200).body["data"].as_array().unwrap().len(),
        2
    );
}

/// One `POST …/token/refresh` through `client` (of any replica).
async fn refresh_request(client: reqwest::Client, url: String, token: String) -> Response {
    let sent = client.post(url).bearer_auth(token).send().await;
    into_response(sent.expect("refresh request")).await
}

#[tokio::test]
async fn concurrent_refreshes_never_send_a_stale_refresh_token() {
    let c = Connected::start().await;
    let b = c.app.replica(false).await;
    let path = c.path("/token/refresh");
    let token = c.app.token(c.users.admin);

    let mut requests = tokio::task::JoinSet::new();
    for i in 0..18 {
        let app = if i < 12 { &c.app } else { &b };
        requests.spawn(refresh_request(
            app.client.clone(),
            app.url(&path),
            token.clone(),
        ));
    }
    let answers = requests.join_all().await;
    assert_eq!(answers.len(), 18);
    for r in &answers {
        assert_eq!(r.status.as_u16(), 200, "{}", r.text);
        time(&r.body["token_expires_at"]);
    }

    let attempts = c.fake.refresh_attempts();
    eprintln!(
        "18 refresh requests → {} refreshes at Kommo",
        attempts.len()
    );
    assert_eq!(c.fake.stale_refresh_tokens_seen(), 0, "{attempts:?}");
    assert!(attempts.iter().all(|a| a.accepted), "{attempts:?}");
    assert!(!attempts.is_empty());
    assert!(
        attempts.len() < answers.len(),
        "concurrent refreshes were not coalesced: {} refreshes for {} requests",
        attempts.len(),
        answers.len()
    );
    // Everyone saw the expiry of a refresh that happened; the last one is stored.
    let connection = c.connection().await;
    assert_eq!(connection["status"], "connected", "{connection}");
    let latest = answers
        .iter()
        .map(|r| time(&r.body["token_expires_at"]))
        .max()
        .unwrap();
    assert_close(time(&connection["token_expires_at"]), latest);

    // The stored tokens are Kommo's current ones: a sync needs no refresh, and one more
    // refresh is accepted.
    c.sync_ok("pipelines").await;
    let (access, _) = c.fake.current_tokens(DOMAIN);
    let last_call = c.fake.requests_to(DOMAIN, "/api/v4/leads/pipelines");
    assert_eq!(
        last_call.last().unwrap().authorization,
        Some(format!("Bearer {access}"))
    );
    assert_eq!(c.fake.refresh_attempts().len(), attempts.len());
    b.post(&path, c.users.owner, json!({})).await.expect(200);
    let attempts = c.fake.refresh_attempts();
    assert!(attempts.last().unwrap().accepted, "{attempts:?}");
    assert_eq!(c.fake.stale_refresh_tokens_seen(), 0);
}

/// Sets the connection's access token to expire in an hour (due for the scheduler).
async fn expire_within_the_hour(app: &TestApp, connection: Uuid) {
    let mut db = app.admin_db().await;
    sqlx::query(
        "UPDATE crm_connections SET token_expires_at = now() + interval '1 hour' WHERE id = $1",
    )
    .bind(connection)
    .execute(&mut db)
    .await
    .expect("update token_expires_at");
}

async fn token_refresh_jobs(app: &TestApp, org: Uuid, user: Uuid) -> Vec<Value> {
    let listed = app
        .get(
            &format!("/v1/orgs/{org}/jobs?type=kommo:token-refresh"),
            user,
        )
        .await
        .expect(200)
        .body;
    listed["data"].as_array().expect("data").clone()
}

/// A readable reason: Kommo refused the grant, and the account must be reconnected.
fn says_reconnect(text: &str) -> bool {
    let text = text.to_lowercase();
    (text.contains("invalid_grant") || text.contains("refused the refresh token"))
        && text.contains("reconnect")
}

#[tokio::test]
async fn invalid_grant_marks_the_connection_error() {
    let c = Connected::start().await;
    // Kommo issued a new pair (the integration was re-installed): the stored refresh token
    // is rotated away.
    let (_, stored_refresh) = c.fake.current_tokens(DOMAIN);
    c.fake.issue_tokens(DOMAIN);

    let r = c
        .app
        .post(&c.path("/token/refresh"), c.users.admin, json!({}))
        .await
        .expect_problem(409, "conflict");
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("reconnect"),
        "{}",
        r.text
    );
    assert!(!r.text.contains(&stored_refresh), "{}", r.text);
    let attempts = c.fake.refresh_attempts();
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert!(!attempts[0].accepted, "{attempts:?}");

    let connection = c.connection().await;
    assert_eq!(connection["status"], "error", "{connection}");
    let last_error = connection["last_error"].as_str().unwrap_or_default();
    assert!(last_error.contains("invalid_grant"), "{connection}");
    assert!(says_reconnect(last_error), "{connection}");
    let status = c
        .app
        .get(
            &format!("/v1/orgs/{}/crm/status", c.users.org),
            c.users.member,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(status["connection_configured"], false, "{status}");

    // The same through a token-refresh job, queued by the scheduler for a token about to
    // expire: it fails at once and the connection is in error.
    let (users, beta) = connect(&c.app, &c.fake, "beta.kommo.com").await;
    c.fake.issue_tokens("beta.kommo.com");
    expire_within_the_hour(&c.app, beta).await;
    let job = eventually("a token-refresh job for beta", PATIENCE, || async {
        token_refresh_jobs(&c.app, users.org, users.member)
            .await
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(job["payload"]["connection_id"], json!(beta));
    let job = wait_job(&c.app, users.org, users.member, &job).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["attempts"], 1, "failed at once: {job}");
    assert!(
        says_reconnect(job["error"].as_str().unwrap_or_default()),
        "{job}"
    );
    let beta_connection = c
        .app
        .get(&connection_path(users.org, beta, ""), users.member)
        .await
        .expect(200)
        .body;
    assert_eq!(beta_connection["status"], "error", "{beta_connection}");
    assert!(
        says_reconnect(beta_connection["last_error"].as_str().unwrap_or_default()),
        "{beta_connection}"
    );

    // A connection in error is left alone by the scheduler (several ticks later there is
    // still that one job), and so is the first one, whose token is far from expiry.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        token_refresh_jobs(&c.app, users.org, users.member)
            .await
            .len(),
        1
    );
    assert!(
        token_refresh_jobs(&c.app, c.users.org, c.users.member)
            .await
            .is_empty()
    );
    let beta_refreshes = c
        .fake
        .refresh_attempts()
        .iter()
        .filter(|a| a.base_domain == "beta.kommo.com")
        .count();
    assert_eq!(beta_refreshes, 1);
}

#[tokio::test]
async fn rate_limited_answers_are_waited_out() {
    let c = Connected::start().await;
    let seen_before = c.fake.requests_to(DOMAIN, "/api/v4/leads/pipelines").len();
    c.fake.fail_next_with_429(DOMAIN, 2, 1);
    let started = Instant::now();
    let done = c.sync_ok("pipelines").await;
    let elapsed = started.elapsed();
    assert!(
        run_time(&done[0]) >= chrono::Duration::seconds(2),
        "the job did not wait out two Retry-After: 1 answers: {}",
        done[0]
    );
    assert!(elapsed >= Duration::from_secs(2), "{elapsed:?}");
    let calls = c.fake.requests_to(DOMAIN, "/api/v4/leads/pipelines");
    let calls = &calls[seen_before..];
    assert_eq!(calls.len(), 3, "two refused calls, then the one answered");
    for pair in calls.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(
            gap >= Duration::from_secs(1),
            "Retry-After ignored: {gap:?}"
        );
    }
    let sync = c.connection().await["sync"].clone();
    assert_eq!(sync["pipelines"]["status"], "completed", "{sync}");

    // Kommo keeps refusing past what one call waits out: the job is retried later (not
    // failed) and then succeeds.
    c.fake.fail_next_with_429(DOMAIN, 5, 1);
    let job = c.sync("pipelines").await.remove(0);
    let job = c.finished(&job).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert!(job["attempts"].as_i64().unwrap() >= 2, "{job}");
    assert_eq!(job["result"]["count"], 2);
}

#[tokio::test]
async fn calls_to_one_account_stay_under_7_per_second() {
    // An app without workers, and two worker replicas taking one job at a time, so that
    // the two syncs run at the same time in two replicas.
    let fake = FakeKommo::start().await;
    fake.register_client(CLIENT_ID, CLIENT_SECRET, REDIRECT_URI);
    let mut api = TestApp::builder()
        .configure(|env| {
            env.insert("KOMMO_BASE_URL".into(), fake.base_url_template.clone());
            env.insert("ENCRYPTION_KEYS".into(), format!("test:{TEST_KEY}"));
            env.insert("FRONTEND_URL".into(), FRONTEND_URL.into());
            env.insert("OAUTH_REDIRECT_URL".into(), REDIRECT_URI.into());
            env.insert("PUBLIC_BASE_URL".into(), "https://api.example.com".into());
        })
        .spawn()
        .await;
    for (key, value) in [
        ("JOB_CONCURRENCY", "1"),
        ("JOB_HEARTBEAT_SECS", "1"),
        ("JOB_RETRY_BASE_MS", "100"),
    ] {
        api.env.insert(key.into(), value.into());
    }
    let one = api.replica(true).await;
    let two = api.replica(true).await;
    let (users, connection) = connect(&api, &fake, DOMAIN).await;
    fake.set_contact_count(DOMAIN, 250 * 12);

    let path = connection_path(users.org, connection, "/sync");
    let body = json!({"scope": "contacts"});
    let (a, b) = tokio::join!(
        one.post(&path, users.admin, body.clone()),
        two.post(&path, users.admin, body.clone())
    );
    let jobs: Vec<Uuid> = [a, b]
        .into_iter()
        .map(|r| {
            let r = r.expect(202);
            r.body["jobs"][0]["id"].as_str().unwrap().parse().unwrap()
        })
        .collect();

    // Watch the two jobs' rows until both are done: who ran them, and when together.
    let mut db = api.admin_db().await;
    let mut overlapping_workers: Option<(String, String)> = None;
    let started = Instant::now();
    loop {
        let rows: Vec<(Uuid, String, Option<String>)> =
            sqlx::query_as("SELECT id, status, worker FROM jobs WHERE id = ANY($1) ORDER BY id")
                .bind(&jobs)
                .fetch_all(&mut db)
                .await
                .expect("jobs rows");
        if let [(_, s1, Some(w1)), (_, s2, Some(w2))] = rows.as_slice()
            && s1 == "running"
            && s2 == "running"
        {
            overlapping_workers.get_or_insert((w1.clone(), w2.clone()));
        }
        if rows
            .iter()
            .all(|(_, s, _)| matches!(s.as_str(), "succeeded" | "failed" | "cancelled"))
        {
            break;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "syncs never finished: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for id in &jobs {
        let job = wait_job(&api, users.org, users.member, &json!({"id": id})).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["result"]["count"], 3000, "{job}");
        eprintln!("contacts sync {id}: attempts {}", job["attempts"]);
    }
    let (w1, w2) = overlapping_workers.expect("the two syncs never ran at the same time");
    assert_ne!(w1, w2, "both syncs ran in one worker");

    let pages = contact_pages(&fake, DOMAIN);
    assert_eq!(pages.len(), 24, "12 pages for each sync: {pages:?}");
    let peak = fake.max_requests_in_any_second(DOMAIN);
    eprintln!("peak: {peak} requests in one second");
    assert!(peak <= 7, "{peak} requests to one account within a second");
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM crm_contacts WHERE connection_id = $1")
            .bind(connection)
            .fetch_one(&mut db)
            .await
            .expect("count");
    assert_eq!(count, 3000);
}

#[tokio::test]
async fn message_is_posted_as_a_note() {
    let c = Connected::start().await;
    let path = format!("/v1/orgs/{}/kommo/messages", c.users.org);

    let r = c
        .app
        .post(
            &path,
            c.users.admin,
            json!({"deal_id": 42, "channel": "chat", "message": {"body": "Hello"}}),
        )
        .await
        .expect(202);
    assert_eq!(r.body["type"], "kommo:send-message", "{}", r.text);
    assert_eq!(r.body["status"], "queued", "{}", r.text);
    let done = c.finished(&r.body).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 1, "{done}");
    let notes = c.fake.notes(DOMAIN);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0]["note_type"], "common");
    // The text ends with the job's marker, which a rerun looks for before posting again.
    let marker = format!("\n\n[ref:{}]", done["id"].as_str().unwrap());
    assert_eq!(notes[0]["params"]["text"], format!("Hello{marker}"));
    assert_eq!(notes[0]["entity_id"], 42);
    assert_eq!(done["result"]["note_id"], notes[0]["id"], "{done}");
    assert_eq!(done["result"]["deal_id"], 42, "{done}");
    let posts = c.fake.requests_to(DOMAIN, "/api/v4/leads/42/notes");
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].method, "POST");

    // Email: an outgoing_email note with the subject (the connection named explicitly).
    let r = c
        .app
        .post(
            &path,
            c.users.admin,
            json!({"connection_id": c.connection, "deal_id": 43, "channel": "email",
                   "message": {"subject": "Your offer", "body": "Hi, here it is."}}),
        )
        .await
        .expect(202);
    let done = c.finished(&r.body).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let notes = c.fake.notes(DOMAIN);
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert_eq!(notes[1]["note_type"], "outgoing_email");
    assert_eq!(notes[1]["params"]["subject"], "Your offer");
    let marker = format!("\n\n[ref:{}]", done["id"].as_str().unwrap());
    assert_eq!(
        notes[1]["params"]["text"],
        format!("Hi, here it is.{marker}")
    );
    assert_eq!(notes[1]["entity_id"], 43);

    // Attachments are listed under the text.
    let r = c
        .app
        .post(
            &path,
            c.users.admin,
            json!({"deal_id": 44, "channel": "chat", "message": {"body": "See the offer",
                   "attachments": [{"url": "https://files.example.com/offer.pdf",
                                    "name": "offer.pdf"}]}}),
        )
        .await
        .expect(202);
    let done = c.finished(&r.body).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let notes = c.fake.notes(DOMAIN);
    assert_eq!(notes.len(), 3, "{notes:?}");
    assert_eq!(notes[2]["note_type"], "common");
    let marker = format!("\n\n[ref:{}]", done["id"].as_str().unwrap());
    assert_eq!(
        notes[2]["params"]["text"],
        format!("See the offer\noffer.pdf: https://files.example.com/offer.pdf{marker}")
    );
    assert_eq!(notes[2]["entity_id"], 44);

    // Refusals: nothing is queued or posted.
    let (other_users, other_connection) = connect(&c.app, &c.fake, "other.kommo.com").await;
    let cases = [
        (
            json!({"deal_id": 42, "channel": "email", "message": {"body": "Hi"}}),
            "message.subject",
        ),
        (
            json!({"deal_id": 42, "channel": "chat", "message": {"body": "Hi"}, "priority": 1}),
            "priority",
        ),
        (
            json!({"deal_id": 42, "channel": "chat", "message": {"body": "Hi", "html": "<b>"}}),
            "message.html",
        ),
        (
            json!({"deal_id": 0, "channel": "chat", "message": {"body": "Hi"}}),
            "deal_id",
        ),
        (
            json!({"deal_id": -5, "channel": "chat", "message": {"body": "Hi"}}),
            "deal_id",
        ),
        (
            json!({"deal_id": 42, "channel": "sms", "message": {"body": "Hi"}}),
            "channel",
        ),
        (
            json!({"deal_id": 42, "channel": "chat", "message": {"body": ""}}),
            "message.body",
        ),
        (
            json!({"deal_id": 42, "channel": "chat", "message": {"body": "Hi",
                   "attachments": [{"url": "ftp://files.example.com/a", "name": "a"}]}}),
            "message.attachments[0].url",
        ),
        (
            json!({"connection_id": other_connection, "deal_id": 42, "channel": "chat",
                   "message": {"body": "Hi"}}),
            "connection_id",
        ),
    ];
    for (body, field) in cases {
        let r = c.app.post(&path, c.users.admin, body.clone()).await;
        let r = r.expect_problem(422, "validation_failed");
        assert!(
            r.error_fields().iter().any(|f| f == field),
            "{body}: expected {field} in {}",
            r.text
        );
    }
    let chat = json!({"deal_id": 42, "channel": "chat", "message": {"body": "Hi"}});
    c.app
        .post(&path, c.users.member, chat.clone())
        .await
        .expect_problem(403, "forbidden");
    c.app
        .post(&path, other_users.owner, chat)
        .await
        .expect_problem(404, "not_found");
    let sent = c
        .app
        .get(
            &format!("/v1/orgs/{}/jobs?type=kommo:send-message", c.users.org),
            c.users.admin,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(sent["data"].as_array().unwrap().len(), 3, "{sent}");
    assert_eq!(c.fake.notes(DOMAIN).len(), 3);
    assert!(c.fake.notes("other.kommo.com").is_empty());
}

#[tokio::test]
async fn scheduler_refreshes_expiring_tokens() {
    let c = Connected::start().await;
    assert!(
        token_refresh_jobs(&c.app, c.users.org, c.users.member)
            .await
            .is_empty(),
        "a fresh 24 h token is not refreshed"
    );
    expire_within_the_hour(&c.app, c.connection).await;

    let job = eventually(
        "the scheduler to queue a token refresh",
        PATIENCE,
        || async {
            token_refresh_jobs(&c.app, c.users.org, c.users.member)
                .await
                .into_iter()
                .next()
        },
    )
    .await;
    assert_eq!(job["payload"]["connection_id"], json!(c.connection));
    let done = c.finished(&job).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 1, "{done}");

    let attempts = c.fake.refresh_attempts();
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert!(attempts[0].accepted, "{attempts:?}");
    let connection = c.connection().await;
    assert_eq!(connection["status"], "connected", "{connection}");
    let expires = time(&connection["token_expires_at"]);
    let ahead = expires - Utc::now();
    assert!(
        ahead > chrono::Duration::hours(23) && ahead <= chrono::Duration::hours(24),
        "token_expires_at {expires} is {ahead} ahead"
    );
    assert_close(time(&done["result"]["token_expires_at"]), expires);

    // Refreshed, it is not due any more: later ticks queue nothing, and the new tokens work.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        token_refresh_jobs(&c.app, c.users.org, c.users.member)
            .await
            .len(),
        1
    );
    c.sync_ok("pipelines").await;
    assert_eq!(c.fake.refresh_attempts().len(), 1);
}
