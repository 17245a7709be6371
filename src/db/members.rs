//! Queries on `organization_members`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::Role;
use crate::domain::page::Page;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Member {
    pub user_id: Uuid,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub async fn role_of(
    conn: &mut PgConnection,
    org_id: Uuid,
    user_id: Uuid,
) -> sqlx::Result<Option<Role>> {
    sqlx::query_scalar("SELECT role FROM organization_members WHERE org_id = $1 AND user_id = $2")
        .bind(org_id)
        .bind(user_id)
        .fetch_optional(conn)
        .await
}

pub async fn list(conn: &mut PgConnection, org_id: Uuid, page: Page) -> sqlx::Result<Vec<Member>> {
    sqlx::query_as(
        "SELECT user_id, role, created_at, updated_at FROM organization_members
         WHERE org_id = $1 AND ($2::uuid IS NULL OR user_id > $2)
         ORDER BY user_id LIMIT $3",
    )
    .bind(org_id)
    .bind(page.after)
    .bind(page.fetch_limit())
    .fetch_all(conn)
    .await
}

/// The org's owners, locked until the transaction ends, so that two owners demoting or
/// removing each other at the same moment cannot leave the org without one.
pub async fn lock_owners(conn: &mut PgConnection, org_id: Uuid) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "SELECT user_id FROM organization_members
         WHERE org_id = $1 AND role = 'owner' ORDER BY user_id FOR UPDATE",
    )
    .bind(org_id)
    .fetch_all(conn)
    .await
}

pub async fn insert(
    conn: &mut PgConnection,
    org_id: Uuid,
    user_id: Uuid,
    role: Role,
) -> sqlx::Result<Member> {
    sqlx::query_as(
        "INSERT INTO organization_members (org_id, user_id, role) VALUES ($1, $2, $3)
         RETURNING user_id, role, created_at, updated_at",
    )
    .bind(org_id)
    .bind(user_id)
    .bind(role)
    .fetch_one(conn)
    .await
}

pub async fn set_role(
    conn: &mut PgConnection,
    org_id: Uuid,
    user_id: Uuid,
    role: Role,
) -> sqlx::Result<Option<Member>> {
    sqlx::query_as(
        "UPDATE organization_members SET role = $3, updated_at = now()
         WHERE org_id = $1 AND user_id = $2
         RETURNING user_id, role, created_at, updated_at",
    )
    .bind(org_id)
    .bind(user_id)
    .bind(role)
    .fetch_optional(conn)
    .await
}

pub async fn delete(conn: &mut PgConnection, org_id: Uuid, user_id: Uuid) -> sqlx::Result<bool> {
    let done = sqlx::query("DELETE FROM organization_members WHERE org_id = $1 AND user_id = $2")
        .bind(org_id)
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}
