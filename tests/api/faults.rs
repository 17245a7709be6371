//! Faults injected under steady load: PostgreSQL and Redis reset, refused and blackholed
//! through a TCP proxy, Redis losing its data, a hanging Kommo, `kill -9` in the middle
//! of a job. Each test states the figure it proves — no 5xx other than 503/504, workers
//! back on their own, nothing lost, no side effect twice — and prints what it measured
//! (`cargo test … faults -- --nocapture` shows it).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use uuid::Uuid;

use crate::cluster::Cluster;
use crate::fake_kommo::FakeKommo;
use crate::fault_proxy::{Fault, FaultProxy};
use crate::helpers::{OrgUsers, TestApp, redis_url};
use crate::kommo_support::connected_org;

const PATIENCE: Duration = Duration::from_secs(60);
const DOMAIN: &str = "acme.kommo.com";
const ACCOUNT_ID: i64 = 31_000_001;
const PUBLIC_BASE_URL: &str = "https://api.example.com";

/// `host:port` of a `postgres://` or `redis://` URL.
fn upstream_of(url: &str) -> String {
    let parsed = url::Url::parse(url).expect("service URL");
    format!(
        "{}:{}",
        parsed.host_str().expect("host"),
        parsed
            .port_or_known_default()
            .unwrap_or(match parsed.scheme() {
                "redis" => 6379,
                _ => 5432,
            })
    )
}

/// Points `key` (a service URL in `env`) at `proxy`.
fn through(env: &mut HashMap<String, String>, key: &str, proxy: &FaultProxy) {
    let url = env[key].clone();
    let upstream = upstream_of(&url);
    let host = url::Url::parse(&url).expect("url");
    // The URL may leave the port out (the scheme's default); write it either way.
    let named = match host.port() {
        Some(_) => upstream.clone(),
        None => host.host_str().expect("host").to_string(),
    };
    env.insert(key.into(), proxy.url_for(&url, &named));
}

/// What a load run saw: statuses per phase, and when requests succeeded.
#[derive(Default)]
struct Tally {
    by_phase: BTreeMap<(usize, String), BTreeMap<String, usize>>,
    successes: Vec<Instant>,
}

impl Tally {
    fn record(&mut self, phase: (usize, &str), outcome: &str, ok: bool) {
        *self
            .by_phase
            .entry((phase.0, phase.1.to_string()))
            .or_default()
            .entry(outcome.to_string())
            .or_default() += 1;
        if ok {
            self.successes.push(Instant::now());
        }
    }

    fn outcomes(&self) -> BTreeMap<String, usize> {
        let mut all = BTreeMap::new();
        for counts in self.by_phase.values() {
            for (k, n) in counts {
                *all.entry(k.clone()).or_default() += n;
            }
        }
        all
    }

    fn first_success_after(&self, at: Instant) -> Option<Duration> {
        self.successes
            .iter()
            .filter(|t| **t >= at)
            .min()
            .map(|t| t.duration_since(at))
    }

    fn print(&self, name: &str) {
        for ((i, phase), counts) in &self.by_phase {
            println!("{name}: phase {i} {phase}: {counts:?}");
        }
    }
}

