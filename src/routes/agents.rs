//! AI sales agents of an org.

use crate::http::json::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;
use validator::{Validate, ValidationError};

use crate::agent::schedule::WorkingHours;
use crate::db;
use crate::db::agents::{Agent, AgentFields, AgentFilter, AgentStatus, AgentView};
use crate::db::audit::Change;
use crate::domain::ConnectionId;
use crate::domain::page::{Page, Paginated};
use crate::domain::{AgentId, OrgId};
use crate::http::error::{ApiError, ApiResult, OnConstraint};
use crate::http::extract::{ApiJson, ApiPath, ApiQuery, OrgTx, OrgUser, RequestMeta, Write};
use crate::http::validate::present;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, update, remove))
        .routes(routes!(set_status))
}

const MAX_SETTINGS_BYTES: usize = 64 * 1024;
const MAX_CHANNELS: usize = 20;
const MAX_CHANNEL_LEN: usize = 50;

fn validate_model(model: &str) -> Result<(), ValidationError> {
    let ok = (1..=100).contains(&model.len())
        && model
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'/' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new("model")
            .with_message("must be 1 to 100 of A-Z a-z 0-9 . _ : / -".into()))
    }
}

fn validate_channels(channels: &[String]) -> Result<(), ValidationError> {
    let ok = !channels.is_empty()
        && channels.len() <= MAX_CHANNELS
        && channels
            .iter()
            .all(|c| !c.trim().is_empty() && c.chars().count() <= MAX_CHANNEL_LEN);
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new("channels").with_message(
            format!(
                "must hold 1 to {MAX_CHANNELS} non-empty names of at most {MAX_CHANNEL_LEN} characters"
            )
            .into(),
        ))
    }
}

fn validate_settings(settings: &serde_json::Value) -> Result<(), ValidationError> {
    if !settings.is_object() {
        return Err(ValidationError::new("settings").with_message("must be a JSON object".into()));
    }
    if settings.to_string().len() > MAX_SETTINGS_BYTES {
        return Err(ValidationError::new("settings").with_message("must be at most 64 KiB".into()));
    }
    Ok(())
}

fn validate_keywords(keywords: &[String]) -> Result<(), ValidationError> {
    let ok = keywords.len() <= 50
        && keywords
            .iter()
            .all(|k| !k.trim().is_empty() && k.chars().count() <= 100);
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new("handoff_keywords")
            .with_message("must hold at most 50 non-empty words of at most 100 characters".into()))
    }
}

/// The working hours as stored: checked by the schedule's own parser, which names the
/// field that does not fit (`working_hours.days.mon[1]`).
fn check_working_hours(value: Option<&serde_json::Value>) -> ApiResult<()> {
    match value {
        Some(value) => WorkingHours::from_json(value)
            .map(|_| ())
            .map_err(ApiError::Validation),
        None => Ok(()),
    }
}

