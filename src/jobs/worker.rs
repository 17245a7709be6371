//! The workers of one process: a loop per lane that takes jobs from Redis while it has
//! free slots, and blocks on the lane's wake list while the lane is empty (no polling).
//! A loop never gives up: a Redis error is reported to readiness and retried with
//! back-off, and a loop that panicked is started again.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::domain::{JobId, OrgId};
use crate::jobs::JobContext;
use crate::jobs::queue::{Lane, Popped};
use crate::jobs::runner::{self, Recorder};

/// How long one blocking wait for work lasts; also how late a loop notices a dead
/// connection that Redis never closed.
const WAKE_WAIT: Duration = Duration::from_secs(1);
/// A Redis call of the loop that takes longer than this counts as failed.
const REDIS_BUDGET: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often due retries are moved into their lanes.
const PROMOTE_EVERY: Duration = Duration::from_millis(200);
/// The most jobs one pop takes (and one statement claims).
const POP_BATCH: usize = 64;
/// Claims of one lane on their way to PostgreSQL at once.
const CLAIMS_IN_FLIGHT: usize = 8;
/// Failing for longer than this makes readiness report the workers down.
const FAILING_TOLERANCE: Duration = Duration::from_secs(5);

/// What readiness reads about this process's workers.
#[derive(Default)]
pub struct WorkerHealth {
    started: AtomicBool,
    lanes: [LaneHealth; 2],
}

#[derive(Default)]
struct LaneHealth {
    running: AtomicBool,
    /// Unix ms of the first failure of the current run of failures; 0 when healthy.
    failing_since: AtomicU64,
}

pub enum WorkersState {
    /// This process runs no jobs (`JOB_CONCURRENCY=0`, or a CLI command).
    Off,
    Ok,
    Down(String),
}

impl WorkerHealth {
    fn lane(&self, lane: Lane) -> &LaneHealth {
        &self.lanes[lane as usize]
    }

    fn ok(&self, lane: Lane) {
        self.lane(lane).failing_since.store(0, Ordering::Relaxed);
    }

