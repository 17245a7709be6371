//! Runs delivered jobs: claims their rows (so a job never runs twice at once; the jobs one
//! pop took for one org in one statement), keeps each claim alive while its handler
//! works, and records the outcome — success (batched with other successes by the
//! `Recorder`), a retry after an exponential, jittered delay, or a visible failure.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use rand::Rng;
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::db;
use crate::db::jobs::ClaimedJob;
use crate::domain::{JobId, JobStatus, OrgId};
use crate::events::Event;
use crate::jobs::worker::Slot;
use crate::jobs::{JobContext, JobError, Lane, job};

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

/// Jobs of one org popped together: claims them in one statement (so a job never runs
/// twice at once) and starts a task for each one claimed. A database that cannot be
/// reached leaves the rows queued; the sweep pushes them again once it answers.
#[tracing::instrument(name = "job.claim", skip_all, fields(org_id = %org_id, jobs = popped.len()))]
pub async fn execute_batch(
    ctx: &JobContext,
    recorder: &Recorder,
    org_id: OrgId,
    lane: Lane,
    popped: Vec<(JobId, Slot)>,
) -> crate::db::Result<()> {
    let worker: &str = &ctx.worker;
    let ids: Vec<JobId> = popped.iter().map(|(id, _)| *id).collect();
    let (claimed, early) = {
        // Bookkeeping: the claim's commit does not wait for the WAL flush (one fsync per
        // pop was the pipeline's longest wait). Only a crash of PostgreSQL itself can undo
        // it, and then the row is queued again and the sweep pushes it: the job runs once
        // more, which at-least-once delivery already asks every handler to bear.
        let mut tx = ctx.db.begin_bookkeeping(org_id).await?;
        let claimed =
            db::jobs::claim_many(&mut tx, &ids, worker, ctx.settings.lease.as_secs_f64()).await?;
        let early = if claimed.len() < ids.len() {
            let unclaimed: Vec<JobId> = ids
                .iter()
                .filter(|id| !claimed.iter().any(|job| job.id == **id))
                .copied()
                .collect();
            db::jobs::not_due_many(&mut tx, &unclaimed).await?
        } else {
            Vec::new()
        };
        tx.commit().await?;
        (claimed, early)
    };
    ctx.events
        .publish_all(claimed.iter().map(|job| job_event(job, JobStatus::Running)));
    // From here the handlers run; a row's `finished_at` is its `started_at` plus the
    // time since, so `finished_at − started_at` is how long its handler took (the
    // claim's own round trips are not counted twice).
    let claimed_at = Instant::now();
    for (job_id, secs) in early {
        // Delivered before its retry is due (the queue's clock has whole seconds).
        ctx.queue
            .enqueue_later(job_id, org_id, lane, Duration::from_secs_f64(secs.max(0.0)))
            .await;
    }
    let mut slots: HashMap<JobId, Slot> = popped.into_iter().collect();
    for job in claimed {
        let Some(slot) = slots.remove(&job.id) else {
            continue;
        };
        let ctx = ctx.clone();
        let recorder = recorder.clone();
        tokio::spawn(async move { run_claimed(&ctx, &recorder, job, claimed_at, slot).await });
    }
    // Whatever is left was cancelled, finished, or is running elsewhere under a live
    // lease: its slot goes back as `slots` drops.
    if !slots.is_empty() {
        tracing::debug!(skipped = slots.len(), "jobs not claimable; skipped");
    }
    Ok(())
}

#[tracing::instrument(name = "job.run", skip_all, fields(job_id = %job.id, org_id = %job.org_id))]
async fn run_claimed(
    ctx: &JobContext,
    recorder: &Recorder,
    job: ClaimedJob,
    claimed_at: Instant,
    slot: Slot,
) {
    let worker: &str = &ctx.worker;
    tracing::info!(job_id = %job.id, org_id = %job.org_id, job_type = %job.job_type,
        attempt = job.attempts, "job started");
    if let Ok(mut running) = ctx.in_flight.lock() {
        running.insert(job.id, (job.org_id, worker.to_string()));
    }

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
    match outcome {
        // A success is written with others' in one statement. Its slot goes back as the
        // outcome is handed over, so the next job starts while the row is written; the
        // row's `finished_at` still says when this one ended.
        Ok(result) => match recorder.record(&job, result, claimed_at, slot).await {
            Ok(()) => {
                tracing::info!(job_id = %job.id, job_type = %job.job_type, "job succeeded")
            }
            Err(result) => record_durably(ctx, worker, &job, &Ok(result)).await,
        },
        Err(error) => {
            record_durably(ctx, worker, &job, &Err(error)).await;
            drop(slot);
        }
    }
    if let Ok(mut running) = ctx.in_flight.lock() {
        running.remove(&job.id);
    }
}