#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgent {
    /// A CRM connection of the same org.
    pub connection_id: Option<Uuid>,
    #[validate(length(min = 2, max = 100, message = "must be 2 to 100 characters"))]
    #[schema(min_length = 2, max_length = 100)]
    pub name: String,
    /// Default `draft`.
    pub status: Option<AgentStatus>,
    #[validate(custom(function = "validate_model"))]
    #[schema(pattern = "^[A-Za-z0-9._:/-]{1,100}$")]
    pub model: String,
    /// The agent's goal and instructions (`goal` is accepted as an alias).
    #[serde(alias = "goal")]
    #[validate(length(max = 20000, message = "must be at most 20000 characters"))]
    #[schema(max_length = 20000)]
    pub instructions: Option<String>,
    /// Default `["chat"]`.
    #[validate(custom(function = "validate_channels"))]
    #[schema(min_items = 1, max_items = 20)]
    pub channels: Option<Vec<String>>,
    #[validate(length(max = 200, message = "must be at most 200 characters"))]
    #[schema(max_length = 200)]
    pub schedule: Option<String>,
    /// 0..=2, default 0.7.
    #[validate(range(min = 0.0, max = 2.0, message = "must be between 0 and 2"))]
    #[schema(minimum = 0.0, maximum = 2.0)]
    pub temperature: Option<f64>,
    /// 1..=32000, default 2048.
    #[validate(range(min = 1, max = 32000, message = "must be between 1 and 32000"))]
    #[schema(minimum = 1, maximum = 32000)]
    pub max_tokens: Option<i32>,
    /// A JSON object of at most 64 KiB.
    #[validate(custom(function = "validate_settings"))]
    #[schema(value_type = Option<Object>)]
    pub settings: Option<serde_json::Value>,
    /// `{timezone, days: {mon: [["09:00","18:00"]], …}}`; absent: always open.
    #[schema(value_type = Option<Object>)]
    pub working_hours: Option<serde_json::Value>,
    /// 0..=3600, default 0.
    #[validate(range(min = 0, max = 3600, message = "must be between 0 and 3600"))]
    #[schema(minimum = 0, maximum = 3600)]
    pub response_delay_secs: Option<i32>,
    #[validate(length(min = 1, max = 2000, message = "must be 1 to 2000 characters"))]
    #[schema(min_length = 1, max_length = 2000)]
    pub off_hours_reply: Option<String>,
    #[validate(custom(function = "validate_keywords"))]
    #[schema(max_items = 50)]
    pub handoff_keywords: Option<Vec<String>>,
    /// 1..=1000.
    #[validate(range(min = 1, max = 1000, message = "must be between 1 and 1000"))]
    #[schema(minimum = 1, maximum = 1000)]
    pub max_turns: Option<i32>,
}

/// A PATCH field that may be absent but never `null` (the column has no empty state).
fn not_null<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// Only the fields present change; `null` clears `connection_id` and `schedule`.
#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAgent {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Uuid>)]
    pub connection_id: Option<Option<Uuid>>,
    #[validate(length(min = 2, max = 100, message = "must be 2 to 100 characters"))]
    #[serde(default, deserialize_with = "not_null")]
    #[schema(nullable = false, min_length = 2, max_length = 100)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    #[schema(nullable = false)]
    pub status: Option<AgentStatus>,
    #[validate(custom(function = "validate_model"))]
    #[serde(default, deserialize_with = "not_null")]
    #[schema(nullable = false, pattern = "^[A-Za-z0-9._:/-]{1,100}$")]
    pub model: Option<String>,
    #[serde(alias = "goal")]
    #[validate(length(max = 20000, message = "must be at most 20000 characters"))]
    #[serde(default, deserialize_with = "not_null")]
    #[schema(nullable = false, max_length = 20000)]
    pub instructions: Option<String>,
    #[validate(custom(function = "validate_channels"))]
    #[serde(default, deserialize_with = "not_null")]
    #[schema(nullable = false, min_items = 1, max_items = 20)]
    pub channels: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    #[validate(length(max = 200, message = "must be at most 200 characters"))]
    #[schema(value_type = Option<String>, max_length = 200)]
    pub schedule: Option<Option<String>>,
    #[validate(range(min = 0.0, max = 2.0, message = "must be between 0 and 2"))]
    #[serde(default, deserialize_with = "not_null")]
    #[schema(nullable = false, minimum = 0.0, maximum = 2.0)]
    pub temperature: Option<f64>,
    #[validate(range(min = 1, max = 32000, message = "must be between 1 and 32000"))]
    #[serde(default, deserialize_with = "not_null")]
    #[schema(nullable = false, minimum = 1, maximum = 32000)]
    pub max_tokens: Option<i32>,
    #[validate(custom(function = "validate_settings"))]
    #[schema(value_type = Option<Object>, nullable = false)]
    #[serde(default, deserialize_with = "not_null")]
    pub settings: Option<serde_json::Value>,
    /// `null`: always open.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Object>)]
    pub working_hours: Option<Option<serde_json::Value>>,
    #[validate(range(min = 0, max = 3600, message = "must be between 0 and 3600"))]
    #[serde(default, deserialize_with = "not_null")]
    #[schema(nullable = false, minimum = 0, maximum = 3600)]
    pub response_delay_secs: Option<i32>,
    #[serde(default, deserialize_with = "present")]
    #[validate(length(min = 1, max = 2000, message = "must be 1 to 2000 characters"))]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 2000)]
    pub off_hours_reply: Option<Option<String>>,
    #[validate(custom(function = "validate_keywords"))]
    #[serde(default, deserialize_with = "not_null")]
    #[schema(nullable = false, max_items = 50)]
    pub handoff_keywords: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    #[validate(range(min = 1, max = 1000, message = "must be between 1 and 1000"))]
    #[schema(value_type = Option<i32>, minimum = 1, maximum = 1000)]
    pub max_turns: Option<Option<i32>>,
}