    /// Returns true for the first failure of a run, to log it once.
    fn failed(&self, lane: Lane) -> bool {
        self.lane(lane)
            .failing_since
            .compare_exchange(0, now_ms(), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    pub fn state(&self) -> WorkersState {
        if !self.started.load(Ordering::Relaxed) {
            return WorkersState::Off;
        }
        for lane in Lane::ALL {
            let health = self.lane(lane);
            if !health.running.load(Ordering::Relaxed) {
                return WorkersState::Down(format!("{} workers not running", lane.name()));
            }
            let since = health.failing_since.load(Ordering::Relaxed);
            if since != 0 && now_ms().saturating_sub(since) > FAILING_TOLERANCE.as_millis() as u64 {
                return WorkersState::Down(format!("{} workers cannot reach Redis", lane.name()));
            }
        }
        WorkersState::Ok
    }
}

/// Jobs this process runs per org, so that one org's burst cannot take every slot.
#[derive(Default)]
struct OrgLoad(Mutex<HashMap<OrgId, usize>>);

impl OrgLoad {
    fn add(self: &Arc<Self>, org: OrgId) -> OrgSlot {
        if let Ok(mut map) = self.0.lock() {
            *map.entry(org).or_default() += 1;
        }
        OrgSlot {
            load: self.clone(),
            org,
        }
    }

    fn at_least(&self, share: usize) -> Vec<OrgId> {
        match self.0.lock() {
            Ok(map) => map
                .iter()
                .filter(|(_, n)| **n >= share)
                .map(|(org, _)| *org)
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

struct OrgSlot {
    load: Arc<OrgLoad>,
    org: OrgId,
}

impl Drop for OrgSlot {
    fn drop(&mut self) {
        if let Ok(mut map) = self.load.0.lock()
            && let Some(n) = map.get_mut(&self.org)
        {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.org);
            }
        }
    }
}

/// What a popped job holds until it has run: a worker slot of its lane, and its org's
/// count in this process. Dropping it gives both back.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    _org: OrgSlot,
}

/// Runs `JOB_CONCURRENCY` jobs at a time in each lane until `stop` resolves; then takes
/// no new job and waits for the running ones (the caller bounds that wait by
/// `SHUTDOWN_GRACE_SECS`). A job still running after that keeps its row lease until it
/// lapses, and is then taken over by another worker.
pub async fn run_workers(
    ctx: JobContext,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let concurrency = ctx.settings.concurrency.max(1);
    let worker: Arc<str> = ctx.worker.clone();
    let token = CancellationToken::new();
    tokio::spawn({
        let token = token.clone();
        async move {
            stop.await;
            token.cancel();
        }
    });
    let health = ctx.queue.health.clone();
    health.started.store(true, Ordering::Relaxed);
    tracing::info!(worker = %worker, concurrency, "job workers starting");

    let recorder = Recorder::start(&ctx);
    let mut lanes = Vec::new();
    for lane in Lane::ALL {
        let slots = Arc::new(Semaphore::new(concurrency));
        lanes.push((lane, slots.clone()));
        tokio::spawn(supervise(
            ctx.clone(),
            recorder.clone(),
            lane,
            slots,
            token.clone(),
        ));
    }
    tokio::spawn(promote_due(ctx.clone(), token.clone()));
    // Stops when this function ends (returns or is dropped), not at `stop`: jobs still
    // running while the workers drain keep their leases.
    let renewal = CancellationToken::new();
    tokio::spawn(runner::renew_leases(ctx.clone(), renewal.clone()));
    let _renewal_stops = renewal.drop_guard();

    token.cancelled().await;
    // Every slot back means every handler of this process has finished; then the
    // successes still being written are waited for.
    for (lane, slots) in lanes {
        if slots.acquire_many(concurrency as u32).await.is_err() {
            tracing::warn!(lane = lane.name(), "job slots closed while draining");
        }
    }
    recorder.drained().await;
    tracing::info!("job workers stopped");
    Ok(())
}

/// Keeps a lane's loop running: one that panicked is started again after a pause.
async fn supervise(
    ctx: JobContext,
    recorder: Recorder,
    lane: Lane,
    slots: Arc<Semaphore>,
    stop: CancellationToken,
) {
    let health = ctx.queue.health.clone();
    let load = Arc::new(OrgLoad::default());
    loop {
        health.lane(lane).running.store(true, Ordering::Relaxed);
        let run = tokio::spawn(lane_loop(
            ctx.clone(),
            recorder.clone(),
            lane,
            slots.clone(),
            load.clone(),
            stop.clone(),
        ));
        let outcome = run.await;
        health.lane(lane).running.store(false, Ordering::Relaxed);
        match outcome {
            Ok(()) => return,
            Err(e) => {
                tracing::error!(lane = lane.name(), error = %e, "job loop died; restarting it");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

async fn lane_loop(
    ctx: JobContext,
    recorder: Recorder,
    lane: Lane,
    slots: Arc<Semaphore>,
    load: Arc<OrgLoad>,
    stop: CancellationToken,
) {
    let health = ctx.queue.health.clone();
    let concurrency = ctx.settings.concurrency.max(1);
    // An org may fill at most half the slots while another org has work.
    let share = concurrency.div_ceil(2).max(1);
    let mut waiter: Option<redis::aio::MultiplexedConnection> = None;
    let mut backoff = BACKOFF_MIN;
    let claims = Arc::new(Semaphore::new(CLAIMS_IN_FLIGHT));
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => return,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
        };
        // Every free slot is filled by one pop: under a backlog, jobs are taken (and
        // claimed) in batches rather than one round trip each.
        let mut permits = vec![first];
        while permits.len() < POP_BATCH {
            match slots.clone().try_acquire_owned() {
                Ok(permit) => permits.push(permit),
                Err(_) => break,
            }
        }
        let skip = load.at_least(share);
        let popped = tokio::time::timeout(
            REDIS_BUDGET,
            ctx.queue.store.pop(lane, permits.len(), &skip),
        )
        .await;
        let failure = match popped {
            Ok(Ok(jobs)) if !jobs.is_empty() => {
                health.ok(lane);
                backoff = BACKOFF_MIN;
                // At most CLAIMS_IN_FLIGHT claims of a lane at once: while they are on
                // their way, the slots that free up are taken together by the next pop,
                // so under load batches grow by themselves, and the pool keeps
                // connections for the handlers and the recorder.
                let claiming = tokio::select! {
                    _ = stop.cancelled() => return,
                    permit = claims.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => return,
                    },
                };
                start(&ctx, &recorder, lane, jobs, permits, &load, claiming);
                continue;
            }
            Ok(Ok(_)) => {
                health.ok(lane);
                drop(permits);
                match wait_for_work(&ctx, lane, &mut waiter, &stop).await {
                    Ok(()) => {
                        backoff = BACKOFF_MIN;
                        continue;
                    }
                    Err(e) => e,
                }
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_string(),
        };
        waiter = None;
        if health.failed(lane) {
            tracing::warn!(lane = lane.name(), error = %failure,
                "job workers cannot reach Redis; retrying with back-off");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Blocks until a push wakes the lane or `WAKE_WAIT` passes.
async fn wait_for_work(
    ctx: &JobContext,
    lane: Lane,
    waiter: &mut Option<redis::aio::MultiplexedConnection>,
    stop: &CancellationToken,
) -> Result<(), String> {
    let conn = match waiter {
        Some(conn) => conn,
        None => {
            let conn = ctx
                .queue
                .store
                .redis()
                .dedicated(REDIS_BUDGET)
                .await
                .map_err(|e| e.to_string())?;
            waiter.insert(conn)
        }
    };
    let mut blpop = redis::cmd("BLPOP");
    blpop
        .arg(ctx.queue.store.wake_key(lane))
        .arg(WAKE_WAIT.as_secs_f64());
    let waited = tokio::select! {
        // Leaving mid-wait is fine only because the loop is ending.
        _ = stop.cancelled() => return Ok(()),
        waited = tokio::time::timeout(
            WAKE_WAIT + REDIS_BUDGET,
            blpop.query_async::<Option<(String, String)>>(conn),
        ) => waited,
    };
    match waited {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// Hands each org's jobs of one pop to the runner, which claims them together and starts
/// them; `claiming` is held until the claims are written.
fn start(
    ctx: &JobContext,
    recorder: &Recorder,
    lane: Lane,
    jobs: Vec<Popped>,
    permits: Vec<OwnedSemaphorePermit>,
    load: &Arc<OrgLoad>,
    claiming: OwnedSemaphorePermit,
) {
    let mut by_org: HashMap<OrgId, Vec<(JobId, Slot)>> = HashMap::new();
    // More permits than jobs: the extra ones go back as the iterator drops them.
    for (job, permit) in jobs.into_iter().zip(permits) {
        let slot = Slot {
            _permit: permit,
            _org: load.add(job.org_id),
        };
        by_org
            .entry(job.org_id)
            .or_default()
            .push((job.job_id, slot));
    }
    let ctx = ctx.clone();
    let recorder = recorder.clone();
    tokio::spawn(async move {
        let _claiming = claiming;
        for (org_id, popped) in by_org {
            let ids: Vec<JobId> = popped.iter().map(|(id, _)| *id).collect();
            if let Err(e) = runner::execute_batch(&ctx, &recorder, org_id, lane, popped).await {
                // The rows are still queued; the sweep pushes them again once the
                // database answers.
                tracing::warn!(?ids, error = %e, "could not claim jobs");
            }
        }
    });
}

/// Moves due retries into their lanes, on every process that runs workers.
async fn promote_due(ctx: JobContext, stop: CancellationToken) {
    let mut interval = tokio::time::interval(PROMOTE_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing_since: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        match tokio::time::timeout(REDIS_BUDGET, ctx.queue.store.promote_due(500)).await {
            Ok(Ok(_)) => failing_since = None,
            outcome => {
                if failing_since.is_none() {
                    let error = match outcome {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".into(),
                    };
                    tracing::warn!(error = %error, "cannot move due jobs into their lanes");
                    failing_since = Some(Instant::now());
                }
            }
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
