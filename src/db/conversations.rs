//! Queries on `conversations` and `messages` (spec §13): one conversation per
//! (connection, chat), its inbound messages de-duplicated by Kommo's id, and the agent's
//! answers, one per set of inbound messages (`reply_to`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::page::Page;
use crate::domain::{AgentId, ConnectionId, ConversationId, OrgId};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum ConversationStatus {
    /// The agent answers (when routed and within its hours).
    Active,
    /// A person took over: the agent is silent until resumed.
    HandedOff,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Conversation {
    pub id: Uuid,
    pub org_id: Uuid,
    pub connection_id: Uuid,
    /// Kommo's chat id.
    pub chat_id: String,
    pub talk_id: Option<String>,
    pub lead_id: Option<i64>,
    pub contact_id: Option<i64>,
    /// telegram, whatsapp, instagram, …
    pub origin: Option<String>,
    pub agent_id: Option<Uuid>,
    pub status: ConversationStatus,
    pub handoff_reason: Option<String>,
    /// Why the agent is not answering right now, when it is not.
    pub notice: Option<String>,
    /// The lead as last read from Kommo.
    #[schema(value_type = Option<Object>)]
    pub lead: Option<Value>,
    /// When a reply waiting on the response delay or working hours is due.
    pub reply_due_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub reply_job_id: Option<Uuid>,
    pub last_message_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

macro_rules! conversation_query {
    ($head:tt, $tail:tt, $($arg:expr),* $(,)?) => {
        sqlx::query_as!(
            Conversation,
            $head + r#" id, org_id, connection_id, chat_id, talk_id, lead_id, contact_id, origin,
                agent_id, status AS "status: ConversationStatus", handoff_reason, notice, lead,
                reply_due_at, reply_job_id, last_message_at, created_at, updated_at "# + $tail,
            $($arg),*
        )
    };
}

/// An incoming chat message as Kommo's webhook describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    pub kommo_message_id: String,
    pub chat_id: String,
    pub talk_id: Option<String>,
    pub contact_id: Option<i64>,
    pub lead_id: Option<i64>,
    pub text: String,
    pub sent_at: Option<DateTime<Utc>>,
    pub author: Option<String>,
    pub origin: Option<String>,
}

/// The conversation of the message's chat, created or brought up to date (the lead and
/// contact as the latest message names them), locked until the transaction ends: the
/// webhook job and the reply job decide who answers under this lock.
pub async fn upsert_for_inbound(
    conn: &mut PgConnection,
    org_id: OrgId,
    connection_id: ConnectionId,
    message: &Inbound,
) -> sqlx::Result<Conversation> {
    conversation_query!(
        "INSERT INTO conversations AS c (id, org_id, connection_id, chat_id, talk_id, lead_id,
                                         contact_id, origin)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (org_id, connection_id, chat_id) DO UPDATE SET
             talk_id = coalesce(EXCLUDED.talk_id, c.talk_id),
             lead_id = coalesce(EXCLUDED.lead_id, c.lead_id),
             contact_id = coalesce(EXCLUDED.contact_id, c.contact_id),
             origin = coalesce(EXCLUDED.origin, c.origin),
             last_message_at = now(), updated_at = now()
         RETURNING",
        "",
        ConversationId::new().0,
        org_id.0,
        connection_id.0,
        message.chat_id,
        message.talk_id,
        message.lead_id,
        message.contact_id,
        message.origin,
    )
    .fetch_one(conn)
    .await
}

/// Stores an inbound message; `None` when Kommo's id was already stored (a duplicate).
pub async fn insert_inbound(
    conn: &mut PgConnection,
    org_id: OrgId,
    conversation_id: ConversationId,
    message: &Inbound,
    received_at: DateTime<Utc>,
) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar!(
        "INSERT INTO messages (id, org_id, conversation_id, direction, kommo_message_id, author,
                               text, sent_at, kind, delivery_status, created_at)
         VALUES ($1, $2, $3, 'in', $4, $5, $6, $7, 'inbound', 'received', $8)
         ON CONFLICT (conversation_id, kommo_message_id) DO NOTHING
         RETURNING id",
        Uuid::now_v7(),
        org_id.0,
        conversation_id.0,
        message.kommo_message_id,
        message.author,
        message.text,
        message.sent_at,
        received_at,
    )
    .fetch_optional(conn)
    .await
}

