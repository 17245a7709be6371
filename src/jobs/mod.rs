//! Background jobs: apalis workers on Redis inside `serve`, with the `jobs` table as the
//! record the API reads. Redis carries only `{job_id, org_id}`; the row holds the type,
//! payload and state, and a worker must claim the row before running it, which makes
//! every delivery idempotent and a job never run twice at the same time.

pub mod handlers;
pub mod kommo;
pub mod runner;
pub mod scheduler;
pub mod types;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::*;
use apalis_redis::{Config as QueueConfig, RedisStorage};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::Config;
use crate::db::{self, Db};
use crate::redis_conn::RedisConn;

pub const DEFAULT_MAX_ATTEMPTS: i32 = 5;
/// Missed heartbeats after which apalis hands a silent worker's jobs to others; the row
/// lease is as long, so both agree on when a worker is dead.
const MISSED_HEARTBEATS: u32 = 3;
/// How often an idle worker asks Redis for work.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// A pushed job nobody took for this long is pushed again by the scheduler.
const STALE_AFTER: Duration = Duration::from_secs(300);

/// What travels through Redis.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobMessage {
    pub job_id: Uuid,
    pub org_id: Uuid,
}

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

/// Database trouble is worth another attempt.
impl From<crate::http::error::ApiError> for JobError {
    fn from(e: crate::http::error::ApiError) -> JobError {
        JobError::retry(e.to_string())
    }
}

impl From<sqlx::Error> for JobError {
    fn from(e: sqlx::Error) -> JobError {
        JobError::retry(e.to_string())
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
    pub redis: RedisConn,
    pub config: Arc<Config>,
    pub queue: JobQueue,
    pub kommo: crate::kommo::Kommo,
    pub settings: JobSettings,
    /// Jobs this process is running: `job id → (org id, worker name)`.
    pub in_flight: Arc<std::sync::Mutex<std::collections::HashMap<Uuid, (Uuid, String)>>>,
}

impl JobContext {
    /// Hands every job this process still runs back to the queue (shutdown past its
    /// grace period): another worker starts it at once rather than after its lease.
    pub async fn release_in_flight(&self) {
        let jobs: Vec<(Uuid, (Uuid, String))> = match self.in_flight.lock() {
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
                Ok::<_, crate::http::error::ApiError>(released)
            };
            match released.await {
                Ok(true) => {
                    tracing::warn!(%job_id, "job handed back to the queue at shutdown");
                    self.queue.enqueue_committed(&self.db, job_id, org_id).await;
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(%job_id, error = %e, "could not hand the job back; its lease will lapse")
                }
            }
        }
    }
}

/// The Redis side of the queue.
#[derive(Clone)]
pub struct JobQueue {
    storage: RedisStorage<JobMessage>,
}

impl JobQueue {
    /// The queue is named explicitly (`<prefix>jobs`), so deployments and tests sharing
    /// one Redis never take each other's jobs.
    pub fn new(redis: &RedisConn, settings: &JobSettings) -> JobQueue {
        // A worker fetches no more than it runs at once, so idle replicas get work too.
        let config = QueueConfig::default()
            .queue(redis.key("jobs"))
            .heartbeat_interval(settings.heartbeat)
            .missed_heartbeats(MISSED_HEARTBEATS as usize)
            .batch_size(settings.concurrency.max(1));
        JobQueue {
            storage: RedisStorage::new(redis.connection()).with_config(config),
        }
    }

    #[tracing::instrument(name = "redis.job_push", skip_all, fields(otel.kind = "client", db.system = "redis", job_id = %msg.job_id))]
    async fn push(&self, msg: JobMessage, delay: Option<Duration>) -> Result<(), BoxDynError> {
        // A fresh task id per push: apalis ignores a second push of an id it has seen,
        // and a job is pushed again for each retry.
        let mut task =
            TaskBuilder::new(msg).task_id(TaskId::from_string(Uuid::new_v4().to_string()));
        if let Some(delay) = delay {
            // apalis schedules in whole seconds; rounding up keeps a retry from coming
            // early (the claim refuses an early one anyway, see runner::execute).
            task = task.run_after(Duration::from_secs(delay.as_secs_f64().ceil() as u64));
        }
        let mut storage = self.storage.clone();
        storage.push_task(task.build()).await?;
        Ok(())
    }

