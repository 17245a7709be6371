//! Kommo sync, token refresh, rate limiting and messages against a fake Kommo: the real
//! app (and replicas of it) with job workers, PostgreSQL and Redis.

mod messages;
mod sync;
mod tokens;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::app::{OrgUsers, Response, TestApp, eventually, into_response};
use crate::support::fake_kommo::FakeKommo;
use crate::support::kommo::{
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
