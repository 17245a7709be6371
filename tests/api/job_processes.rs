//! Jobs across real `serve` processes: what happens to a job when its process is asked to
//! stop (SIGTERM, within and past `SHUTDOWN_GRACE_SECS`) or dies (`kill -9`), and that two
//! processes sharing one database and one Redis prefix never run a job twice.
//!
//! Each test has its own database and Redis key prefix, shared by the processes it starts
//! (one after the other, or side by side), with short job timings: a heartbeat of 1 s, so
//! a row lease of 3 s. A process is killed when its `Process` is dropped, so a failing
//! test leaves none behind. Waits are generous polls; nothing asserts how fast.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::helpers::{
    JWT_SECRET, admin_url_for, claims_for, fresh_database, runtime_url_for, sign_hs256,
};
use crate::process::{Process, free_port, serve_env};

/// The longest a job may take to reach the state a test waits for.
const JOB_PATIENCE: Duration = Duration::from_secs(45);
const POLL: Duration = Duration::from_millis(100);

/// The processes of one test: one database, one Redis prefix, one user owning one org.
struct Cluster {
    db: String,
    prefix: String,
    user: Uuid,
    client: reqwest::Client,
}

/// A `serve` process and where it listens.
struct Server {
    process: Process,
    base: String,
}

/// A job as the `jobs` table holds it (read as the admin, whatever process is alive).
#[derive(Debug)]
struct JobRow {
    status: String,
    attempts: i32,
    worker: Option<String>,
}

impl Cluster {
    async fn new() -> Cluster {
        Cluster {
            db: fresh_database().await,
            prefix: format!("test:{}:", Uuid::new_v4().simple()),
            user: Uuid::now_v7(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
        }
    }

    /// Starts `serve` with the runtime role, short job timings and `extra` on top, and
    /// waits until it is ready.
    async fn start(&self, extra: &[(&str, &str)]) -> Server {
        let port = free_port();
        let mut env: HashMap<String, String> = serve_env(&self.db, runtime_url_for(&self.db), port);
        for (k, v) in [
            ("REDIS_KEY_PREFIX", self.prefix.as_str()),
            ("JOB_HEARTBEAT_SECS", "1"),
            ("JOB_RETRY_BASE_MS", "100"),
            ("JOB_CONCURRENCY", "2"),
            ("RUST_LOG", "info"),
        ]
        .into_iter()
        .chain(extra.iter().copied())
        {
            env.insert(k.into(), v.into());
        }
        let mut process = Process::spawn(&env, &["serve"]);
        let base = format!("http://127.0.0.1:{port}");
        process.wait_for_200(&format!("{base}/health/ready")).await;
        Server { process, base }
    }

    fn token(&self) -> String {
        sign_hs256(&claims_for(self.user), JWT_SECRET)
    }

    async fn post(&self, server: &Server, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}{path}", server.base))
            .bearer_auth(self.token())
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}\n{}", server.process.output()));
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A new org of the cluster's user, created through `server`.
    async fn create_org(&self, server: &Server) -> Uuid {
        let (status, body) = self
            .post(server, "/v1/orgs", json!({"name": "Job Processes"}))
            .await;
        assert_eq!(status, 201, "POST /v1/orgs: {body}");
        body["id"].as_str().expect("org id").parse().expect("uuid")
    }

    /// Queues a `test:sleep` of `millis` through `server`; returns the job's id.
    async fn enqueue_sleep(&self, server: &Server, org: Uuid, millis: u64) -> Uuid {
        let (status, body) = self
            .post(
                server,
                &format!("/v1/orgs/{org}/jobs"),
                json!({"type": "test:sleep", "millis": millis}),
            )
            .await;
        assert_eq!(status, 202, "POST /v1/orgs/{org}/jobs: {body}");
        assert_eq!(body["status"], "queued", "{body}");
        body["id"].as_str().expect("job id").parse().expect("uuid")
    }

