//! Queries on the CRM tables: credentials, connections (whose secrets are stored
//! encrypted by the caller), and the synced pipelines, stages and contacts.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::page::Page;
use crate::domain::{ConnectionId, ConnectionStatus, OrgId, Provider, UserId};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Credentials {
    pub id: Uuid,
    pub client_id: String,
    pub client_secret_enc: Vec<u8>,
    pub redirect_uri: Option<String>,
    pub updated_at: DateTime<Utc>,
}

pub async fn credentials(
    conn: &mut PgConnection,
    org_id: OrgId,
    provider: &str,
) -> sqlx::Result<Option<Credentials>> {
    sqlx::query_as!(
        Credentials,
        "SELECT id, client_id, client_secret_enc, redirect_uri, updated_at
         FROM crm_credentials WHERE org_id = $1 AND provider = $2",
        org_id.0,
        provider,
    )
    .fetch_optional(conn)
    .await
}

/// The id of the org's credentials row, locked; inserting a placeholder first if there
/// is none, so the secret can be encrypted for its final row id.
pub async fn lock_credentials_id(
    conn: &mut PgConnection,
    org_id: OrgId,
    provider: &str,
) -> sqlx::Result<Uuid> {
    sqlx::query!(
        "INSERT INTO crm_credentials (id, org_id, provider, client_id, client_secret_enc)
         VALUES ($1, $2, $3, '', '') ON CONFLICT (org_id, provider) DO NOTHING",
        Uuid::now_v7(),
        org_id.0,
        provider,
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query_scalar!(
        "SELECT id FROM crm_credentials WHERE org_id = $1 AND provider = $2 FOR UPDATE",
        org_id.0,
        provider,
    )
    .fetch_one(conn)
    .await
}

pub async fn update_credentials(
    conn: &mut PgConnection,
    id: Uuid,
    client_id: &str,
    client_secret_enc: &[u8],
    redirect_uri: Option<&str>,
) -> sqlx::Result<Credentials> {
    sqlx::query_as!(
        Credentials,
        "UPDATE crm_credentials SET client_id = $2, client_secret_enc = $3, redirect_uri = $4,
                updated_at = now()
         WHERE id = $1
         RETURNING id, client_id, client_secret_enc, redirect_uri, updated_at",
        id,
        client_id,
        client_secret_enc,
        redirect_uri,
    )
    .fetch_one(conn)
    .await
}

pub async fn delete_credentials(
    conn: &mut PgConnection,
    org_id: OrgId,
    provider: &str,
) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "DELETE FROM crm_credentials WHERE org_id = $1 AND provider = $2",
        org_id.0,
        provider,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// A connection as clients see it: never a token.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Connection {
    pub id: Uuid,
    pub org_id: Uuid,
    pub provider: Provider,
    pub base_domain: String,
    pub account_id: Option<i64>,
    pub scope: Option<String>,
    pub status: ConnectionStatus,
    pub token_expires_at: Option<DateTime<Utc>>,
    /// `{status, pipelines: {status, started_at, finished_at, count, error}, contacts: {…}}`
    #[schema(value_type = Object)]
    pub sync: Value,
    pub last_error: Option<String>,
    pub has_refresh_token: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `query_as!(Connection, …)` with a connection's columns between `$head` and `$tail`.
macro_rules! connection_query {
    ($head:tt, $tail:tt, $($arg:expr),* $(,)?) => {
        sqlx::query_as!(
            Connection,
            $head + r#" id, org_id, provider AS "provider: Provider", base_domain, account_id,
                scope, status AS "status: ConnectionStatus", token_expires_at, sync, last_error,
                refresh_token_enc IS NOT NULL AS "has_refresh_token!", created_at,
                updated_at "# + $tail,
            $($arg),*
        )
    };
}

pub async fn connections(
    conn: &mut PgConnection,
    org_id: OrgId,
    provider: Option<&str>,
    page: Page,
) -> sqlx::Result<Vec<Connection>> {
    connection_query!(
        "SELECT",
        "FROM crm_connections
         WHERE org_id = $1 AND ($2::text IS NULL OR provider = $2)
           AND ($3::uuid IS NULL OR id < $3)
         ORDER BY id DESC LIMIT $4",
        org_id.0,
        provider,
        page.after,
        page.fetch_limit(),
    )
    .fetch_all(conn)
    .await
}

pub async fn connection(
    conn: &mut PgConnection,
    org_id: OrgId,
    id: ConnectionId,
) -> sqlx::Result<Option<Connection>> {
    connection_query!(
        "SELECT",
        "FROM crm_connections WHERE org_id = $1 AND id = $2",
        org_id.0,
        id.0,
    )
    .fetch_optional(conn)
    .await
}

/// The newest connection of a provider, for the status endpoint.
pub async fn latest_connection(
    conn: &mut PgConnection,
    org_id: OrgId,
    provider: &str,
) -> sqlx::Result<Option<Connection>> {
    connection_query!(
        "SELECT",
        "FROM crm_connections WHERE org_id = $1 AND provider = $2
         ORDER BY (status = 'connected') DESC, updated_at DESC LIMIT 1",
        org_id.0,
        provider,
    )
    .fetch_optional(conn)
    .await
}

/// The id of the org's connection to `base_domain`, locked, inserting a pending one
/// first when there is none (tokens are encrypted for the final row id).
pub async fn lock_connection_id(
    conn: &mut PgConnection,
    org_id: OrgId,
    provider: &str,
    base_domain: &str,
    created_by: UserId,
) -> sqlx::Result<(ConnectionId, bool)> {
    let inserted = sqlx::query_scalar!(
        "INSERT INTO crm_connections (id, org_id, provider, base_domain, created_by)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (org_id, provider, base_domain) DO NOTHING RETURNING id",
        ConnectionId::new().0,
        org_id.0,
        provider,
        base_domain,
        created_by.0,
    )
    .fetch_optional(&mut *conn)
    .await?;
    let id = sqlx::query_scalar!(
        r#"SELECT id AS "id: ConnectionId" FROM crm_connections
           WHERE org_id = $1 AND provider = $2 AND base_domain = $3 FOR UPDATE"#,
        org_id.0,
        provider,
        base_domain,
    )
    .fetch_one(conn)
    .await?;
    Ok((id, inserted.is_some()))
}

/// What refreshing or calling Kommo needs, read under a row lock.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ConnectionSecrets {
    pub id: ConnectionId,
    pub org_id: OrgId,
    pub base_domain: String,
    pub status: ConnectionStatus,
    pub access_token_enc: Option<Vec<u8>>,
    pub refresh_token_enc: Option<Vec<u8>>,
    pub token_expires_at: Option<DateTime<Utc>>,
    pub token_refreshed_at: Option<DateTime<Utc>>,
}

