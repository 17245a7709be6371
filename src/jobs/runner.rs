//! Runs one delivered job: claims its row (so it never runs twice at once), keeps the
//! claim alive while the handler works, and records the outcome — success, a retry after
//! an exponential, jittered delay, or a visible failure.

use std::time::{Duration, Instant};

use chrono::Utc;
use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::db;
use crate::db::jobs::ClaimedJob;
use crate::domain::{JobId, OrgId};
use crate::jobs::{JobContext, JobError, JobMessage, Lane, job};

/// Delay before attempt `attempt + 1`: `base · 2^(attempt-1)`, capped, with jitter drawn
/// from [½, 1] of that, so retries of many jobs that failed together spread out.
pub fn backoff(base: Duration, attempt: i32, cap: Duration) -> Duration {
    let exp = attempt.clamp(1, 30) - 1;
    let full = base.saturating_mul(1u32 << exp).min(cap);
    let factor = rand::rng().random_range(0.5..=1.0);
    full.mul_f64(factor)
}

const BACKOFF_CAP: Duration = Duration::from_secs(15 * 60);
/// How long a finished job keeps trying to record its outcome while PostgreSQL is away.
/// The lease is renewed meanwhile, so nobody runs the job again before we give up.
const RECORD_PATIENCE: Duration = Duration::from_secs(5 * 60);
const RECORD_RETRY_MAX: Duration = Duration::from_secs(5);

/// Outcome for the transport: `Err` only when the database could not be reached, so
/// the delivery is retried (the row itself is the truth and stays consistent).
#[tracing::instrument(name = "job.run", skip_all, fields(job_id = %msg.job_id, org_id = %msg.org_id))]
pub async fn execute(ctx: &JobContext, msg: JobMessage) -> crate::db::Result<()> {
    let worker: &str = &ctx.worker;
    let lease = ctx.settings.lease;
    let (claimed, early) = {
        let mut tx = ctx.db.begin_worker(msg.org_id).await?;
        let claimed = db::jobs::claim(&mut tx, msg.job_id, worker, lease.as_secs_f64()).await?;
        let early = match claimed {
            Some(_) => None,
            None => db::jobs::not_due_for(&mut tx, msg.job_id).await?,
        };
        tx.commit().await?;
        (claimed, early)
    };
    let Some(job) = claimed else {
        if let Some(secs) = early {
            // Delivered before its retry is due (the queue's clock has whole seconds).
            ctx.queue
                .enqueue_later(
                    msg.job_id,
                    msg.org_id,
                    msg.lane,
                    Duration::from_secs_f64(secs.max(0.0)),
                )
                .await;
            return Ok(());
        }
        // Cancelled, finished, or running elsewhere under a live lease.
        tracing::debug!(job_id = %msg.job_id, "job not claimable; skipped");
        return Ok(());
    };
    tracing::info!(job_id = %job.id, org_id = %job.org_id, job_type = %job.job_type,
        attempt = job.attempts, "job started");
    if let Ok(mut running) = ctx.in_flight.lock() {
        running.insert(job.id, (job.org_id, worker.to_string()));
    }

    let stop_renewal = CancellationToken::new();
    let renewal = tokio::spawn(renew_lease(
        ctx.clone(),
        job.id,
        job.org_id,
        worker.to_string(),
        lease,
        stop_renewal.clone(),
    ));
    // The handler runs in a task of its own so that a panic is caught as a failure.
    let handler = tokio::spawn({
        let ctx = ctx.clone();
        let job = job.clone();
        async move { job::run(&ctx, &job).await }
    });
    let started = std::time::Instant::now();
    let outcome = match handler.await {
        Ok(outcome) => outcome,
        Err(e) if e.is_panic() => Err(JobError::Permanent(format!(
            "the job's handler panicked: {}",
            crate::telemetry::panic_message(&*e.into_panic())
        ))),
        Err(e) => Err(JobError::retry(format!(
            "the job's handler was cancelled: {e}"
        ))),
    };
    let label = match &outcome {
        Ok(_) => "succeeded",
        Err(JobError::Retry { .. }) if job.attempts < job.max_attempts => "retried",
        Err(_) => "failed",
    };
    crate::metrics::observe_job(&job.job_type, label, started.elapsed());
    record_durably(ctx, worker, &job, &outcome).await;
    // Stopped between renewals, never in the middle of one: aborting a task inside a
    // transaction would hand the pool a connection with the transaction still open.
    stop_renewal.cancel();
    let _ = renewal.await;
    if let Ok(mut running) = ctx.in_flight.lock() {
        running.remove(&job.id);
    }
    Ok(())
}

