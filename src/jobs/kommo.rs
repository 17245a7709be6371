//! The Kommo job types: `crm:sync-pipelines`, `crm:sync-contacts`, `kommo:send-message`
//! and `kommo:token-refresh`. Each is idempotent: syncs replace or upsert, and a note is
//! only posted by the attempt that claimed the job.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::db;
use crate::db::crm::{NewContact, NewPipeline, NewStage};
use crate::db::jobs::ClaimedJob;
use crate::jobs::{JobContext, JobError};
use crate::kommo::KommoError;
use crate::kommo::tokens::{RefreshReason, TokenError};

/// Tokens are refreshed when less than this is left of them (Kommo's last 24 h).
pub const REFRESH_AHEAD: chrono::Duration = chrono::Duration::hours(6);

impl From<TokenError> for JobError {
    fn from(e: TokenError) -> JobError {
        match e {
            TokenError::Kommo(KommoError::RateLimited(after)) => JobError::Retry {
                message: "Kommo is rate limiting this account".into(),
                after: Some(after),
            },
            TokenError::Kommo(k) if !k.is_permanent() => JobError::retry(k.to_string()),
            TokenError::Db(d) => JobError::retry(d.to_string()),
            other => JobError::Permanent(other.to_string()),
        }
    }
}

#[derive(Deserialize)]
struct ConnectionPayload {
    connection_id: Uuid,
}

fn payload<T: serde::de::DeserializeOwned>(job: &ClaimedJob) -> Result<T, JobError> {
    serde_json::from_value(job.payload.clone())
        .map_err(|e| JobError::Permanent(format!("invalid payload: {e}")))
}

/// Records a sync part's state on the connection; failures to record are only logged,
/// the sync's own outcome matters more.
async fn sync_state(ctx: &JobContext, org_id: Uuid, connection_id: Uuid, part: &str, state: Value) {
    let recorded = async {
        let mut tx = ctx.db.begin_worker(org_id).await?;
        db::crm::set_sync_state(&mut tx, connection_id, part, &state).await?;
        tx.commit().await
    };
    if let Err(e) = recorded.await {
        tracing::warn!(%connection_id, error = %e, "could not record the sync state");
    }
}

async fn tracked<F>(
    ctx: &JobContext,
    job: &ClaimedJob,
    part: &str,
    work: F,
) -> Result<Value, JobError>
where
    F: Future<Output = Result<usize, JobError>>,
{
    let p: ConnectionPayload = payload(job)?;
    let started_at = Utc::now();
    sync_state(
        ctx,
        job.org_id,
        p.connection_id,
        part,
        json!({"status": "running", "started_at": started_at}),
    )
    .await;
    match work.await {
        Ok(count) => {
            sync_state(ctx, job.org_id, p.connection_id, part, json!({
                "status": "completed", "started_at": started_at, "finished_at": Utc::now(), "count": count,
            }))
            .await;
            Ok(json!({ "count": count }))
        }
        Err(e) => {
            let message = match &e {
                JobError::Retry { message, .. } | JobError::Permanent(message) => message.clone(),
            };
            sync_state(ctx, job.org_id, p.connection_id, part, json!({
                "status": "failed", "started_at": started_at, "finished_at": Utc::now(), "error": message,
            }))
            .await;
            Err(e)
        }
    }
}

