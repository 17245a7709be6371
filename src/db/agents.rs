//! Queries on `agents`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::value::RawValue;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row as _};
use uuid::Uuid;

use crate::db::Db;
use crate::db::rls::Execute;
use crate::domain::page::Page;
use crate::domain::time::PgTimestamp;
use crate::domain::{AgentId, AuthUser, ConnectionId, OrgId};

pub use crate::domain::AgentStatus;

// Filled by `query_as!`; the list writes the same JSON from its rows through `AgentView`.
// (Not a doc comment: those become the API's schema.)
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
    /// `{timezone, days: {mon: [["09:00","18:00"]], …}}`; `null`: always open.
    #[schema(value_type = Option<Object>)]
    pub working_hours: Option<serde_json::Value>,
    /// Messages within this many seconds of each other get one answer (0–3600).
    pub response_delay_secs: i32,
    /// Sent at once outside working hours (else the answer waits for the next opening).
    pub off_hours_reply: Option<String>,
    /// A lead's message containing one of these (any case) goes to a person.
    pub handoff_keywords: Vec<String>,
    /// After this many answers in a conversation, a person takes over.
    pub max_turns: Option<i32>,
    #[serde(serialize_with = "crate::domain::time::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::domain::time::rfc3339")]
    pub updated_at: DateTime<Utc>,
}

/// An agent of the list, borrowed from its row: the fields of `Agent`, in its order and
/// with its names, so that it serializes to the same JSON (the tests compare them).
/// Decoding the page into `Agent`s — a `String` or `Vec` per text and array column, a
/// `serde_json::Value` tree per JSON one, each column found by name — was a quarter of
/// the list's server CPU in `perf`; this takes text as it lies in the row and JSON columns
/// as PostgreSQL printed them (`jsonb`'s key order, not `Value`'s sorted one).
#[derive(Debug, Serialize)]
pub struct AgentView<'r> {
    pub id: Uuid,
    pub org_id: Uuid,
    pub connection_id: Option<Uuid>,
    pub name: &'r str,
    pub status: AgentStatus,
    pub model: &'r str,
    pub instructions: &'r str,
    pub channels: &'r RawValue,
    pub schedule: Option<&'r str>,
    pub temperature: f64,
    pub max_tokens: i32,
    pub settings: Box<RawValue>,
    pub working_hours: Option<Box<RawValue>>,
    pub response_delay_secs: i32,
    pub off_hours_reply: Option<&'r str>,
    pub handoff_keywords: &'r RawValue,
    pub max_turns: Option<i32>,
    #[serde(serialize_with = "crate::domain::time::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::domain::time::rfc3339")]
    pub updated_at: DateTime<Utc>,
}

impl<'r> AgentView<'r> {
    /// A row of `PREPARE_LIST_PAGE`, its columns taken by position (their order there).
    fn from_row(row: &'r PgRow) -> sqlx::Result<AgentView<'r>> {
        Ok(AgentView {
            id: row.try_get(0)?,
            org_id: row.try_get(1)?,
            connection_id: row.try_get(2)?,
            name: row.try_get(3)?,
            status: row.try_get(4)?,
            model: row.try_get(5)?,
            instructions: row.try_get(6)?,
            channels: json_column(row, 7)?,
            schedule: row.try_get(8)?,
            temperature: row.try_get(9)?,
            max_tokens: row.try_get(10)?,
            settings: compact_json_column(row, 11)?,
            working_hours: row
                .try_get_unchecked::<Option<&str>, _>(12)?
                .map(|text| compact_json(text, 12))
                .transpose()?,
            response_delay_secs: row.try_get(13)?,
            off_hours_reply: row.try_get(14)?,
            handoff_keywords: json_column(row, 15)?,
            max_turns: row.try_get(16)?,
            created_at: row.try_get::<PgTimestamp, _>(17)?.into(),
            updated_at: row.try_get::<PgTimestamp, _>(18)?.into(),
        })
    }
}

/// A `json` column as PostgreSQL printed it (`array_to_json`'s output has no spaces).
fn json_column(row: &PgRow, index: usize) -> sqlx::Result<&RawValue> {
    serde_json::from_str(json_text(row, index)?).map_err(|e| column_error(index, e))
}

fn compact_json_column(row: &PgRow, index: usize) -> sqlx::Result<Box<RawValue>> {
    compact_json(json_text(row, index)?, index)
}

/// A `json` or `jsonb` column's text (rows of a simple query come in the text format).
fn json_text(row: &PgRow, index: usize) -> sqlx::Result<&str> {
    row.try_get_unchecked(index)
}

/// A `jsonb` column's text without the spaces PostgreSQL prints after `:` and `,`.
fn compact_json(text: &str, index: usize) -> sqlx::Result<Box<RawValue>> {
    RawValue::from_string(crate::domain::json::compact(text)).map_err(|e| column_error(index, e))
}

fn column_error(index: usize, error: serde_json::Error) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: index.to_string(),
        source: Box::new(error),
    }
}

/// A page of the list as its statement returned it, and the total; `agents` reads it.
#[derive(Debug)]
pub struct AgentRows {
    rows: Vec<PgRow>,
    pub total: i64,
}

impl AgentRows {
    pub fn agents(&self) -> sqlx::Result<Vec<AgentView<'_>>> {
        self.rows.iter().map(AgentView::from_row).collect()
    }
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
) -> crate::db::Result<Option<AgentRows>> {
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
        return Ok(Some(AgentRows { rows, total }));
    };
    let total = first.try_get(TOTAL_COLUMN)?;
    Ok(Some(AgentRows { rows, total }))
}

/// Where `PREPARE_LIST_PAGE` puts the total, after the agent's columns.
const TOTAL_COLUMN: usize = 19;

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