pub async fn get(
    conn: &mut PgConnection,
    org_id: OrgId,
    id: ConversationId,
) -> sqlx::Result<Option<Conversation>> {
    conversation_query!(
        "SELECT",
        "FROM conversations WHERE org_id = $1 AND id = $2",
        org_id.0,
        id.0
    )
    .fetch_optional(conn)
    .await
}

/// The conversation, locked until the transaction ends.
pub async fn lock(
    conn: &mut PgConnection,
    org_id: OrgId,
    id: ConversationId,
) -> sqlx::Result<Option<Conversation>> {
    conversation_query!(
        "SELECT",
        "FROM conversations WHERE org_id = $1 AND id = $2 FOR UPDATE",
        org_id.0,
        id.0
    )
    .fetch_optional(conn)
    .await
}

#[derive(Debug, Default)]
pub struct ConversationFilter {
    pub agent_id: Option<AgentId>,
    pub status: Option<ConversationStatus>,
    pub lead_id: Option<i64>,
}

/// Newest first; `page.fetch_limit()` rows.
pub async fn list(
    conn: &mut PgConnection,
    org_id: OrgId,
    filter: &ConversationFilter,
    page: Page,
) -> sqlx::Result<Vec<Conversation>> {
    conversation_query!(
        "SELECT",
        r#"FROM conversations
           WHERE org_id = $1 AND ($2::uuid IS NULL OR agent_id = $2)
             AND ($3::text IS NULL OR status = $3) AND ($4::bigint IS NULL OR lead_id = $4)
             AND ($5::uuid IS NULL OR id < $5)
           ORDER BY id DESC LIMIT $6"#,
        org_id.0,
        filter.agent_id.map(|a| a.0),
        filter.status.map(ConversationStatus::as_str),
        filter.lead_id,
        page.after,
        page.fetch_limit(),
    )
    .fetch_all(conn)
    .await
}

impl ConversationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationStatus::Active => "active",
            ConversationStatus::HandedOff => "handed_off",
        }
    }
}

/// Which job answers the conversation next, and when (`None`: no reply is pending).
pub async fn set_reply_job(
    conn: &mut PgConnection,
    org_id: OrgId,
    id: ConversationId,
    job_id: Option<Uuid>,
    due_at: Option<DateTime<Utc>>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE conversations SET reply_job_id = $3, reply_due_at = $4, updated_at = now()
         WHERE org_id = $1 AND id = $2",
        org_id.0,
        id.0,
        job_id,
        due_at,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether the job is still to run or running (a retry waiting counts).
pub async fn job_is_live(conn: &mut PgConnection, job_id: Uuid) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM jobs WHERE id = $1 AND status IN ('queued', 'running'))
           AS "live!""#,
        job_id
    )
    .fetch_one(conn)
    .await
}