pub async fn sync_pipelines(ctx: &JobContext, job: &ClaimedJob) -> Result<Value, JobError> {
    let p: ConnectionPayload = payload(job)?;
    tracked(ctx, job, "pipelines", async {
        let kommo = &ctx.kommo;
        let pipelines = kommo
            .with_token(
                &ctx.db,
                job.org_id,
                p.connection_id,
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
        db::crm::replace_pipelines(&mut tx, job.org_id, p.connection_id, &rows).await?;
        tx.commit().await?;
        Ok(rows.len())
    })
    .await
}

fn unix_time(secs: Option<i64>) -> Option<DateTime<Utc>> {
    secs.and_then(|s| DateTime::from_timestamp(s, 0))
}

pub async fn sync_contacts(ctx: &JobContext, job: &ClaimedJob) -> Result<Value, JobError> {
    let p: ConnectionPayload = payload(job)?;
    tracked(ctx, job, "contacts", async {
        let kommo = &ctx.kommo;
        let mut total = 0;
        // Kommo ends the listing with 204, or with a page that has no `next` link.
        for page in 1u32.. {
            let answer = kommo
                .with_token(
                    &ctx.db,
                    job.org_id,
                    p.connection_id,
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
            db::crm::upsert_contacts(&mut tx, job.org_id, p.connection_id, &contacts).await?;
            tx.commit().await?;
            if !answer.has_next {
                break;
            }
        }
        Ok(total)
    })
    .await
}

#[derive(Deserialize)]
struct MessagePayload {
    connection_id: Uuid,
    deal_id: i64,
    channel: String,
    message: MessageBody,
}

#[derive(Deserialize)]
struct MessageBody {
    subject: Option<String>,
    body: String,
    /// Stored as sent: absent or `null` when there are none.
    #[serde(default)]
    attachments: Option<Vec<Attachment>>,
}

#[derive(Deserialize)]
struct Attachment {
    url: String,
    name: String,
}

/// What ends every note the job posts, so that a rerun can tell it was delivered.
fn delivery_marker(job_id: Uuid) -> String {
    format!("[ref:{job_id}]")
}

/// The note Kommo stores on the deal: `common` text for chat, `outgoing_email` for email.
fn note(p: &MessagePayload, job_id: Uuid) -> Value {
    let mut text = p.message.body.clone();
    for a in p.message.attachments.iter().flatten() {
        text.push_str(&format!("\n{}: {}", a.name, a.url));
    }
    text.push_str("\n\n");
    text.push_str(&delivery_marker(job_id));
    match p.channel.as_str() {
        "email" => json!({
            "note_type": "outgoing_email",
            "params": {
                "subject": p.message.subject.clone().unwrap_or_default(),
                "text": text,
                "email_to": "",
                "email_from": "",
            },
        }),
        _ => json!({"note_type": "common", "params": {"text": text}}),
    }
}

/// Posts the note once. A previous attempt may have posted it and died before recording
/// that (a crash, or PostgreSQL failing after Kommo answered): a rerun first looks for
/// the job's marker among the lead's latest notes.
pub async fn send_message(ctx: &JobContext, job: &ClaimedJob) -> Result<Value, JobError> {
    let p: MessagePayload = payload(job)?;
    let note = note(&p, job.id);
    let kommo = &ctx.kommo;
    if job.attempts > 1 {
        let marker = delivery_marker(job.id);
        let notes =
            kommo
                .with_token(
                    &ctx.db,
                    job.org_id,
                    p.connection_id,
                    |domain, token| async move {
                        kommo.client.lead_notes(&domain, &token, p.deal_id).await
                    },
                )
                .await?;
        let delivered = notes.iter().find(|n| {
            n["params"]["text"]
                .as_str()
                .is_some_and(|text| text.contains(&marker))
        });
        if let Some(delivered) = delivered {
            tracing::info!(job_id = %job.id, "the note was delivered by an earlier attempt");
            return Ok(json!({
                "note_id": delivered["id"].as_i64(),
                "deal_id": p.deal_id,
                "delivered_earlier": true,
            }));
        }
    }
    let id = kommo
        .with_token(&ctx.db, job.org_id, p.connection_id, |domain, token| {
            let note = note.clone();
            async move {
                kommo
                    .client
                    .add_note(&domain, &token, p.deal_id, note)
                    .await
            }
        })
        .await?;
    Ok(json!({ "note_id": id, "deal_id": p.deal_id }))
}

pub async fn token_refresh(ctx: &JobContext, job: &ClaimedJob) -> Result<Value, JobError> {
    let p: ConnectionPayload = payload(job)?;
    let expires_at = ctx
        .kommo
        .refresh(
            &ctx.db,
            job.org_id,
            p.connection_id,
            RefreshReason::ExpiresBefore(Utc::now() + REFRESH_AHEAD),
        )
        .await?;
    Ok(json!({ "token_expires_at": expires_at }))
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
            let job = db::jobs::insert(
                &mut tx,
                org_id,
                crate::jobs::types::TOKEN_REFRESH,
                &json!({ "connection_id": connection_id }),
                crate::jobs::DEFAULT_MAX_ATTEMPTS,
                None,
            )
            .await?;
            tx.commit().await?;
            Ok::<_, crate::db::Error>(job)
        };
        match queued.await {
            Ok(job) => queue.enqueue_committed(job.id, org_id, &job.job_type).await,
            Err(e) => tracing::warn!(%connection_id, error = %e, "could not queue a token refresh"),
        }
    }
}

#[derive(Deserialize)]
struct WebhookPayload {
    delivery_id: Uuid,
}

/// Parses a stored webhook delivery into events. A body that does not parse is marked
/// failed with its error (and kept), and the job fails permanently: retrying cannot help.
pub async fn webhook(ctx: &JobContext, job: &ClaimedJob) -> Result<Value, JobError> {
    use crate::kommo::webhook;
    let p: WebhookPayload = payload(job)?;
    let mut tx = ctx.db.begin_worker(job.org_id).await?;
    let delivery = db::webhooks::delivery(&mut tx, p.delivery_id)
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
            tx.commit().await?;
            Ok(json!({ "events": rows.len(), "events_dropped": found.dropped }))
        }
        Err(e) => {
            let message = e.to_string();
            db::webhooks::finish_delivery(&mut tx, delivery.id, Some(&message)).await?;
            tx.commit().await?;
            Err(JobError::Permanent(message))
        }
    }
}
