//! A rolling restart under load (issue 9, part 3): three `serve` replicas behind a small
//! round-robin TCP proxy, a steady stream of authenticated reads and writes through it,
//! and each replica in turn stopped with SIGTERM and started again on its port. No
//! request may fail and no job may be lost.
//!
//! The proxy behaves like the load balancer ops put in front of the replicas: it probes
//! `/health/ready` every 200 ms (a readiness probe) and sends new connections only to
//! ready replicas, and it tries the next replica when a connect is refused (nothing was
//! sent yet). It never retries a request that reached a replica. A replica that gets
//! SIGTERM answers 503 on readiness for `SHUTDOWN_DRAIN_DELAY_SECS` while still serving,
//! which is how the proxy learns to leave it before its listener closes.
//!
//! The CI form restarts each replica once (a few seconds each); `ROLLING_RESTART_SECS`
//! keeps restarting them, round after round, for at least that many seconds of load.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::cluster::{Cluster, JOB_PATIENCE, POLL, Server};

const REPLICAS: usize = 3;
const PROBE_EVERY: Duration = Duration::from_millis(200);
/// Longer than a probe interval plus a slow probe (1 s timeout): by the time the listener
/// closes, the proxy has seen the 503.
const DRAIN_DELAY_SECS: &str = "2";
const LOAD_WORKERS: usize = 4;
/// Between two requests of one load worker: a steady stream that leaves the two cores
/// room for three replicas, PostgreSQL and Redis.
const LOAD_PAUSE: Duration = Duration::from_millis(20);
const JOB_MILLIS: u64 = 50;

// ---------------------------------------------------------------------------------------
// The proxy
// ---------------------------------------------------------------------------------------

struct Backend {
    addr: SocketAddr,
    ready: AtomicBool,
    /// Client connections handed to this backend.
    connections: AtomicU64,
}

struct Proxy {
    addr: SocketAddr,
    backends: Arc<Vec<Backend>>,
    /// Connects a backend refused; the next backend was tried.
    refused: Arc<AtomicU64>,
    /// Client connections no backend took (closed: the request fails at the client).
    unrouted: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Proxy {
    async fn start(ports: &[u16]) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let backends: Arc<Vec<Backend>> = Arc::new(
            ports
                .iter()
                .map(|port| Backend {
                    addr: SocketAddr::from(([127, 0, 0, 1], *port)),
                    ready: AtomicBool::new(false),
                    connections: AtomicU64::new(0),
                })
                .collect(),
        );
        let proxy = Proxy {
            addr,
            backends,
            refused: Arc::default(),
            unrouted: Arc::default(),
            stop: CancellationToken::new(),
        };
        for i in 0..ports.len() {
            tokio::spawn(probe(proxy.backends.clone(), i, proxy.stop.clone()));
        }
        tokio::spawn(accept(
            listener,
            proxy.backends.clone(),
            proxy.refused.clone(),
            proxy.unrouted.clone(),
            proxy.stop.clone(),
        ));
        proxy
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn ready(&self, i: usize) -> bool {
        self.backends[i].ready.load(Ordering::SeqCst)
    }

    fn connections(&self) -> Vec<u64> {
        self.backends
            .iter()
            .map(|b| b.connections.load(Ordering::SeqCst))
            .collect()
    }
}

/// The readiness probe of backend `i`: a failed or slow probe counts as not ready.
async fn probe(backends: Arc<Vec<Backend>>, i: usize, stop: CancellationToken) {
    // A fresh connection per probe, so a pooled connection to a process that has since
    // exited never makes a restarted replica look down.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .pool_max_idle_per_host(0)
        .build()
        .expect("probe client");
    let backend = &backends[i];
    let url = format!("http://{}/health/ready", backend.addr);
    loop {
        let ready = matches!(client.get(&url).send().await, Ok(r) if r.status() == 200);
        backend.ready.store(ready, Ordering::SeqCst);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(PROBE_EVERY) => {}
        }
    }
}