/// Writes successes in batches: one statement per org for whatever finished meanwhile,
/// instead of a transaction per job, committed without waiting for the WAL flush
/// (`Db::begin_bookkeeping`). A job's slot goes back when its outcome is handed over, so
/// at most `RECORD_BACKLOG` outcomes wait; shutdown waits for them (`drained`).
#[derive(Clone)]
pub struct Recorder {
    sender: mpsc::Sender<Finished>,
    backlog: Arc<Semaphore>,
}

struct Finished {
    org_id: OrgId,
    job_id: JobId,
    result: Value,
    ran_for: Duration,
    /// Published once the batch is written.
    event: Option<Event>,
    /// The result back when the batch could not be written (the job records it alone).
    /// Taken when answered; a `Finished` dropped unanswered (the recorder panicked or
    /// was stopped) gives its result back too.
    done: Option<oneshot::Sender<Result<(), Value>>>,
}

impl Finished {
    /// Tells the job whether its outcome was written; when it was, the job's event to
    /// publish.
    fn answer(mut self, written: bool) -> Option<Event> {
        if let Some(done) = self.done.take() {
            let answer = if written {
                Ok(())
            } else {
                Err(std::mem::take(&mut self.result))
            };
            let _ = done.send(answer);
        }
        if written { self.event.take() } else { None }
    }
}

impl Drop for Finished {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send(Err(std::mem::take(&mut self.result)));
        }
    }
}

const RECORD_BACKLOG: usize = 512;
const RECORD_BATCH: usize = 256;

impl Recorder {
    /// The recorder and the task that writes for it, which ends when every `Recorder`
    /// clone is dropped.
    pub fn start(ctx: &JobContext) -> Recorder {
        let (sender, receiver) = mpsc::channel(RECORD_BACKLOG);
        tokio::spawn(write_batches(ctx.clone(), receiver));
        Recorder {
            sender,
            backlog: Arc::new(Semaphore::new(RECORD_BACKLOG)),
        }
    }

    /// Hands a success over; `claimed_at` is when its claim came back, so that the row's
    /// `finished_at` is its `started_at` (the claim's time on the database's clock) plus
    /// how long its handler ran.
    async fn record(
        &self,
        job: &ClaimedJob,
        result: Value,
        claimed_at: Instant,
        slot: Slot,
    ) -> Result<(), Value> {
        let ran_for = claimed_at.elapsed();
        let Ok(_waiting) = self.backlog.clone().acquire_owned().await else {
            return Err(result);
        };
        drop(slot);
        let (done, answer) = oneshot::channel();
        let finished = Finished {
            org_id: job.org_id,
            job_id: job.id,
            result,
            ran_for,
            event: Some(job_event(job, JobStatus::Succeeded)),
            done: Some(done),
        };
        if let Err(unsent) = self.sender.send(finished).await {
            // Dropped here, the unsent `Finished` answers with its result.
            drop(unsent);
        }
        // Every `Finished` answers, also when dropped; a closed channel cannot happen
        // then, and would only make the job run again after its lease.
        answer.await.unwrap_or(Ok(()))
    }

    /// Waits until every outcome handed over is written (or given back), at shutdown.
    pub async fn drained(&self) {
        let _all = self.backlog.acquire_many(RECORD_BACKLOG as u32).await;
    }
}

