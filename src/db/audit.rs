//! The audit log: one row per change, written in the transaction of the change itself,
//! so a change and its record commit (or roll back) together. Rows are append-only for
//! the runtime roles (no UPDATE or DELETE grant). Secrets are never part of `changes`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::page::Page;
use crate::domain::{OrgId, RequestMeta, UserId};

pub use crate::domain::Change;

pub async fn record(
    conn: &mut PgConnection,
    org_id: OrgId,
    actor: Option<UserId>,
    meta: &RequestMeta,
    change: Change<'_>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO audit_logs (id, org_id, actor_user_id, actor_type, action, entity, entity_id,
                                 request_id, ip, user_agent, changes)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::text::inet, $10, $11)",
        Uuid::now_v7(),
        org_id.0,
        actor.map(|a| a.0),
        if actor.is_some() { "user" } else { "system" },
        change.action,
        change.entity,
        change.entity_id,
        meta.request_id.as_deref(),
        meta.ip.map(|ip| ip.to_string()),
        meta.user_agent.as_deref(),
        change.changes,
    )
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: Uuid,
    pub actor_user_id: Option<Uuid>,
    pub actor_type: String,
    pub action: String,
    pub entity: String,
    pub entity_id: Option<String>,
    pub request_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    #[schema(value_type = Object)]
    pub changes: Value,
    pub created_at: DateTime<Utc>,
}

pub async fn list(
    conn: &mut PgConnection,
    org_id: OrgId,
    page: Page,
) -> sqlx::Result<Vec<AuditEntry>> {
    sqlx::query_as!(
        AuditEntry,
        "SELECT id, actor_user_id, actor_type, action, entity, entity_id, request_id,
                host(ip) AS ip, user_agent, changes, created_at
         FROM audit_logs WHERE org_id = $1 AND ($2::uuid IS NULL OR id < $2)
         ORDER BY id DESC LIMIT $3",
        org_id.0,
        page.after,
        page.fetch_limit(),
    )
    .fetch_all(conn)
    .await
}
