//! Queries on `agents`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow as _, PgConnection, Row as _};
use uuid::Uuid;

use crate::db::Db;
use crate::db::rls::Execute;
use crate::domain::page::Page;
use crate::domain::{AgentId, AuthUser, ConnectionId, OrgId};

pub use crate::domain::AgentStatus;

// `FromRow` reads the list's rows (`list`), where the arrays come as JSON; the other
// queries fill it with `query_as!`. (Not a doc comment: those become the API's schema.)
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Agent {
    pub id: Uuid,
    pub org_id: Uuid,
    pub connection_id: Option<Uuid>,
    pub name: String,
    pub status: AgentStatus,
    pub model: String,
    pub instructions: String,
    #[sqlx(json)]
    pub channels: Vec<String>,
    pub schedule: Option<String>,
    pub temperature: f64,
    pub max_tokens: i32,
    #[schema(value_type = Object)]
    pub settings: serde_json::Value,
    /// `{timezone, days: {mon: [["09:00","18:00"]], …}}`; `null`: always open.
    #[schema(value_type = Option<Object>)]
    pub working_hours: Option<serde_json::Value>,
    /// Messages within this many seconds of each other get one answer (0–3600).
    pub response_delay_secs: i32,
    /// Sent at once outside working hours (else the answer waits for the next opening).
    pub off_hours_reply: Option<String>,
    /// A lead's message containing one of these (any case) goes to a person.
    #[sqlx(json)]
    pub handoff_keywords: Vec<String>,
    /// After this many answers in a conversation, a person takes over.
    pub max_turns: Option<i32>,
    #[serde(serialize_with = "crate::domain::time::rfc3339")]
    #[sqlx(try_from = "crate::domain::time::PgTimestamp")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::domain::time::rfc3339")]
    #[sqlx(try_from = "crate::domain::time::PgTimestamp")]
    pub updated_at: DateTime<Utc>,
}

/// Everything a client may set on an agent.
#[derive(Debug, Clone)]
pub struct AgentFields {
    pub connection_id: Option<ConnectionId>,
    pub name: String,
    pub status: AgentStatus,
    pub model: String,
    pub instructions: String,
    pub channels: Vec<String>,
    pub schedule: Option<String>,
    pub temperature: f64,
    pub max_tokens: i32,
    pub settings: serde_json::Value,
    pub working_hours: Option<serde_json::Value>,
    pub response_delay_secs: i32,
    pub off_hours_reply: Option<String>,
    pub handoff_keywords: Vec<String>,
    pub max_turns: Option<i32>,
}

