//! Queries on `organizations`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::Role;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Org {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct OrgMembership {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    pub role: Role,
}

pub async fn insert(
    conn: &mut PgConnection,
    name: &str,
    slug: &str,
    created_by: Uuid,
) -> sqlx::Result<Org> {
    sqlx::query_as(
        "INSERT INTO organizations (id, name, slug, created_by) VALUES ($1, $2, $3, $4)
         RETURNING id, name, slug, created_at, updated_at",
    )
    .bind(Uuid::now_v7())
    .bind(name)
    .bind(slug)
    .bind(created_by)
    .fetch_one(conn)
    .await
}

pub async fn get(conn: &mut PgConnection, org_id: Uuid) -> sqlx::Result<Option<Org>> {
    sqlx::query_as("SELECT id, name, slug, created_at, updated_at FROM organizations WHERE id = $1")
        .bind(org_id)
        .fetch_optional(conn)
        .await
}

pub async fn memberships(
    conn: &mut PgConnection,
    user_id: Uuid,
) -> sqlx::Result<Vec<OrgMembership>> {
    sqlx::query_as(
        "SELECT o.id, o.name, o.slug, m.role
         FROM organization_members m JOIN organizations o ON o.id = m.org_id
         WHERE m.user_id = $1 ORDER BY o.name, o.id",
    )
    .bind(user_id)
    .fetch_all(conn)
    .await
}
