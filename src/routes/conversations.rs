//! The agents' conversations with leads (spec §13): the list with filters, one
//! conversation with its messages (oldest first, paginated), and people taking a
//! conversation over or handing it back.

use axum::extract::State;

use crate::http::json::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;
use validator::Validate;

use crate::db;
use crate::db::audit::Change;
use crate::db::conversations::{Conversation, ConversationFilter, ConversationStatus, Message};
use crate::domain::page::{Page, Paginated};
use crate::domain::{AgentId, ConversationId};
use crate::events::Event;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{ApiJson, ApiPath, ApiQuery, OrgTx, RequestMeta, Write};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
        .routes(routes!(handoff))
        .routes(routes!(resume))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListConversations {
    pub agent_id: Option<Uuid>,
    pub status: Option<ConversationStatus>,
    /// Kommo's lead id.
    #[param(minimum = 1)]
    pub lead_id: Option<i64>,
    /// 1..=100, default 25.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// The org's conversations, newest first.
#[utoipa::path(get, path = "/v1/orgs/{org_id}/conversations", tag = "conversations",
    params(ListConversations),
    responses((status = 200, body = inline(Paginated<Conversation>))))]
pub async fn list(
    OrgTx { org_id, mut tx, .. }: OrgTx,
    ApiQuery(query): ApiQuery<ListConversations>,
) -> ApiResult<Json<Paginated<Conversation>>> {
    let page = Page::new(query.limit, query.cursor.as_deref())?;
    let filter = ConversationFilter {
        agent_id: query.agent_id.map(AgentId),
        status: query.status,
        lead_id: query.lead_id,
    };
    let rows = db::conversations::list(&mut tx, org_id, &filter, page).await?;
    tx.commit().await?;
    Ok(Json(Paginated::from_rows(rows, page, |c| c.id)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MessagePage {
    /// Messages per page, 1..=100, default 25.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// `messages.next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ConversationDetail {
    #[serde(flatten)]
    pub conversation: Conversation,
    /// Oldest first.
    pub messages: Paginated<Message>,
}

/// One conversation, with a page of its messages.
#[utoipa::path(get, path = "/v1/orgs/{org_id}/conversations/{conversation_id}",
    tag = "conversations",
    params(("conversation_id" = Uuid, Path), MessagePage),
    responses((status = 200, body = ConversationDetail)))]
pub async fn show(
    OrgTx { org_id, mut tx, .. }: OrgTx,
    ApiPath((_, id)): ApiPath<(Uuid, ConversationId)>,
    ApiQuery(query): ApiQuery<MessagePage>,
) -> ApiResult<Json<ConversationDetail>> {
    let page = Page::new(query.limit, query.cursor.as_deref())?;
    let conversation = db::conversations::get(&mut tx, org_id, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let messages = db::conversations::messages(&mut tx, org_id, id, page).await?;
    tx.commit().await?;
    Ok(Json(ConversationDetail {
        conversation,
        messages: Paginated::from_rows(messages, page, |m| m.id),
    }))
}

#[derive(Debug, Default, Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Handoff {
    /// Why a person takes over (shown on the conversation).
    #[validate(length(min = 1, max = 1000, message = "must be 1 to 1000 characters"))]
    #[schema(min_length = 1, max_length = 1000)]
    pub reason: Option<String>,
}

/// A person takes the conversation over: the agent stays silent there until resumed.
#[utoipa::path(post, path = "/v1/orgs/{org_id}/conversations/{conversation_id}/handoff",
    tag = "conversations",
    params(("conversation_id" = Uuid, Path)),
    request_body = Handoff,
    responses((status = 200, body = Conversation),
              (status = 409, description = "Already handed off")))]
pub async fn handoff(
    State(state): State<AppState>,
    OrgTx {
        user,
        org_id,
        mut tx,
        ..
    }: OrgTx<Write>,
    meta: RequestMeta,
    ApiPath((_, id)): ApiPath<(Uuid, ConversationId)>,
    ApiJson(body): ApiJson<Handoff>,
) -> ApiResult<Json<Conversation>> {
    let reason = body
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .unwrap_or("taken over by a person");
    let Some(conversation) = db::conversations::hand_off(&mut tx, org_id, id, reason).await? else {
        return Err(not_in_state(&mut tx, org_id, id, "is already handed off").await);
    };
    let change = Change::new(
        "conversation.handoff",
        "conversation",
        id,
        json!({"by": "person", "reason": reason}),
    );
    db::audit::record(&mut tx, org_id, Some(user.id), &meta, change).await?;
    tx.commit().await?;
    let handed_off = ConversationStatus::HandedOff;
    state
        .events
        .publish(Event::handoff(org_id, id.0, handed_off));
    Ok(Json(conversation))
}

/// The agent answers the conversation again (from the next message on).
#[utoipa::path(post, path = "/v1/orgs/{org_id}/conversations/{conversation_id}/resume",
    tag = "conversations",
    params(("conversation_id" = Uuid, Path)),
    responses((status = 200, body = Conversation),
              (status = 409, description = "Not handed off")))]
pub async fn resume(
    State(state): State<AppState>,
    OrgTx {
        user,
        org_id,
        mut tx,
        ..
    }: OrgTx<Write>,
    meta: RequestMeta,
    ApiPath((_, id)): ApiPath<(Uuid, ConversationId)>,
) -> ApiResult<Json<Conversation>> {
    let Some(conversation) = db::conversations::resume(&mut tx, org_id, id).await? else {
        return Err(not_in_state(&mut tx, org_id, id, "is not handed off").await);
    };
    let change = Change::new("conversation.resume", "conversation", id, json!({}));
    db::audit::record(&mut tx, org_id, Some(user.id), &meta, change).await?;
    tx.commit().await?;
    let active = ConversationStatus::Active;
    state.events.publish(Event::handoff(org_id, id.0, active));
    Ok(Json(conversation))
}

/// 404 when the conversation is not there, 409 when it is but not in the state asked.
async fn not_in_state(
    tx: &mut db::Tx,
    org_id: crate::domain::OrgId,
    id: ConversationId,
    what: &str,
) -> ApiError {
    match db::conversations::get(tx, org_id, id).await {
        Ok(Some(_)) => ApiError::conflict(format!("The conversation {what}.")),
        Ok(None) => ApiError::NotFound,
        Err(e) => e.into(),
    }
}