/// Records the outcome, trying again while the database is away: an outcome that is lost
/// makes the job run again after its lease, repeating whatever it did.
async fn record_durably(
    ctx: &JobContext,
    worker: &str,
    job: &ClaimedJob,
    outcome: &Result<serde_json::Value, JobError>,
) {
    let started = Instant::now();
    let mut pause = Duration::from_millis(200);
    let mut tries = 1u32;
    loop {
        let error = match record(ctx, worker, job, outcome).await {
            Ok(()) => return,
            Err(e) => e,
        };
        if started.elapsed() >= RECORD_PATIENCE {
            tracing::error!(job_id = %job.id, tries, error = %error,
                "gave up recording the job's outcome; it runs again once its lease lapses");
            return;
        }
        tracing::warn!(job_id = %job.id, tries, error = %error,
            "could not record the job's outcome; trying again");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RECORD_RETRY_MAX);
        tries += 1;
    }
}

async fn record(
    ctx: &JobContext,
    worker: &str,
    job: &ClaimedJob,
    outcome: &Result<serde_json::Value, JobError>,
) -> crate::db::Result<()> {
    let mut tx = ctx.db.begin_worker(job.org_id).await?;
    match outcome {
        Ok(result) => {
            db::jobs::succeed(&mut tx, job.id, worker, result).await?;
            tx.commit().await?;
            tracing::info!(job_id = %job.id, job_type = %job.job_type, "job succeeded");
        }
        Err(JobError::Retry { message, after }) if job.attempts < job.max_attempts => {
            let delay = backoff(ctx.settings.retry_base, job.attempts, BACKOFF_CAP)
                .max(after.unwrap_or_default());
            let due = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
            db::jobs::requeue(&mut tx, job.id, worker, message, due).await?;
            tx.commit().await?;
            tracing::warn!(job_id = %job.id, job_type = %job.job_type, attempt = job.attempts,
                delay_ms = delay.as_millis() as u64, error = %message, "job failed; retrying");
            ctx.queue
                .enqueue_later(job.id, job.org_id, Lane::of(&job.job_type), delay)
                .await;
        }
        Err(JobError::Retry { message, .. }) | Err(JobError::Permanent(message)) => {
            db::jobs::fail(&mut tx, job.id, worker, message).await?;
            tx.commit().await?;
            tracing::error!(job_id = %job.id, job_type = %job.job_type, attempt = job.attempts,
                error = %message, "job failed");
            crate::telemetry::report(
                &format!("job {} failed: {message}", job.job_type),
                None,
                Some((&job.id.to_string(), &job.job_type)),
            );
        }
    }
    Ok(())
}

/// Extends the row's lease every third of its length while the handler runs.
async fn renew_lease(
    ctx: JobContext,
    job_id: JobId,
    org_id: OrgId,
    worker: String,
    lease: Duration,
    stop: CancellationToken,
) {
    let mut interval = tokio::time::interval(lease / 3);
    interval.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        let renewed = async {
            let mut tx = ctx.db.begin_worker(org_id).await?;
            let ok = db::jobs::renew_lease(&mut tx, job_id, &worker, lease.as_secs_f64()).await?;
            tx.commit().await?;
            Ok::<_, crate::db::Error>(ok)
        };
        match renewed.await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => tracing::warn!(%job_id, error = %e, "could not renew the job's lease"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(10);
        for attempt in 1..=5 {
            let full = base * (1 << (attempt - 1));
            for _ in 0..50 {
                let d = backoff(base, attempt, cap);
                assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
            }
        }
        assert!(backoff(base, 30, cap) <= cap);
    }
}
