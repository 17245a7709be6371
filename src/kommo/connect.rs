//! Connecting a Kommo account: its tokens stored, a webhook secret made, its first syncs
//! queued and audited, all in one transaction; the pushes to the queue follow the commit.

use serde_json::json;

use crate::config::Config;
use crate::db::crm::Connection;
use crate::db::jobs::Job;
use crate::db::{self, Db};
use crate::domain::JobId;
use crate::domain::{Change, RequestMeta};
use crate::domain::{ConnectionId, OrgId, UserId};
use crate::jobs::JobQueue;
use crate::jobs::job;
use crate::jobs::kinds::{SyncContacts, SyncPipelines};
use crate::kommo::tokens::TokenError;
use crate::kommo::{Kommo, TokenSet, new_webhook_token, webhook_url};

/// The services a connection is made with.
pub struct Connector<'a> {
    pub db: &'a Db,
    pub kommo: &'a Kommo,
    pub queue: &'a JobQueue,
    pub config: &'a Config,
}

/// A freshly connected account: the connection and its webhook URL (shown once).
pub struct Connected {
    pub connection: Connection,
    pub webhook_url: String,
}

/// What a sync job brings over from Kommo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPart {
    Pipelines,
    Contacts,
}

/// Inserts one sync job per part and marks each part of the connection's sync state
/// `queued`; the caller commits, then pushes the jobs (`push_jobs`).
pub async fn queue_syncs(
    tx: &mut db::Tx,
    org_id: OrgId,
    connection_id: ConnectionId,
    parts: &[SyncPart],
    created_by: Option<UserId>,
) -> db::Result<Vec<Job>> {
    let mut jobs = Vec::new();
    for sync in parts {
        let (job, part) = match sync {
            SyncPart::Pipelines => {
                let job = SyncPipelines { connection_id };
                (
                    job::insert(tx, org_id, &job, created_by).await?,
                    "pipelines",
                )
            }
            SyncPart::Contacts => {
                let job = SyncContacts { connection_id };
                (job::insert(tx, org_id, &job, created_by).await?, "contacts")
            }
        };
        db::crm::set_sync_state(
            tx,
            connection_id,
            part,
            &json!({"status": "queued", "queued_at": job.created_at, "job_id": job.id}),
        )
        .await?;
        jobs.push(job);
    }
    Ok(jobs)
}

/// Hands committed jobs to the queue (a failed push is found again by the sweep).
pub async fn push_jobs(queue: &JobQueue, jobs: &[Job]) {
    for job in jobs {
        queue
            .enqueue_committed(JobId(job.id), OrgId(job.org_id), &job.job_type)
            .await;
    }
}

impl Connector<'_> {
    /// The end of the OAuth flow: stores the tokens of the account at `base_domain` for
    /// the org, with a new webhook secret, and queues its first syncs.
    pub async fn complete_oauth(
        &self,
        org_id: OrgId,
        user_id: UserId,
        base_domain: &str,
        tokens: &TokenSet,
        account_id: i64,
        meta: &RequestMeta,
    ) -> Result<Connected, TokenError> {
        let mut tx = self.db.begin_worker(org_id).await?;
        let (id, _) =
            db::crm::lock_connection_id(&mut tx, org_id, "kommo", base_domain, user_id).await?;
        self.kommo
            .store(&mut tx, id, tokens, Some(account_id))
            .await?;
        let (token, hash) = new_webhook_token();
        db::crm::set_webhook_token_hash(&mut tx, org_id, id, &hash).await?;
        let jobs = queue_syncs(
            &mut tx,
            org_id,
            id,
            &[SyncPart::Pipelines, SyncPart::Contacts],
            Some(user_id),
        )
        .await?;
        let connection = db::crm::connection(&mut tx, org_id, id)
            .await?
            .ok_or(TokenError::NotFound)?;
        let change = Change::new(
            "kommo.oauth.connect",
            "crm_connection",
            id,
            json!({"base_domain": base_domain, "account_id": account_id}),
        );
        db::audit::record(&mut tx, org_id, Some(user_id), meta, change).await?;
        tx.commit().await?;
        self.kommo
            .announce(org_id, id, crate::domain::ConnectionStatus::Connected);
        push_jobs(self.queue, &jobs).await;
        Ok(Connected {
            connection,
            webhook_url: webhook_url(self.config, id, &token),
        })
    }
}