/// One connection's secrets, locked with `FOR UPDATE` or not (`$tail`).
macro_rules! secrets_query {
    ($tail:tt, $org_id:expr, $id:expr) => {
        sqlx::query_as!(
            ConnectionSecrets,
            r#"SELECT id AS "id: ConnectionId", org_id AS "org_id: OrgId", base_domain,
                      status AS "status: ConnectionStatus", access_token_enc, refresh_token_enc,
                      token_expires_at, token_refreshed_at
               FROM crm_connections WHERE org_id = $1 AND id = $2 "#
                + $tail,
            $org_id.0,
            $id.0
        )
    };
}

pub async fn secrets(
    conn: &mut PgConnection,
    org_id: OrgId,
    id: ConnectionId,
) -> sqlx::Result<Option<ConnectionSecrets>> {
    secrets_query!("", org_id, id).fetch_optional(conn).await
}

/// Locks the connection's row until the transaction ends: refreshes of one connection
/// queue here, across tasks and replicas, so Kommo's rotating refresh token is never
/// used twice.
pub async fn lock_secrets(
    conn: &mut PgConnection,
    org_id: OrgId,
    id: ConnectionId,
) -> sqlx::Result<Option<ConnectionSecrets>> {
    secrets_query!("FOR UPDATE", org_id, id)
        .fetch_optional(conn)
        .await
}

