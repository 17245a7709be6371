//! `kommo:token-refresh`: refreshes a connection's tokens before they expire; the
//! scheduler queues one per connection that needs it.

use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::db;
use crate::db::jobs::ClaimedJob;
use crate::domain::ConnectionId;
use crate::domain::JobId;
use crate::jobs::job::{self, Job};
use crate::jobs::queue::Lane;
use crate::jobs::{JobContext, JobError};
use crate::kommo::tokens::RefreshReason;

/// Tokens are refreshed when less than this is left of them (Kommo's last 24 h).
pub const REFRESH_AHEAD: chrono::Duration = chrono::Duration::hours(6);

#[derive(Debug, Serialize, Deserialize)]
pub struct TokenRefresh {
    pub connection_id: ConnectionId,
}

impl Job for TokenRefresh {
    const TYPE: &'static str = "kommo:token-refresh";
    const LANE: Lane = Lane::External;

    async fn run(&self, ctx: &JobContext, job: &ClaimedJob) -> Result<Value, JobError> {
        let expires_at = ctx
            .kommo
            .refresh(
                &ctx.db,
                job.org_id,
                self.connection_id,
                RefreshReason::ExpiresBefore(Utc::now() + REFRESH_AHEAD),
            )
            .await?;
        Ok(json!({ "token_expires_at": expires_at }))
    }
}

/// Scheduler tick: a `kommo:token-refresh` job for every connection whose access token
/// expires within `REFRESH_AHEAD` and has none queued or running yet.
pub async fn schedule_token_refreshes(db: &crate::db::Db, queue: &crate::jobs::JobQueue) {
    let due = async {
        let mut tx = db.begin_system().await?;
        let rows = db::crm::due_for_refresh(&mut tx, REFRESH_AHEAD.num_seconds() as f64).await?;
        tx.commit().await?;
        Ok::<_, crate::db::Error>(rows)
    };
    let rows = match due.await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "could not look for tokens to refresh");
            return;
        }
    };
    for (connection_id, org_id) in rows {
        let queued = async {
            let mut tx = db.begin_worker(org_id).await?;
            let job = job::insert(&mut tx, org_id, &TokenRefresh { connection_id }, None).await?;
            tx.commit().await?;
            Ok::<_, crate::db::Error>(job)
        };
        match queued.await {
            Ok(job) => {
                queue
                    .enqueue_committed(JobId(job.id), org_id, &job.job_type)
                    .await
            }
            Err(e) => tracing::warn!(%connection_id, error = %e, "could not queue a token refresh"),
        }
    }
}
