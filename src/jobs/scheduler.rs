//! Periodic work shared by all replicas. Every replica ticks, but a tick only runs where
//! `SET key NX` on that tick's Redis key succeeds, so exactly one replica does each tick's
//! work, whichever it is; a replica that dies simply stops competing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::db::Db;
use crate::jobs::JobQueue;
use crate::redis_conn::RedisConn;

/// How often the queue is compared with the rows (one replica per period does it).
const SWEEP_EVERY: Duration = Duration::from_secs(2);
const LOCK_BUDGET: Duration = Duration::from_secs(1);
/// Rows retention deletes per statement, and statements per tick: a backlog drains over
/// several ticks instead of one long transaction.
const RETENTION_BATCH: i32 = 1000;
const RETENTION_BATCHES_PER_TICK: usize = 20;

#[derive(Clone)]
pub struct Scheduler {
    pub db: Db,
    pub redis: RedisConn,
    pub queue: JobQueue,
    pub period: Duration,
    /// Who won a tick, recorded for operators (and tests) in the tick's lock value.
    pub replica: String,
    /// `RETENTION_WEBHOOK_DAYS` and `RETENTION_JOBS_DAYS` (0 keeps the rows).
    pub retention_webhook_days: u32,
    pub retention_jobs_days: u32,
}

impl Scheduler {
    /// Ticks until `stop` is cancelled.
    pub async fn run(self, stop: CancellationToken) {
        tokio::spawn(self.clone().sweep(stop.clone()));
        let mut interval = tokio::time::interval(self.period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = interval.tick() => {}
            }
            let tick = tick_number(self.period);
            match self.try_lock("housekeeping", tick).await {
                Ok(won) => {
                    // Every replica's attempt is logged, so the logs show who competed
                    // for a tick and that one of them won it.
                    tracing::debug!(task = "housekeeping", tick, won, replica = %self.replica, "scheduler tick");
                    if won {
                        self.housekeeping().await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "scheduler cannot reach Redis; skipping tick"),
            }
        }
    }

    /// Pushes again what Redis lost, on its own short period (`SWEEP_EVERY`) so that a
    /// lost job waits seconds, not a heartbeat.
    async fn sweep(self, stop: CancellationToken) {
        let mut interval = tokio::time::interval(SWEEP_EVERY);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = interval.tick() => {}
            }
            let tick = tick_number(SWEEP_EVERY);
            let outcome = match self.try_lock("sweep", tick).await {
                Ok(false) => continue,
                Ok(true) => self.queue.sweep(&self.db).await,
                Err(e) => Err(e.into()),
            };
            match outcome {
                Ok(pushed) => {
                    if pushed > 0 {
                        tracing::info!(pushed, "pushed jobs the queue did not hold");
                    }
                    failing = false;
                }
                // Logged once per outage: the workers report the same cause.
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "cannot sweep the job queue");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    }

    /// True when this replica owns `task` for `tick`. The key outlives the tick, so a
    /// replica whose clock lags cannot take the same tick again.
    pub async fn try_lock(&self, task: &str, tick: u64) -> redis::RedisResult<bool> {
        let key = self.redis.key(&format!("scheduler:{task}:{tick}"));
        let ttl = (self.period.as_secs() * 10).max(60);
        let mut conn = self.redis.connection();
        let won: Option<String> = tokio::time::timeout(
            LOCK_BUDGET,
            redis::cmd("SET")
                .arg(&key)
                .arg(&self.replica)
                .arg("NX")
                .arg("EX")
                .arg(ttl)
                .query_async(&mut conn),
        )
        .await
        .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "no answer in time")))??;
        Ok(won.is_some())
    }

    async fn housekeeping(&self) {
        let outcome = async {
            let mut tx = self.db.begin_system().await?;
            let counts = crate::db::jobs::housekeeping(&mut tx).await?;
            tx.commit().await?;
            Ok::<_, crate::db::Error>(counts)
        };
        match outcome.await {
            Ok((states, digests)) if states + digests > 0 => tracing::info!(
                expired_oauth_states = states,
                released_webhook_digests = digests,
                "housekeeping"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "housekeeping failed"),
        }
        self.retention().await;
        crate::jobs::kinds::token_refresh::schedule_token_refreshes(&self.db, &self.queue).await;
    }

    async fn retention(&self) {
        if self.retention_webhook_days == 0 && self.retention_jobs_days == 0 {
            return;
        }
        let (mut deliveries, mut jobs) = (0, 0);
        for _ in 0..RETENTION_BATCHES_PER_TICK {
            let batch = async {
                let mut tx = self.db.begin_system().await?;
                let deleted = crate::db::jobs::retention(
                    &mut tx,
                    self.retention_webhook_days,
                    self.retention_jobs_days,
                    RETENTION_BATCH,
                )
                .await?;
                tx.commit().await?;
                Ok::<_, crate::db::Error>(deleted)
            };
            match batch.await {
                Ok((d, j)) => {
                    deliveries += d;
                    jobs += j;
                    if d < i64::from(RETENTION_BATCH) && j < i64::from(RETENTION_BATCH) {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "retention failed");
                    break;
                }
            }
        }
        if deliveries + jobs > 0 {
            tracing::info!(
                deleted_webhook_deliveries = deliveries,
                deleted_jobs = jobs,
                "retention"
            );
        }
    }
}

fn tick_number(period: Duration) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    now / (period.as_millis() as u64).max(1)
}
