//! Three `serve` processes on one database and one Redis prefix behave as one service
//! (issue 9, part 2): one rate limit, each job run once, each scheduler tick won by one
//! replica (and taken over by the others when it stops), token refreshes that never present a rotated refresh token, a webhook raced to
//! two replicas stored and processed once, and `serve --migrate` started three times at
//! once on an empty database.
//!
//! Requests go round robin over the replicas. Every replica logs JSON lines, which the
//! tests read as a second witness of what ran where. Waits are generous polls.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tokio::sync::Barrier;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::cli::{assert_migrations_applied_once, assert_schema, drop_database, empty_database};
use crate::support::app::{
    JWT_SECRET, claims_for, ensure_runtime_role, eventually, redis_url, sign_hs256,
};
use crate::support::cluster::{Cluster, JOB_PATIENCE, POLL, Server};
use crate::support::fake_kommo::FakeKommo;
use crate::support::kommo::{CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, TEST_KEY};

const REPLICAS: usize = 3;
const DOMAIN: &str = "acme.kommo.com";
const ACCOUNT_ID: i64 = 31_000_001;
const PUBLIC_BASE_URL: &str = "https://api.example.com";
const FINAL: [&str; 3] = ["succeeded", "failed", "cancelled"];

/// The three replicas of one test, pointed at one fake Kommo.
struct Replicas {
    cluster: Cluster,
    fake: FakeKommo,
    servers: Vec<Server>,
}

/// A job as the `jobs` table holds it.
#[derive(Debug, Clone, sqlx::FromRow)]
struct Job {
    id: Uuid,
    #[sqlx(rename = "type")]
    job_type: String,
    status: String,
    attempts: i32,
    worker: Option<String>,
}

