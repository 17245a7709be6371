//! Queries on `jobs`, the table that mirrors every queued job for the API. Users read and
//! create rows under their claims; the runner claims and finishes them as `api_worker`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::page::Page;
use crate::domain::{JobId, OrgId, UserId};

pub use crate::domain::JobStatus;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Job {
    pub id: Uuid,
    pub org_id: Uuid,
    #[serde(rename = "type")]
    pub job_type: String,
    pub status: JobStatus,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    pub attempts: i32,
    pub max_attempts: i32,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// When a job waiting for its next attempt becomes due.
    pub run_after: Option<DateTime<Utc>>,
}

/// `query_as!(Job, …)` with a job's columns between `$head` and `$tail`.
macro_rules! job_query {
    ($head:tt, $tail:tt, $($arg:expr),* $(,)?) => {
        sqlx::query_as!(
            Job,
            $head + r#" id, org_id, type AS job_type, status AS "status: JobStatus", payload,
                result, error, attempts, max_attempts, created_at, started_at, finished_at,
                run_after "# + $tail,
            $($arg),*
        )
    };
}

#[derive(Debug, Default)]
pub struct JobFilter {
    pub status: Option<JobStatus>,
    pub job_type: Option<String>,
}

/// The most of one job's payload or result a list returns; larger ones (stored before
/// inputs were capped) are listed as `{"truncated": true}` and shown whole by `GET` of
/// the job itself.
const LISTED_JSON_BYTES: i32 = 64 * 1024;

pub async fn list(
    conn: &mut PgConnection,
    org_id: OrgId,
    filter: &JobFilter,
    page: Page,
) -> sqlx::Result<Vec<Job>> {
    sqlx::query_as!(
        Job,
        r#"SELECT id, org_id, type AS job_type, status AS "status: JobStatus",
                  CASE WHEN octet_length(payload::text) <= $6 THEN payload
                       ELSE '{"truncated": true}'::jsonb END AS "payload!",
                  CASE WHEN octet_length(result::text) <= $6 THEN result
                       WHEN result IS NOT NULL THEN '{"truncated": true}'::jsonb END AS result,
                  error, attempts, max_attempts, created_at, started_at, finished_at, run_after
           FROM jobs
           WHERE org_id = $1
             AND ($2::text IS NULL OR status = $2)
             AND ($3::text IS NULL OR type = $3)
             AND ($4::uuid IS NULL OR id < $4)
           ORDER BY id DESC LIMIT $5"#,
        org_id.0,
        filter.status as _,
        filter.job_type.as_deref(),
        page.after,
        page.fetch_limit(),
        LISTED_JSON_BYTES,
    )
    .fetch_all(conn)
    .await
}

pub async fn get(conn: &mut PgConnection, org_id: OrgId, id: JobId) -> sqlx::Result<Option<Job>> {
    job_query!(
        "SELECT",
        "FROM jobs WHERE org_id = $1 AND id = $2",
        org_id.0,
        id.0
    )
    .fetch_optional(conn)
    .await
}

pub async fn insert(
    conn: &mut PgConnection,
    org_id: OrgId,
    job_type: &str,
    payload: &serde_json::Value,
    max_attempts: i32,
    created_by: Option<UserId>,
) -> sqlx::Result<Job> {
    job_query!(
        "INSERT INTO jobs (id, org_id, type, payload, max_attempts, created_by, enqueued_at)
         VALUES ($1, $2, $3, $4, $5, $6, now()) RETURNING",
        "",
        JobId::new().0,
        org_id.0,
        job_type,
        payload,
        max_attempts,
        created_by.map(|u| u.0),
    )
    .fetch_one(conn)
    .await
}

/// Many jobs of one type at once (one statement): their ids, in the order of `payloads`.
pub async fn insert_many(
    conn: &mut PgConnection,
    org_id: OrgId,
    job_type: &str,
    payloads: &[serde_json::Value],
    max_attempts: i32,
    created_by: Option<UserId>,
) -> sqlx::Result<Vec<JobId>> {
    let ids: Vec<Uuid> = payloads.iter().map(|_| JobId::new().0).collect();
    sqlx::query!(
        "INSERT INTO jobs (id, org_id, type, payload, max_attempts, created_by, enqueued_at)
         SELECT p.id, $2, $3, p.payload, $5, $6, now()
         FROM unnest($1::uuid[], $4::jsonb[]) AS p(id, payload)",
        &ids,
        org_id.0,
        job_type,
        payloads,
        max_attempts,
        created_by.map(|u| u.0),
    )
    .execute(conn)
    .await?;
    Ok(ids.into_iter().map(JobId).collect())
}

