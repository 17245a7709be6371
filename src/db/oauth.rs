//! OAuth states: created when a user starts connecting an account, consumed once by
//! whichever callback comes back with them.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// A consumed state: whose it was, where Kommo redirected, and whether it still counts
/// (not expired, and its user still an owner or admin of the org).
#[derive(Debug, sqlx::FromRow)]
pub struct ConsumedState {
    pub org_id: Uuid,
    pub user_id: Uuid,
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
    org_id: Uuid,
    user_id: Uuid,
    state_hash: &[u8],
    redirect_uri: &str,
    expires_at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO oauth_states (id, org_id, user_id, provider, state_hash, redirect_uri, expires_at)
         VALUES ($1, $2, $3, 'kommo', $4, $5, $6)",
    )
    .bind(Uuid::now_v7())
    .bind(org_id)
    .bind(user_id)
    .bind(state_hash)
    .bind(redirect_uri)
    .bind(expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes the state and returns what it held; with `only_user`, only a state of that
/// user (another user's is left alone and reads as unknown).
pub async fn consume_state(
    conn: &mut PgConnection,
    state_hash: &[u8],
    only_user: Option<Uuid>,
) -> sqlx::Result<Option<ConsumedState>> {
    sqlx::query_as(
        "SELECT org_id, user_id, redirect_uri, expired, allowed
         FROM auth.consume_oauth_state($1, $2)",
    )
    .bind(state_hash)
    .bind(only_user)
    .fetch_optional(conn)
    .await
}
