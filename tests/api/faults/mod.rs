//! Faults injected under steady load: PostgreSQL and Redis reset, refused and blackholed
//! through a TCP proxy, Redis losing its data, a hanging Kommo, `kill -9` in the middle
//! of a job. Each test states the figure it proves — no 5xx other than 503/504, workers
//! back on their own, nothing lost, no side effect twice — and prints what it measured
//! (`cargo test … faults -- --nocapture` shows it).

mod kommo_calls;
mod load;
mod storage;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::app::{OrgUsers, TestApp, eventually, redis_url};
use crate::support::cluster::Cluster;
use crate::support::fake_kommo::FakeKommo;
use crate::support::fault_proxy::{Fault, FaultProxy};
use crate::support::kommo::{PUBLIC_BASE_URL, connected_org};

const PATIENCE: Duration = Duration::from_secs(60);
const DOMAIN: &str = "acme.kommo.com";
const ACCOUNT_ID: i64 = 31_000_001;

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

async fn wait_job(app: &TestApp, org: Uuid, user: Uuid, id: &str) -> Value {
    let path = format!("/v1/orgs/{org}/jobs/{id}");
    eventually(&format!("job {id} finishes"), PATIENCE, || async {
        let job = app.get(&path, user).await.expect(200).body;
        match job["status"].as_str() {
            Some("succeeded" | "failed" | "cancelled") => Ok(job),
            _ => Err(job.to_string()),
        }
    })
    .await
}
