//! `crm:sync-contacts`: upserts the connection's contacts, page by page.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::db;
use crate::db::crm::NewContact;
use crate::db::jobs::ClaimedJob;
use crate::domain::ConnectionId;
use crate::domain::OrgId;
use crate::jobs::job::{Job, Rejected};
use crate::jobs::kinds::sync::{check_connection, tracked};
use crate::jobs::queue::Lane;
use crate::jobs::{JobContext, JobError};

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncContacts {
    pub connection_id: ConnectionId,
}

fn unix_time(secs: Option<i64>) -> Option<DateTime<Utc>> {
    secs.and_then(|s| DateTime::from_timestamp(s, 0))
}

impl Job for SyncContacts {
    const TYPE: &'static str = "crm:sync-contacts";
    const CLIENT: bool = true;
    const LANE: Lane = Lane::External;

    async fn validate(&self, tx: &mut db::Tx, org_id: OrgId) -> Result<(), Rejected> {
        check_connection(tx, org_id, self.connection_id).await
    }

    async fn run(&self, ctx: &JobContext, job: &ClaimedJob) -> Result<Value, JobError> {
        let connection_id = self.connection_id;
        tracked(ctx, job, connection_id, "contacts", async {
            let kommo = &ctx.kommo;
            let mut total = 0;
            // Kommo ends the listing with 204, or with a page that has no `next` link.
            for page in 1u32.. {
                let answer = kommo
                    .with_token(
                        &ctx.db,
                        job.org_id,
                        connection_id,
                        |domain, token| async move {
                            kommo.client.contacts_page(&domain, &token, page).await
                        },
                    )
                    .await?;
                let Some(answer) = answer else { break };
                let contacts: Vec<NewContact> = answer
                    .contacts
                    .into_iter()
                    .map(|c| NewContact {
                        external_id: c.id,
                        name: c.name,
                        first_name: c.first_name,
                        last_name: c.last_name,
                        responsible_user_id: c.responsible_user_id,
                        custom_fields: c.custom_fields_values.unwrap_or_else(|| json!([])),
                        external_created_at: unix_time(c.created_at),
                        external_updated_at: unix_time(c.updated_at),
                    })
                    .collect();
                total += contacts.len();
                let mut tx = ctx.db.begin_worker(job.org_id).await?;
                db::crm::upsert_contacts(&mut tx, job.org_id, connection_id, &contacts).await?;
                tx.commit().await?;
                if !answer.has_next {
                    break;
                }
            }
            Ok(total)
        })
        .await
    }
}
