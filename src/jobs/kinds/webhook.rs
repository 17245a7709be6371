//! `kommo:webhook`: parses a stored webhook delivery into events, and records incoming
//! chat messages in their conversations, queueing the agent's reply
//! (`agent_reply::record_inbound`). It never calls Kommo, so it runs in the internal
//! lane, away from Kommo's delays.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::db;
use crate::db::jobs::ClaimedJob;
use crate::domain::JobId;
use crate::jobs::job::Job;
use crate::jobs::kinds::agent_reply;
use crate::jobs::{JobContext, JobError};
use crate::kommo::webhook;

/// Queued by the webhook route in the same statement that stores the delivery.
#[derive(Debug, Serialize, Deserialize)]
pub struct Webhook {
    pub delivery_id: Uuid,
}

impl Job for Webhook {
    const TYPE: &'static str = "kommo:webhook";

    /// Parses a stored webhook delivery into events. A body that does not parse is marked
    /// failed with its error (and kept), and the job fails permanently: retrying cannot help.
    async fn run(&self, ctx: &JobContext, job: &ClaimedJob) -> Result<Value, JobError> {
        let mut tx = ctx.db.begin_worker(job.org_id).await?;
        let delivery = db::webhooks::delivery(&mut tx, self.delivery_id)
            .await?
            .ok_or_else(|| JobError::Permanent("the webhook delivery no longer exists".into()))?;
        let content_type = delivery.content_type.clone().unwrap_or_default();
        let body = delivery.raw_body.clone().unwrap_or_default();
        // Parsing is CPU work linear in the body (bounded by WEBHOOK_BODY_LIMIT_BYTES): it
        // runs off the runtime, so a big body cannot stall other tasks.
        let parsed = tokio::task::spawn_blocking(move || {
            webhook::to_document(&content_type, body.as_bytes())
                .map(|document| webhook::events(&document))
        })
        .await
        .map_err(|e| JobError::retry(format!("the parser stopped: {e}")))?;
        match parsed {
            Ok(found) => {
                if found.dropped > 0 {
                    tracing::warn!(
                        delivery_id = %delivery.id,
                        kept = found.events.len(),
                        dropped = found.dropped,
                        "a webhook delivery had more entities than one delivery may make events"
                    );
                }
                let rows: Vec<db::webhooks::NewEvent<'_>> = found
                    .events
                    .iter()
                    .map(|e| db::webhooks::NewEvent {
                        kind: &e.kind,
                        subtype: &e.subtype,
                        entity_id: e.entity_id,
                        payload: &e.fields,
                    })
                    .collect();
                db::webhooks::store_events(&mut tx, &delivery, &rows).await?;
                let inbound: Vec<_> = found
                    .events
                    .iter()
                    .filter_map(crate::agent::inbound::incoming_message)
                    .collect();
                let replies = agent_reply::record_inbound(
                    &mut tx,
                    job.org_id,
                    delivery.connection_id,
                    &inbound,
                    ctx.clock.now(),
                )
                .await?;
                tx.commit().await?;
                for reply in &replies {
                    ctx.queue
                        .enqueue_committed(JobId(reply.id), job.org_id, &reply.job_type)
                        .await;
                }
                Ok(json!({
                    "events": rows.len(),
                    "events_dropped": found.dropped,
                    "messages": inbound.len(),
                }))
            }
            Err(e) => {
                let message = e.to_string();
                db::webhooks::finish_delivery(&mut tx, delivery.id, Some(&message)).await?;
                tx.commit().await?;
                Err(JobError::Permanent(message))
            }
        }
    }
}