/// A queued job's first attempt waits until `secs` from now.
pub async fn delay_start(conn: &mut PgConnection, id: JobId, secs: f64) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE jobs SET run_after = now() + make_interval(secs => $2)
         WHERE id = $1 AND status = 'queued'",
        id.0,
        secs,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// queued → cancelled; `None` when the job is in any other state (or absent).
pub async fn cancel(
    conn: &mut PgConnection,
    org_id: OrgId,
    id: JobId,
) -> sqlx::Result<Option<Job>> {
    job_query!(
        "UPDATE jobs SET status = 'cancelled', finished_at = now(), run_after = NULL,
                updated_at = now()
         WHERE org_id = $1 AND id = $2 AND status = 'queued' RETURNING",
        "",
        org_id.0,
        id.0,
    )
    .fetch_optional(conn)
    .await
}

/// failed → queued, with a fresh set of attempts; `None` in any other state.
pub async fn retry(conn: &mut PgConnection, org_id: OrgId, id: JobId) -> sqlx::Result<Option<Job>> {
    job_query!(
        "UPDATE jobs SET status = 'queued', attempts = 0, error = NULL, result = NULL,
                started_at = NULL, finished_at = NULL, run_after = NULL, enqueued_at = now(),
                lease_expires_at = NULL, worker = NULL, updated_at = now()
         WHERE org_id = $1 AND id = $2 AND status = 'failed' RETURNING",
        "",
        org_id.0,
        id.0,
    )
    .fetch_optional(conn)
    .await
}

/// What a worker needs to run a job it claimed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedJob {
    pub id: JobId,
    pub org_id: OrgId,
    pub job_type: String,
    pub payload: serde_json::Value,
    pub attempts: i32,
    pub max_attempts: i32,
}

/// Takes the jobs `ids` (of one org) for `worker` until `lease_secs` from now, in one
/// statement: those queued and due, and those running whose worker stopped renewing the
/// lease (it crashed). Anything else — cancelled, finished, or running under a live
/// lease — is not claimed, so a job never runs twice at the same time. Returns the ones
/// it took. (On `IS TRUE`, see `succeed_many`.)
pub async fn claim_many(
    conn: &mut PgConnection,
    ids: &[JobId],
    worker: &str,
    lease_secs: f64,
) -> sqlx::Result<Vec<ClaimedJob>> {
    let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
    sqlx::query_as!(
        ClaimedJob,
        r#"UPDATE jobs SET status = 'running', attempts = attempts + 1, worker = $2,
                started_at = now(), run_after = NULL, updated_at = now(),
                lease_expires_at = now() + make_interval(secs => $3)
         WHERE id = ANY($1)
           AND ((status = 'queued' AND (run_after IS NULL OR run_after <= now()))
                OR (status = 'running' AND lease_expires_at < now())) IS TRUE
         RETURNING id AS "id: JobId", org_id AS "org_id: OrgId", type AS job_type, payload,
                   attempts, max_attempts"#,
        &ids,
        worker,
        lease_secs,
    )
    .fetch_all(conn)
    .await
}

/// Of the queued jobs `ids`, those whose next attempt is not due yet, with how long until
/// it is.
pub async fn not_due_many(
    conn: &mut PgConnection,
    ids: &[JobId],
) -> sqlx::Result<Vec<(JobId, f64)>> {
    let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
    let rows = sqlx::query!(
        r#"SELECT id AS "id: JobId", extract(epoch FROM run_after - now())::float8 AS "secs!"
           FROM jobs WHERE id = ANY($1) AND (status = 'queued' AND run_after > now()) IS TRUE"#,
        &ids,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.secs)).collect())
}

