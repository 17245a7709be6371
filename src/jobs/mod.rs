//! Background jobs: workers inside `serve`, a queue in Redis (`queue`), and the `jobs`
//! table as the record the API reads. A job type is a module of `kinds` implementing
//! [`Job`]; `kinds::REGISTRY` lists them.
//!
//! The life of a job, described here once:
//! - **Queued.** The row is inserted in the transaction of whatever asked for it
//!   (`job::insert`, or the webhook route's single INSERT), and only after the commit is
//!   its id pushed to Redis (`JobQueue::enqueue_committed`), in its type's lane and its
//!   org's list. The push has a short budget and a circuit breaker: a dead Redis never
//!   holds the request.
//! - **Claimed.** A worker that pops the id must claim the row (queued → running, with a
//!   lease of `MISSED_HEARTBEATS` heartbeats, renewed while it runs) before running it,
//!   so a duplicate delivery finds nothing to claim and a job never runs twice at once.
//!   Claims commit without waiting for the WAL flush: only a crash of PostgreSQL itself
//!   undoes one, and then the job runs again (at least once, as after a worker's crash).
//!   A lane fills all its free slots with one pop, and the jobs one pop took for an org
//!   are claimed in one statement; one task renews every running job's lease, one
//!   statement per org.
//! - **Finished or retried.** The outcome is written durably (`runner` retries the write
//!   until PostgreSQL takes it): succeeded with its result (successes that finish
//!   together are written in one statement by the `runner::Recorder`); a retryable
//!   failure goes back to queued with `run_after` (jittered exponential back-off, at
//!   least a `Retry-After`) and into `q:delayed`; a permanent failure, a panic or the last
//!   attempt fails the row. Database trouble is stored as a fixed message, never its text.
//! - **Lost and found.** Whatever Redis loses — a restart, a flush, a push that failed, a
//!   worker that died with its lease — the scheduler's sweep finds from the rows every 2 s
//!   (queued rows Redis does not hold, running rows whose lease lapsed) and pushes again.
//! - **Handed back.** On shutdown workers take no new job and finish theirs within the
//!   grace period; a job still running then is released (running → queued, attempt not
//!   counted) and pushed again (`JobContext::release_in_flight`), so another worker starts
//!   it at once; if even that fails, its lease lapses and the sweep finds it.

pub mod job;
pub mod kinds;
pub mod queue;
pub mod runner;
pub mod scheduler;
pub mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use crate::config::Config;
use crate::db::{self, Db};
use crate::domain::{JobId, JobStatus, OrgId};
use crate::events::Event;
use crate::redis_conn::RedisConn;

pub use job::{Job, Rejected};
pub use queue::Lane;
pub use worker::{WorkerHealth, WorkersState, run_workers};

pub const DEFAULT_MAX_ATTEMPTS: i32 = 5;
/// Heartbeats a worker may miss before its job's lease lapses and another takes it.
const MISSED_HEARTBEATS: u32 = 3;
/// How long a push may take before the caller goes on without it (the sweep pushes the
/// job later); a blackholed Redis must not hold every write that queues a job.
const PUSH_BUDGET: Duration = Duration::from_millis(250);
/// After a failed push, pushes are not even tried for this long.
const BREAKER_OPEN: Duration = Duration::from_secs(5);
/// A queued row younger than this may still be on its way to Redis; the sweep leaves it.
const SWEEP_SETTLE: Duration = Duration::from_secs(2);
/// Rows the sweep checks per run, oldest first.
const SWEEP_BATCH: i64 = 1000;

/// How a handler fails: worth another attempt (after at least `after`, e.g. a
/// `Retry-After`), or never going to work.
#[derive(Debug)]
pub enum JobError {
    Retry {
        message: String,
        after: Option<Duration>,
    },
    Permanent(String),
}

impl JobError {
    pub fn retry(message: impl Into<String>) -> JobError {
        JobError::Retry {
            message: message.into(),
            after: None,
        }
    }
}

/// What a job stores in `jobs.error` when the database failed it: users read that column
/// through the API, so the cause goes to the log and the row gets this.
pub const DATABASE_TROUBLE: &str = "a database error interrupted the job; it is retried";

