//! `process-asset`: chunking and embedding an uploaded asset. The knowledge base has no
//! executor yet, so the job is recorded and fails at once, visibly, instead of waiting
//! in the queue forever.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::db::jobs::ClaimedJob;
use crate::jobs::job::Job;
use crate::jobs::{JobContext, JobError};

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessAsset {
    pub asset_id: Uuid,
}

impl Job for ProcessAsset {
    const TYPE: &'static str = "process-asset";
    const CLIENT: bool = true;

    async fn run(&self, _ctx: &JobContext, _job: &ClaimedJob) -> Result<Value, JobError> {
        Err(JobError::Permanent(super::NO_EXECUTOR.into()))
    }
}
