//! Queries on `organizations`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{OrgId, Role, UserId};

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

/// A slug already taken fails on `organizations_slug_key`.
pub async fn insert(
    conn: &mut PgConnection,
    name: &str,
    slug: &str,
    created_by: UserId,
) -> sqlx::Result<Org> {
    sqlx::query_as!(
        Org,
        "INSERT INTO organizations (id, name, slug, created_by) VALUES ($1, $2, $3, $4)
         RETURNING id, name, slug, created_at, updated_at",
        OrgId::new().0,
        name,
        slug,
        created_by.0,
    )
    .fetch_one(conn)
    .await
}

pub async fn get(conn: &mut PgConnection, org_id: OrgId) -> sqlx::Result<Option<Org>> {
    sqlx::query_as!(
        Org,
        "SELECT id, name, slug, created_at, updated_at FROM organizations WHERE id = $1",
        org_id.0,
    )
    .fetch_optional(conn)
    .await
}

pub async fn memberships(
    conn: &mut PgConnection,
    user_id: UserId,
) -> sqlx::Result<Vec<OrgMembership>> {
    sqlx::query_as!(
        OrgMembership,
        r#"SELECT o.id, o.name, o.slug, m.role AS "role: Role"
           FROM organization_members m JOIN organizations o ON o.id = m.org_id
           WHERE m.user_id = $1 ORDER BY o.name, o.id"#,
        user_id.0,
    )
    .fetch_all(conn)
    .await
}
