//! Queries on `organization_members`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::page::Page;
use crate::domain::{OrgId, Role, UserId};

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Member {
    pub user_id: Uuid,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub async fn role_of(
    conn: &mut PgConnection,
    org_id: OrgId,
    user_id: UserId,
) -> sqlx::Result<Option<Role>> {
    sqlx::query_scalar!(
        r#"SELECT role AS "role: Role" FROM organization_members
           WHERE org_id = $1 AND user_id = $2"#,
        org_id.0,
        user_id.0,
    )
    .fetch_optional(conn)
    .await
}

pub async fn list(conn: &mut PgConnection, org_id: OrgId, page: Page) -> sqlx::Result<Vec<Member>> {
    sqlx::query_as!(
        Member,
        r#"SELECT user_id, role AS "role: Role", created_at, updated_at
           FROM organization_members
           WHERE org_id = $1 AND ($2::uuid IS NULL OR user_id > $2)
           ORDER BY user_id LIMIT $3"#,
        org_id.0,
        page.after,
        page.fetch_limit(),
    )
    .fetch_all(conn)
    .await
}

/// The org's owners, locked until the transaction ends, so that two owners demoting or
/// removing each other at the same moment cannot leave the org without one.
pub async fn lock_owners(conn: &mut PgConnection, org_id: OrgId) -> sqlx::Result<Vec<UserId>> {
    sqlx::query_scalar!(
        r#"SELECT user_id AS "user_id: UserId" FROM organization_members
           WHERE org_id = $1 AND role = 'owner' ORDER BY user_id FOR UPDATE"#,
        org_id.0,
    )
    .fetch_all(conn)
    .await
}

pub async fn insert(
    conn: &mut PgConnection,
    org_id: OrgId,
    user_id: UserId,
    role: Role,
) -> sqlx::Result<Member> {
    sqlx::query_as!(
        Member,
        r#"INSERT INTO organization_members (org_id, user_id, role) VALUES ($1, $2, $3)
           RETURNING user_id, role AS "role: Role", created_at, updated_at"#,
        org_id.0,
        user_id.0,
        role.as_str(),
    )
    .fetch_one(conn)
    .await
}

pub async fn set_role(
    conn: &mut PgConnection,
    org_id: OrgId,
    user_id: UserId,
    role: Role,
) -> sqlx::Result<Option<Member>> {
    sqlx::query_as!(
        Member,
        r#"UPDATE organization_members SET role = $3, updated_at = now()
           WHERE org_id = $1 AND user_id = $2
           RETURNING user_id, role AS "role: Role", created_at, updated_at"#,
        org_id.0,
        user_id.0,
        role.as_str(),
    )
    .fetch_optional(conn)
    .await
}

pub async fn delete(conn: &mut PgConnection, org_id: OrgId, user_id: UserId) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "DELETE FROM organization_members WHERE org_id = $1 AND user_id = $2",
        org_id.0,
        user_id.0,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}