/// Routing's outcome: the agent that answers here, the lead as Kommo showed it, and a
/// notice when no agent answers.
pub async fn set_routing(
    conn: &mut PgConnection,
    org_id: OrgId,
    id: ConversationId,
    agent_id: Option<AgentId>,
    lead: Option<&Value>,
    notice: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE conversations SET agent_id = coalesce($3, agent_id), lead = coalesce($4, lead),
                notice = $5, updated_at = now()
         WHERE org_id = $1 AND id = $2",
        org_id.0,
        id.0,
        agent_id.map(|a| a.0),
        lead,
        notice,
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn set_notice(
    conn: &mut PgConnection,
    org_id: OrgId,
    id: ConversationId,
    notice: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE conversations SET notice = $3, updated_at = now() WHERE org_id = $1 AND id = $2",
        org_id.0,
        id.0,
        notice,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// active → handed_off; `None` when it was not active (or is not there).
pub async fn hand_off(
    conn: &mut PgConnection,
    org_id: OrgId,
    id: ConversationId,
    reason: &str,
) -> sqlx::Result<Option<Conversation>> {
    conversation_query!(
        "UPDATE conversations SET status = 'handed_off', handoff_reason = $3,
                notice = 'handed off to a person', updated_at = now()
         WHERE org_id = $1 AND id = $2 AND status = 'active' RETURNING",
        "",
        org_id.0,
        id.0,
        reason,
    )
    .fetch_optional(conn)
    .await
}

/// handed_off → active; `None` when it was not handed off (or is not there).
pub async fn resume(
    conn: &mut PgConnection,
    org_id: OrgId,
    id: ConversationId,
) -> sqlx::Result<Option<Conversation>> {
    conversation_query!(
        "UPDATE conversations SET status = 'active', handoff_reason = NULL, notice = NULL,
                updated_at = now()
         WHERE org_id = $1 AND id = $2 AND status = 'handed_off' RETURNING",
        "",
        org_id.0,
        id.0,
    )
    .fetch_optional(conn)
    .await
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Message {
    pub id: Uuid,
    pub conversation_id: Uuid,
    /// `in` from the lead, `out` from the agent.
    pub direction: String,
    pub kommo_message_id: Option<String>,
    pub author: Option<String>,
    pub text: String,
    /// When Kommo says it was written (inbound).
    pub sent_at: Option<DateTime<Utc>>,
    /// `inbound`, `reply`, `off_hours` or `handoff`.
    pub kind: String,
    /// Inbound: the answer that covered it. Outbound: the last inbound message it answers.
    pub answered_by: Option<Uuid>,
    pub reply_to: Option<Uuid>,
    pub model: Option<String>,
    pub tokens_in: Option<i32>,
    pub tokens_out: Option<i32>,
    pub latency_ms: Option<i32>,
    /// The knowledge chunks the answer drew on.
    #[schema(value_type = Vec<Object>)]
    pub sources: Value,
    #[schema(value_type = Vec<Object>)]
    pub tool_calls: Value,
    /// Inbound: `received` (awaiting an answer), `answered` or `ignored`. Outbound:
    /// `pending`, `delivered` or `failed`.
    pub delivery_status: String,
    /// Where it went in Kommo (note id, chat message id).
    #[schema(value_type = Object)]
    pub delivery: Value,
    /// Why it was ignored or failed.
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
}

macro_rules! message_query {
    ($head:tt, $tail:tt, $($arg:expr),* $(,)?) => {
        sqlx::query_as!(
            Message,
            $head + r#" id, conversation_id, direction, kommo_message_id, author, text, sent_at,
                kind, answered_by, reply_to, model, tokens_in, tokens_out, latency_ms, sources,
                tool_calls, delivery_status, delivery, error, created_at "# + $tail,
            $($arg),*
        )
    };
}

/// Oldest first; `page.fetch_limit()` rows.
pub async fn messages(
    conn: &mut PgConnection,
    org_id: OrgId,
    conversation_id: ConversationId,
    page: Page,
) -> sqlx::Result<Vec<Message>> {
    message_query!(
        "SELECT",
        "FROM messages WHERE org_id = $1 AND conversation_id = $2
           AND ($3::uuid IS NULL OR id > $3) ORDER BY id LIMIT $4",
        org_id.0,
        conversation_id.0,
        page.after,
        page.fetch_limit(),
    )
    .fetch_all(conn)
    .await
}

/// The inbound messages still awaiting an answer, oldest first.
pub async fn unanswered(
    conn: &mut PgConnection,
    org_id: OrgId,
    conversation_id: ConversationId,
) -> sqlx::Result<Vec<Message>> {
    message_query!(
        "SELECT",
        "FROM messages WHERE org_id = $1 AND conversation_id = $2 AND direction = 'in'
           AND answered_by IS NULL AND delivery_status = 'received'
         ORDER BY id LIMIT 50",
        org_id.0,
        conversation_id.0,
    )
    .fetch_all(conn)
    .await
}

/// The latest `limit` messages before `before` (the history a reply sees), oldest first.
pub async fn history(
    conn: &mut PgConnection,
    org_id: OrgId,
    conversation_id: ConversationId,
    before: Uuid,
    limit: i64,
) -> sqlx::Result<Vec<Message>> {
    let mut rows = message_query!(
        "SELECT",
        "FROM messages WHERE org_id = $1 AND conversation_id = $2 AND id < $3
           AND (direction = 'in' OR delivery_status = 'delivered')
         ORDER BY id DESC LIMIT $4",
        org_id.0,
        conversation_id.0,
        before,
        limit,
    )
    .fetch_all(conn)
    .await?;
    rows.reverse();
    Ok(rows)
}

/// The answer to the set of inbound messages ending with `reply_to`, if one was written.
pub async fn reply_for(
    conn: &mut PgConnection,
    org_id: OrgId,
    conversation_id: ConversationId,
    reply_to: Uuid,
) -> sqlx::Result<Option<Message>> {
    message_query!(
        "SELECT",
        "FROM messages WHERE org_id = $1 AND conversation_id = $2 AND reply_to = $3",
        org_id.0,
        conversation_id.0,
        reply_to,
    )
    .fetch_optional(conn)
    .await
}

/// An answer as the model wrote it, before it is delivered.
pub struct NewReply<'a> {
    pub reply_to: Uuid,
    pub kind: &'a str,
    pub text: &'a str,
    pub author: &'a str,
    pub model: Option<&'a str>,
    pub tokens_in: Option<i32>,
    pub tokens_out: Option<i32>,
    pub latency_ms: Option<i32>,
    pub sources: &'a Value,
    pub tool_calls: &'a Value,
}

/// Records the answer to a set (pending delivery); the existing one when the set already
/// has one, so a set is never answered twice.
pub async fn insert_reply(
    conn: &mut PgConnection,
    org_id: OrgId,
    conversation_id: ConversationId,
    reply: &NewReply<'_>,
) -> sqlx::Result<Message> {
    let inserted = message_query!(
        "INSERT INTO messages (id, org_id, conversation_id, direction, author, text, kind,
                               reply_to, model, tokens_in, tokens_out, latency_ms, sources,
                               tool_calls, delivery_status)
         VALUES ($1, $2, $3, 'out', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'pending')
         ON CONFLICT (conversation_id, reply_to) DO NOTHING RETURNING",
        "",
        Uuid::now_v7(),
        org_id.0,
        conversation_id.0,
        reply.author,
        reply.text,
        reply.kind,
        reply.reply_to,
        reply.model,
        reply.tokens_in,
        reply.tokens_out,
        reply.latency_ms,
        reply.sources,
        reply.tool_calls,
    )
    .fetch_optional(&mut *conn)
    .await?;
    match inserted {
        Some(message) => Ok(message),
        None => reply_for(conn, org_id, conversation_id, reply.reply_to)
            .await?
            .ok_or(sqlx::Error::RowNotFound),
    }
}

/// An outbound message's delivery outcome.
pub async fn set_delivery(
    conn: &mut PgConnection,
    org_id: OrgId,
    id: Uuid,
    status: &str,
    delivery: &Value,
    error: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE messages SET delivery_status = $3, delivery = $4, error = $5, updated_at = now()
         WHERE org_id = $1 AND id = $2",
        org_id.0,
        id,
        status,
        delivery,
        error,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks the conversation's inbound messages up to `last` as answered by `answer`.
pub async fn mark_answered(
    conn: &mut PgConnection,
    org_id: OrgId,
    conversation_id: ConversationId,
    last: Uuid,
    answer: Uuid,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE messages SET answered_by = $4, delivery_status = 'answered', updated_at = now()
         WHERE org_id = $1 AND conversation_id = $2 AND direction = 'in' AND id <= $3
           AND delivery_status = 'received'",
        org_id.0,
        conversation_id.0,
        last,
        answer,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks the conversation's inbound messages up to `last` as never to be answered, and why.
pub async fn mark_ignored(
    conn: &mut PgConnection,
    org_id: OrgId,
    conversation_id: ConversationId,
    last: Uuid,
    why: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE messages SET delivery_status = 'ignored', error = $4, updated_at = now()
         WHERE org_id = $1 AND conversation_id = $2 AND direction = 'in' AND id <= $3
           AND delivery_status = 'received'",
        org_id.0,
        conversation_id.0,
        last,
        why,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// How many answers the agent has delivered in the conversation (its turns).
pub async fn turns(
    conn: &mut PgConnection,
    org_id: OrgId,
    conversation_id: ConversationId,
) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM messages
           WHERE org_id = $1 AND conversation_id = $2 AND direction = 'out' AND kind = 'reply'
             AND delivery_status = 'delivered'"#,
        org_id.0,
        conversation_id.0,
    )
    .fetch_one(conn)
    .await
}