async fn write_batches(ctx: JobContext, mut receiver: mpsc::Receiver<Finished>) {
    let mut batch = Vec::with_capacity(RECORD_BATCH);
    while receiver.recv_many(&mut batch, RECORD_BATCH).await > 0 {
        let mut by_org: HashMap<OrgId, Vec<Finished>> = HashMap::new();
        for finished in batch.drain(..) {
            by_org.entry(finished.org_id).or_default().push(finished);
        }
        for (org_id, group) in by_org {
            let ids: Vec<JobId> = group.iter().map(|f| f.job_id).collect();
            let results: Vec<&Value> = group.iter().map(|f| &f.result).collect();
            let ran_for: Vec<f64> = group.iter().map(|f| f.ran_for.as_secs_f64()).collect();
            let written = async {
                let mut tx = ctx.db.begin_bookkeeping(org_id).await?;
                db::jobs::succeed_many(&mut tx, &ctx.worker, &ids, &results, &ran_for).await?;
                tx.commit().await
            }
            .await;
            match written {
                Ok(()) => {
                    let events = group.into_iter().filter_map(|f| f.answer(true));
                    ctx.events.publish_all(events);
                }
                Err(e) => {
                    tracing::warn!(org_id = %org_id, jobs = group.len(), error = %e,
                        "could not record a batch of finished jobs; each is recorded alone");
                    for finished in group {
                        let _ = finished.answer(false);
                    }
                }
            }
        }
    }
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
            ctx.events.publish(job_event(job, JobStatus::Succeeded));
            tracing::info!(job_id = %job.id, job_type = %job.job_type, "job succeeded");
        }
        Err(JobError::Retry { message, after }) if job.attempts < job.max_attempts => {
            let delay = backoff(ctx.settings.retry_base, job.attempts, BACKOFF_CAP)
                .max(after.unwrap_or_default());
            let due = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
            db::jobs::requeue(&mut tx, job.id, worker, message, due).await?;
            tx.commit().await?;
            ctx.events.publish(job_event(job, JobStatus::Queued));
            tracing::warn!(job_id = %job.id, job_type = %job.job_type, attempt = job.attempts,
                delay_ms = delay.as_millis() as u64, error = %message, "job failed; retrying");
            ctx.queue
                .enqueue_later(job.id, job.org_id, Lane::of(&job.job_type), delay)
                .await;
        }
        Err(JobError::Retry { message, .. }) | Err(JobError::Permanent(message)) => {
            db::jobs::fail(&mut tx, job.id, worker, message).await?;
            tx.commit().await?;
            ctx.events.publish(job_event(job, JobStatus::Failed));
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

/// The live event of a claimed job reaching `status`, with its attempts so far.
fn job_event(job: &ClaimedJob, status: JobStatus) -> Event {
    Event::job(
        job.org_id,
        job.id.0,
        &job.job_type,
        status,
        Some(job.attempts),
    )
}

/// Extends the leases of every job this process runs, every third of a lease: one
/// statement per org, whatever the number of jobs. A job is in `in_flight` from its
/// claim until its outcome is written.
pub async fn renew_leases(ctx: JobContext, stop: CancellationToken) {
    let lease = ctx.settings.lease;
    let mut interval = tokio::time::interval(lease / 3);
    interval.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        let mut by_org: HashMap<OrgId, Vec<JobId>> = HashMap::new();
        if let Ok(running) = ctx.in_flight.lock() {
            for (job_id, (org_id, _)) in running.iter() {
                by_org.entry(*org_id).or_default().push(*job_id);
            }
        }
        for (org_id, ids) in by_org {
            let renewed = async {
                let mut tx = ctx.db.begin_bookkeeping(org_id).await?;
                db::jobs::renew_leases(&mut tx, &ids, &ctx.worker, lease.as_secs_f64()).await?;
                tx.commit().await
            };
            if let Err(e) = renewed.await {
                tracing::warn!(%org_id, jobs = ids.len(), error = %e, "could not renew job leases");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(result: Value) -> (Finished, oneshot::Receiver<Result<(), Value>>) {
        let (done, answer) = oneshot::channel();
        let finished = Finished {
            org_id: OrgId(uuid::Uuid::now_v7()),
            job_id: JobId(uuid::Uuid::now_v7()),
            result,
            ran_for: Duration::ZERO,
            event: None,
            done: Some(done),
        };
        (finished, answer)
    }

    #[test]
    fn an_outcome_dropped_unwritten_gives_its_result_back() {
        let (written, mut answer) = finished(serde_json::json!({"n": 1}));
        written.answer(true);
        assert_eq!(answer.try_recv().ok(), Some(Ok(())));

        let (refused, mut answer) = finished(serde_json::json!({"n": 2}));
        refused.answer(false);
        assert_eq!(
            answer.try_recv().ok(),
            Some(Err(serde_json::json!({"n": 2})))
        );

        // A recorder that panics or stops drops what it holds: the job records it alone.
        let (lost, mut answer) = finished(serde_json::json!({"n": 3}));
        drop(lost);
        assert_eq!(
            answer.try_recv().ok(),
            Some(Err(serde_json::json!({"n": 3})))
        );
    }

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