impl UpdateAgent {
    /// The names of the fields this patch sets (values stay out of the audit log).
    fn changed_fields(&self) -> Vec<&'static str> {
        let present = [
            ("connection_id", self.connection_id.is_some()),
            ("name", self.name.is_some()),
            ("status", self.status.is_some()),
            ("model", self.model.is_some()),
            ("instructions", self.instructions.is_some()),
            ("channels", self.channels.is_some()),
            ("schedule", self.schedule.is_some()),
            ("temperature", self.temperature.is_some()),
            ("max_tokens", self.max_tokens.is_some()),
            ("settings", self.settings.is_some()),
            ("working_hours", self.working_hours.is_some()),
            ("response_delay_secs", self.response_delay_secs.is_some()),
            ("off_hours_reply", self.off_hours_reply.is_some()),
            ("handoff_keywords", self.handoff_keywords.is_some()),
            ("max_turns", self.max_turns.is_some()),
        ];
        present
            .into_iter()
            .filter(|(_, set)| *set)
            .map(|(name, _)| name)
            .collect()
    }
}

#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetStatus {
    pub status: AgentStatus,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListAgents {
    pub status: Option<AgentStatus>,
    /// Case-insensitive part of the name (at most 100 characters).
    #[param(max_length = 100)]
    pub search: Option<String>,
    /// 1..=100, default 25.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AgentList {
    pub data: Vec<Agent>,
    pub next_cursor: Option<String>,
    /// How many agents match the filters, over all pages.
    pub total: i64,
}

/// What `list` writes: `AgentList` (the schema it documents) with agents borrowed from
/// their rows.
#[derive(Serialize)]
struct AgentListView<'r> {
    data: Vec<AgentView<'r>>,
    next_cursor: Option<String>,
    total: i64,
}

/// The foreign key that keeps an agent's connection in its own org; a connection deleted
/// between the check and the write trips it.
const FOREIGN_CONNECTION: &str = "agents_connection_id_org_id_fkey";

fn foreign_connection() -> ApiError {
    ApiError::validation(
        "connection_id",
        "must be a CRM connection of this organization",
    )
}

/// An agent may only point at a CRM connection of its own org.
async fn check_connection(
    tx: &mut db::Tx,
    org_id: OrgId,
    connection: Option<Uuid>,
) -> ApiResult<()> {
    match connection {
        Some(id) if !db::agents::connection_exists(tx, org_id, ConnectionId(id)).await? => {
            Err(foreign_connection())
        }
        _ => Ok(()),
    }
}

fn trimmed(words: Vec<String>) -> Vec<String> {
    words.into_iter().map(|w| w.trim().to_owned()).collect()
}

/// An active agent may not share a stage with another active agent (409).
async fn check_routes_free(tx: &mut db::Tx, org_id: OrgId, agent: &Agent) -> ApiResult<()> {
    if agent.status != AgentStatus::Active {
        return Ok(());
    }
    match db::agent_routes::check_free(tx, org_id, AgentId(agent.id)).await? {
        Some(conflict) => Err(ApiError::conflict(conflict.to_string())),
        None => Ok(()),
    }
}

/// The org's agents, newest first, with the total matching the filters.
#[utoipa::path(get, path = "/v1/orgs/{org_id}/agents", tag = "agents",
    params(ListAgents),
    responses((status = 200, body = AgentList)))]