/// Extends the leases of the jobs of one org this worker still runs, in one statement.
pub async fn renew_leases(
    conn: &mut PgConnection,
    ids: &[JobId],
    worker: &str,
    lease_secs: f64,
) -> sqlx::Result<u64> {
    let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
    let done = sqlx::query!(
        "UPDATE jobs SET lease_expires_at = now() + make_interval(secs => $3)
         WHERE id = ANY($1) AND worker = $2 AND (status = 'running') IS TRUE",
        &ids,
        worker,
        lease_secs,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

pub async fn succeed(
    conn: &mut PgConnection,
    id: JobId,
    worker: &str,
    result: &serde_json::Value,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE jobs SET status = 'succeeded', result = $3, error = NULL, finished_at = now(),
                lease_expires_at = NULL, updated_at = now()
         WHERE id = $1 AND worker = $2 AND (status = 'running') IS TRUE",
        id.0,
        worker,
        result,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// `succeed` for many jobs of one org in one statement; how many were still ours. Each
/// job's handler ran for `ran_for` seconds after its claim: its `finished_at` is its
/// `started_at` plus that, so the row says how long it ran even when it is written later.
///
/// The status test is written `(…) IS TRUE` in the statements that name their rows by id:
/// with row-level security's org condition, a plain `status = 'running'` lets the
/// planner combine the (org, status) and pending indexes, which it believes find a few
/// rows (statistics lag behind a burst of jobs) and which hold every unfinished job of
/// the org: milliseconds per statement instead of a key lookup per id.
pub async fn succeed_many(
    conn: &mut PgConnection,
    worker: &str,
    ids: &[JobId],
    results: &[&serde_json::Value],
    ran_for: &[f64],
) -> sqlx::Result<u64> {
    let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
    let done = sqlx::query!(
        "UPDATE jobs SET status = 'succeeded', result = r.result, error = NULL,
                finished_at = least(now(), started_at + make_interval(secs => r.ran_for)),
                lease_expires_at = NULL, updated_at = now()
         FROM unnest($1::uuid[], $2::jsonb[], $4::float8[]) AS r(id, result, ran_for)
         WHERE jobs.id = r.id AND jobs.worker = $3 AND (jobs.status = 'running') IS TRUE",
        &ids,
        results as _,
        worker,
        ran_for,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// A running job's progress so far, readable as its `result` while it runs (and after it
/// fails, since `fail` leaves the result as it was).
pub async fn record_progress(
    conn: &mut PgConnection,
    id: JobId,
    worker: &str,
    result: &serde_json::Value,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE jobs SET result = $3, updated_at = now()
         WHERE id = $1 AND worker = $2 AND (status = 'running') IS TRUE",
        id.0,
        worker,
        result,
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn fail(
    conn: &mut PgConnection,
    id: JobId,
    worker: &str,
    error: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE jobs SET status = 'failed', error = $3, finished_at = now(),
                lease_expires_at = NULL, updated_at = now()
         WHERE id = $1 AND worker = $2 AND (status = 'running') IS TRUE",
        id.0,
        worker,
        error,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Hands a running job back to the queue at once (its worker is shutting down and will
/// not finish it), instead of leaving it until its lease lapses; its type when it was.
pub async fn release(
    conn: &mut PgConnection,
    id: JobId,
    worker: &str,
) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!(
        "UPDATE jobs SET status = 'queued', lease_expires_at = NULL, worker = NULL,
                enqueued_at = now(), updated_at = now()
         WHERE id = $1 AND worker = $2 AND (status = 'running') IS TRUE
         RETURNING type",
        id.0,
        worker,
    )
    .fetch_optional(conn)
    .await
}

/// Back to the queue after a failed attempt, due again at `run_after`.
pub async fn requeue(
    conn: &mut PgConnection,
    id: JobId,
    worker: &str,
    error: &str,
    run_after: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE jobs SET status = 'queued', error = $3, run_after = $4, enqueued_at = now(),
                lease_expires_at = NULL, worker = NULL, updated_at = now()
         WHERE id = $1 AND worker = $2 AND (status = 'running') IS TRUE",
        id.0,
        worker,
        error,
        run_after,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Queued jobs of one type, due now, that no other transaction holds: locked until this
/// transaction ends, so a job can take over their work (a webhook parse taking other
/// deliveries) and record them in the same commit (`finish_taken`). A worker that pops
/// one meanwhile waits for the lock and then finds it finished.
pub async fn take_queued(
    conn: &mut PgConnection,
    org_id: OrgId,
    job_type: &str,
    except: JobId,
    limit: i64,
) -> sqlx::Result<Vec<(JobId, serde_json::Value)>> {
    let rows = sqlx::query!(
        r#"SELECT id AS "id: JobId", payload FROM jobs
           WHERE org_id = $1 AND status = 'queued' AND type = $2 AND id <> $3
             AND (run_after IS NULL OR run_after <= now())
           ORDER BY id
           LIMIT $4
           FOR UPDATE SKIP LOCKED"#,
        org_id.0,
        job_type,
        except.0,
        limit,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.payload)).collect())
}

/// What became of a job taken by `take_queued`.
pub struct TakenOutcome<'a> {
    pub id: JobId,
    pub result: &'a serde_json::Value,
    /// `Some`: failed for good with this message (a body that cannot parse).
    pub error: Option<&'a str>,
}

/// Records jobs taken by `take_queued` as run once by `worker`, in the transaction that
/// did their work.
pub async fn finish_taken(
    conn: &mut PgConnection,
    worker: &str,
    outcomes: &[TakenOutcome<'_>],
) -> sqlx::Result<()> {
    let ids: Vec<Uuid> = outcomes.iter().map(|o| o.id.0).collect();
    let results: Vec<&serde_json::Value> = outcomes.iter().map(|o| o.result).collect();
    let errors: Vec<Option<&str>> = outcomes.iter().map(|o| o.error).collect();
    sqlx::query!(
        "UPDATE jobs SET status = CASE WHEN r.error IS NULL THEN 'succeeded' ELSE 'failed' END,
                result = r.result, error = r.error, attempts = attempts + 1, worker = $4,
                started_at = now(), finished_at = now(), run_after = NULL,
                lease_expires_at = NULL, updated_at = now()
         FROM unnest($1::uuid[], $2::jsonb[], $3::text[]) AS r(id, result, error)
         WHERE jobs.id = r.id AND (jobs.status = 'queued') IS TRUE",
        &ids,
        &results as _,
        &errors as _,
        worker,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// An unfinished job as the sweep sees it.
#[derive(Debug, sqlx::FromRow)]
pub struct Unfinished {
    pub id: JobId,
    pub org_id: OrgId,
    pub job_type: String,
    /// How long until a waiting retry is due; 0 when it is due now.
    pub due_in_ms: i64,
}

/// Jobs in every org that Redis should hold (scheduler only; see `auth.jobs_unfinished`).
pub async fn unfinished(
    conn: &mut PgConnection,
    settle_secs: f64,
    limit: i64,
) -> sqlx::Result<Vec<Unfinished>> {
    sqlx::query_as!(
        Unfinished,
        r#"SELECT id AS "id!: JobId", org_id AS "org_id!: OrgId", job_type AS "job_type!",
                  due_in_ms AS "due_in_ms!"
           FROM auth.jobs_unfinished(make_interval(secs => $1), $2)"#,
        settle_secs,
        limit,
    )
    .fetch_all(conn)
    .await
}

/// Housekeeping across orgs: expired OAuth states, and webhook digests older than 24 h.
/// Deletes one batch of webhook deliveries (with their events) older than
/// `webhook_days` and of jobs finished more than `job_days` ago; 0 keeps them.
pub async fn retention(
    conn: &mut PgConnection,
    webhook_days: u32,
    job_days: u32,
    batch: i32,
) -> sqlx::Result<(i64, i64)> {
    let row = sqlx::query!(
        r#"SELECT deleted_deliveries AS "deliveries!", deleted_jobs AS "jobs!"
           FROM auth.retention($1::int, $2::int, $3)"#,
        i32::try_from(webhook_days).unwrap_or(i32::MAX),
        i32::try_from(job_days).unwrap_or(i32::MAX),
        batch,
    )
    .fetch_one(conn)
    .await?;
    Ok((row.deliveries, row.jobs))
}

pub async fn housekeeping(conn: &mut PgConnection) -> sqlx::Result<(i64, i64)> {
    let row = sqlx::query!(
        r#"SELECT expired_oauth_states AS "states!", released_webhook_digests AS "digests!"
           FROM auth.housekeeping()"#
    )
    .fetch_one(conn)
    .await?;
    Ok((row.states, row.digests))
}