    async fn get_job(&self, server: &Server, org: Uuid, job: Uuid) -> Value {
        let path = format!("/v1/orgs/{org}/jobs/{job}");
        let response = self
            .client
            .get(format!("{}{path}", server.base))
            .bearer_auth(self.token())
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", server.process.output()));
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// Polls the job through `server` until its status is `wanted` (up to
    /// `JOB_PATIENCE`); panics naming the last state seen and the servers' output if it
    /// never gets there or reaches another final state first.
    async fn wait_status(&self, server: &mut Server, org: Uuid, job: Uuid, wanted: &str) -> Value {
        let started = Instant::now();
        loop {
            if let Some(status) = server.process.try_wait() {
                panic!(
                    "the server exited ({status}) while job {job} was awaited as `{wanted}`\n{}",
                    server.process.output()
                );
            }
            let body = self.get_job(server, org, job).await;
            let status = body["status"].as_str().unwrap_or_default();
            if status == wanted {
                return body;
            }
            let finished = ["succeeded", "failed", "cancelled"].contains(&status);
            if finished || started.elapsed() > JOB_PATIENCE {
                panic!(
                    "job {job} is `{status}`, not `{wanted}` (after {:?}): {body}\n{}",
                    started.elapsed(),
                    server.process.output()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn admin(&self) -> PgConnection {
        PgConnection::connect(&admin_url_for(&self.db))
            .await
            .expect("admin connection")
    }

    /// The job's row, read directly (RLS does not apply to the admin).
    async fn row(&self, job: Uuid) -> JobRow {
        let (status, attempts, worker): (String, i32, Option<String>) =
            sqlx::query_as("SELECT status, attempts, worker FROM jobs WHERE id = $1")
                .bind(job)
                .fetch_one(&mut self.admin().await)
                .await
                .expect("read the job row");
        JobRow {
            status,
            attempts,
            worker,
        }
    }
}

#[track_caller]
fn assert_exit_0(process: &Process, status: std::process::ExitStatus, what: &str) {
    assert_eq!(
        status.code(),
        Some(0),
        "{what}: serve did not exit 0 ({status})\n{}",
        process.output()
    );
}

#[tokio::test]
async fn sigterm_lets_a_running_job_finish() {
    let t0 = Instant::now();
    let cluster = Cluster::new().await;
    let mut server = cluster
        .start(&[("SHUTDOWN_GRACE_SECS", "10"), ("JOB_CONCURRENCY", "1")])
        .await;
    let org = cluster.create_org(&server).await;

    let first = cluster.enqueue_sleep(&server, org, 2000).await;
    cluster
        .wait_status(&mut server, org, first, "running")
        .await;
    // With one worker busy, the second job waits; SIGTERM comes right after it is queued.
    let second = cluster.enqueue_sleep(&server, org, 200).await;
    server.process.terminate();
    let signalled = Instant::now();
    let status = server.process.wait_exit().await;
    assert_exit_0(&server.process, status, "SIGTERM with a job running");
    let stopped_after = signalled.elapsed();

    let row = cluster.row(first).await;
    assert_eq!(
        (row.status.as_str(), row.attempts),
        ("succeeded", 1),
        "the running job did not finish within the grace period: {row:?}\n{}",
        server.process.output()
    );
    let row = cluster.row(second).await;
    assert!(
        ["succeeded", "queued"].contains(&row.status.as_str()),
        "the job queued before SIGTERM is neither done nor still queued: {row:?}\n{}",
        server.process.output()
    );
    let second_before = row.status.clone();
    drop(server);

    // Whatever the stopped process left queued, the next one runs.
    let mut next = cluster.start(&[("JOB_CONCURRENCY", "1")]).await;
    let job = cluster
        .wait_status(&mut next, org, second, "succeeded")
        .await;
    assert_eq!(job["attempts"], 1, "{job}");
    let job = cluster.get_job(&next, org, first).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 1, "{job}");
    println!(
        "sigterm_lets_a_running_job_finish: exit {stopped_after:?} after SIGTERM; second job \
         `{second_before}` at exit; total {:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn sigterm_past_the_grace_period_returns_the_job() {
    let t0 = Instant::now();
    let cluster = Cluster::new().await;
    let mut server = cluster.start(&[("SHUTDOWN_GRACE_SECS", "1")]).await;
    let org = cluster.create_org(&server).await;

    let job = cluster.enqueue_sleep(&server, org, 6000).await;
    cluster.wait_status(&mut server, org, job, "running").await;
    let abandoned_by = cluster.row(job).await.worker;
    server.process.terminate();
    let signalled = Instant::now();
    let status = server.process.wait_exit().await;
    assert_exit_0(&server.process, status, "SIGTERM past the grace period");
    let stopped_after = signalled.elapsed();

    // The process did not wait for the job: it handed it back to the queue, unfinished,
    // neither lost nor failed.
    let row = cluster.row(job).await;
    assert!(
        row.status == "queued" && row.worker.is_none() && row.attempts == 1,
        "after SIGTERM past the grace period (exit after {stopped_after:?}) the job should \
         be abandoned or handed back, after one attempt: {row:?}\n{}",
        server.process.output()
    );
    let left_as = row.status.clone();
    drop(server);

    // Another process takes it over at once and runs it to the end.
    let mut next = cluster.start(&[]).await;
    let done = cluster.wait_status(&mut next, org, job, "succeeded").await;
    assert_eq!(done["attempts"], 2, "{done}");
    assert_eq!(done["result"]["attempt"], 2, "{done}");
    let row = cluster.row(job).await;
    assert!(
        row.worker.is_some() && row.worker != abandoned_by,
        "attempt 2 ran under {:?}, attempt 1 under {abandoned_by:?}",
        row.worker
    );
    println!(
        "sigterm_past_the_grace_period_returns_the_job: exit {stopped_after:?} after SIGTERM, \
         job left `{left_as}`; total {:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn sigkill_job_is_picked_up_after_restart() {
    let t0 = Instant::now();
    let cluster = Cluster::new().await;
    let mut server = cluster.start(&[]).await;
    let org = cluster.create_org(&server).await;

    let job = cluster.enqueue_sleep(&server, org, 3000).await;
    cluster.wait_status(&mut server, org, job, "running").await;
    let killed_worker = cluster.row(job).await.worker;
    server.process.kill9();
    let status = server.process.wait_exit().await;
    assert!(!status.success(), "kill -9 ended the process with {status}");
    drop(server);

    let restarted = Instant::now();
    let mut next = cluster.start(&[]).await;
    let done = cluster.wait_status(&mut next, org, job, "succeeded").await;
    assert_eq!(done["attempts"], 2, "{done}");
    assert_eq!(done["result"]["attempt"], 2, "{done}");
    let row = cluster.row(job).await;
    assert!(
        row.worker.is_some() && row.worker != killed_worker,
        "attempt 2 ran under {:?}, the killed one was {killed_worker:?}",
        row.worker
    );
    println!(
        "sigkill_job_is_picked_up_after_restart: done {:?} after the restart; total {:?}",
        restarted.elapsed(),
        t0.elapsed()
    );
}

#[tokio::test]
async fn no_job_runs_twice_at_the_same_time() {
    let t0 = Instant::now();
    let cluster = Cluster::new().await;
    let mut servers = [cluster.start(&[]).await, cluster.start(&[]).await];
    let org = cluster.create_org(&servers[0]).await;

    let mut jobs = Vec::new();
    for i in 0..20 {
        jobs.push(cluster.enqueue_sleep(&servers[i % 2], org, 200).await);
    }
    for (i, job) in jobs.iter().enumerate() {
        let done = cluster
            .wait_status(&mut servers[i % 2], org, *job, "succeeded")
            .await;
        // One attempt: the job was claimed once, so it never ran twice, let alone at once.
        assert_eq!(done["attempts"], 1, "job #{i}: {done}");
    }

    let mut admin = cluster.admin().await;
    let (total, distinct_workers, without_worker): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT worker), count(*) FILTER (WHERE worker IS NULL)
         FROM jobs WHERE id = ANY($1)",
    )
    .bind(&jobs)
    .fetch_one(&mut admin)
    .await
    .expect("count workers");
    assert_eq!(total, 20);
    assert_eq!(without_worker, 0, "every finished job names its worker");
    println!(
        "no_job_runs_twice_at_the_same_time: {distinct_workers} distinct worker(s) ran the 20 jobs"
    );

    // No worker ran more jobs at once than JOB_CONCURRENCY (2).
    let runs: Vec<(String, DateTime<Utc>, DateTime<Utc>)> =
        sqlx::query_as("SELECT worker, started_at, finished_at FROM jobs WHERE id = ANY($1)")
            .bind(&jobs)
            .fetch_all(&mut admin)
            .await
            .expect("read the runs");
    for (worker, started, _) in &runs {
        let overlapping = runs
            .iter()
            .filter(|(w, s, f)| w == worker && s <= started && started < f)
            .count();
        assert!(
            overlapping <= 2,
            "{overlapping} jobs ran at once under {worker} (JOB_CONCURRENCY=2): {runs:?}"
        );
    }
    for server in &mut servers {
        assert!(
            server.process.try_wait().is_none(),
            "a server died\n{}",
            server.process.output()
        );
    }
    println!(
        "no_job_runs_twice_at_the_same_time: total {:?}",
        t0.elapsed()
    );
}