pub async fn list(
    State(state): State<AppState>,
    OrgUser { user, org_id }: OrgUser,
    ApiQuery(query): ApiQuery<ListAgents>,
) -> ApiResult<Response> {
    let page = Page::new(query.limit, query.cursor.as_deref())?;
    // Names are at most 100 characters; a longer search can match nothing.
    if query
        .search
        .as_ref()
        .is_some_and(|s| s.chars().count() > 100)
    {
        return Err(ApiError::validation(
            "search",
            "must be at most 100 characters",
        ));
    }
    let filter = AgentFilter {
        status: query.status,
        search: query.search,
    };
    // Membership is checked in the statement's own round trip: any role may list.
    let rows = db::agents::list(&state.db, &user, org_id, &filter, page)
        .await?
        .ok_or(ApiError::NotFound)?;
    let agents = rows.agents()?;
    let page = Paginated::from_rows(agents, page, |a| a.id);
    // Written here, while the views still borrow the rows: `AgentList`'s JSON.
    Ok(Json(AgentListView {
        data: page.data,
        next_cursor: page.next_cursor,
        total: rows.total,
    })
    .into_response())
}

/// Creates an agent.
#[utoipa::path(post, path = "/v1/orgs/{org_id}/agents", tag = "agents",
    request_body = CreateAgent,
    responses((status = 201, body = Agent)))]
pub async fn create(
    OrgTx {
        user,
        org_id,
        mut tx,
        ..
    }: OrgTx<Write>,
    meta: RequestMeta,
    ApiJson(body): ApiJson<CreateAgent>,
) -> ApiResult<(StatusCode, Json<Agent>)> {
    check_connection(&mut tx, org_id, body.connection_id).await?;
    check_working_hours(body.working_hours.as_ref())?;
    let fields = AgentFields {
        connection_id: body.connection_id.map(ConnectionId),
        name: body.name,
        status: body.status.unwrap_or(AgentStatus::Draft),
        model: body.model,
        instructions: body.instructions.unwrap_or_default(),
        channels: body.channels.unwrap_or_else(|| vec!["chat".into()]),
        schedule: body.schedule,
        temperature: body.temperature.unwrap_or(0.7),
        max_tokens: body.max_tokens.unwrap_or(2048),
        settings: body.settings.unwrap_or_else(|| serde_json::json!({})),
        working_hours: body.working_hours,
        response_delay_secs: body.response_delay_secs.unwrap_or(0),
        off_hours_reply: body.off_hours_reply,
        handoff_keywords: trimmed(body.handoff_keywords.unwrap_or_default()),
        max_turns: body.max_turns,
    };
    let agent = db::agents::insert(&mut tx, org_id, &fields)
        .await
        .on_constraint(FOREIGN_CONNECTION, foreign_connection)?;
    let change = Change::new(
        "agent.create",
        "agent",
        agent.id,
        json!({"name": agent.name, "status": agent.status, "model": agent.model}),
    );
    db::audit::record(&mut tx, org_id, Some(user.id), &meta, change).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(agent)))
}

/// One agent.
#[utoipa::path(get, path = "/v1/orgs/{org_id}/agents/{agent_id}", tag = "agents",
    params(("agent_id" = Uuid, Path)),
    responses((status = 200, body = Agent)))]
pub async fn show(
    OrgTx { org_id, mut tx, .. }: OrgTx,
    ApiPath((_, agent_id)): ApiPath<(Uuid, AgentId)>,
) -> ApiResult<Json<Agent>> {
    let agent = db::agents::get(&mut tx, org_id, agent_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    tx.commit().await?;
    Ok(Json(agent))
}

/// Changes the fields present in the body.
#[utoipa::path(patch, path = "/v1/orgs/{org_id}/agents/{agent_id}", tag = "agents",
    params(("agent_id" = Uuid, Path)),
    request_body = UpdateAgent, responses((status = 200, body = Agent)))]
