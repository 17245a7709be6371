//! Several real `serve` processes sharing one database and one Redis key prefix: what the
//! job-process, replica and rolling-restart tests start. Each `Cluster` has its own
//! database and prefix, one user owning whatever orgs it creates, and short job timings
//! (a heartbeat of 1 s, so a row lease of 3 s). A process is killed when its `Server` is
//! dropped, so a failing test leaves none behind. Waits are generous polls.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::support::app::{
    JWT_SECRET, admin_url_for, claims_for, fresh_database, runtime_url_for, sign_hs256,
};
use crate::support::process::{Process, free_port, serve_env};

/// The longest a job may take to reach the state a test waits for.
pub const JOB_PATIENCE: Duration = Duration::from_secs(45);
pub const POLL: Duration = Duration::from_millis(100);

pub struct Cluster {
    pub db: String,
    pub prefix: String,
    pub user: Uuid,
    pub client: reqwest::Client,
    /// Set for every process of the cluster, on top of the defaults.
    pub env: HashMap<String, String>,
}

/// A `serve` process, where it listens and the environment it was started with (so it
/// can be started again on the same port).
pub struct Server {
    pub process: Process,
    pub port: u16,
    pub base: String,
    env: HashMap<String, String>,
}

/// A job as the `jobs` table holds it (read as the admin, whatever process is alive).
#[derive(Debug)]
pub struct JobRow {
    pub status: String,
    pub attempts: i32,
    pub worker: Option<String>,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Waits until `/health/ready` answers 200 (panics with the output if it exits).
    pub async fn wait_ready(&mut self) {
        let url = self.url("/health/ready");
        self.process.wait_for_200(&url).await;
    }

    /// Starts the same server again, on the same port, once the previous process has
    /// exited; does not wait for it to be ready.
    pub fn respawn(&mut self) {
        assert!(
            self.process.try_wait().is_some(),
            "respawn while the previous process still runs"
        );
        self.process = Process::spawn(&self.env, &["serve"]);
    }
}

impl Cluster {
    /// A cluster on a fresh, migrated database.
    pub async fn new() -> Cluster {
        Cluster::on(fresh_database().await)
    }

    /// A cluster on the database `db`, whatever state it is in.
    pub fn on(db: String) -> Cluster {
        Cluster {
            db,
            prefix: format!("test:{}:", Uuid::new_v4().simple()),
            user: Uuid::now_v7(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
            env: HashMap::new(),
        }
    }

    /// The environment of a process on `port`: the runtime role, the cluster's prefix,
    /// short job timings, the cluster's `env`, then `extra`.
    pub fn env_for(&self, port: u16, extra: &[(&str, &str)]) -> HashMap<String, String> {
        let mut env = serve_env(&self.db, runtime_url_for(&self.db), port);
        for (k, v) in [
            ("REDIS_KEY_PREFIX", self.prefix.as_str()),
            ("JOB_HEARTBEAT_SECS", "1"),
            ("JOB_RETRY_BASE_MS", "100"),
            ("JOB_CONCURRENCY", "2"),
            ("RUST_LOG", "info"),
        ] {
            env.insert(k.into(), v.into());
        }
        env.extend(self.env.clone());
        for (k, v) in extra {
            env.insert((*k).into(), (*v).into());
        }
        env
    }

    /// Starts `serve` with `extra` on top of the cluster's environment, without waiting.
    pub fn spawn(&self, extra: &[(&str, &str)], args: &[&str]) -> Server {
        let port = free_port();
        let env = self.env_for(port, extra);
        Server {
            process: Process::spawn(&env, args),
            port,
            base: format!("http://127.0.0.1:{port}"),
            env,
        }
    }

    /// Starts `serve` and waits until it is ready.
    pub async fn start(&self, extra: &[(&str, &str)]) -> Server {
        let mut server = self.spawn(extra, &["serve"]);
        server.wait_ready().await;
        server
    }

    pub fn token(&self) -> String {
        sign_hs256(&claims_for(self.user), JWT_SECRET)
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
        server: &Server,
    ) -> (u16, Value) {
        let response = request
            .bearer_auth(self.token())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}\n{}", server.process.output()));
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, server: &Server, path: &str, body: Value) -> (u16, Value) {
        let request = self.client.post(server.url(path)).json(&body);
        self.send(request, &format!("POST {path}"), server).await
    }

    pub async fn put(&self, server: &Server, path: &str, body: Value) -> (u16, Value) {
        let request = self.client.put(server.url(path)).json(&body);
        self.send(request, &format!("PUT {path}"), server).await
    }

    pub async fn get(&self, server: &Server, path: &str) -> (u16, Value) {
        let request = self.client.get(server.url(path));
        self.send(request, &format!("GET {path}"), server).await
    }

    /// A new org of the cluster's user, created through `server`.
    pub async fn create_org(&self, server: &Server) -> Uuid {
        let (status, body) = self
            .post(server, "/v1/orgs", json!({"name": "Job Processes"}))
            .await;
        assert_eq!(status, 201, "POST /v1/orgs: {body}");
        body["id"].as_str().expect("org id").parse().expect("uuid")
    }

    /// Queues a `test:sleep` of `millis` through `server`; returns the job's id.
    pub async fn enqueue_sleep(&self, server: &Server, org: Uuid, millis: u64) -> Uuid {
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

    pub async fn get_job(&self, server: &Server, org: Uuid, job: Uuid) -> Value {
        let path = format!("/v1/orgs/{org}/jobs/{job}");
        let (status, body) = self.get(server, &path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// Polls the job through `server` until its status is `wanted` (up to
    /// `JOB_PATIENCE`); panics naming the last state seen and the server's output if it
    /// never gets there or reaches another final state first.
    pub async fn wait_status(
        &self,
        server: &mut Server,
        org: Uuid,
        job: Uuid,
        wanted: &str,
    ) -> Value {
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

    pub async fn admin(&self) -> PgConnection {
        PgConnection::connect(&admin_url_for(&self.db))
            .await
            .expect("admin connection")
    }

    /// The job's row, read directly (RLS does not apply to the admin).
    pub async fn row(&self, job: Uuid) -> JobRow {
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
