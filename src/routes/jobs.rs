//! Background jobs of an org: list, enqueue, inspect, cancel, retry. The API reads only
//! the `jobs` table; the runner keeps it in step with the queue.

use crate::http::json::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;
use validator::{Validate, ValidationErrors};

use crate::db;
use crate::db::audit::Change;
use crate::db::jobs::{Job, JobFilter, JobStatus};
use crate::domain::page::{Page, Paginated};
use crate::domain::{JobId, OrgId};
use crate::events::Event;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{ApiJson, ApiPath, ApiQuery, OrgTx, RequestMeta, Write};
use crate::jobs::job;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show))
        .routes(routes!(cancel))
        .routes(routes!(retry))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListJobs {
    pub status: Option<JobStatus>,
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub job_type: Option<String>,
    /// 1..=100, default 25.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// `{"type": "...", ...fields of that type}`; the fields are checked per type.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(transparent)]
#[schema(value_type = Object, example = json!({"type": "crm:sync-pipelines", "connection_id": "0196f0c4-7a4e-7b51-9c1e-1b2c3d4e5f60"}))]
pub struct CreateJob(serde_json::Value);

impl Validate for CreateJob {
    /// The per-type rules need the database (ids must belong to the org), so they run in
    /// the handler through `job::validate_client`.
    fn validate(&self) -> Result<(), ValidationErrors> {
        Ok(())
    }
}

/// The org's jobs, newest first.
#[utoipa::path(get, path = "/v1/orgs/{org_id}/jobs", tag = "jobs",
    params(ListJobs),
    responses((status = 200, body = inline(Paginated<Job>))))]
pub async fn list(
    OrgTx { org_id, mut tx, .. }: OrgTx,
    ApiQuery(query): ApiQuery<ListJobs>,
) -> ApiResult<Json<Paginated<Job>>> {
    let page = Page::new(query.limit, query.cursor.as_deref())?;
    let filter = JobFilter {
        status: query.status,
        job_type: query.job_type,
    };
    let rows = db::jobs::list(&mut tx, org_id, &filter, page).await?;
    tx.commit().await?;
    Ok(Json(Paginated::from_rows(rows, page, |j| j.id)))
}

/// Queues a job; 202 with the job as recorded.
#[utoipa::path(post, path = "/v1/orgs/{org_id}/jobs", tag = "jobs",
    request_body = CreateJob,
    responses((status = 202, body = Job)))]
pub async fn create(
    State(state): State<AppState>,
    OrgTx {
        user,
        org_id,
        mut tx,
        ..
    }: OrgTx<Write>,
    meta: RequestMeta,
    ApiJson(CreateJob(body)): ApiJson<CreateJob>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    let new = job::validate_client(body, &mut tx, org_id).await?;
    let job = db::jobs::insert(
        &mut tx,
        org_id,
        new.job_type,
        &new.payload,
        new.max_attempts,
        Some(user.id),
    )
    .await?;
    let change = Change::new("job.create", "job", job.id, json!({"type": job.job_type}));
    db::audit::record(&mut tx, org_id, Some(user.id), &meta, change).await?;
    tx.commit().await?;
    // Committed first, so a worker never sees a job its row does not yet show. If the
    // push fails the row stays queued and the scheduler's sweep pushes it.
    state
        .jobs
        .enqueue_committed(JobId(job.id), org_id, &job.job_type)
        .await;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// One job: status, attempts, result or error.
#[utoipa::path(get, path = "/v1/orgs/{org_id}/jobs/{job_id}", tag = "jobs",
    params(("job_id" = Uuid, Path)),
    responses((status = 200, body = Job)))]
pub async fn show(
    OrgTx { org_id, mut tx, .. }: OrgTx,
    ApiPath((_, job_id)): ApiPath<(Uuid, JobId)>,
) -> ApiResult<Json<Job>> {
    let job = db::jobs::get(&mut tx, org_id, job_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    tx.commit().await?;
    Ok(Json(job))
}

/// queued → cancelled (it will never run); 409 in any other state.
#[utoipa::path(post, path = "/v1/orgs/{org_id}/jobs/{job_id}/cancel", tag = "jobs",
    params(("job_id" = Uuid, Path)),
    responses((status = 200, body = Job)))]
pub async fn cancel(
    State(state): State<AppState>,
    OrgTx {
        user,
        org_id,
        mut tx,
        ..
    }: OrgTx<Write>,
    meta: RequestMeta,
    ApiPath((_, job_id)): ApiPath<(Uuid, JobId)>,
) -> ApiResult<Json<Job>> {
    let Some(job) = db::jobs::cancel(&mut tx, org_id, job_id).await? else {
        return Err(state_conflict(&mut tx, org_id, job_id, "cancelled").await);
    };
    let change = Change::new("job.cancel", "job", job_id, json!({"type": job.job_type}));
    db::audit::record(&mut tx, org_id, Some(user.id), &meta, change).await?;
    tx.commit().await?;
    let cancelled = Event::job(
        org_id,
        job.id,
        &job.job_type,
        job.status,
        Some(job.attempts),
    );
    state.events.publish(cancelled);
    Ok(Json(job))
}

/// failed → queued with a fresh set of attempts; 409 in any other state.
#[utoipa::path(post, path = "/v1/orgs/{org_id}/jobs/{job_id}/retry", tag = "jobs",
    params(("job_id" = Uuid, Path)),
    responses((status = 202, body = Job)))]
pub async fn retry(
    State(state): State<AppState>,
    OrgTx {
        user,
        org_id,
        mut tx,
        ..
    }: OrgTx<Write>,
    meta: RequestMeta,
    ApiPath((_, job_id)): ApiPath<(Uuid, JobId)>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    let Some(job) = db::jobs::retry(&mut tx, org_id, job_id).await? else {
        return Err(state_conflict(&mut tx, org_id, job_id, "retried").await);
    };
    let change = Change::new("job.retry", "job", job_id, json!({"type": job.job_type}));
    db::audit::record(&mut tx, org_id, Some(user.id), &meta, change).await?;
    tx.commit().await?;
    state
        .jobs
        .enqueue_committed(JobId(job.id), org_id, &job.job_type)
        .await;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// 404 when the job does not exist, else 409 naming its state.
async fn state_conflict(tx: &mut db::Tx, org_id: OrgId, job_id: JobId, verb: &str) -> ApiError {
    match db::jobs::get(tx, org_id, job_id).await {
        Ok(Some(job)) => ApiError::conflict(format!(
            "The job is {}; it cannot be {verb}.",
            serde_json::to_value(job.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        )),
        Ok(None) => ApiError::NotFound,
        Err(e) => e.into(),
    }
}
