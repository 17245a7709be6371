//! `crm:sync-pipelines`: replaces the connection's pipelines and stages with Kommo's.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::db;
use crate::db::crm::{NewPipeline, NewStage};
use crate::db::jobs::ClaimedJob;
use crate::domain::ConnectionId;
use crate::domain::OrgId;
use crate::jobs::job::{Job, Rejected};
use crate::jobs::kinds::sync::{check_connection, tracked};
use crate::jobs::queue::Lane;
use crate::jobs::{JobContext, JobError};

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncPipelines {
    pub connection_id: ConnectionId,
}

impl Job for SyncPipelines {
    const TYPE: &'static str = "crm:sync-pipelines";
    const CLIENT: bool = true;
    const LANE: Lane = Lane::External;

    async fn validate(&self, tx: &mut db::Tx, org_id: OrgId) -> Result<(), Rejected> {
        check_connection(tx, org_id, self.connection_id).await
    }

    async fn run(&self, ctx: &JobContext, job: &ClaimedJob) -> Result<Value, JobError> {
        let connection_id = self.connection_id;
        tracked(ctx, job, connection_id, "pipelines", async {
            let kommo = &ctx.kommo;
            let pipelines = kommo
                .with_token(
                    &ctx.db,
                    job.org_id,
                    connection_id,
                    |domain, token| async move { kommo.client.pipelines(&domain, &token).await },
                )
                .await?;
            let rows: Vec<NewPipeline> = pipelines
                .into_iter()
                .map(|p| NewPipeline {
                    external_id: p.id,
                    name: p.name,
                    sort: p.sort,
                    is_main: p.is_main,
                    is_archive: p.is_archive,
                    stages: p
                        .embedded
                        .statuses
                        .into_iter()
                        .map(|s| NewStage {
                            external_id: s.id,
                            name: s.name,
                            sort: s.sort,
                            color: s.color,
                            kind: s.kind,
                        })
                        .collect(),
                })
                .collect();
            let mut tx = ctx.db.begin_worker(job.org_id).await?;
            db::crm::replace_pipelines(&mut tx, job.org_id, connection_id, &rows).await?;
            tx.commit().await?;
            Ok(rows.len())
        })
        .await
    }
}