    /// Pushes a job whose row is committed (and written as pushed). A failed push is
    /// only logged and marked on the row: the scheduler pushes the job later.
    pub async fn enqueue_committed(&self, db: &Db, job_id: Uuid, org_id: Uuid) {
        self.enqueue(db, job_id, org_id, None, false).await
    }

    pub async fn enqueue_later(&self, db: &Db, job_id: Uuid, org_id: Uuid, delay: Duration) {
        self.enqueue(db, job_id, org_id, Some(delay), false).await
    }

    /// `touch`: record the push on the row (for pushes the row does not know about).
    async fn enqueue(
        &self,
        db: &Db,
        job_id: Uuid,
        org_id: Uuid,
        delay: Option<Duration>,
        touch: bool,
    ) {
        let pushed = match self.push(JobMessage { job_id, org_id }, delay).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(%job_id, error = %e, "could not push the job; the scheduler will retry");
                false
            }
        };
        if pushed && !touch {
            return;
        }
        let marked = async {
            let mut tx = db.begin_worker(org_id).await?;
            db::jobs::set_enqueued(&mut tx, job_id, pushed).await?;
            tx.commit().await
        };
        if let Err(e) = marked.await {
            tracing::warn!(%job_id, error = %e, "could not record the job's push");
        }
    }

    /// Pushes again the jobs the queue may have lost (see `auth.jobs_needing_enqueue`).
    pub async fn enqueue_stragglers(&self, db: &Db, grace: Duration) {
        let found = async {
            let mut tx = db.begin_system().await?;
            let rows =
                db::jobs::needing_enqueue(&mut tx, grace.as_secs_f64(), STALE_AFTER.as_secs_f64())
                    .await?;
            tx.commit().await?;
            Ok::<_, crate::http::error::ApiError>(rows)
        };
        match found.await {
            Ok(rows) => {
                for (job_id, org_id) in rows {
                    tracing::info!(%job_id, "pushing a job the queue may have lost");
                    self.enqueue(db, job_id, org_id, None, true).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not look for lost jobs"),
        }
    }
}

/// A name unique to this process and run: apalis recovers a dead worker's jobs through
/// the heartbeats of the others, which only works when no two workers share a name.
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

async fn handle(
    msg: JobMessage,
    ctx: Data<JobContext>,
    worker: WorkerContext,
) -> Result<(), BoxDynError> {
    runner::execute(&ctx, worker.name(), msg)
        .await
        .map_err(|e| e.into())
}

/// Runs `JOB_CONCURRENCY` jobs at a time until `stop` resolves; then takes no new job
/// and waits up to `SHUTDOWN_GRACE_SECS` for the running ones. A job still running after
/// that keeps its row lease until it lapses, and is then taken over by another worker.
pub async fn run_workers(
    ctx: JobContext,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let storage = ctx.queue.storage.clone();
    let concurrency = ctx.settings.concurrency;
    let grace = ctx.settings.shutdown_grace;
    let name = worker_name();
    tracing::info!(worker = %name, concurrency, "job workers starting");
    Monitor::new()
        .register(move |run| {
            WorkerBuilder::new(format!("{name}-{run}"))
                .backend(storage.clone().poll_with_interval(POLL_INTERVAL))
                .data(ctx.clone())
                .concurrency(concurrency)
                .build(handle)
        })
        .shutdown_timeout(grace)
        .run_with_signal(async move {
            stop.await;
            Ok(())
        })
        .await?;
    tracing::info!("job workers stopped");
    Ok(())
}
