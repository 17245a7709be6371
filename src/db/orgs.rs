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

/// How many ids a new org's is chosen from: each hashes into a given one of the 64
/// knowledge partitions with odds 1/64, so all of 512 miss it once in ~3,000 orgs (the
/// first candidate is taken then).
const ORG_ID_CANDIDATES: usize = 512;

/// A slug already taken fails on `organizations_slug_key`. The id is the one of
/// `ORG_ID_CANDIDATES` fresh ones whose knowledge chunks go to the partition holding the
/// fewest (`knowledge_quiet_org_id`, migration 20261211000001).
pub async fn insert(
    conn: &mut PgConnection,
    name: &str,
    slug: &str,
    created_by: UserId,
) -> sqlx::Result<Org> {
    let candidates: Vec<Uuid> = (0..ORG_ID_CANDIDATES).map(|_| OrgId::new().0).collect();
    sqlx::query_as!(
        Org,
        "INSERT INTO organizations (id, name, slug, created_by)
         VALUES (knowledge_quiet_org_id($1), $2, $3, $4)
         RETURNING id, name, slug, created_at, updated_at",
        &candidates,
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