pub struct StoredTokens<'a> {
    pub access_token_enc: &'a [u8],
    pub refresh_token_enc: Option<&'a [u8]>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// New tokens: the connection is connected again and its last error cleared.
pub async fn store_tokens(
    conn: &mut PgConnection,
    id: ConnectionId,
    tokens: &StoredTokens<'_>,
    account_id: Option<i64>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE crm_connections SET access_token_enc = $2, refresh_token_enc = $3,
                token_expires_at = $4, token_refreshed_at = now(), status = 'connected',
                last_error = NULL, account_id = coalesce($5, account_id), updated_at = now()
         WHERE id = $1",
        id.0,
        tokens.access_token_enc,
        tokens.refresh_token_enc,
        tokens.expires_at,
        account_id,
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn mark_error(
    conn: &mut PgConnection,
    id: ConnectionId,
    error: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE crm_connections SET status = 'error', last_error = $2, updated_at = now()
         WHERE id = $1",
        id.0,
        error,
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn delete_connection(
    conn: &mut PgConnection,
    org_id: OrgId,
    id: ConnectionId,
) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "DELETE FROM crm_connections WHERE org_id = $1 AND id = $2",
        org_id.0,
        id.0,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn set_webhook_token_hash(
    conn: &mut PgConnection,
    org_id: OrgId,
    id: ConnectionId,
    hash: &[u8],
) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE crm_connections SET webhook_token_hash = $3, updated_at = now()
         WHERE org_id = $1 AND id = $2",
        org_id.0,
        id.0,
        hash,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Records one part's sync state (`pipelines` or `contacts`) and the overall status.
pub async fn set_sync_state(
    conn: &mut PgConnection,
    id: ConnectionId,
    part: &str,
    state: &Value,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE crm_connections
         SET sync = jsonb_set(jsonb_set(sync, ARRAY[$2::text], $3::jsonb), '{status}',
                              to_jsonb($3::jsonb ->> 'status')),
             updated_at = now()
         WHERE id = $1",
        id.0,
        part,
        state,
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub struct NewPipeline {
    pub external_id: i64,
    pub name: String,
    pub sort: i32,
    pub is_main: bool,
    pub is_archive: bool,
    pub stages: Vec<NewStage>,
}

pub struct NewStage {
    pub external_id: i64,
    pub name: String,
    pub sort: i32,
    pub color: Option<String>,
    pub kind: Option<i32>,
}

/// Replaces the connection's pipelines and stages with Kommo's current ones.
pub async fn replace_pipelines(
    conn: &mut PgConnection,
    org_id: OrgId,
    connection_id: ConnectionId,
    pipelines: &[NewPipeline],
) -> sqlx::Result<()> {
    sqlx::query!(
        "DELETE FROM crm_pipelines WHERE connection_id = $1",
        connection_id.0
    )
    .execute(&mut *conn)
    .await?;
    for p in pipelines {
        let pipeline_id = Uuid::now_v7();
        sqlx::query!(
            "INSERT INTO crm_pipelines (id, org_id, connection_id, external_id, name, sort,
                                        is_main, is_archive)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            pipeline_id,
            org_id.0,
            connection_id.0,
            p.external_id,
            p.name,
            p.sort,
            p.is_main,
            p.is_archive,
        )
        .execute(&mut *conn)
        .await?;
        let ids: Vec<i64> = p.stages.iter().map(|s| s.external_id).collect();
        let names: Vec<&str> = p.stages.iter().map(|s| s.name.as_str()).collect();
        let sorts: Vec<i32> = p.stages.iter().map(|s| s.sort).collect();
        let colors: Vec<Option<&str>> = p.stages.iter().map(|s| s.color.as_deref()).collect();
        let kinds: Vec<Option<i32>> = p.stages.iter().map(|s| s.kind).collect();
        // Arrays of optional values are bound unchecked: the macros cannot tell a
        // nullable array element from a non-null one.
        sqlx::query!(
            "INSERT INTO crm_pipeline_stages (id, org_id, pipeline_id, external_id, name, sort,
                                              color, type)
             SELECT gen_random_uuid(), $1, $2, s.external_id, s.name, s.sort, s.color, s.kind
             FROM unnest($3::bigint[], $4::text[], $5::int[], $6::text[], $7::int[])
                  AS s(external_id, name, sort, color, kind)",
            org_id.0,
            pipeline_id,
            &ids,
            &names as _,
            &sorts,
            &colors as _,
            &kinds as _,
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

pub struct NewContact {
    pub external_id: i64,
    pub name: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub responsible_user_id: Option<i64>,
    pub custom_fields: Value,
    pub external_created_at: Option<DateTime<Utc>>,
    pub external_updated_at: Option<DateTime<Utc>>,
}

/// Inserts or updates one page of contacts in one statement.
pub async fn upsert_contacts(
    conn: &mut PgConnection,
    org_id: OrgId,
    connection_id: ConnectionId,
    contacts: &[NewContact],
) -> sqlx::Result<()> {
    let ids: Vec<i64> = contacts.iter().map(|c| c.external_id).collect();
    let names: Vec<Option<&str>> = contacts.iter().map(|c| c.name.as_deref()).collect();
    let firsts: Vec<Option<&str>> = contacts.iter().map(|c| c.first_name.as_deref()).collect();
    let lasts: Vec<Option<&str>> = contacts.iter().map(|c| c.last_name.as_deref()).collect();
    let owners: Vec<Option<i64>> = contacts.iter().map(|c| c.responsible_user_id).collect();
    let fields: Vec<Value> = contacts.iter().map(|c| c.custom_fields.clone()).collect();
    let created: Vec<Option<DateTime<Utc>>> =
        contacts.iter().map(|c| c.external_created_at).collect();
    let updated: Vec<Option<DateTime<Utc>>> =
        contacts.iter().map(|c| c.external_updated_at).collect();
    sqlx::query!(
        "INSERT INTO crm_contacts (id, org_id, connection_id, external_id, name, first_name, last_name,
                                   responsible_user_id, custom_fields, external_created_at,
                                   external_updated_at, synced_at)
         SELECT gen_random_uuid(), $1, $2, c.external_id, c.name, c.first_name, c.last_name,
                c.owner, c.fields, c.created, c.updated, now()
         FROM unnest($3::bigint[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::jsonb[],
                     $9::timestamptz[], $10::timestamptz[])
              AS c(external_id, name, first_name, last_name, owner, fields, created, updated)
         ON CONFLICT (connection_id, external_id) DO UPDATE SET
             name = EXCLUDED.name, first_name = EXCLUDED.first_name, last_name = EXCLUDED.last_name,
             responsible_user_id = EXCLUDED.responsible_user_id,
             custom_fields = EXCLUDED.custom_fields,
             external_created_at = EXCLUDED.external_created_at,
             external_updated_at = EXCLUDED.external_updated_at, synced_at = now()",
        org_id.0,
        connection_id.0,
        &ids,
        &names as _,
        &firsts as _,
        &lasts as _,
        &owners as _,
        &fields,
        &created as _,
        &updated as _,
    )
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct PipelineView {
    pub id: Uuid,
    pub external_id: i64,
    pub name: String,
    pub sort: i32,
    pub is_main: bool,
    pub is_archive: bool,
    /// `[{id, external_id, name, sort, color, type}]`, in Kommo's order.
    #[schema(value_type = Vec<Object>)]
    pub stages: Value,
    pub synced_at: DateTime<Utc>,
}

pub async fn pipelines(
    conn: &mut PgConnection,
    org_id: OrgId,
    connection_id: ConnectionId,
) -> sqlx::Result<Vec<PipelineView>> {
    sqlx::query_as!(
        PipelineView,
        r#"SELECT p.id, p.external_id, p.name, p.sort, p.is_main, p.is_archive, p.synced_at,
                  coalesce((SELECT jsonb_agg(jsonb_build_object(
                                       'id', s.id, 'external_id', s.external_id, 'name', s.name,
                                       'sort', s.sort, 'color', s.color, 'type', s.type)
                                   ORDER BY s.sort, s.external_id)
                            FROM crm_pipeline_stages s WHERE s.pipeline_id = p.id),
                           '[]') AS "stages!"
           FROM crm_pipelines p
           WHERE p.org_id = $1 AND p.connection_id = $2
           ORDER BY p.sort, p.external_id"#,
        org_id.0,
        connection_id.0,
    )
    .fetch_all(conn)
    .await
}

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ContactView {
    pub id: Uuid,
    pub external_id: i64,
    pub name: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub responsible_user_id: Option<i64>,
    #[schema(value_type = Object)]
    pub custom_fields: Value,
    pub external_created_at: Option<DateTime<Utc>>,
    pub external_updated_at: Option<DateTime<Utc>>,
    pub synced_at: DateTime<Utc>,
}

pub async fn contacts(
    conn: &mut PgConnection,
    org_id: OrgId,
    connection_id: ConnectionId,
    page: Page,
) -> sqlx::Result<Vec<ContactView>> {
    sqlx::query_as!(
        ContactView,
        "SELECT id, external_id, name, first_name, last_name, responsible_user_id, custom_fields,
                external_created_at, external_updated_at, synced_at
         FROM crm_contacts
         WHERE org_id = $1 AND connection_id = $2 AND ($3::uuid IS NULL OR id < $3)
         ORDER BY id DESC LIMIT $4",
        org_id.0,
        connection_id.0,
        page.after,
        page.fetch_limit(),
    )
    .fetch_all(conn)
    .await
}

/// Connections in every org whose tokens expire within `within_secs` (scheduler only).
pub async fn due_for_refresh(
    conn: &mut PgConnection,
    within_secs: f64,
) -> sqlx::Result<Vec<(ConnectionId, OrgId)>> {
    let rows = sqlx::query!(
        r#"SELECT id AS "id!: ConnectionId", org_id AS "org_id!: OrgId"
           FROM auth.connections_due_for_refresh(make_interval(secs => $1))"#,
        within_secs,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.org_id)).collect())
}

/// A connection's Kommo Chats channel: its public part, and its sealed secret.
#[derive(Debug, Clone)]
pub struct StoredChatChannel {
    /// `{scope_id, bot_id, bot_name}`.
    pub channel: Value,
    pub secret_enc: Vec<u8>,
}

pub async fn chat_channel(
    conn: &mut PgConnection,
    org_id: OrgId,
    connection_id: ConnectionId,
) -> sqlx::Result<Option<StoredChatChannel>> {
    let row = sqlx::query!(
        r#"SELECT chat_channel AS "channel!", chat_secret_enc AS "secret_enc!"
           FROM crm_connections
           WHERE org_id = $1 AND id = $2 AND chat_channel IS NOT NULL
             AND chat_secret_enc IS NOT NULL"#,
        org_id.0,
        connection_id.0,
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| StoredChatChannel {
        channel: r.channel,
        secret_enc: r.secret_enc,
    }))
}

/// Sets (or with `None`, removes) the connection's Chats channel; false when there is no
/// such connection.
pub async fn set_chat_channel(
    conn: &mut PgConnection,
    org_id: OrgId,
    connection_id: ConnectionId,
    channel: Option<(&Value, &[u8])>,
) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE crm_connections SET chat_channel = $3, chat_secret_enc = $4, updated_at = now()
         WHERE org_id = $1 AND id = $2",
        org_id.0,
        connection_id.0,
        channel.map(|(c, _)| c),
        channel.map(|(_, s)| s),
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}