/// Database trouble is worth another attempt.
impl From<crate::db::Error> for JobError {
    fn from(e: crate::db::Error) -> JobError {
        tracing::warn!(error = %e, "a job met a database error");
        JobError::retry(DATABASE_TROUBLE)
    }
}

/// A provider failure another attempt may fix is retried (after the provider's
/// `Retry-After` when it gave one); the rest fail the job with the error's words, which
/// never carry the key.
impl From<crate::ai::AiError> for JobError {
    fn from(e: crate::ai::AiError) -> JobError {
        if e.is_permanent() {
            return JobError::Permanent(e.to_string());
        }
        let after = match &e {
            crate::ai::AiError::RateLimited { retry_after } => *retry_after,
            _ => None,
        };
        JobError::Retry {
            message: e.to_string(),
            after,
        }
    }
}

/// A file store that failed may answer the next attempt; a file that cannot be reached
/// from this deployment at all will not.
impl From<crate::knowledge::store::StoreError> for JobError {
    fn from(e: crate::knowledge::store::StoreError) -> JobError {
        use crate::knowledge::store::StoreError;
        match e {
            StoreError::Db(e) => e.into(),
            StoreError::Object(e) => {
                tracing::warn!(error = %e, "a job could not reach the file store");
                JobError::retry("the file store could not be reached; it is retried")
            }
            not_configured @ StoreError::NotConfigured => {
                JobError::Permanent(not_configured.to_string())
            }
        }
    }
}

impl From<sqlx::Error> for JobError {
    fn from(e: sqlx::Error) -> JobError {
        crate::db::Error::from(e).into()
    }
}

