//! Periodic work shared by all replicas. Every replica ticks, but a tick only runs where
//! `SET key NX` on that tick's Redis key succeeds, so exactly one replica does each tick's
//! work, whichever it is; a replica that dies simply stops competing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::db::Db;
use crate::jobs::JobQueue;
use crate::redis_conn::RedisConn;

#[derive(Clone)]
pub struct Scheduler {
    pub db: Db,
    pub redis: RedisConn,
    pub queue: JobQueue,
    pub period: Duration,
    /// How long a queued job may wait for its push before the scheduler pushes it.
    pub grace: Duration,
    /// Who won a tick, recorded for operators (and tests) in the tick's lock value.
    pub replica: String,
}

impl Scheduler {
    /// Ticks until `stop` is cancelled.
    pub async fn run(self, stop: CancellationToken) {
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

    /// True when this replica owns `task` for `tick`. The key outlives the tick, so a
    /// replica whose clock lags cannot take the same tick again.
    pub async fn try_lock(&self, task: &str, tick: u64) -> redis::RedisResult<bool> {
        let key = self.redis.key(&format!("scheduler:{task}:{tick}"));
        let ttl = (self.period.as_secs() * 10).max(60);
        let mut conn = self.redis.connection();
        let won: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(&self.replica)
            .arg("NX")
            .arg("EX")
            .arg(ttl)
            .query_async(&mut conn)
            .await?;
        Ok(won.is_some())
    }

    async fn housekeeping(&self) {
        let outcome = async {
            let mut tx = self.db.begin_system().await?;
            let counts = crate::db::jobs::housekeeping(&mut tx).await?;
            tx.commit().await?;
            Ok::<_, crate::http::error::ApiError>(counts)
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
        self.queue.enqueue_stragglers(&self.db, self.grace).await;
        crate::jobs::kommo::schedule_token_refreshes(&self.db, &self.queue).await;
    }
}

fn tick_number(period: Duration) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    now / (period.as_millis() as u64).max(1)
}
