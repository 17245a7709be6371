//! Job types that exist only to exercise the runner in tests: compiled in only with the
//! `test-support` feature, so the production binary neither accepts nor runs them.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::db::jobs::ClaimedJob;
use crate::jobs::job::Job;
use crate::jobs::{JobContext, JobError};

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestSleep {
    pub millis: u64,
}

impl Job for TestSleep {
    const TYPE: &'static str = "test:sleep";
    const CLIENT: bool = true;

    async fn run(&self, _ctx: &JobContext, job: &ClaimedJob) -> Result<Value, JobError> {
        tokio::time::sleep(Duration::from_millis(self.millis)).await;
        Ok(json!({"slept_ms": self.millis, "attempt": job.attempts}))
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFail {
    /// Fail this many attempts, then succeed (absent: always fail).
    pub failures: Option<i32>,
    #[serde(default)]
    pub permanent: bool,
}

impl Job for TestFail {
    const TYPE: &'static str = "test:fail";
    const CLIENT: bool = true;

    async fn run(&self, _ctx: &JobContext, job: &ClaimedJob) -> Result<Value, JobError> {
        match self.failures {
            Some(n) if job.attempts > n => Ok(json!({"attempt": job.attempts})),
            _ if self.permanent => Err(JobError::Permanent(format!(
                "permanent failure on attempt {}",
                job.attempts
            ))),
            _ => Err(JobError::retry(format!(
                "failure on attempt {}",
                job.attempts
            ))),
        }
    }
}

/// Any fields; it panics.
#[derive(Debug, Serialize, Deserialize)]
pub struct TestPanic {
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

impl Job for TestPanic {
    const TYPE: &'static str = "test:panic";
    const CLIENT: bool = true;

    async fn run(&self, _ctx: &JobContext, _job: &ClaimedJob) -> Result<Value, JobError> {
        panic!("test:panic was asked to panic")
    }
}
