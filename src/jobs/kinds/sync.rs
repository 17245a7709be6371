//! What the two sync jobs share: the connection's sync state, kept as the job runs.

use std::future::Future;

use chrono::Utc;
use serde_json::{Value, json};

use crate::db;
use crate::db::jobs::ClaimedJob;
use crate::domain::{ConnectionId, OrgId};
use crate::jobs::{JobContext, JobError};

/// Records a sync part's state on the connection; failures to record are only logged,
/// the sync's own outcome matters more.
async fn sync_state(
    ctx: &JobContext,
    org_id: OrgId,
    connection_id: ConnectionId,
    part: &str,
    state: Value,
) {
    let recorded = async {
        let mut tx = ctx.db.begin_worker(org_id).await?;
        db::crm::set_sync_state(&mut tx, connection_id, part, &state).await?;
        tx.commit().await
    };
    if let Err(e) = recorded.await {
        tracing::warn!(%connection_id, error = %e, "could not record the sync state");
    }
}

/// Runs `work` (which returns how many rows it synced) with the part's state moving from
/// `running` to `completed` or `failed`.
pub async fn tracked<F>(
    ctx: &JobContext,
    job: &ClaimedJob,
    connection_id: ConnectionId,
    part: &str,
    work: F,
) -> Result<Value, JobError>
where
    F: Future<Output = Result<usize, JobError>>,
{
    let started_at = Utc::now();
    sync_state(
        ctx,
        job.org_id,
        connection_id,
        part,
        json!({"status": "running", "started_at": started_at}),
    )
    .await;
    match work.await {
        Ok(count) => {
            sync_state(ctx, job.org_id, connection_id, part, json!({
                "status": "completed", "started_at": started_at, "finished_at": Utc::now(), "count": count,
            }))
            .await;
            Ok(json!({ "count": count }))
        }
        Err(e) => {
            let message = match &e {
                JobError::Retry { message, .. } | JobError::Permanent(message) => message.clone(),
            };
            sync_state(ctx, job.org_id, connection_id, part, json!({
                "status": "failed", "started_at": started_at, "finished_at": Utc::now(), "error": message,
            }))
            .await;
            Err(e)
        }
    }
}

/// Both syncs name a connection that must be the org's.
pub async fn check_connection(
    tx: &mut db::Tx,
    org_id: OrgId,
    connection_id: ConnectionId,
) -> Result<(), crate::jobs::job::Rejected> {
    if db::agents::connection_exists(tx, org_id, connection_id).await? {
        Ok(())
    } else {
        Err(crate::jobs::job::invalid(
            "connection_id",
            "must be a CRM connection of this organization",
        ))
    }
}
