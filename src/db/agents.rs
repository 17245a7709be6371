//! Queries on `agents`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::page::Page;

pub use crate::domain::AgentStatus;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Agent {
    pub id: Uuid,
    pub org_id: Uuid,
    pub connection_id: Option<Uuid>,
    pub name: String,
    pub status: AgentStatus,
    pub model: String,
    pub instructions: String,
    pub channels: Vec<String>,
    pub schedule: Option<String>,
    pub temperature: f64,
    pub max_tokens: i32,
    #[schema(value_type = Object)]
    pub settings: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Everything a client may set on an agent.
#[derive(Debug, Clone)]
pub struct AgentFields {
    pub connection_id: Option<Uuid>,
    pub name: String,
    pub status: AgentStatus,
    pub model: String,
    pub instructions: String,
    pub channels: Vec<String>,
    pub schedule: Option<String>,
    pub temperature: f64,
    pub max_tokens: i32,
    pub settings: serde_json::Value,
}

impl From<Agent> for AgentFields {
    fn from(a: Agent) -> AgentFields {
        AgentFields {
            connection_id: a.connection_id,
            name: a.name,
            status: a.status,
            model: a.model,
            instructions: a.instructions,
            channels: a.channels,
            schedule: a.schedule,
            temperature: a.temperature,
            max_tokens: a.max_tokens,
            settings: a.settings,
        }
    }
}

#[derive(Debug, Default)]
pub struct AgentFilter {
    pub status: Option<AgentStatus>,
    /// Case-insensitive substring of the name.
    pub search: Option<String>,
}

impl AgentFilter {
    fn pattern(&self) -> Option<String> {
        self.search.as_deref().filter(|s| !s.is_empty()).map(|s| {
            let escaped = s
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("%{escaped}%")
        })
    }
}

/// The columns of `Agent`, as a macro so that every query stays one `&'static str`.
macro_rules! columns {
    () => {
        "id, org_id, connection_id, name, status, model, instructions, channels, \
         schedule, temperature, max_tokens, settings, created_at, updated_at"
    };
}

/// The total without a name search ($1 org, $2 status), from the counts the
/// `agents_count` trigger keeps (migration 7): it costs the same for 50 agents as for
/// 100,000.
macro_rules! total_from_counts {
    () => {
        "SELECT coalesce(sum(n), 0)::bigint FROM agent_counts
         WHERE org_id = $1 AND ($2::text IS NULL OR status = $2)"
    };
}

/// The total of a name search ($3 the pattern): its matches are counted, since the
/// search scans the org's agents for the page anyway.
macro_rules! total_of_search {
    () => {
        "SELECT count(*) FROM agents
         WHERE org_id = $1 AND ($2::text IS NULL OR status = $2) AND name ILIKE $3"
    };
}

/// A page of agents and their `total`. The total rides along in the page's own query
/// (a subquery PostgreSQL runs once per statement), which saves the round trip of a
/// second query; only an empty page needs one.
pub async fn list(
    conn: &mut PgConnection,
    org_id: Uuid,
    filter: &AgentFilter,
    page: Page,
) -> sqlx::Result<(Vec<Agent>, i64)> {
    #[derive(sqlx::FromRow)]
    struct Listed {
        #[sqlx(flatten)]
        agent: Agent,
        total: i64,
    }
    let rows: Vec<Listed> = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        ", CASE WHEN $3::text IS NULL THEN (",
        total_from_counts!(),
        ") ELSE (",
        total_of_search!(),
        ") END AS total
         FROM agents
         WHERE org_id = $1
           AND ($2::text IS NULL OR status = $2)
           AND ($3::text IS NULL OR name ILIKE $3)
           AND ($4::uuid IS NULL OR id < $4)
         ORDER BY id DESC LIMIT $5"
    ))
    .bind(org_id)
    .bind(filter.status)
    .bind(filter.pattern())
    .bind(page.after)
    .bind(page.fetch_limit())
    .fetch_all(&mut *conn)
    .await?;
    let Some(total) = rows.first().map(|row| row.total) else {
        return Ok((Vec::new(), count(conn, org_id, filter).await?));
    };
    Ok((rows.into_iter().map(|row| row.agent).collect(), total))
}

