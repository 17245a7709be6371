//! An org's own model provider settings (the key sealed by the key ring) and the tokens
//! it used per day (SPEC §11).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::OrgId;

/// The stored row; `api_key_enc` never leaves the server.
#[derive(Debug, Clone)]
pub struct AiSettings {
    pub id: Uuid,
    pub base_url: Option<String>,
    pub api_key_enc: Option<Vec<u8>>,
    pub chat_model: Option<String>,
    pub embedding_model: Option<String>,
    pub updated_at: DateTime<Utc>,
}

pub async fn get_settings(
    conn: &mut PgConnection,
    org_id: OrgId,
) -> sqlx::Result<Option<AiSettings>> {
    sqlx::query_as!(
        AiSettings,
        "SELECT id, base_url, api_key_enc, chat_model, embedding_model, updated_at
         FROM ai_settings WHERE org_id = $1",
        org_id.0
    )
    .fetch_optional(conn)
    .await
}

/// The row locked for a rewrite (two admins saving at once take turns).
pub async fn lock_settings(
    conn: &mut PgConnection,
    org_id: OrgId,
) -> sqlx::Result<Option<AiSettings>> {
    sqlx::query_as!(
        AiSettings,
        "SELECT id, base_url, api_key_enc, chat_model, embedding_model, updated_at
         FROM ai_settings WHERE org_id = $1 FOR UPDATE",
        org_id.0
    )
    .fetch_optional(conn)
    .await
}

pub struct NewSettings<'a> {
    /// The row id the key was sealed for (the existing row's, or a new one).
    pub id: Uuid,
    pub base_url: Option<&'a str>,
    pub api_key_enc: Option<&'a [u8]>,
    pub chat_model: Option<&'a str>,
    pub embedding_model: Option<&'a str>,
    pub updated_by: Uuid,
}

pub async fn put_settings(
    conn: &mut PgConnection,
    org_id: OrgId,
    new: &NewSettings<'_>,
) -> sqlx::Result<AiSettings> {
    sqlx::query_as!(
        AiSettings,
        "INSERT INTO ai_settings (org_id, id, base_url, api_key_enc, chat_model, embedding_model,
                                  updated_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (org_id) DO UPDATE
           SET base_url = EXCLUDED.base_url, api_key_enc = EXCLUDED.api_key_enc,
               chat_model = EXCLUDED.chat_model, embedding_model = EXCLUDED.embedding_model,
               updated_by = EXCLUDED.updated_by, updated_at = now()
         RETURNING id, base_url, api_key_enc, chat_model, embedding_model, updated_at",
        org_id.0,
        new.id,
        new.base_url,
        new.api_key_enc,
        new.chat_model,
        new.embedding_model,
        new.updated_by
    )
    .fetch_one(conn)
    .await
}

pub async fn delete_settings(conn: &mut PgConnection, org_id: OrgId) -> sqlx::Result<bool> {
    let done = sqlx::query!("DELETE FROM ai_settings WHERE org_id = $1", org_id.0)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Adds one call's tokens to the org's row for today (UTC).
pub async fn record_usage(
    conn: &mut PgConnection,
    org_id: OrgId,
    kind: &str,
    model: &str,
    prompt_tokens: i64,
    completion_tokens: i64,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO ai_usage (org_id, day, kind, model, requests, prompt_tokens, completion_tokens)
         VALUES ($1, (now() AT TIME ZONE 'utc')::date, $2, $3, 1, $4, $5)
         ON CONFLICT (org_id, day, kind, model) DO UPDATE
           SET requests = ai_usage.requests + 1,
               prompt_tokens = ai_usage.prompt_tokens + EXCLUDED.prompt_tokens,
               completion_tokens = ai_usage.completion_tokens + EXCLUDED.completion_tokens",
        org_id.0,
        kind,
        model,
        prompt_tokens,
        completion_tokens
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Tokens the org used today (UTC), every kind and model.
pub async fn tokens_today(conn: &mut PgConnection, org_id: OrgId) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT COALESCE(sum(prompt_tokens + completion_tokens), 0)::bigint AS "tokens!"
           FROM ai_usage WHERE org_id = $1 AND day = (now() AT TIME ZONE 'utc')::date"#,
        org_id.0
    )
    .fetch_one(conn)
    .await
}

/// One day's calls of one kind and model.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct UsageDay {
    pub day: chrono::NaiveDate,
    /// `embeddings`, `graph`, `reply` or `test_chat`.
    pub kind: String,
    pub model: String,
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
}

/// The org's usage from `from` to `to` (both included, UTC days), oldest first.
pub async fn usage_between(
    conn: &mut PgConnection,
    org_id: OrgId,
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
) -> sqlx::Result<Vec<UsageDay>> {
    sqlx::query_as!(
        UsageDay,
        "SELECT day, kind, model, requests, prompt_tokens, completion_tokens
         FROM ai_usage WHERE org_id = $1 AND day BETWEEN $2 AND $3
         ORDER BY day, kind, model",
        org_id.0,
        from,
        to
    )
    .fetch_all(conn)
    .await
}
