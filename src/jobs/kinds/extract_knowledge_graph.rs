//! `extract-knowledge-graph`: entities and relations from an asset, an article, an
//! agent's knowledge or given chunks. No executor yet: recorded, then failed at once.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::db::jobs::ClaimedJob;
use crate::db::{self, Tx};
use crate::domain::AgentId;
use crate::domain::OrgId;
use crate::jobs::job::{Job, Rejected, invalid};
use crate::jobs::{JobContext, JobError};

/// The most chunk ids one job may name.
pub const MAX_CHUNK_IDS: usize = 1000;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractKnowledgeGraph {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asset_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub article_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunk_ids: Option<Vec<Uuid>>,
}

impl Job for ExtractKnowledgeGraph {
    const TYPE: &'static str = "extract-knowledge-graph";
    const CLIENT: bool = true;

    async fn validate(&self, tx: &mut Tx, org_id: OrgId) -> Result<(), Rejected> {
        if self.asset_id.is_none()
            && self.article_id.is_none()
            && self.agent_id.is_none()
            && self.chunk_ids.as_ref().is_none_or(Vec::is_empty)
        {
            return Err(invalid(
                "asset_id",
                "one of asset_id, article_id, agent_id or chunk_ids is required",
            ));
        }
        if self
            .chunk_ids
            .as_ref()
            .is_some_and(|ids| ids.len() > MAX_CHUNK_IDS)
        {
            return Err(invalid(
                "chunk_ids",
                format!("must hold at most {MAX_CHUNK_IDS} ids"),
            ));
        }
        if let Some(agent_id) = self.agent_id
            && db::agents::get(tx, org_id, AgentId(agent_id))
                .await?
                .is_none()
        {
            return Err(invalid("agent_id", "must be an agent of this organization"));
        }
        Ok(())
    }

    async fn run(&self, _ctx: &JobContext, _job: &ClaimedJob) -> Result<Value, JobError> {
        Err(JobError::Permanent(super::NO_EXECUTOR.into()))
    }
}
