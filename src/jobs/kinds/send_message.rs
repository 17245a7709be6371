//! `kommo:send-message`: a note on a Kommo deal, posted once even when an attempt dies
//! between Kommo's answer and the recorded outcome.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::db::jobs::ClaimedJob;
use crate::domain::ConnectionId;
use crate::domain::JobId;
use crate::jobs::job::Job;
use crate::jobs::queue::Lane;
use crate::jobs::{JobContext, JobError};

/// Queued by `POST /v1/orgs/{org_id}/kommo/messages`, not by clients directly.
#[derive(Debug, Serialize, Deserialize)]
pub struct SendMessage {
    pub connection_id: ConnectionId,
    pub deal_id: i64,
    /// `chat` (a `common` note) or `email` (`outgoing_email`).
    pub channel: String,
    pub message: Message,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Message {
    pub subject: Option<String>,
    pub body: String,
    /// Stored as sent: absent or `null` when there are none.
    #[serde(default)]
    pub attachments: Option<Vec<Attachment>>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Attachment {
    pub url: String,
    pub name: String,
}

/// What ends every note the job posts, so that a rerun can tell it was delivered.
fn delivery_marker(job_id: JobId) -> String {
    format!("[ref:{job_id}]")
}

/// The note Kommo stores on the deal: `common` text for chat, `outgoing_email` for email.
fn note(p: &SendMessage, job_id: JobId) -> Value {
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

impl Job for SendMessage {
    const TYPE: &'static str = "kommo:send-message";
    const LANE: Lane = Lane::External;

    /// Posts the note once. A previous attempt may have posted it and died before recording
    /// that (a crash, or PostgreSQL failing after Kommo answered): a rerun first looks for
    /// the job's marker among the lead's latest notes.
    async fn run(&self, ctx: &JobContext, job: &ClaimedJob) -> Result<Value, JobError> {
        let p = self;
        let note = note(p, job.id);
        let kommo = &ctx.kommo;
        if job.attempts > 1 {
            let marker = delivery_marker(job.id);
            let notes = kommo
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
}