async fn accept(
    listener: TcpListener,
    backends: Arc<Vec<Backend>>,
    refused: Arc<AtomicU64>,
    unrouted: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    let next = Arc::new(AtomicUsize::new(0));
    loop {
        let mut client = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => client,
                Err(_) => continue,
            },
        };
        let (backends, refused, unrouted, next) = (
            backends.clone(),
            refused.clone(),
            unrouted.clone(),
            next.clone(),
        );
        tokio::spawn(async move {
            let first = next.fetch_add(1, Ordering::SeqCst);
            match connect(&backends, first, &refused).await {
                Some(mut upstream) => {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
                None => {
                    unrouted.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
    }
}

/// Round robin from `first` over the ready backends (over all of them when none is
/// ready), skipping those that refuse the connection.
async fn connect(backends: &[Backend], first: usize, refused: &AtomicU64) -> Option<TcpStream> {
    let order: Vec<usize> = (0..backends.len())
        .map(|k| (first + k) % backends.len())
        .collect();
    let ready: Vec<usize> = order
        .iter()
        .copied()
        .filter(|&i| backends[i].ready.load(Ordering::SeqCst))
        .collect();
    let candidates = if ready.is_empty() { order } else { ready };
    for i in candidates {
        let backend = &backends[i];
        match tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(backend.addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                backend.connections.fetch_add(1, Ordering::SeqCst);
                return Some(stream);
            }
            _ => {
                refused.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    None
}

// ---------------------------------------------------------------------------------------
// The load
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Load {
    reads: AtomicU64,
    writes: AtomicU64,
    enqueues: AtomicU64,
    failed: AtomicU64,
    agents_created: AtomicU64,
    jobs: Mutex<Vec<Uuid>>,
    /// The first failures, for the assertion message.
    failures: Mutex<Vec<String>>,
}

impl Load {
    fn sent(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
            + self.writes.load(Ordering::SeqCst)
            + self.enqueues.load(Ordering::SeqCst)
    }

    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::SeqCst);
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() < 20 {
            failures.push(what);
        }
    }
}

/// One load worker: list agents, create an agent, queue a job, and again, until `stop`.
async fn load_worker(
    worker: usize,
    proxy: String,
    org: Uuid,
    token: String,
    load: Arc<Load>,
    stop: CancellationToken,
) {
    // A connection per request: a TCP proxy routes connections, so a kept-alive one
    // would stay pinned to a replica after the proxy stopped choosing it.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .pool_max_idle_per_host(0)
        .build()
        .expect("load client");
    let agents = format!("{proxy}/v1/orgs/{org}/agents");
    let jobs = format!("{proxy}/v1/orgs/{org}/jobs");
    let mut n: u64 = 0;
    while !stop.is_cancelled() {
        let (kind, request, expected) = match n % 3 {
            0 => (&load.reads, client.get(format!("{agents}?limit=20")), 200),
            1 => (
                &load.writes,
                client.post(&agents).json(&json!({
                    "name": format!("Agent {worker}-{n}"),
                    "model": "gpt-4o-mini",
                    "instructions": "Sell politely.",
                })),
                201,
            ),
            _ => (
                &load.enqueues,
                client
                    .post(&jobs)
                    .json(&json!({"type": "test:sleep", "millis": JOB_MILLIS})),
                202,
            ),
        };
        kind.fetch_add(1, Ordering::SeqCst);
        let what = ["GET agents", "POST agents", "POST jobs"][(n % 3) as usize];
        match request.bearer_auth(&token).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                if status != expected {
                    load.fail(format!("{what}: {status} {body}"));
                } else if n % 3 == 1 {
                    load.agents_created.fetch_add(1, Ordering::SeqCst);
                } else if n % 3 == 2 {
                    match body["id"].as_str().and_then(|id| id.parse().ok()) {
                        Some(id) => load.jobs.lock().unwrap_or_else(|e| e.into_inner()).push(id),
                        None => load.fail(format!("{what}: no job id in {body}")),
                    }
                }
            }
            Err(e) => load.fail(format!("{what}: {e:?}")),
        }
        n += 1;
        tokio::time::sleep(LOAD_PAUSE).await;
    }
}

/// Polls `check` until it holds, panicking with `what` after `JOB_PATIENCE`.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < JOB_PATIENCE,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

// ---------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn rolling_restart_under_load_fails_no_request_and_loses_no_job() {
    let min_load = Duration::from_secs(
        std::env::var("ROLLING_RESTART_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
    );
    let cluster = Cluster::new().await;
    let extra = [
        ("SHUTDOWN_DRAIN_DELAY_SECS", DRAIN_DELAY_SECS),
        ("SHUTDOWN_GRACE_SECS", "10"),
    ];
    let mut servers: Vec<Server> = (0..REPLICAS)
        .map(|_| cluster.spawn(&extra, &["serve"]))
        .collect();
    for server in &mut servers {
        server.wait_ready().await;
    }
    let org = cluster.create_org(&servers[0]).await;
    let proxy = Proxy::start(&servers.iter().map(|s| s.port).collect::<Vec<_>>()).await;
    until("the proxy to see every replica ready", || {
        (0..REPLICAS).all(|i| proxy.ready(i))
    })
    .await;

    let load = Arc::new(Load::default());
    let stop = CancellationToken::new();
    let mut workers = JoinSet::new();
    for worker in 0..LOAD_WORKERS {
        workers.spawn(load_worker(
            worker,
            proxy.url(""),
            org,
            cluster.token(),
            load.clone(),
            stop.clone(),
        ));
    }
    let started = Instant::now();
    let warm = proxy.connections();
    until("load to reach every replica", || {
        proxy
            .connections()
            .iter()
            .zip(&warm)
            .all(|(now, before)| now > before)
    })
    .await;

    let mut restarts = 0;
    let mut slowest_exit = Duration::ZERO;
    loop {
        for (i, server) in servers.iter_mut().enumerate() {
            server.process.terminate();
            let signalled = Instant::now();
            let status = server.process.wait_exit().await;
            assert!(
                status.success(),
                "replica {i} did not exit cleanly on SIGTERM ({status})\n{}",
                server.process.output()
            );
            slowest_exit = slowest_exit.max(signalled.elapsed());
            server.respawn();
            server.wait_ready().await;
            until("the proxy to route to the restarted replica", || {
                proxy.ready(i)
            })
            .await;
            // Traffic reaches the new process before the next replica goes down.
            let before = proxy.connections()[i];
            until("traffic to reach the restarted replica", || {
                proxy.connections()[i] >= before + 5
            })
            .await;
            restarts += 1;
        }
        if started.elapsed() >= min_load {
            break;
        }
    }
    stop.cancel();
    workers.join_all().await;
    let duration = started.elapsed();

    // Every job queued through the proxy ends succeeded.
    let jobs = load.jobs.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut admin = cluster.admin().await;
    let waited = Instant::now();
    let (succeeded, retried) = loop {
        let (succeeded, retried, unfinished): (i64, i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status = 'succeeded'),
                    count(*) FILTER (WHERE status = 'succeeded' AND attempts > 1),
                    count(*) FILTER (WHERE status IN ('queued', 'running'))
             FROM jobs WHERE id = ANY($1)",
        )
        .bind(&jobs)
        .fetch_one(&mut admin)
        .await
        .expect("count the jobs");
        if unfinished == 0 || waited.elapsed() > JOB_PATIENCE {
            break (succeeded, retried);
        }
        tokio::time::sleep(POLL).await;
    };
    let lost = jobs.len() as i64 - succeeded;
    let agents: i64 = sqlx::query_scalar("SELECT count(*) FROM agents WHERE org_id = $1")
        .bind(org)
        .fetch_one(&mut admin)
        .await
        .expect("count the agents");

    let failed = load.failed.load(Ordering::SeqCst);
    eprintln!(
        "rolling_restart: {restarts} restarts in {duration:?} (slowest SIGTERM→exit \
         {slowest_exit:?}); requests sent {} (reads {}, writes {}, enqueues {}), failed \
         {failed}; jobs enqueued {}, succeeded {succeeded} ({retried} after more than one \
         attempt), lost {lost}; agents created {} / stored {agents}; connections per replica \
         {:?}, refused connects skipped {}, unrouted {}",
        load.sent(),
        load.reads.load(Ordering::SeqCst),
        load.writes.load(Ordering::SeqCst),
        load.enqueues.load(Ordering::SeqCst),
        jobs.len(),
        load.agents_created.load(Ordering::SeqCst),
        proxy.connections(),
        proxy.refused.load(Ordering::SeqCst),
        proxy.unrouted.load(Ordering::SeqCst),
    );
    let outputs = || {
        servers
            .iter()
            .enumerate()
            .map(|(i, s)| format!("=== replica {i} ===\n{}", s.process.output()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        failed,
        0,
        "failed requests: {:#?}\n{}",
        load.failures.lock().unwrap_or_else(|e| e.into_inner()),
        outputs()
    );
    assert_eq!(lost, 0, "jobs not succeeded\n{}", outputs());
    assert_eq!(
        agents,
        load.agents_created.load(Ordering::SeqCst) as i64,
        "every created agent is stored, once"
    );
    assert!(load.sent() > 0 && !jobs.is_empty());
}
