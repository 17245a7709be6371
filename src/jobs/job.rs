//! A job type is one module implementing [`Job`]: its type name, its payload (the type
//! itself), how many attempts it gets, its lane, whether clients may enqueue it through
//! `POST /v1/orgs/{org_id}/jobs`, how a client's payload is checked and how it runs. The
//! registry (`kinds::REGISTRY`) lists every type once; the runner and the jobs API both
//! read it, so there is no `match` on type names anywhere else.

use std::future::Future;
use std::pin::Pin;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::db::jobs::ClaimedJob;
use crate::db::{self, Tx};
use crate::domain::FieldError;
use crate::domain::UserId;
use crate::domain::{JobId, OrgId};
use crate::jobs::queue::Lane;
use crate::jobs::{DEFAULT_MAX_ATTEMPTS, JobContext, JobError};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub trait Job: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The `type` of its rows, e.g. `crm:sync-pipelines`.
    const TYPE: &'static str;
    const MAX_ATTEMPTS: i32 = DEFAULT_MAX_ATTEMPTS;
    /// Whether clients may enqueue it (`POST …/jobs`); the service's own jobs are not.
    const CLIENT: bool = false;
    /// Jobs that wait on Kommo run in `Lane::External`, so a hanging Kommo holds only them.
    const LANE: Lane = Lane::Internal;

    /// Checks a client's payload beyond its shape (ids that must belong to the org).
    fn validate(
        &self,
        _tx: &mut Tx,
        _org_id: OrgId,
    ) -> impl Future<Output = Result<(), Rejected>> + Send {
        async { Ok(()) }
    }

    /// Runs one attempt. Anything with an effect outside the service must be safe to
    /// repeat: an attempt can die after the effect and before its outcome is recorded.
    fn run(
        &self,
        ctx: &JobContext,
        job: &ClaimedJob,
    ) -> impl Future<Output = Result<Value, JobError>> + Send;
}

/// Why a client's job was not accepted: a field that does not fit (422), or the
/// database could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum Rejected {
    #[error("{}: {}", .0.field, .0.message)]
    Invalid(FieldError),
    #[error(transparent)]
    Db(#[from] db::Error),
}

impl From<sqlx::Error> for Rejected {
    fn from(e: sqlx::Error) -> Rejected {
        Rejected::Db(e.into())
    }
}

pub fn invalid(field: &str, message: impl Into<String>) -> Rejected {
    Rejected::Invalid(FieldError::new(field, message))
}

/// One job type, type-erased for the registry.
pub struct Registered {
    pub job_type: &'static str,
    pub max_attempts: i32,
    pub client: bool,
    pub lane: Lane,
    run: for<'a> fn(&'a JobContext, &'a ClaimedJob) -> BoxFuture<'a, Result<Value, JobError>>,
    validate: for<'a> fn(Value, &'a mut Tx, OrgId) -> BoxFuture<'a, Result<(), Rejected>>,
}

impl Registered {
    pub const fn of<J: Job>() -> Registered {
        Registered {
            job_type: J::TYPE,
            max_attempts: J::MAX_ATTEMPTS,
            client: J::CLIENT,
            lane: J::LANE,
            run: run_erased::<J>,
            validate: validate_erased::<J>,
        }
    }
}

fn run_erased<'a, J: Job>(
    ctx: &'a JobContext,
    job: &'a ClaimedJob,
) -> BoxFuture<'a, Result<Value, JobError>> {
    Box::pin(async move {
        let payload: J = serde_json::from_value(job.payload.clone())
            .map_err(|e| JobError::Permanent(format!("invalid payload: {e}")))?;
        payload.run(ctx, job).await
    })
}

fn validate_erased<'a, J: Job>(
    fields: Value,
    tx: &'a mut Tx,
    org_id: OrgId,
) -> BoxFuture<'a, Result<(), Rejected>> {
    Box::pin(async move {
        let payload: J = crate::domain::fields::from_value(fields).map_err(Rejected::Invalid)?;
        payload.validate(tx, org_id).await
    })
}

pub fn find(job_type: &str) -> Option<&'static Registered> {
    crate::jobs::kinds::REGISTRY
        .iter()
        .find(|r| r.job_type == job_type)
}

