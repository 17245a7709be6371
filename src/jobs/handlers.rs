//! The handler of each job type. A type without an executor fails at once and visibly,
//! never sitting in the queue forever.

use serde_json::{Value, json};

use crate::db::jobs::ClaimedJob;
use crate::jobs::types::{
    EXTRACT_KNOWLEDGE_GRAPH, PROCESS_ASSET, SEND_MESSAGE, SYNC_CONTACTS, SYNC_PIPELINES,
    TOKEN_REFRESH, WEBHOOK,
};
use crate::jobs::{JobContext, JobError, kommo};

pub async fn run(ctx: &JobContext, job: &ClaimedJob) -> Result<Value, JobError> {
    match job.job_type.as_str() {
        // The knowledge-base pipeline (chunking, embeddings, entity extraction) has no
        // executor yet; its jobs are recorded and fail at once.
        PROCESS_ASSET | EXTRACT_KNOWLEDGE_GRAPH => {
            Err(JobError::Permanent("executor not configured".into()))
        }
        SYNC_PIPELINES => kommo::sync_pipelines(ctx, job).await,
        SYNC_CONTACTS => kommo::sync_contacts(ctx, job).await,
        SEND_MESSAGE => kommo::send_message(ctx, job).await,
        TOKEN_REFRESH => kommo::token_refresh(ctx, job).await,
        WEBHOOK => kommo::webhook(ctx, job).await,
        #[cfg(feature = "test-support")]
        t if crate::jobs::types::TEST_TYPES.contains(&t) => test_jobs::run(job).await,
        other => Err(JobError::Permanent(format!(
            "no handler for job type `{other}`"
        ))),
    }
    .map(|v: Value| if v.is_null() { json!({}) } else { v })
}

#[cfg(feature = "test-support")]
mod test_jobs {
    //! Handlers that exist only to exercise the runner in tests (feature `test-support`).

    use std::time::Duration;

    use serde_json::{Value, json};

    use crate::db::jobs::ClaimedJob;
    use crate::jobs::JobError;
    use crate::jobs::types::{TestFail, TestSleep};

    pub async fn run(job: &ClaimedJob) -> Result<Value, JobError> {
        match job.job_type.as_str() {
            "test:sleep" => {
                let p: TestSleep = serde_json::from_value(job.payload.clone())
                    .map_err(|e| JobError::Permanent(e.to_string()))?;
                tokio::time::sleep(Duration::from_millis(p.millis)).await;
                Ok(json!({"slept_ms": p.millis, "attempt": job.attempts}))
            }
            "test:fail" => {
                let p: TestFail = serde_json::from_value(job.payload.clone())
                    .map_err(|e| JobError::Permanent(e.to_string()))?;
                match p.failures {
                    Some(n) if job.attempts > n => Ok(json!({"attempt": job.attempts})),
                    _ if p.permanent => Err(JobError::Permanent(format!(
                        "permanent failure on attempt {}",
                        job.attempts
                    ))),
                    _ => Err(JobError::retry(format!(
                        "failure on attempt {}",
                        job.attempts
                    ))),
                }
            }
            _ => panic!("test:panic was asked to panic"),
        }
    }
}
