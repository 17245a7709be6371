//! `kommo:webhook`: parses a stored webhook delivery into events, and records incoming
//! chat messages in their conversations, queueing the agent's reply
//! (`agent_reply::record_inbound`). It never calls Kommo, so it runs in the internal
//! lane, away from Kommo's delays.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::db;
use crate::db::jobs::ClaimedJob;
use crate::domain::{JobId, JobStatus};
use crate::events::Event;
use crate::jobs::job::Job;
use crate::jobs::kinds::agent_reply;
use crate::jobs::{JobContext, JobError};
use crate::kommo::webhook;

/// Queued by the webhook route in the same statement that stores the delivery.
#[derive(Debug, Serialize, Deserialize)]
pub struct Webhook {
    pub delivery_id: Uuid,
}

/// How many other waiting deliveries of the org one parse takes along.
const BATCH: i64 = 99;

impl Job for Webhook {
    const TYPE: &'static str = "kommo:webhook";

    /// Parses a stored webhook delivery into events, and with it the deliveries of the
    /// org's other queued parse jobs: their jobs are recorded in the same commit (result
    /// `parsed_by` this job), so a flood costs one transaction per batch rather than three
    /// per delivery. A body that does not parse is marked failed with its error (and
    /// kept), and its job fails permanently: retrying cannot help.
    async fn run(&self, ctx: &JobContext, job: &ClaimedJob) -> Result<Value, JobError> {
        let started = std::time::Instant::now();
        let mut tx = ctx.db.begin_worker(job.org_id).await?;
        let taken: Vec<(JobId, Uuid)> =
            db::jobs::take_queued(&mut tx, job.org_id, Self::TYPE, job.id, BATCH)
                .await?
                .into_iter()
                // A payload we cannot read stays with its own job, which fails visibly.
                .filter_map(|(id, payload)| {
                    let other: Webhook = serde_json::from_value(payload).ok()?;
                    Some((id, other.delivery_id))
                })
                .collect();
        let wanted: Vec<Uuid> = std::iter::once(self.delivery_id)
            .chain(taken.iter().map(|(_, delivery)| *delivery))
            .collect();
        let mut deliveries = db::webhooks::deliveries(&mut tx, &wanted).await?;
        // In the order they arrived (their ids are UUIDv7): conversations and messages
        // are recorded in Kommo's order, as one job per delivery would have.
        deliveries.sort_by_key(|d| d.id);
        if !deliveries.iter().any(|d| d.id == self.delivery_id) {
            // The others roll back with this transaction and go to their own jobs.
            return Err(JobError::Permanent(
                "the webhook delivery no longer exists".into(),
            ));
        }
        let bodies: Vec<(String, String)> = deliveries
            .iter_mut()
            .map(|d| {
                (
                    d.content_type.clone().unwrap_or_default(),
                    d.raw_body.take().unwrap_or_default(),
                )
            })
            .collect();
        // Parsing is CPU work linear in the bodies (each bounded by
        // WEBHOOK_BODY_LIMIT_BYTES): it runs off the runtime, so a batch cannot stall
        // other tasks.
        let parsed = tokio::task::spawn_blocking(move || {
            bodies
                .into_iter()
                .map(|(content_type, body)| {
                    webhook::to_document(&content_type, body.as_bytes())
                        .map(|document| webhook::events(&document))
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| JobError::retry(format!("the parser stopped: {e}")))?;

        let mut stored = Vec::new();
        let mut results: HashMap<Uuid, Result<Value, String>> = HashMap::new();
        let mut inbound = Vec::new();
        for (delivery, parsed) in deliveries.iter().zip(&parsed) {
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
                    let messages: Vec<_> = found
                        .events
                        .iter()
                        .filter_map(crate::agent::inbound::incoming_message)
                        .collect();
                    results.insert(
                        delivery.id,
                        Ok(json!({
                            "events": rows.len(),
                            "events_dropped": found.dropped,
                            "messages": messages.len(),
                        })),
                    );
                    stored.push((delivery, rows));
                    inbound.push((delivery.connection_id, messages));
                }
                Err(e) => {
                    results.insert(delivery.id, Err(e.to_string()));
                }
            }
        }
        db::webhooks::store_events(&mut tx, &stored).await?;
        for (id, outcome) in &results {
            if let Err(message) = outcome {
                db::webhooks::finish_delivery(&mut tx, *id, Some(message)).await?;
            }
        }
        let mut replies = Vec::new();
        let mut announce = Vec::new();
        for (connection_id, messages) in &inbound {
            replies.extend(
                agent_reply::record_inbound(
                    &mut tx,
                    job.org_id,
                    *connection_id,
                    messages,
                    ctx.clock.now(),
                    &mut announce,
                )
                .await?,
            );
        }

        let parsed_by = json!({ "parsed_by": job.id.0 });
        let others: Vec<(JobId, Value, Option<&str>)> = taken
            .iter()
            .map(|(id, delivery)| match results.get(delivery) {
                Some(Ok(result)) => {
                    let mut result = result.clone();
                    if let Some(fields) = result.as_object_mut() {
                        fields.insert("parsed_by".into(), json!(job.id.0));
                    }
                    (*id, result, None)
                }
                Some(Err(message)) => (*id, parsed_by.clone(), Some(message.as_str())),
                None => (
                    *id,
                    parsed_by.clone(),
                    Some("the webhook delivery no longer exists"),
                ),
            })
            .collect();
        let outcomes: Vec<db::jobs::TakenOutcome<'_>> = others
            .iter()
            .map(|(id, result, error)| db::jobs::TakenOutcome {
                id: *id,
                result,
                error: *error,
            })
            .collect();
        db::jobs::finish_taken(&mut tx, &ctx.worker, &outcomes).await?;
        tx.commit().await?;
        ctx.events.publish_all(announce);
        ctx.events.publish_all(others.iter().map(|(id, _, error)| {
            let status = if error.is_none() {
                JobStatus::Succeeded
            } else {
                JobStatus::Failed
            };
            Event::job(job.org_id, id.0, Self::TYPE, status, Some(1))
        }));
        // Each job taken along ran once, inside this one: the log says so as it would
        // for a job of its own.
        let took = started.elapsed();
        for (id, _, error) in &others {
            let outcome = if error.is_none() {
                "succeeded"
            } else {
                "failed"
            };
            crate::metrics::observe_job(Self::TYPE, outcome, took);
            tracing::info!(job_id = %id, org_id = %job.org_id, job_type = Self::TYPE,
                attempt = 1, parsed_by = %job.id, "job started");
            match error {
                None => tracing::info!(job_id = %id, job_type = Self::TYPE, parsed_by = %job.id,
                    "job succeeded"),
                Some(error) => tracing::error!(job_id = %id, job_type = Self::TYPE,
                    parsed_by = %job.id, error = %error, "job failed"),
            }
        }
        for reply in &replies {
            ctx.queue
                .enqueue_committed(JobId(reply.id), job.org_id, &reply.job_type)
                .await;
        }
        match results.remove(&self.delivery_id) {
            Some(Ok(mut result)) => {
                if let Some(fields) = result.as_object_mut() {
                    fields.insert("batch".into(), json!(taken.len()));
                }
                Ok(result)
            }
            Some(Err(message)) => Err(JobError::Permanent(message)),
            None => Err(JobError::Permanent(
                "the webhook delivery no longer exists".into(),
            )),
        }
    }
}