/// Runs `phases` (a fault and how long it lasts) on `proxy`, ending with `Pass`, while
/// `load` is called in a loop by `workers` tasks; returns the tally and when the last
/// fault ended.
async fn under_faults<F, Fut>(
    proxy: &FaultProxy,
    phases: &[(Fault, Duration)],
    settle: Duration,
    workers: usize,
    load: F,
) -> (Tally, Instant)
where
    F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = (String, bool)> + Send,
{
    let tally = Arc::new(Mutex::new(Tally::default()));
    let phase = Arc::new(Mutex::new((0usize, "pass".to_string())));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (tally, phase, stop, load) = (tally.clone(), phase.clone(), stop.clone(), load.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.is_cancelled() {
                let (outcome, ok) = load(w * 1_000_000 + i).await;
                let now = phase.lock().unwrap().clone();
                tally.lock().unwrap().record((now.0, &now.1), &outcome, ok);
                i += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    for (i, (fault, lasts)) in phases.iter().enumerate() {
        *phase.lock().unwrap() = (i + 1, format!("{fault:?}"));
        proxy.set(*fault);
        tokio::time::sleep(*lasts).await;
    }
    proxy.set(Fault::Pass);
    let ended = Instant::now();
    *phase.lock().unwrap() = (phases.len() + 1, "pass (after)".into());
    tokio::time::sleep(settle).await;
    stop.cancel();
    for task in tasks {
        task.await.expect("load task");
    }
    let tally = Arc::try_unwrap(tally)
        .ok()
        .expect("tally")
        .into_inner()
        .unwrap();
    (tally, ended)
}

fn outcome_of(result: Result<reqwest::Response, reqwest::Error>) -> (String, u16) {
    match result {
        Ok(r) => (r.status().as_u16().to_string(), r.status().as_u16()),
        Err(e) if e.is_timeout() => ("client timeout".into(), 0),
        Err(_) => ("transport error".into(), 0),
    }
}

/// PostgreSQL reset, refused and blackholed under reads and writes: every answer is a
/// success, 503 or 504 (never 500), every write answered 201 is stored, and the service
/// serves again within seconds of each fault ending.
#[tokio::test]
async fn postgres_faults_answer_503_or_504_and_lose_no_write() {
    let admin_upstream = upstream_of(&crate::helpers::admin_url());
    let proxy = FaultProxy::start(&admin_upstream).await;
    let app = TestApp::builder()
        .configure(|env| {
            through(env, "DATABASE_URL", &proxy);
            env.insert("REQUEST_TIMEOUT_SECS".into(), "2".into());
        })
        .spawn()
        .await;
    let users = app.org_with_roles().await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let created = Arc::new(Mutex::new(Vec::<String>::new()));
    let load = {
        let (client, created) = (client.clone(), created.clone());
        let list = app.url(&format!("/v1/orgs/{}/agents?limit=20", users.org));
        let (member, admin) = (app.token(users.member), app.token(users.admin));
        move |i: usize| {
            let (client, created, list, member, admin) = (
                client.clone(),
                created.clone(),
                list.clone(),
                member.clone(),
                admin.clone(),
            );
            async move {
                if i.is_multiple_of(2) {
                    let (outcome, status) =
                        outcome_of(client.get(&list).bearer_auth(&member).send().await);
                    (outcome, status == 200)
                } else {
                    let name = format!("fault-agent-{i}");
                    let (outcome, status) = outcome_of(
                        client
                            .post(list.replace("?limit=20", ""))
                            .bearer_auth(&admin)
                            .json(&json!({"name": name, "model": "gpt-4o-mini"}))
                            .send()
                            .await,
                    );
                    if status == 201 {
                        created.lock().unwrap().push(name);
                    }
                    (outcome, status == 201)
                }
            }
        }
    };
    let phases = [
        (Fault::Reset, Duration::from_secs(2)),
        (Fault::Pass, Duration::from_secs(2)),
        (Fault::Refuse, Duration::from_secs(2)),
        (Fault::Pass, Duration::from_secs(2)),
        (Fault::Blackhole, Duration::from_secs(3)),
    ];
    let (tally, ended) = under_faults(&proxy, &phases, Duration::from_secs(4), 4, load).await;
    tally.print("postgres_faults");
    let outcomes = tally.outcomes();
    let recovered = tally.first_success_after(ended);
    println!("postgres_faults: {outcomes:?}; first success {recovered:?} after the last fault");
    for (outcome, n) in &outcomes {
        assert!(
            matches!(outcome.as_str(), "200" | "201" | "503" | "504"),
            "{n} answers {outcome} under PostgreSQL faults: {outcomes:?}"
        );
    }
    assert!(recovered.is_some(), "never served again after the faults");
    // Every write the service confirmed is there.
    let created = created.lock().unwrap().clone();
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM agents WHERE org_id = $1 AND name = ANY($2)")
            .bind(users.org)
            .bind(&created)
            .fetch_one(&mut app.admin_db().await)
            .await
            .unwrap();
    assert_eq!(stored as usize, created.len(), "confirmed writes lost");
    app.get("/health/ready", users.member).await.expect(200);
}

async fn delete_prefix(prefix: &str) -> usize {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    keys.len()
}

/// Redis reset, restarted with its data gone, refused and blackholed while jobs are
/// queued: every accepted job runs (the sweep pushes what Redis lost), enqueueing never
/// waits on a dead Redis, the workers come back on their own, and readiness says so.
#[tokio::test]
async fn redis_faults_and_data_loss_lose_no_job_and_workers_recover() {
    let proxy = FaultProxy::start(&upstream_of(&redis_url())).await;
    let app = TestApp::builder()
        .with_jobs()
        .configure(|env| {
            through(env, "REDIS_URL", &proxy);
            env.insert("JOB_CONCURRENCY".into(), "4".into());
        })
        .spawn()
        .await;
    let prefix = app.env["REDIS_KEY_PREFIX"].clone();
    let users = app.org_with_roles().await;
    let ready: Value = reqwest::get(app.url("/health/ready"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["workers"]["status"], "ok", "{ready}");

    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let latencies = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let load = {
        let url = app.url(&format!("/v1/orgs/{}/jobs", users.org));
        let token = app.token(users.admin);
        let (accepted, latencies) = (accepted.clone(), latencies.clone());
        move |_| {
            let (client, url, token, accepted, latencies) = (
                client.clone(),
                url.clone(),
                token.clone(),
                accepted.clone(),
                latencies.clone(),
            );
            async move {
                let started = Instant::now();
                let sent = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"type": "test:sleep", "millis": 5}))
                    .send()
                    .await;
                let elapsed = started.elapsed();
                let (outcome, status) = match sent {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let body: Value = r.json().await.unwrap_or(Value::Null);
                        if status == 202 {
                            accepted
                                .lock()
                                .unwrap()
                                .push(body["id"].as_str().unwrap().to_string());
                            latencies.lock().unwrap().push(elapsed);
                        }
                        (status.to_string(), status)
                    }
                    Err(e) => (format!("transport error: {e}"), 0),
                };
                (outcome, status == 202)
            }
        }
    };
    // The data-loss phase: connections reset while every key of ours disappears, as
    // when Redis restarts without persistence (the shared test Redis itself must stay up).
    let flusher = {
        let prefix = prefix.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(800 + 2000 + 2000 + 500)).await;
            let deleted = delete_prefix(&prefix).await;
            println!("redis_faults: deleted {deleted} keys of ours mid-run");
        })
    };
    let readiness = {
        let url = app.url("/health/ready");
        tokio::spawn(async move {
            let mut seen = BTreeMap::<String, usize>::new();
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(20) {
                if let Ok(r) = reqwest::get(&url).await
                    && let Ok(body) = r.json::<Value>().await
                {
                    let workers = body["checks"]["workers"]["status"]
                        .as_str()
                        .unwrap_or("?")
                        .to_string();
                    *seen.entry(workers).or_default() += 1;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            seen
        })
    };
    let phases = [
        (Fault::Reset, Duration::from_secs(2)),
        (Fault::Pass, Duration::from_secs(2)),
        (Fault::Reset, Duration::from_secs(1)),
        (Fault::Pass, Duration::from_secs(2)),
        (Fault::Refuse, Duration::from_secs(2)),
        (Fault::Pass, Duration::from_secs(1)),
        (Fault::Blackhole, Duration::from_secs(7)),
    ];
    let (tally, ended) = under_faults(&proxy, &phases, Duration::from_secs(3), 2, load).await;
    flusher.await.unwrap();
    tally.print("redis_faults");
    let outcomes = tally.outcomes();
    for (outcome, n) in &outcomes {
        assert!(
            matches!(outcome.as_str(), "202" | "503"),
            "{n} answers {outcome} under Redis faults: {outcomes:?}"
        );
    }
    let mut latencies = latencies.lock().unwrap().clone();
    latencies.sort();
    let max = latencies.last().copied().unwrap_or_default();
    println!(
        "redis_faults: enqueue p50 {:?}, max {max:?} over {} accepted",
        latencies.get(latencies.len() / 2),
        latencies.len()
    );
    // A blackholed push used to hold each write for 2 s (the response timeout).
    assert!(
        max < Duration::from_millis(1500),
        "an enqueue waited {max:?} on a dead Redis"
    );

    // Every accepted job runs, exactly once.
    let accepted = accepted.lock().unwrap().clone();
    let ids: Vec<Uuid> = accepted.iter().map(|s| s.parse().unwrap()).collect();
    let mut db = app.admin_db().await;
    let started = Instant::now();
    loop {
        let (done, failed, max_attempts): (i64, i64, Option<i32>) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status = 'succeeded'),
                    count(*) FILTER (WHERE status IN ('failed', 'cancelled')),
                    max(attempts)
             FROM jobs WHERE id = ANY($1)",
        )
        .bind(&ids)
        .fetch_one(&mut db)
        .await
        .unwrap();
        assert_eq!(failed, 0, "jobs failed under Redis faults");
        if done as usize == ids.len() {
            println!(
                "redis_faults: all {} accepted jobs succeeded {:?} after the last fault (max attempts {max_attempts:?})",
                ids.len(),
                ended.elapsed()
            );
            break;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "{done} of {} accepted jobs ran",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = readiness.await.unwrap();
    println!("redis_faults: readiness saw workers {seen:?}");
    assert!(
        seen.get("fail").is_some_and(|n| *n > 0),
        "readiness never reported the workers down: {seen:?}"
    );
    let ready: Value = reqwest::get(app.url("/health/ready"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ok", "{ready}");
    assert_eq!(ready["checks"]["workers"]["status"], "ok", "{ready}");
    // Every key of the queue lives under this deployment's prefix.
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let foreign: Vec<String> = redis::cmd("KEYS")
        .arg("*apalis*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        foreign.is_empty(),
        "queue keys outside the prefix: {foreign:?}"
    );
}

/// A process without workers reports them `off`, not down.
#[tokio::test]
async fn readiness_reports_workers_off_where_none_run() {
    let app = TestApp::builder().spawn().await;
    let ready: Value = reqwest::get(app.url("/health/ready"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ok", "{ready}");
    assert_eq!(ready["checks"]["workers"]["status"], "off", "{ready}");
}

async fn wait_job(app: &TestApp, org: Uuid, user: Uuid, id: &str) -> Value {
    let started = Instant::now();
    loop {
        let job = app
            .get(&format!("/v1/orgs/{org}/jobs/{id}"), user)
            .await
            .expect(200)
            .body;
        if matches!(
            job["status"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        ) {
            return job;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "job {id} never finished: {job}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn send_message(app: &TestApp, users: &OrgUsers, deal_id: i64) -> String {
    let r = app
        .post(
            &format!("/v1/orgs/{}/kommo/messages", users.org),
            users.admin,
            json!({"deal_id": deal_id, "channel": "chat", "message": {"body": format!("Offer {deal_id}")}}),
        )
        .await
        .expect(202);
    r.body["id"].as_str().unwrap().to_string()
}

fn notes_per_deal(fake: &FakeKommo) -> BTreeMap<i64, usize> {
    let mut per = BTreeMap::new();
    for note in fake.notes(DOMAIN) {
        *per.entry(note["entity_id"].as_i64().unwrap()).or_default() += 1;
    }
    per
}

/// PostgreSQL fails after Kommo stored the note and before the outcome is recorded: the
/// outcome is written once PostgreSQL is back, and the note is not posted again.
#[tokio::test]
async fn postgres_failing_after_the_kommo_call_posts_no_second_note() {
    let proxy = FaultProxy::start(&upstream_of(&crate::helpers::admin_url())).await;
    let fake = FakeKommo::start().await;
    let app = {
        fake.register_client(
            crate::kommo_support::CLIENT_ID,
            crate::kommo_support::CLIENT_SECRET,
            crate::kommo_support::REDIRECT_URI,
        );
        let template = fake.base_url_template.clone();
        let proxy = &proxy;
        TestApp::builder()
            .with_jobs()
            .configure(move |env| {
                env.insert("KOMMO_BASE_URL".into(), template);
                env.insert(
                    "ENCRYPTION_KEYS".into(),
                    format!("test:{}", crate::kommo_support::TEST_KEY),
                );
                env.insert(
                    "FRONTEND_URL".into(),
                    crate::kommo_support::FRONTEND_URL.into(),
                );
                env.insert(
                    "OAUTH_REDIRECT_URL".into(),
                    crate::kommo_support::REDIRECT_URI.into(),
                );
                env.insert("PUBLIC_BASE_URL".into(), PUBLIC_BASE_URL.into());
                env.insert(
                    "KOMMO_AUTHORIZE_URL".into(),
                    "https://www.kommo.com/oauth".into(),
                );
                through(env, "DATABASE_URL", proxy);
            })
            .spawn()
            .await
    };
    let (users, _) = connected_org(&app, &fake, DOMAIN).await;
    fake.set_answer_delay(Duration::from_millis(1500));
    let jobs: Vec<String> = {
        let mut jobs = Vec::new();
        for deal in 1..=5 {
            jobs.push(send_message(&app, &users, deal).await);
        }
        jobs
    };
    // Once Kommo holds the notes, PostgreSQL goes away until after Kommo answered.
    let started = Instant::now();
    while fake.notes(DOMAIN).len() < jobs.len() {
        assert!(started.elapsed() < PATIENCE, "notes never reached Kommo");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.set(Fault::Reset);
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.set(Fault::Pass);
    fake.set_answer_delay(Duration::ZERO);
    for job in &jobs {
        let done = wait_job(&app, users.org, users.admin, job).await;
        assert_eq!(done["status"], "succeeded", "{done}");
    }
    let per = notes_per_deal(&fake);
    println!("postgres_after_kommo: notes per deal {per:?}");
    assert!(
        per.values().all(|n| *n == 1),
        "a note was posted twice: {per:?}"
    );
    assert_eq!(per.len(), jobs.len());
}

/// `kill -9` while Kommo is answering the notes: after the lease lapses another process
/// runs the jobs again, finds each note by its marker and posts none twice.
#[tokio::test]
async fn kill_9_mid_send_message_posts_each_note_once() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let (users, _) = connected_org(&app, &fake, DOMAIN).await;
    let mut cluster = Cluster::on(app.db_name.clone());
    cluster.prefix = app.env["REDIS_KEY_PREFIX"].clone();
    for key in [
        "KOMMO_BASE_URL",
        "ENCRYPTION_KEYS",
        "FRONTEND_URL",
        "OAUTH_REDIRECT_URL",
        "PUBLIC_BASE_URL",
        "KOMMO_AUTHORIZE_URL",
    ] {
        cluster.env.insert(key.into(), app.env[key].clone());
    }
    cluster.env.insert("JOB_CONCURRENCY".into(), "8".into());
    fake.set_answer_delay(Duration::from_secs(30));
    let mut jobs = Vec::new();
    for deal in 1..=6 {
        jobs.push(send_message(&app, &users, deal).await);
    }
    let worker = cluster.start(&[]).await;
    let started = Instant::now();
    while fake.notes(DOMAIN).len() < jobs.len() {
        assert!(
            started.elapsed() < PATIENCE,
            "notes never reached Kommo\n{}",
            worker.process.output()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.process.kill9();
    fake.set_answer_delay(Duration::ZERO);
    let _next = cluster.start(&[]).await;
    for job in &jobs {
        let done = wait_job(&app, users.org, users.admin, job).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(done["result"]["delivered_earlier"], true, "{done}");
        assert_eq!(done["attempts"], 2, "{done}");
    }
    let per = notes_per_deal(&fake);
    println!("kill_9_send_message: notes per deal {per:?}");
    assert!(
        per.values().all(|n| *n == 1),
        "a note was posted twice: {per:?}"
    );
    assert_eq!(per.len(), jobs.len());
}

fn webhook_body(lead_id: i64) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in [
        ("leads[add][0][id]", lead_id.to_string()),
        ("leads[add][0][name]", "Deal".into()),
        ("account[subdomain]", "acme".into()),
        ("account[id]", ACCOUNT_ID.to_string()),
    ] {
        s.append_pair(k, &v);
    }
    s.finish()
}

/// While Kommo hangs, the jobs that call it wait in their own lane: webhook parsing
/// (which never calls Kommo) goes on, even with every Kommo-bound slot taken.
#[tokio::test]
async fn a_hanging_kommo_does_not_hold_up_webhook_parsing() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder()
        .with_kommo(&fake)
        .with_jobs()
        .spawn()
        .await;
    let (users, created) = connected_org(&app, &fake, DOMAIN).await;
    let connection = created["id"].as_str().unwrap().to_string();
    // Let the connection's own syncs finish before Kommo starts hanging.
    for job in created["jobs"].as_array().unwrap() {
        wait_job(&app, users.org, users.admin, job["id"].as_str().unwrap()).await;
    }
    fake.set_answer_delay(Duration::from_secs(15));
    let sync_path = format!("/v1/orgs/{}/crm/connections/{connection}/sync", users.org);
    let mut syncs = Vec::new();
    for _ in 0..3 {
        let r = app
            .post(&sync_path, users.admin, json!({"scope": "all"}))
            .await
            .expect(202);
        for job in r.body["jobs"].as_array().unwrap() {
            syncs.push(job["id"].as_str().unwrap().to_string());
        }
    }
    let url = created["webhook_url"].as_str().unwrap();
    let path = url.strip_prefix(PUBLIC_BASE_URL).unwrap();
    let mut hooks = 0;
    for lead in 0..10 {
        let r = app
            .client
            .post(app.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("user-agent", "amoCRM-Webhooks/3.0")
            .body(webhook_body(1000 + lead))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        hooks += 1;
    }
    let jobs_path = format!("/v1/orgs/{}/jobs?type=kommo:webhook&limit=100", users.org);
    let started = Instant::now();
    loop {
        let body = app.get(&jobs_path, users.member).await.expect(200).body;
        let done = body["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| j["status"] == "succeeded")
            .count();
        if done == hooks {
            break;
        }
        assert!(started.elapsed() < PATIENCE, "webhooks not parsed: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let parsed_after = started.elapsed();
    // The Kommo-bound jobs are still waiting on Kommo: the webhooks did not queue behind them.
    let mut unfinished = 0;
    for id in &syncs {
        let job = app
            .get(&format!("/v1/orgs/{}/jobs/{id}", users.org), users.member)
            .await
            .expect(200)
            .body;
        if matches!(job["status"].as_str(), Some("queued" | "running")) {
            unfinished += 1;
        }
    }
    println!(
        "hanging_kommo: {hooks} webhooks parsed in {parsed_after:?} while {unfinished} of {} syncs waited on Kommo",
        syncs.len()
    );
    assert!(
        unfinished > 0,
        "the syncs were expected to still wait on Kommo"
    );
    fake.set_answer_delay(Duration::ZERO);
}

/// One org's burst does not starve another: the other org's single job runs after at
/// most a few of the burst's, not after all of them.
#[tokio::test]
async fn one_orgs_burst_does_not_starve_another_org() {
    let app = TestApp::builder()
        .with_jobs()
        .configure(|env| {
            env.insert("JOB_CONCURRENCY".into(), "2".into());
        })
        .spawn()
        .await;
    let busy = app.org_with_roles().await;
    let quiet = app.org_with_roles().await;
    let mut burst = Vec::new();
    for _ in 0..30 {
        let r = app
            .post(
                &format!("/v1/orgs/{}/jobs", busy.org),
                busy.admin,
                json!({"type": "test:sleep", "millis": 100}),
            )
            .await
            .expect(202);
        burst.push(r.body["id"].as_str().unwrap().parse::<Uuid>().unwrap());
    }
    let single = app
        .post(
            &format!("/v1/orgs/{}/jobs", quiet.org),
            quiet.admin,
            json!({"type": "test:sleep", "millis": 1}),
        )
        .await
        .expect(202);
    let done = wait_job(
        &app,
        quiet.org,
        quiet.admin,
        single.body["id"].as_str().unwrap(),
    )
    .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let finished_before: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE id = ANY($1) AND finished_at < $2::timestamptz",
    )
    .bind(&burst)
    .bind(done["finished_at"].as_str().unwrap())
    .fetch_one(&mut app.admin_db().await)
    .await
    .unwrap();
    println!(
        "org_fairness: the quiet org's job finished after {finished_before} of the burst's 30"
    );
    assert!(
        finished_before < 10,
        "the quiet org waited for {finished_before} of the other org's jobs"
    );
}

/// Bad-token webhooks cost a database transaction each and were never limited (4,556/s
/// from one client). Refusals now count per client address; once its quota is used, the
/// address gets 429 without any database work: here, even with PostgreSQL blackholed.
#[tokio::test]
async fn junk_webhooks_are_limited_per_address_before_any_database_work() {
    let proxy = FaultProxy::start(&upstream_of(&crate::helpers::admin_url())).await;
    let app = TestApp::builder()
        .configure(|env| {
            through(env, "DATABASE_URL", &proxy);
            env.insert("RATE_LIMIT_ANON_PER_MIN".into(), "10".into());
            env.insert("REQUEST_TIMEOUT_SECS".into(), "3".into());
        })
        .spawn()
        .await;
    let client = reqwest::Client::new();
    let send = |token: String| {
        let url = app.url(&format!("/v1/kommo/webhooks/{}/{token}", Uuid::now_v7()));
        let client = client.clone();
        async move {
            client
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body("leads[add][0][id]=1")
                .send()
                .await
                .expect("answer")
        }
    };
    let mut statuses = Vec::new();
    for i in 0..14 {
        // Well-formed tokens reach the database; malformed ones are refused before it.
        let token = if i % 2 == 0 {
            "A".repeat(43)
        } else {
            "short".into()
        };
        let r = send(token).await;
        if r.status() == 429 {
            assert!(r.headers().contains_key("retry-after"));
        }
        statuses.push(r.status().as_u16());
    }
    println!("junk_webhooks: statuses {statuses:?}");
    assert_eq!(statuses[..10], [404; 10], "{statuses:?}");
    assert_eq!(statuses[10..], [429; 4], "{statuses:?}");

    proxy.set(Fault::Blackhole);
    let started = Instant::now();
    let r = send("A".repeat(43)).await;
    assert_eq!(r.status(), 429);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the blocked address waited {:?}: it reached the database",
        started.elapsed()
    );
    proxy.set(Fault::Pass);
}

/// A Redis server of this test's own (the shared one must stay up), without persistence:
/// killed with SIGKILL and started again empty, as a Redis restart without data is.
struct OwnRedis {
    port: u16,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    async fn start() -> OwnRedis {
        let mut redis = OwnRedis {
            port: crate::process::free_port(),
            child: None,
        };
        redis.restart().await;
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn restart(&mut self) {
        self.kill();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server package) must be installed");
        self.child = Some(child);
        let started = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The real thing behind the proxy's resets: the Redis process killed under load and
/// started again with no data, twice (down for 2 s, then restarted at once). Every
/// accepted job runs, once, and the workers come back without the service restarting.
#[tokio::test]
async fn redis_killed_and_restarted_empty_loses_no_job() {
    let mut redis = OwnRedis::start().await;
    let url = redis.url();
    let app = TestApp::builder()
        .with_jobs()
        .configure(|env| {
            env.insert("REDIS_URL".into(), url);
        })
        .spawn()
        .await;
    let users = app.org_with_roles().await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let jobs_url = app.url(&format!("/v1/orgs/{}/jobs", users.org));
    let token = app.token(users.admin);
    let stop = tokio_util::sync::CancellationToken::new();
    let load = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let mut accepted = Vec::<Uuid>::new();
            let mut statuses = BTreeMap::<u16, usize>::new();
            while !stop.is_cancelled() {
                let sent = client
                    .post(&jobs_url)
                    .bearer_auth(&token)
                    .json(&json!({"type": "test:sleep", "millis": 5}))
                    .send()
                    .await
                    .expect("the service answers");
                let status = sent.status().as_u16();
                *statuses.entry(status).or_default() += 1;
                if status == 202 {
                    let body: Value = sent.json().await.unwrap();
                    accepted.push(body["id"].as_str().unwrap().parse().unwrap());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (accepted, statuses)
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let down: Value = reqwest::get(app.url("/health/ready"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    redis.restart().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.restart().await;
    let restarted = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    let (accepted, statuses) = load.await.unwrap();
    println!(
        "redis_restart: statuses {statuses:?}; readiness while down: {}",
        down["checks"]
    );
    assert!(
        statuses.keys().all(|s| matches!(s, 202 | 503)),
        "{statuses:?}"
    );
    assert_eq!(down["checks"]["redis"]["status"], "fail", "{down}");

    let mut db = app.admin_db().await;
    loop {
        let (done, failed): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status = 'succeeded' AND attempts = 1),
                    count(*) FILTER (WHERE status IN ('failed', 'cancelled'))
             FROM jobs WHERE id = ANY($1)",
        )
        .bind(&accepted)
        .fetch_one(&mut db)
        .await
        .unwrap();
        assert_eq!(failed, 0);
        if done as usize == accepted.len() {
            println!(
                "redis_restart: all {} accepted jobs ran once, the last {:?} after the second restart",
                accepted.len(),
                restarted.elapsed()
            );
            break;
        }
        assert!(
            restarted.elapsed() < PATIENCE,
            "{done} of {} accepted jobs ran",
            accepted.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready: Value = reqwest::get(app.url("/health/ready"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["workers"]["status"], "ok", "{ready}");
}