impl From<Agent> for AgentFields {
    fn from(a: Agent) -> AgentFields {
        AgentFields {
            connection_id: a.connection_id.map(ConnectionId),
            name: a.name,
            status: a.status,
            model: a.model,
            instructions: a.instructions,
            channels: a.channels,
            schedule: a.schedule,
            temperature: a.temperature,
            max_tokens: a.max_tokens,
            settings: a.settings,
            working_hours: a.working_hours,
            response_delay_secs: a.response_delay_secs,
            off_hours_reply: a.off_hours_reply,
            handoff_keywords: a.handoff_keywords,
            max_turns: a.max_turns,
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

/// `query_as!(Agent, …)` with the agent's columns, for a query that ends in `RETURNING`
/// or selects `FROM agents`: `$head` before the columns and `$tail` after them.
macro_rules! agent_query {
    ($head:tt, $tail:tt, $($arg:expr),* $(,)?) => {
        sqlx::query_as!(
            Agent,
            $head + r#" id, org_id, connection_id, name, status AS "status: AgentStatus", model,
                instructions, channels, schedule, temperature, max_tokens, settings,
                working_hours, response_delay_secs, off_hours_reply, handoff_keywords, max_turns,
                created_at, updated_at "# + $tail,
            $($arg),*
        )
    };
}

/// The list statement, prepared on every connection (`rls::prepare`) and executed by
/// `list` inside the transaction's one simple query. Its arguments: org, status, name
/// pattern, cursor, rows to fetch. Its rows come in the text format, so arrays come as
/// JSON: sqlx reads a text array's quoted `"NULL"` element as SQL NULL.
pub(super) const PREPARE_LIST_PAGE: &str = "
    PREPARE agents_api_list_page (uuid, text, text, uuid, bigint) AS
    SELECT id, org_id, connection_id, name, status, model, instructions,
           array_to_json(channels) AS channels, schedule, temperature, max_tokens, settings,
           working_hours, response_delay_secs, off_hours_reply,
           array_to_json(handoff_keywords) AS handoff_keywords, max_turns, created_at,
           updated_at,
           CASE WHEN $3 IS NULL
                THEN (SELECT coalesce(sum(n), 0)::bigint FROM agent_counts
                      WHERE org_id = $1 AND ($2 IS NULL OR status = $2))
                ELSE (SELECT count(*) FROM agents
                      WHERE org_id = $1 AND ($2 IS NULL OR status = $2) AND name ILIKE $3)
           END AS total
    FROM agents
    WHERE org_id = $1
      AND ($2 IS NULL OR status = $2)
      AND ($3 IS NULL OR name ILIKE $3)
      AND ($4 IS NULL OR id < $4)
    ORDER BY id DESC LIMIT $5;";

/// A page of the org's agents and their `total`, read as `user`; `None` when they are
/// not a member (404). The whole transaction is one round trip (`Db::read_as_member`):
/// this is the API's busiest read. The total rides along in the page's own statement (a
/// subquery PostgreSQL runs once per statement); only an empty page needs a second
/// transaction for it. Without a name search the total comes from the counts the
/// `agents_count` trigger keeps (migration 7), which cost the same for 50 agents as for
/// 100,000; a search counts its matches, as it scans the org's agents for the page
/// anyway.
pub async fn list(
    db: &Db,
    user: &AuthUser,
    org_id: OrgId,
    filter: &AgentFilter,
    page: Page,
) -> crate::db::Result<Option<(Vec<Agent>, i64)>> {
    let pattern = filter.pattern();
    let read = Execute::new("agents_api_list_page")
        .uuid(Some(org_id.0))
        .text(filter.status.map(AgentStatus::as_str))
        .text(pattern.as_deref())
        .uuid(page.after)
        .int(page.fetch_limit());
    let (role, rows) = db.read_as_member(user, org_id, read).await?;
    if role.is_none() {
        return Ok(None);
    }
    let Some(first) = rows.first() else {
        let mut tx = db.begin_user(user).await?;
        let total = count(&mut tx, org_id, filter).await?;
        tx.commit().await?;
        return Ok(Some((Vec::new(), total)));
    };
    let total = first.try_get("total")?;
    let agents = rows
        .iter()
        .map(Agent::from_row)
        .collect::<sqlx::Result<Vec<Agent>>>()?;
    Ok(Some((agents, total)))
}

/// The `total` of a list whose page came back empty.
async fn count(conn: &mut PgConnection, org_id: OrgId, filter: &AgentFilter) -> sqlx::Result<i64> {
    let Some(pattern) = filter.pattern() else {
        return sqlx::query_scalar!(
            r#"SELECT coalesce(sum(n), 0)::bigint AS "total!" FROM agent_counts
               WHERE org_id = $1 AND ($2::text IS NULL OR status = $2)"#,
            org_id.0,
            filter.status as _,
        )
        .fetch_one(conn)
        .await;
    };
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "total!" FROM agents
           WHERE org_id = $1 AND ($2::text IS NULL OR status = $2) AND name ILIKE $3"#,
        org_id.0,
        filter.status as _,
        pattern,
    )
    .fetch_one(conn)
    .await
}

pub async fn get(
    conn: &mut PgConnection,
    org_id: OrgId,
    id: AgentId,
) -> sqlx::Result<Option<Agent>> {
    agent_query!(
        "SELECT",
        "FROM agents WHERE org_id = $1 AND id = $2",
        org_id.0,
        id.0
    )
    .fetch_optional(conn)
    .await
}

/// The agent, locked against concurrent updates until the transaction ends.
pub async fn get_for_update(
    conn: &mut PgConnection,
    org_id: OrgId,
    id: AgentId,
) -> sqlx::Result<Option<Agent>> {
    agent_query!(
        "SELECT",
        "FROM agents WHERE org_id = $1 AND id = $2 FOR UPDATE",
        org_id.0,
        id.0
    )
    .fetch_optional(conn)
    .await
}

/// A connection of another org fails on `agents_connection_id_org_id_fkey`.
pub async fn insert(
    conn: &mut PgConnection,
    org_id: OrgId,
    f: &AgentFields,
) -> sqlx::Result<Agent> {
    agent_query!(
        "INSERT INTO agents (id, org_id, connection_id, name, status, model, instructions,
                             channels, schedule, temperature, max_tokens, settings,
                             working_hours, response_delay_secs, off_hours_reply,
                             handoff_keywords, max_turns)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
         RETURNING",
        "",
        AgentId::new().0,
        org_id.0,
        f.connection_id.map(|c| c.0),
        f.name,
        f.status as _,
        f.model,
        f.instructions,
        &f.channels,
        f.schedule,
        f.temperature,
        f.max_tokens,
        f.settings,
        f.working_hours,
        f.response_delay_secs,
        f.off_hours_reply,
        &f.handoff_keywords,
        f.max_turns,
    )
    .fetch_one(conn)
    .await
}

pub async fn update(
    conn: &mut PgConnection,
    org_id: OrgId,
    id: AgentId,
    f: &AgentFields,
) -> sqlx::Result<Option<Agent>> {
    agent_query!(
        "UPDATE agents SET connection_id = $3, name = $4, status = $5, model = $6,
                instructions = $7, channels = $8, schedule = $9, temperature = $10,
                max_tokens = $11, settings = $12, working_hours = $13,
                response_delay_secs = $14, off_hours_reply = $15, handoff_keywords = $16,
                max_turns = $17, updated_at = now()
         WHERE org_id = $1 AND id = $2
         RETURNING",
        "",
        org_id.0,
        id.0,
        f.connection_id.map(|c| c.0),
        f.name,
        f.status as _,
        f.model,
        f.instructions,
        &f.channels,
        f.schedule,
        f.temperature,
        f.max_tokens,
        f.settings,
        f.working_hours,
        f.response_delay_secs,
        f.off_hours_reply,
        &f.handoff_keywords,
        f.max_turns,
    )
    .fetch_optional(conn)
    .await
}

pub async fn set_status(
    conn: &mut PgConnection,
    org_id: OrgId,
    id: AgentId,
    status: AgentStatus,
) -> sqlx::Result<Option<Agent>> {
    agent_query!(
        "UPDATE agents SET status = $3, updated_at = now() WHERE org_id = $1 AND id = $2
         RETURNING",
        "",
        org_id.0,
        id.0,
        status as _,
    )
    .fetch_optional(conn)
    .await
}

pub async fn delete(conn: &mut PgConnection, org_id: OrgId, id: AgentId) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "DELETE FROM agents WHERE org_id = $1 AND id = $2",
        org_id.0,
        id.0
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Whether a CRM connection of this org exists (RLS hides other orgs' anyway).
pub async fn connection_exists(
    conn: &mut PgConnection,
    org_id: OrgId,
    connection_id: ConnectionId,
) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM crm_connections WHERE org_id = $1 AND id = $2)
           AS "exists!""#,
        org_id.0,
        connection_id.0,
    )
    .fetch_one(conn)
    .await
}