/// The `total` of a list whose page came back empty.
async fn count(conn: &mut PgConnection, org_id: Uuid, filter: &AgentFilter) -> sqlx::Result<i64> {
    let Some(pattern) = filter.pattern() else {
        return sqlx::query_scalar(total_from_counts!())
            .bind(org_id)
            .bind(filter.status)
            .fetch_one(conn)
            .await;
    };
    sqlx::query_scalar(total_of_search!())
        .bind(org_id)
        .bind(filter.status)
        .bind(pattern)
        .fetch_one(conn)
        .await
}

pub async fn get(conn: &mut PgConnection, org_id: Uuid, id: Uuid) -> sqlx::Result<Option<Agent>> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM agents WHERE org_id = $1 AND id = $2"
    ))
    .bind(org_id)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// The agent, locked against concurrent updates until the transaction ends.
pub async fn get_for_update(
    conn: &mut PgConnection,
    org_id: Uuid,
    id: Uuid,
) -> sqlx::Result<Option<Agent>> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM agents WHERE org_id = $1 AND id = $2 FOR UPDATE"
    ))
    .bind(org_id)
    .bind(id)
    .fetch_optional(conn)
    .await
}

pub async fn insert(conn: &mut PgConnection, org_id: Uuid, f: &AgentFields) -> sqlx::Result<Agent> {
    sqlx::query_as(concat!(
        "INSERT INTO agents (id, org_id, connection_id, name, status, model, instructions,
                             channels, schedule, temperature, max_tokens, settings)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         RETURNING ",
        columns!(),
        ""
    ))
    .bind(Uuid::now_v7())
    .bind(org_id)
    .bind(f.connection_id)
    .bind(&f.name)
    .bind(f.status)
    .bind(&f.model)
    .bind(&f.instructions)
    .bind(&f.channels)
    .bind(&f.schedule)
    .bind(f.temperature)
    .bind(f.max_tokens)
    .bind(&f.settings)
    .fetch_one(conn)
    .await
}

pub async fn update(
    conn: &mut PgConnection,
    org_id: Uuid,
    id: Uuid,
    f: &AgentFields,
) -> sqlx::Result<Option<Agent>> {
    sqlx::query_as(concat!(
        "UPDATE agents SET connection_id = $3, name = $4, status = $5, model = $6,
                instructions = $7, channels = $8, schedule = $9, temperature = $10,
                max_tokens = $11, settings = $12, updated_at = now()
         WHERE org_id = $1 AND id = $2
         RETURNING ",
        columns!(),
        ""
    ))
    .bind(org_id)
    .bind(id)
    .bind(f.connection_id)
    .bind(&f.name)
    .bind(f.status)
    .bind(&f.model)
    .bind(&f.instructions)
    .bind(&f.channels)
    .bind(&f.schedule)
    .bind(f.temperature)
    .bind(f.max_tokens)
    .bind(&f.settings)
    .fetch_optional(conn)
    .await
}

pub async fn set_status(
    conn: &mut PgConnection,
    org_id: Uuid,
    id: Uuid,
    status: AgentStatus,
) -> sqlx::Result<Option<Agent>> {
    sqlx::query_as(concat!(
        "UPDATE agents SET status = $3, updated_at = now() WHERE org_id = $1 AND id = $2
         RETURNING ",
        columns!(),
        ""
    ))
    .bind(org_id)
    .bind(id)
    .bind(status)
    .fetch_optional(conn)
    .await
}

pub async fn delete(conn: &mut PgConnection, org_id: Uuid, id: Uuid) -> sqlx::Result<bool> {
    let done = sqlx::query("DELETE FROM agents WHERE org_id = $1 AND id = $2")
        .bind(org_id)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Whether a CRM connection of this org exists (RLS hides other orgs' anyway).
pub async fn connection_exists(
    conn: &mut PgConnection,
    org_id: Uuid,
    connection_id: Uuid,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM crm_connections WHERE org_id = $1 AND id = $2)",
    )
    .bind(org_id)
    .bind(connection_id)
    .fetch_one(conn)
    .await
}