/// What one request got back.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One request with an optional bearer token and JSON body; a transport error panics.
async fn send(
    client: reqwest::Client,
    method: Method,
    url: String,
    token: Option<String>,
    body: Option<Value>,
) -> Answer {
    let mut request = client.request(method.clone(), &url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

impl Replicas {
    /// Three replicas with `extra` environment, logging JSON, started side by side.
    async fn start(extra: &[(&str, &str)]) -> Replicas {
        let fake = FakeKommo::start().await;
        fake.register_client(CLIENT_ID, CLIENT_SECRET, REDIRECT_URI);
        fake.add_account(DOMAIN, ACCOUNT_ID);
        let mut cluster = Cluster::new().await;
        for (k, v) in [
            ("KOMMO_BASE_URL", fake.base_url_template.clone()),
            ("ENCRYPTION_KEYS", format!("test:{TEST_KEY}")),
            ("OAUTH_REDIRECT_URL", REDIRECT_URI.into()),
            ("PUBLIC_BASE_URL", PUBLIC_BASE_URL.into()),
            ("LOG_FORMAT", "json".into()),
        ] {
            cluster.env.insert(k.into(), v);
        }
        let mut servers: Vec<Server> = (0..REPLICAS)
            .map(|_| cluster.spawn(extra, &["serve"]))
            .collect();
        for server in &mut servers {
            server.wait_ready().await;
        }
        Replicas {
            cluster,
            fake,
            servers,
        }
    }

    /// The replica the `i`-th request goes to.
    fn rr(&self, i: usize) -> &Server {
        &self.servers[i % REPLICAS]
    }

    /// An org of the cluster's user with Kommo credentials and a connection to `DOMAIN`
    /// (pasted OAuth tokens) whose first pipelines sync is done; returns the org, the
    /// connection and the connection's webhook path.
    async fn connected_org(&self) -> (Uuid, Uuid, String) {
        let c = &self.cluster;
        let org = c.create_org(self.rr(0)).await;
        let (status, body) = c
            .put(
                self.rr(1),
                &format!("/v1/orgs/{org}/crm/credentials/kommo"),
                json!({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                       "redirect_uri": REDIRECT_URI}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (access, refresh) = self.fake.issue_tokens(DOMAIN);
        let (status, created) = c
            .post(
                self.rr(2),
                &format!("/v1/orgs/{org}/crm/connections"),
                json!({"base_domain": DOMAIN, "access_token": access,
                       "refresh_token": refresh, "expires_in": 86400}),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        let connection = created["id"].as_str().expect("id").parse().expect("uuid");
        let path = created["webhook_url"]
            .as_str()
            .and_then(|u| u.strip_prefix(PUBLIC_BASE_URL))
            .unwrap_or_else(|| panic!("no webhook_url under {PUBLIC_BASE_URL}: {created}"))
            .to_string();
        for job in self.wait_jobs(org, 1).await {
            assert_eq!(
                (job.status.as_str(), job.attempts),
                ("succeeded", 1),
                "{job:?}"
            );
        }
        (org, connection, path)
    }

    /// The org's jobs once there are at least `n` and all of them have finished.
    async fn wait_jobs(&self, org: Uuid, n: usize) -> Vec<Job> {
        let admin = tokio::sync::Mutex::new(self.cluster.admin().await);
        let what = format!("at least {n} finished jobs of the org");
        eventually(&what, JOB_PATIENCE, || async {
            let mut admin = admin.lock().await;
            let jobs: Vec<Job> = sqlx::query_as(
                "SELECT id, type, status, attempts, worker FROM jobs
                 WHERE org_id = $1 ORDER BY created_at",
            )
            .bind(org)
            .fetch_all(&mut *admin)
            .await
            .expect("read the jobs");
            if jobs.len() >= n && jobs.iter().all(|j| FINAL.contains(&j.status.as_str())) {
                Ok(jobs)
            } else {
                Err(format!("{} jobs: {jobs:#?}", jobs.len()))
            }
        })
        .await
    }

    /// Every JSON line each replica logged, with the replica's index.
    fn logs(&self) -> Vec<(usize, Value)> {
        let mut lines = Vec::new();
        for (i, server) in self.servers.iter().enumerate() {
            let out = server.process.stdout() + &server.process.stderr();
            lines.extend(
                out.lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .map(|v| (i, v)),
            );
        }
        lines
    }

    /// How many times each job was started, across all replicas' logs.
    fn starts(&self) -> HashMap<String, usize> {
        let mut starts = HashMap::new();
        for (_, line) in self.logs() {
            if line["message"] == "job started"
                && let Some(id) = line["job_id"].as_str()
            {
                *starts.entry(id.to_string()).or_default() += 1;
            }
        }
        starts
    }

    /// The replica whose worker name is `worker` (names carry the process id).
    fn replica_of(&self, worker: &str) -> Option<usize> {
        self.servers
            .iter()
            .position(|s| worker.contains(&format!("-{}-", s.process.pid())))
    }

    fn output(&self) -> String {
        self.servers
            .iter()
            .enumerate()
            .map(|(i, s)| format!("=== replica {i} ===\n{}", s.process.output()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn assert_all_alive(&mut self) {
        for (i, server) in self.servers.iter_mut().enumerate() {
            if let Some(status) = server.process.try_wait() {
                panic!("replica {i} exited ({status})\n{}", server.process.output());
            }
        }
    }

    /// Asserts that every job succeeded at its first attempt and was started once, on
    /// one replica, according to the logs too.
    fn assert_each_ran_once(&self, jobs: &[Job]) {
        let starts = self.starts();
        for job in jobs {
            assert_eq!(
                (job.status.as_str(), job.attempts),
                ("succeeded", 1),
                "{job:?}\n{}",
                self.output()
            );
            let replica = job.worker.as_deref().and_then(|w| self.replica_of(w));
            assert!(replica.is_some(), "{job:?} names none of the replicas");
            assert_eq!(
                starts.get(&job.id.to_string()).copied().unwrap_or(0),
                1,
                "job {} ({}) was not started exactly once across the replicas' logs",
                job.id,
                job.job_type
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// 1. One rate limit
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn replicas_share_one_rate_limit() {
    const LIMIT: usize = 3;
    let limit = LIMIT.to_string();
    let r = Replicas::start(&[
        ("RATE_LIMIT_USER_PER_MIN", &limit),
        ("RATE_LIMIT_ANON_PER_MIN", &limit),
    ])
    .await;
    let client = r.cluster.client.clone();
    // A user of its own, so that nothing else spent this budget; a budget of 3 a minute
    // refills one request every 20 s, far longer than these requests take.
    let token = sign_hs256(&claims_for(Uuid::now_v7()), JWT_SECRET);

    for (class, token, path, ok) in [
        ("user", Some(token), "/v1/me", 200),
        ("anonymous", None, "/v1/openapi.json", 200),
    ] {
        let mut allowed = vec![0; REPLICAS];
        let mut limited = vec![0; REPLICAS];
        for i in 0..LIMIT * REPLICAS * 2 {
            let server = r.rr(i);
            let a = send(
                client.clone(),
                Method::GET,
                server.url(path),
                token.clone(),
                None,
            )
            .await;
            if i < LIMIT {
                assert_eq!(a.status, ok, "{class} request #{i}: {}", a.body);
                allowed[i % REPLICAS] += 1;
            } else {
                assert_eq!(
                    a.status,
                    429,
                    "{class} request #{i} to replica {} was allowed past the shared budget \
                     of {LIMIT}: {}",
                    i % REPLICAS,
                    a.body
                );
                assert_eq!(a.body["code"], "rate_limited", "{}", a.body);
                assert!(a.header("retry-after").is_some(), "{:?}", a.headers);
                assert_eq!(a.header("ratelimit-limit"), Some(limit.as_str()));
                assert_eq!(a.header("ratelimit-remaining"), Some("0"));
                limited[i % REPLICAS] += 1;
            }
        }
        // Each replica allowed one request and refused the rest: they count together.
        assert_eq!(allowed, vec![1; REPLICAS], "{class}");
        assert!(limited.iter().all(|&n| n >= 1), "{class}: {limited:?}");
        eprintln!(
            "replicas_share_one_rate_limit: {class}: {} allowed of {} over {REPLICAS} \
             replicas (budget {LIMIT}); allowed per replica {allowed:?}, refused {limited:?}",
            allowed.iter().sum::<usize>(),
            LIMIT * REPLICAS * 2
        );
    }
}

/// A large limit is mostly admitted by each replica on its own between questions to
/// Redis (src/http/rate_limit.rs); together the replicas still admit the budget, and at
/// most the stated error beyond it: (replicas − 1) · ⌊limit/32⌋, plus what refills while
/// the requests are sent.
#[tokio::test]
async fn replicas_admitting_locally_keep_a_large_limit_within_the_stated_error() {
    const LIMIT: usize = 320;
    let limit = LIMIT.to_string();
    let r = Replicas::start(&[("RATE_LIMIT_USER_PER_MIN", &limit)]).await;
    let client = r.cluster.client.clone();
    let token = sign_hs256(&claims_for(Uuid::now_v7()), JWT_SECRET);
    let started = Instant::now();
    let mut allowed = 0;
    let mut first_refusal = None;
    for i in 0..LIMIT + 60 {
        let a = send(
            client.clone(),
            Method::GET,
            r.rr(i).url("/v1/me"),
            Some(token.clone()),
            None,
        )
        .await;
        match a.status {
            200 => allowed += 1,
            429 => {
                first_refusal.get_or_insert(i);
                assert_eq!(a.body["code"], "rate_limited", "{}", a.body);
            }
            other => panic!("request #{i}: {other} {}", a.body),
        }
    }
    // One request refills every 60 s / LIMIT while these are sent.
    let refilled = (started.elapsed().as_millis() / (60_000 / LIMIT as u128)) as usize + 1;
    let error = (REPLICAS - 1) * (LIMIT / 32);
    eprintln!(
        "replicas_admitting_locally: {allowed} of {} allowed (limit {LIMIT}, first refusal \
         at #{first_refusal:?}, {refilled} refilled, stated error {error})",
        LIMIT + 60
    );
    assert!(
        allowed >= LIMIT,
        "only {allowed} of the budget of {LIMIT} were admitted"
    );
    assert!(
        allowed <= LIMIT + refilled + error,
        "{allowed} admitted: more than {LIMIT} + {refilled} refilled + {error} (the stated error)"
    );
    assert!(
        first_refusal.is_some(),
        "nothing was refused past the budget"
    );
}

// ---------------------------------------------------------------------------------------
// 2. Each job once
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn each_job_runs_once_across_replicas() {
    const SLEEPS: usize = 24;
    const MESSAGES: usize = 9;
    let t0 = Instant::now();
    let mut r = Replicas::start(&[]).await;
    let (org, connection, _) = r.connected_org().await;
    let c = &r.cluster;

    let mut queued = HashSet::new();
    for i in 0..SLEEPS {
        queued.insert(c.enqueue_sleep(r.rr(i), org, 100).await);
    }
    // Messages have an effect outside the service, so a second run would show as a
    // second note at Kommo.
    let mut sent = HashSet::new();
    for i in 0..MESSAGES {
        let text = format!("message {i} of {MESSAGES}");
        let (status, body) = c
            .post(
                r.rr(i),
                &format!("/v1/orgs/{org}/kommo/messages"),
                json!({"connection_id": connection, "deal_id": 4200 + i, "channel": "chat",
                       "message": {"body": text}}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        queued.insert(body["id"].as_str().expect("id").parse().expect("uuid"));
        sent.insert(text);
    }

    // The connection's first sync, then ours.
    let jobs = r.wait_jobs(org, 1 + SLEEPS + MESSAGES).await;
    assert_eq!(jobs.len(), 1 + SLEEPS + MESSAGES, "{jobs:#?}");
    assert!(queued.iter().all(|id| jobs.iter().any(|j| j.id == *id)));
    r.assert_each_ran_once(&jobs);

    let notes: Vec<String> = r
        .fake
        .notes(DOMAIN)
        .iter()
        .map(|n| {
            // Each note ends with the marker of its job (`\n\n[ref:<job id>]`).
            let text = n["params"]["text"].as_str().unwrap_or_default();
            text.split_once("\n\n[ref:")
                .map_or(text, |(body, _)| body)
                .to_string()
        })
        .collect();
    assert_eq!(notes.len(), MESSAGES, "one note per message: {notes:?}");
    assert_eq!(notes.iter().cloned().collect::<HashSet<_>>(), sent);

    let mut per_replica = vec![0; REPLICAS];
    for job in &jobs {
        if let Some(i) = job.worker.as_deref().and_then(|w| r.replica_of(w)) {
            per_replica[i] += 1;
        }
    }
    // With two workers each and 100 ms jobs, one replica alone would leave the others
    // idle for seconds while they poll every 100 ms: the work is shared.
    assert!(
        per_replica.iter().filter(|&&n| n > 0).count() >= 2,
        "only one replica ran jobs: {per_replica:?}"
    );
    r.assert_all_alive();
    eprintln!(
        "each_job_runs_once_across_replicas: {} jobs, each started once; per replica \
         {per_replica:?}; {} notes at Kommo; {:?}",
        jobs.len(),
        notes.len(),
        t0.elapsed()
    );
}

// ---------------------------------------------------------------------------------------
// 3. The scheduler
// ---------------------------------------------------------------------------------------

/// One replica's attempt at a scheduler tick, from its log.
#[derive(Debug, Clone)]
struct TickAttempt {
    replica: usize,
    won: bool,
    name: String,
}

fn tick_attempts(r: &Replicas) -> BTreeMap<u64, Vec<TickAttempt>> {
    let mut ticks: BTreeMap<u64, Vec<TickAttempt>> = BTreeMap::new();
    for (replica, line) in r.logs() {
        if line["message"] != "scheduler tick" || line["task"] != "housekeeping" {
            continue;
        }
        let (Some(tick), Some(won), Some(name)) = (
            line["tick"].as_u64(),
            line["won"].as_bool(),
            line["replica"].as_str(),
        ) else {
            panic!("a scheduler tick line without tick, won and replica: {line}");
        };
        ticks.entry(tick).or_default().push(TickAttempt {
            replica,
            won,
            name: name.to_string(),
        });
    }
    ticks
}

/// Ticks all replicas competed for.
fn contested(ticks: &BTreeMap<u64, Vec<TickAttempt>>) -> usize {
    ticks
        .values()
        .filter(|a| a.iter().map(|a| a.replica).collect::<HashSet<_>>().len() == REPLICAS)
        .count()
}

#[tokio::test]
async fn the_scheduler_ticks_on_exactly_one_replica() {
    const CONTESTED: usize = 6;
    let t0 = Instant::now();
    let mut r = Replicas::start(&[("RUST_LOG", "info,agents_api::jobs::scheduler=debug")]).await;
    let (org, connection, _) = r.connected_org().await;

    // Effect: a token due for refresh is refreshed by one job, although every replica's
    // scheduler looks for due tokens each second.
    let mut admin = r.cluster.admin().await;
    sqlx::query(
        "UPDATE crm_connections SET token_expires_at = now() + interval '1 hour' WHERE id = $1",
    )
    .bind(connection)
    .execute(&mut admin)
    .await
    .expect("make the token due");
    let refreshed = Instant::now();
    loop {
        let jobs = r.wait_jobs(org, 1).await;
        if jobs.iter().any(|j| j.job_type == "kommo:token-refresh") {
            break;
        }
        assert!(
            refreshed.elapsed() < JOB_PATIENCE,
            "no token refresh was scheduled: {jobs:?}"
        );
        tokio::time::sleep(POLL).await;
    }
    // Enough ticks after the refresh for a second replica to have queued another one.
    let seen = tick_attempts(&r).keys().last().copied().unwrap_or(0);
    let started = Instant::now();
    loop {
        let ticks = tick_attempts(&r);
        let later = ticks.range(seen + 1..).count();
        if later >= 3 && contested(&ticks) >= CONTESTED {
            break;
        }
        assert!(
            started.elapsed() < JOB_PATIENCE,
            "the replicas did not tick ({later} ticks since the refresh, {} contested)\n{}",
            contested(&ticks),
            r.output()
        );
        tokio::time::sleep(POLL).await;
    }
    let jobs = r.wait_jobs(org, 2).await;
    let refreshes: Vec<&Job> = jobs
        .iter()
        .filter(|j| j.job_type == "kommo:token-refresh")
        .collect();
    assert_eq!(refreshes.len(), 1, "{jobs:#?}");
    r.assert_each_ran_once(&jobs);
    let attempts = r.fake.refresh_attempts();
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert!(attempts[0].accepted, "{attempts:?}");

    // The replica that won the most ticks stops: the others go on ticking, one per tick.
    let ticks = tick_attempts(&r);
    let mut wins = [0; REPLICAS];
    for attempt in ticks.values().flatten().filter(|a| a.won) {
        wins[attempt.replica] += 1;
    }
    let stopped = (0..REPLICAS).max_by_key(|&i| wins[i]).unwrap_or(0);
    r.servers[stopped].process.terminate();
    let status = r.servers[stopped].process.wait_exit().await;
    assert!(status.success(), "{status}");
    let last = tick_attempts(&r).keys().last().copied().unwrap_or(0);
    let started = Instant::now();
    loop {
        let after = tick_attempts(&r)
            .range(last + 1..)
            .filter(|(_, a)| a.iter().map(|a| a.replica).collect::<HashSet<_>>().len() == 2)
            .count();
        if after >= 3 {
            break;
        }
        assert!(
            started.elapsed() < JOB_PATIENCE,
            "the remaining replicas did not tick\n{}",
            r.output()
        );
        tokio::time::sleep(POLL).await;
    }
    for (tick, attempts) in tick_attempts(&r).range(last + 1..) {
        assert!(
            attempts.iter().all(|a| a.replica != stopped),
            "tick {tick}: the stopped replica still ticks: {attempts:?}"
        );
    }

    // Every tick any replica tried was won by exactly one, whose name the tick's lock
    // holds, and that name is the winning process's.
    let ticks = tick_attempts(&r);
    let mut redis = redis::Client::open(redis_url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis");
    let mut wins = [0; REPLICAS];
    let mut locks_checked = 0;
    for (tick, attempts) in &ticks {
        let winners: Vec<&TickAttempt> = attempts.iter().filter(|a| a.won).collect();
        assert_eq!(
            winners.len(),
            1,
            "tick {tick} was won by {} replicas: {attempts:?}",
            winners.len()
        );
        let winner = winners[0];
        wins[winner.replica] += 1;
        let pid = r.servers[winner.replica].process.pid();
        assert!(
            winner.name.contains(&format!("-{pid}-")),
            "tick {tick}: the winner's name {} is not process {pid}'s",
            winner.name
        );
        let key = format!("{}scheduler:housekeeping:{tick}", r.cluster.prefix);
        let lock: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut redis)
            .await
            .expect("GET the tick's lock");
        // Locks live a minute; older ticks may be gone.
        if let Some(lock) = lock {
            assert_eq!(lock, winner.name, "tick {tick}");
            locks_checked += 1;
        }
    }
    assert!(locks_checked >= CONTESTED, "{locks_checked} locks found");
    eprintln!(
        "the_scheduler_ticks_on_exactly_one_replica: {} ticks ({} contested by all \
         {REPLICAS}), each won once; wins per replica {wins:?} (replica {stopped} stopped \
         midway); 1 token refresh; {:?}",
        ticks.len(),
        contested(&ticks),
        t0.elapsed()
    );
}

// ---------------------------------------------------------------------------------------
// 4. Token refreshes
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn concurrent_token_refreshes_from_all_replicas_never_send_a_stale_refresh_token() {
    const PER_REPLICA: usize = 5;
    let t0 = Instant::now();
    let mut r = Replicas::start(&[]).await;
    let (org, connection, _) = r.connected_org().await;
    let base = format!("/v1/orgs/{org}/crm/connections/{connection}");
    // The access token is refused from now on: every sync job starts with a 401 and a
    // refresh of its own, on whichever replica runs it, racing the explicit refreshes.
    r.fake.expire_access_token(DOMAIN);

    let gate = Arc::new(Barrier::new(REPLICAS * (PER_REPLICA + 1)));
    let mut calls = JoinSet::new();
    for i in 0..REPLICAS * (PER_REPLICA + 1) {
        let server = r.rr(i);
        let (path, body) = if i < REPLICAS * PER_REPLICA {
            (format!("{base}/token/refresh"), json!({}))
        } else {
            (format!("{base}/sync"), json!({"scope": "pipelines"}))
        };
        let (client, url, token, gate) = (
            r.cluster.client.clone(),
            server.url(&path),
            r.cluster.token(),
            gate.clone(),
        );
        calls.spawn(async move {
            gate.wait().await;
            (
                path,
                send(client, Method::POST, url, Some(token), Some(body)).await,
            )
        });
    }
    let answers = calls.join_all().await;
    let mut refreshes = 0;
    for (path, a) in &answers {
        if path.ends_with("/token/refresh") {
            assert_eq!(a.status, 200, "{path}: {}", a.body);
            assert!(a.body["token_expires_at"].is_string(), "{}", a.body);
            refreshes += 1;
        } else {
            assert_eq!(a.status, 202, "{path}: {}", a.body);
        }
    }
    let jobs = r.wait_jobs(org, 1 + REPLICAS).await;
    for job in &jobs {
        assert_eq!(job.status, "succeeded", "{job:?}\n{}", r.output());
    }

    let attempts = r.fake.refresh_attempts();
    assert_eq!(
        r.fake.stale_refresh_tokens_seen(),
        0,
        "a rotated refresh token reached Kommo: {attempts:#?}"
    );
    assert!(attempts.iter().all(|a| a.accepted), "{attempts:#?}");
    assert!(!attempts.is_empty());
    assert!(
        attempts.len() < refreshes,
        "{} refreshes at Kommo for {refreshes} requests: not coalesced",
        attempts.len()
    );
    let (status, conn) = r.cluster.get(r.rr(0), &base).await;
    assert_eq!(status, 200, "{conn}");
    assert_eq!(conn["status"], "connected", "{conn}");
    assert!(conn["last_error"].is_null(), "{conn}");

    // What is stored is Kommo's current pair: one more sync needs no refresh, and one
    // more refresh is accepted.
    let (status, body) = r
        .cluster
        .post(
            r.rr(1),
            &format!("{base}/sync"),
            json!({"scope": "pipelines"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let jobs = r.wait_jobs(org, 2 + REPLICAS).await;
    assert!(jobs.iter().all(|j| j.status == "succeeded"), "{jobs:#?}");
    let (access, _) = r.fake.current_tokens(DOMAIN);
    let calls = r.fake.requests_to(DOMAIN, "/api/v4/leads/pipelines");
    assert_eq!(
        calls.last().and_then(|c| c.authorization.clone()),
        Some(format!("Bearer {access}"))
    );
    assert_eq!(r.fake.refresh_attempts().len(), attempts.len());
    let (status, body) = r
        .cluster
        .post(r.rr(2), &format!("{base}/token/refresh"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let after = r.fake.refresh_attempts();
    assert_eq!(after.len(), attempts.len() + 1, "{after:#?}");
    assert!(after.iter().all(|a| a.accepted && !a.stale), "{after:#?}");
    r.assert_all_alive();
    eprintln!(
        "concurrent_token_refreshes_from_all_replicas: {refreshes} refresh requests and \
         {REPLICAS} syncs with a refused access token → {} refreshes at Kommo, 0 stale; {:?}",
        attempts.len(),
        t0.elapsed()
    );
}

// ---------------------------------------------------------------------------------------
// 5. Webhooks
// ---------------------------------------------------------------------------------------

/// A `leads[add]` body as Kommo posts it.
fn lead_added(lead_id: i64) -> String {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in [
        ("leads[add][0][id]", lead_id.to_string()),
        ("leads[add][0][name]", format!("Deal {lead_id}")),
        ("leads[add][0][status_id]", "36341584".into()),
        ("leads[add][0][pipeline_id]", "3104455".into()),
        ("leads[add][0][account_id]", ACCOUNT_ID.to_string()),
        ("account[subdomain]", "acme".into()),
        ("account[id]", ACCOUNT_ID.to_string()),
    ] {
        form.append_pair(k, &v);
    }
    form.finish()
}

#[tokio::test]
async fn a_webhook_posted_to_two_replicas_at_once_is_stored_and_processed_once() {
    const ROUNDS: usize = 6;
    let t0 = Instant::now();
    let mut r = Replicas::start(&[]).await;
    let (org, _, path) = r.connected_org().await;

    for round in 0..ROUNDS {
        let body = lead_added(25_399_000 + round as i64);
        let gate = Arc::new(Barrier::new(2));
        let mut posts = JoinSet::new();
        for server in [r.rr(round), r.rr(round + 1)] {
            let request = r
                .cluster
                .client
                .post(server.url(&path))
                .header("content-type", "application/x-www-form-urlencoded")
                .header("user-agent", "amoCRM-Webhooks/3.0")
                .body(body.clone());
            let gate = gate.clone();
            posts.spawn(async move {
                gate.wait().await;
                let response = request.send().await.expect("webhook POST");
                let status = response.status().as_u16();
                (
                    status,
                    response.json::<Value>().await.unwrap_or(Value::Null),
                )
            });
        }
        let mut answers: Vec<(u16, String)> = posts
            .join_all()
            .await
            .into_iter()
            .map(|(s, b)| (s, b["status"].as_str().unwrap_or_default().to_string()))
            .collect();
        answers.sort();
        assert_eq!(
            answers,
            [(200, "accepted".into()), (200, "duplicate".into())],
            "round {round}"
        );
    }

    let jobs = r.wait_jobs(org, 1 + ROUNDS).await;
    let hooks: Vec<Job> = jobs
        .iter()
        .filter(|j| j.job_type == "kommo:webhook")
        .cloned()
        .collect();
    assert_eq!(hooks.len(), ROUNDS, "{jobs:#?}");
    r.assert_each_ran_once(&jobs);
    let mut admin = r.cluster.admin().await;
    let (deliveries, events, leads): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE kind = 'delivery'),
                count(*) FILTER (WHERE kind <> 'delivery'),
                count(DISTINCT entity_id) FILTER (WHERE kind <> 'delivery')
         FROM webhook_events WHERE org_id = $1",
    )
    .bind(org)
    .fetch_one(&mut admin)
    .await
    .expect("count webhook rows");
    assert_eq!(
        (deliveries, events, leads),
        (ROUNDS as i64, ROUNDS as i64, ROUNDS as i64),
        "one delivery and one event per body"
    );
    r.assert_all_alive();
    eprintln!(
        "a_webhook_posted_to_two_replicas_at_once: {ROUNDS} bodies raced to two replicas → \
         {deliveries} deliveries, {} jobs, {events} events; {:?}",
        hooks.len(),
        t0.elapsed()
    );
}

// ---------------------------------------------------------------------------------------
// 6. Migrations at start-up
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn three_serve_migrate_processes_on_an_empty_database_all_come_up() {
    let t0 = Instant::now();
    // The login role lives in the cluster, not in the database; the migrations create
    // the group it belongs to, which it must already be in.
    ensure_runtime_role().await;
    let db = empty_database().await;
    let cluster = Cluster::on(db.clone());
    let mut servers: Vec<Server> = (0..REPLICAS)
        .map(|_| cluster.spawn(&[], &["serve", "--migrate"]))
        .collect();
    for server in &mut servers {
        server.wait_ready().await;
    }
    assert_migrations_applied_once(&db).await;
    assert_schema(&db).await;

    // They serve one database: what one creates, the others read.
    let org = cluster.create_org(&servers[0]).await;
    for server in &servers[1..] {
        let (status, body) = cluster.get(server, &format!("/v1/orgs/{org}")).await;
        assert_eq!(status, 200, "{body}");
    }
    for server in &mut servers {
        server.process.terminate();
        let status = server.process.wait_exit().await;
        assert!(status.success(), "{status}\n{}", server.process.output());
    }
    drop(servers);
    drop_database(&db).await;
    eprintln!(
        "three_serve_migrate_processes: all {REPLICAS} came up, each migration applied once; \
         {:?}",
        t0.elapsed()
    );
}