/// Kommo rate limits wait their `Retry-After`; transient Kommo failures retry; a refused
/// grant or an unusable connection will not get better.
impl From<crate::kommo::tokens::TokenError> for JobError {
    fn from(e: crate::kommo::tokens::TokenError) -> JobError {
        use crate::kommo::KommoError;
        use crate::kommo::tokens::TokenError;
        match e {
            TokenError::Kommo(KommoError::RateLimited(after)) => JobError::Retry {
                message: "Kommo is rate limiting this account".into(),
                after: Some(after),
            },
            TokenError::Kommo(k) if !k.is_permanent() => JobError::retry(k.to_string()),
            TokenError::Db(d) => d.into(),
            other => JobError::Permanent(other.to_string()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct JobSettings {
    pub concurrency: usize,
    pub heartbeat: Duration,
    /// How long a claimed row stays ours without renewal.
    pub lease: Duration,
    pub retry_base: Duration,
    pub shutdown_grace: Duration,
}

impl JobSettings {
    pub fn from_config(config: &Config) -> JobSettings {
        JobSettings {
            concurrency: config.job_concurrency,
            heartbeat: config.job_heartbeat,
            lease: config.job_heartbeat * MISSED_HEARTBEATS,
            retry_base: config.job_retry_base,
            shutdown_grace: config.shutdown_grace,
        }
    }
}

/// Everything a handler may use.
#[derive(Clone)]
pub struct JobContext {
    pub db: Db,
    pub ai: Arc<crate::ai::Ai>,
    pub redis: RedisConn,
    pub config: Arc<Config>,
    pub queue: JobQueue,
    pub kommo: crate::kommo::Kommo,
    pub settings: JobSettings,
    /// This process's name on the rows it claims (unique per process and run).
    pub worker: Arc<str>,
    /// Jobs this process is running: `job id → (org id, worker name)`.
    pub in_flight: Arc<std::sync::Mutex<std::collections::HashMap<JobId, (OrgId, String)>>>,
    /// Where uploaded files' bytes are kept.
    pub assets: crate::knowledge::store::AssetStore,
    pub clock: Arc<dyn crate::agent::schedule::Clock>,
    /// Live events, published after what they announce is committed.
    pub events: crate::events::Publisher,
}

impl JobContext {
    /// The org's model provider (its own settings over the deployment's); `None` when
    /// there is none.
    pub async fn ai_provider(
        &self,
        org_id: OrgId,
    ) -> Result<Option<crate::ai::Provider>, JobError> {
        match self.ai.provider_for(&self.db, org_id).await {
            Ok(provider) => Ok(provider),
            Err(crate::ai::LookupError::Db(e)) => Err(e.into()),
            Err(crate::ai::LookupError::Ai(e)) => Err(e.into()),
        }
    }

    /// Hands every job this process still runs back to the queue (shutdown past its
    /// grace period): another worker starts it at once rather than after its lease.
    pub async fn release_in_flight(&self) {
        let jobs: Vec<(JobId, (OrgId, String))> = match self.in_flight.lock() {
            Ok(map) => map.iter().map(|(k, v)| (*k, v.clone())).collect(),
            Err(poisoned) => poisoned
                .into_inner()
                .iter()
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
        };
        for (job_id, (org_id, worker)) in jobs {
            let released = async {
                let mut tx = self.db.begin_worker(org_id).await?;
                let released = db::jobs::release(&mut tx, job_id, &worker).await?;
                tx.commit().await?;
                Ok::<_, crate::db::Error>(released)
            };
            match released.await {
                Ok(Some(job_type)) => {
                    tracing::warn!(%job_id, "job handed back to the queue at shutdown");
                    self.queue
                        .enqueue_committed(job_id, org_id, &job_type)
                        .await;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(%job_id, error = %e, "could not hand the job back; its lease will lapse")
                }
            }
        }
    }
}

/// Pushes are skipped for a while after one failed, so that a Redis outage costs each
/// write at most one `PUSH_BUDGET`, not one per job.
#[derive(Default)]
struct Breaker {
    open_until_ms: AtomicU64,
}

impl Breaker {
    fn is_open(&self) -> bool {
        now_ms() < self.open_until_ms.load(Ordering::Relaxed)
    }

    /// True when this failure opened the breaker (so it is logged once per outage).
    fn trip(&self) -> bool {
        let until = now_ms() + BREAKER_OPEN.as_millis() as u64;
        let before = self.open_until_ms.swap(until, Ordering::Relaxed);
        before < now_ms()
    }

    fn close(&self) {
        self.open_until_ms.store(0, Ordering::Relaxed);
    }
}

/// The queue as the rest of the service sees it. A job committed as queued is announced
/// here too (a live `job` event, written by the push's own script call, so no replica's
/// `running` for the job can reach the org's stream before its `queued`), since every new
/// job passes through `enqueue_committed*`.
#[derive(Clone)]
pub struct JobQueue {
    store: queue::RedisQueue,
    /// Due-now pushes, batched across requests (`None` outside a runtime: each push is
    /// its own call).
    batcher: Option<queue::Batcher>,
    breaker: Arc<Breaker>,
    pub health: Arc<WorkerHealth>,
    events: crate::events::Publisher,
}

impl JobQueue {
    pub fn new(redis: &RedisConn, events: crate::events::Publisher) -> JobQueue {
        let store = queue::RedisQueue::new(redis.clone());
        let breaker = Arc::<Breaker>::default();
        JobQueue {
            batcher: queue::Batcher::start(store.clone(), events.clone(), breaker.clone()),
            store,
            breaker,
            health: Arc::default(),
            events,
        }
    }

    fn queued_events(job_ids: &[JobId], org_id: OrgId, job_type: &str) -> Vec<Event> {
        job_ids
            .iter()
            .map(|job_id| Event::job(org_id, job_id.0, job_type, JobStatus::Queued, None))
            .collect()
    }

    /// Pushes with the events in the same call. When the push is not made (the breaker is
    /// open) or fails, the events go to the publisher's queue instead: best effort, like
    /// every event, and the sweep pushes the job later.
    #[tracing::instrument(name = "redis.job_push", skip_all, fields(otel.kind = "client", db.system = "redis", %job_id))]
    async fn push(
        &self,
        job_id: JobId,
        org_id: OrgId,
        lane: Lane,
        delay: Option<Duration>,
        events: Vec<Event>,
    ) {
        if self.breaker.is_open() {
            return self.events.publish_all(events);
        }
        let due_now = delay.is_none_or(|d| d.is_zero());
        let events = match &self.batcher {
            Some(batcher) if due_now => match batcher.submit(lane, org_id, job_id, events) {
                Ok(()) => return,
                Err(events) => events,
            },
            _ => events,
        };
        let announce = Some((&self.events, events.as_slice()));
        let pushed = tokio::time::timeout(
            PUSH_BUDGET,
            self.store.push(lane, org_id, job_id, delay, announce),
        )
        .await;
        let error = match pushed {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} ms", PUSH_BUDGET.as_millis()),
        };
        self.events.publish_all(events);
        if self.breaker.trip() {
            tracing::warn!(%job_id, error = %error,
                "could not push a job; pushes pause for 5 s and the sweep pushes what is waiting");
        }
    }

    /// Pushes a job whose row is committed. A push that fails is not an error: the row is
    /// the record, and the sweep pushes the job within seconds.
    pub async fn enqueue_committed(&self, job_id: JobId, org_id: OrgId, job_type: &str) {
        let events = Self::queued_events(&[job_id], org_id, job_type);
        self.push(job_id, org_id, Lane::of(job_type), None, events)
            .await
    }

    /// `enqueue_committed` for a job that is not due for `delay`.
    pub async fn enqueue_committed_later(
        &self,
        job_id: JobId,
        org_id: OrgId,
        job_type: &str,
        delay: Duration,
    ) {
        let events = Self::queued_events(&[job_id], org_id, job_type);
        self.push(job_id, org_id, Lane::of(job_type), Some(delay), events)
            .await
    }

    /// `enqueue_committed` for many jobs of one org and type, in one Redis call per 500.
    pub async fn enqueue_committed_many(&self, job_ids: &[JobId], org_id: OrgId, job_type: &str) {
        if job_ids.is_empty() {
            return;
        }
        let events = Self::queued_events(job_ids, org_id, job_type);
        if self.breaker.is_open() {
            return self.events.publish_all(events);
        }
        let lane = Lane::of(job_type);
        let announce = Some((&self.events, events.as_slice()));
        let pushed = tokio::time::timeout(
            PUSH_BUDGET,
            self.store.push_many(lane, org_id, job_ids, announce),
        )
        .await;
        let error = match pushed {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} ms", PUSH_BUDGET.as_millis()),
        };
        // Some chunks may have been written with their events: a `queued` seen twice is
        // harmless, one never seen is not.
        self.events.publish_all(events);
        if self.breaker.trip() {
            tracing::warn!(jobs = job_ids.len(), error = %error,
                "could not push jobs; pushes pause for 5 s and the sweep pushes what is waiting");
        }
    }

    /// Pushes again a job that is already announced (a retry, a delivery before its time).
    pub async fn enqueue_later(&self, job_id: JobId, org_id: OrgId, lane: Lane, delay: Duration) {
        self.push(job_id, org_id, lane, Some(delay), Vec::new())
            .await
    }

    /// Pushes again every unfinished job that Redis does not hold: pushes that failed,
    /// entries lost to a Redis restart or flush, and running jobs whose worker died
    /// (their lease lapsed). A job pushed twice is harmless: only one claim succeeds.
    /// Returns how many were pushed.
    pub async fn sweep(&self, db: &Db) -> anyhow::Result<usize> {
        let rows = {
            let mut tx = db.begin_system().await?;
            let rows =
                db::jobs::unfinished(&mut tx, SWEEP_SETTLE.as_secs_f64(), SWEEP_BATCH).await?;
            tx.commit().await?;
            rows
        };
        let ids: Vec<JobId> = rows.iter().map(|row| row.id).collect();
        let held = tokio::time::timeout(Duration::from_secs(1), self.store.held(&ids))
            .await
            .map_err(|_| anyhow::anyhow!("Redis did not answer within 1 s"))??;
        // Redis answers again: pushes may resume before the breaker would have let them.
        self.breaker.close();
        let mut pushed = 0;
        for (row, held) in rows.iter().zip(held) {
            if held {
                continue;
            }
            let delay = Duration::from_millis(row.due_in_ms.max(0) as u64);
            tokio::time::timeout(
                Duration::from_secs(1),
                self.store.push(
                    Lane::of(&row.job_type),
                    row.org_id,
                    row.id,
                    Some(delay),
                    None,
                ),
            )
            .await
            .map_err(|_| anyhow::anyhow!("Redis did not answer within 1 s"))??;
            pushed += 1;
        }
        Ok(pushed)
    }
}

/// A name unique to this process and run, recorded on the rows its workers claim.
pub fn worker_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    let run = Uuid::new_v4().simple().to_string();
    format!("agents-api-{host}-{}-{}", std::process::id(), &run[..8])
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