pub async fn update(
    OrgTx {
        user,
        org_id,
        mut tx,
        ..
    }: OrgTx<Write>,
    meta: RequestMeta,
    ApiPath((_, agent_id)): ApiPath<(Uuid, AgentId)>,
    ApiJson(body): ApiJson<UpdateAgent>,
) -> ApiResult<Json<Agent>> {
    let current = db::agents::get_for_update(&mut tx, org_id, agent_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let changed = body.changed_fields();
    let mut fields = AgentFields::from(current);
    if let Some(connection_id) = body.connection_id {
        check_connection(&mut tx, org_id, connection_id).await?;
        fields.connection_id = connection_id.map(ConnectionId);
    }
    if let Some(v) = body.name {
        fields.name = v;
    }
    if let Some(v) = body.status {
        fields.status = v;
    }
    if let Some(v) = body.model {
        fields.model = v;
    }
    if let Some(v) = body.instructions {
        fields.instructions = v;
    }
    if let Some(v) = body.channels {
        fields.channels = v;
    }
    if let Some(v) = body.schedule {
        fields.schedule = v;
    }
    if let Some(v) = body.temperature {
        fields.temperature = v;
    }
    if let Some(v) = body.max_tokens {
        fields.max_tokens = v;
    }
    if let Some(v) = body.settings {
        fields.settings = v;
    }
    if let Some(v) = body.working_hours {
        check_working_hours(v.as_ref())?;
        fields.working_hours = v;
    }
    if let Some(v) = body.response_delay_secs {
        fields.response_delay_secs = v;
    }
    if let Some(v) = body.off_hours_reply {
        fields.off_hours_reply = v;
    }
    if let Some(v) = body.handoff_keywords {
        fields.handoff_keywords = trimmed(v);
    }
    if let Some(v) = body.max_turns {
        fields.max_turns = v;
    }
    let agent = db::agents::update(&mut tx, org_id, agent_id, &fields)
        .await
        .on_constraint(FOREIGN_CONNECTION, foreign_connection)?
        .ok_or(ApiError::NotFound)?;
    check_routes_free(&mut tx, org_id, &agent).await?;
    let change = Change::new(
        "agent.update",
        "agent",
        agent_id,
        json!({ "fields": changed }),
    );
    db::audit::record(&mut tx, org_id, Some(user.id), &meta, change).await?;
    tx.commit().await?;
    Ok(Json(agent))
}

/// Sets the agent's status.
#[utoipa::path(post, path = "/v1/orgs/{org_id}/agents/{agent_id}/status", tag = "agents",
    params(("agent_id" = Uuid, Path)),
    request_body = SetStatus, responses((status = 200, body = Agent)))]
pub async fn set_status(
    OrgTx {
        user,
        org_id,
        mut tx,
        ..
    }: OrgTx<Write>,
    meta: RequestMeta,
    ApiPath((_, agent_id)): ApiPath<(Uuid, AgentId)>,
    ApiJson(body): ApiJson<SetStatus>,
) -> ApiResult<Json<Agent>> {
    let agent = db::agents::set_status(&mut tx, org_id, agent_id, body.status)
        .await?
        .ok_or(ApiError::NotFound)?;
    check_routes_free(&mut tx, org_id, &agent).await?;
    let change = Change::new(
        "agent.status",
        "agent",
        agent_id,
        json!({"status": body.status}),
    );
    db::audit::record(&mut tx, org_id, Some(user.id), &meta, change).await?;
    tx.commit().await?;
    Ok(Json(agent))
}

/// Deletes the agent.
#[utoipa::path(delete, path = "/v1/orgs/{org_id}/agents/{agent_id}", tag = "agents",
    params(("agent_id" = Uuid, Path)),
    responses((status = 204)))]
pub async fn remove(
    OrgTx {
        user,
        org_id,
        mut tx,
        ..
    }: OrgTx<Write>,
    meta: RequestMeta,
    ApiPath((_, agent_id)): ApiPath<(Uuid, AgentId)>,
) -> ApiResult<StatusCode> {
    if !db::agents::delete(&mut tx, org_id, agent_id).await? {
        return Err(ApiError::NotFound);
    }
    let change = Change::new("agent.delete", "agent", agent_id, json!({}));
    db::audit::record(&mut tx, org_id, Some(user.id), &meta, change).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
