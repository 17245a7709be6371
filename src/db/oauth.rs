//! OAuth states: created when a user starts connecting an account, consumed once by
//! whichever callback comes back with them.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{OrgId, UserId};

/// A consumed state: whose it was, where Kommo redirected, and whether it still counts
/// (not expired, and its user still an owner or admin of the org).
#[derive(Debug, sqlx::FromRow)]
pub struct ConsumedState {
    pub org_id: OrgId,
    pub user_id: UserId,
    pub redirect_uri: String,
    pub expired: bool,
    pub allowed: bool,
}

impl ConsumedState {
    pub fn valid(&self) -> bool {
        !self.expired && self.allowed
    }
}

pub async fn insert_state(
    conn: &mut PgConnection,
    org_id: OrgId,
    user_id: UserId,
    state_hash: &[u8],
    redirect_uri: &str,
    expires_at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO oauth_states (id, org_id, user_id, provider, state_hash, redirect_uri, expires_at)
         VALUES ($1, $2, $3, 'kommo', $4, $5, $6)",
        Uuid::now_v7(),
        org_id.0,
        user_id.0,
        state_hash,
        redirect_uri,
        expires_at,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes the state and returns what it held; with `only_user`, only a state of that
/// user (another user's is left alone and reads as unknown).
pub async fn consume_state(
    conn: &mut PgConnection,
    state_hash: &[u8],
    only_user: Option<UserId>,
) -> sqlx::Result<Option<ConsumedState>> {
    // A function's columns have no NOT NULL to infer from; the function sets them all.
    sqlx::query_as!(
        ConsumedState,
        r#"SELECT org_id AS "org_id!: OrgId", user_id AS "user_id!: UserId",
                  redirect_uri AS "redirect_uri!", expired AS "expired!", allowed AS "allowed!"
           FROM auth.consume_oauth_state($1, $2)"#,
        state_hash,
        only_user.map(|u| u.0),
    )
    .fetch_optional(conn)
    .await
}