/// The lane a type runs in (an unknown type fails at once, in the internal lane).
pub fn lane_of(job_type: &str) -> Lane {
    find(job_type).map_or(Lane::Internal, |r| r.lane)
}

/// Runs one attempt of a claimed job with the handler of its type.
pub async fn run(ctx: &JobContext, job: &ClaimedJob) -> Result<Value, JobError> {
    let Some(registered) = find(&job.job_type) else {
        return Err(JobError::Permanent(format!(
            "no handler for job type `{}`",
            job.job_type
        )));
    };
    (registered.run)(ctx, job).await.map(|v| {
        if v.is_null() {
            Value::Object(Map::new())
        } else {
            v
        }
    })
}

/// A client's job, checked: its type and the payload to store.
pub struct NewJob {
    pub job_type: &'static str,
    pub max_attempts: i32,
    pub payload: Value,
}

/// Checks `{type, …}` from a client: a type clients may enqueue, the fields of that
/// type and nothing else, and ids that belong to the caller's org.
pub async fn validate_client(body: Value, tx: &mut Tx, org_id: OrgId) -> Result<NewJob, Rejected> {
    let Value::Object(mut fields) = body else {
        return Err(invalid("", "the body must be a JSON object"));
    };
    let job_type = match fields.remove("type") {
        Some(Value::String(t)) => t,
        Some(_) => return Err(invalid("type", "must be a string")),
        None => return Err(invalid("type", "is required")),
    };
    let Some(registered) = find(&job_type).filter(|r| r.client) else {
        let names: Vec<&str> = crate::jobs::kinds::REGISTRY
            .iter()
            .filter(|r| r.client && !r.job_type.starts_with("test:"))
            .map(|r| r.job_type)
            .collect();
        return Err(invalid(
            "type",
            format!("must be one of {}", names.join(", ")),
        ));
    };
    let payload = Value::Object(fields);
    (registered.validate)(payload.clone(), tx, org_id).await?;
    Ok(NewJob {
        job_type: registered.job_type,
        max_attempts: registered.max_attempts,
        payload,
    })
}

/// Inserts a job of type `J` in the caller's transaction; after the commit, hand the
/// returned row to `JobQueue::enqueue_committed`.
pub async fn insert<J: Job>(
    tx: &mut Tx,
    org_id: OrgId,
    job: &J,
    created_by: Option<UserId>,
) -> Result<crate::db::jobs::Job, db::Error> {
    let payload = serde_json::to_value(job).map_err(|e| {
        tracing::error!(error = %e, job_type = J::TYPE, "a job payload did not serialize");
        db::Error::Aborted("serializing a job payload")
    })?;
    Ok(crate::db::jobs::insert(tx, org_id, J::TYPE, &payload, J::MAX_ATTEMPTS, created_by).await?)
}

/// `insert` for many jobs of one type in one statement; after the commit, hand the ids to
/// `JobQueue::enqueue_committed_many`.
pub async fn insert_many<J: Job>(
    tx: &mut Tx,
    org_id: OrgId,
    jobs: &[J],
    created_by: Option<UserId>,
) -> Result<Vec<JobId>, db::Error> {
    let payloads = jobs
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            tracing::error!(error = %e, job_type = J::TYPE, "a job payload did not serialize");
            db::Error::Aborted("serializing a job payload")
        })?;
    Ok(
        crate::db::jobs::insert_many(tx, org_id, J::TYPE, &payloads, J::MAX_ATTEMPTS, created_by)
            .await?,
    )
}

/// `insert`, for a job that may not start before `delay` has passed (a debounce, working
/// hours); after the commit, hand it to `JobQueue::enqueue_committed_later` with the same
/// delay.
pub async fn insert_delayed<J: Job>(
    tx: &mut Tx,
    org_id: OrgId,
    job: &J,
    delay: std::time::Duration,
) -> Result<crate::db::jobs::Job, db::Error> {
    let inserted = insert(tx, org_id, job, None).await?;
    crate::db::jobs::delay_start(tx, JobId(inserted.id), delay.as_secs_f64()).await?;
    Ok(inserted)
}
