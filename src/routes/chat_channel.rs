//! A connection's Kommo Chats channel (spec §13): when set, agents' answers go into the
//! chat itself (through the Chats API), not only as notes on the lead. The channel's
//! secret is sealed by the key ring and write-only.

use crate::http::json::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;
use validator::{Validate, ValidationError};

use crate::crypto;
use crate::db;
use crate::db::audit::Change;
use crate::domain::ConnectionId;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{ApiJson, ApiPath, OrgTx, RequestMeta, Write};
use crate::kommo::chats::is_valid_scope_id;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(show, put, remove))
}

fn validate_scope_id(scope_id: &str) -> Result<(), ValidationError> {
    if is_valid_scope_id(scope_id) {
        Ok(())
    } else {
        Err(ValidationError::new("scope_id")
            .with_message("must be 1 to 200 of A-Z a-z 0-9 _ -".into()))
    }
}

#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutChatChannel {
    /// The channel's scope id, as Kommo gives it when the channel is connected.
    #[validate(custom(function = "validate_scope_id"))]
    #[schema(pattern = "^[A-Za-z0-9_-]{1,200}$")]
    pub scope_id: String,
    /// The channel's secret (signs every request); never shown again.
    #[validate(length(min = 8, max = 500, message = "must be 8 to 500 characters"))]
    #[schema(min_length = 8, max_length = 500)]
    pub secret: String,
    /// The sender id the agent's messages come from.
    #[validate(length(min = 1, max = 200, message = "must be 1 to 200 characters"))]
    #[schema(min_length = 1, max_length = 200)]
    pub bot_id: String,
    #[validate(length(min = 1, max = 200, message = "must be 1 to 200 characters"))]
    #[schema(min_length = 1, max_length = 200)]
    pub bot_name: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChatChannelView {
    pub scope_id: String,
    pub bot_id: String,
    pub bot_name: String,
    /// The secret is stored (it is never shown).
    pub secret_configured: bool,
}

/// The connection's Chats channel (404 when none is set).
#[utoipa::path(get, path = "/v1/orgs/{org_id}/crm/connections/{connection_id}/chat-channel",
    tag = "crm",
    params(("connection_id" = Uuid, Path)),
    responses((status = 200, body = ChatChannelView)))]
pub async fn show(
    OrgTx { org_id, mut tx, .. }: OrgTx<Write>,
    ApiPath((_, connection_id)): ApiPath<(Uuid, ConnectionId)>,
) -> ApiResult<Json<ChatChannelView>> {
    let stored = db::crm::chat_channel(&mut tx, org_id, connection_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    tx.commit().await?;
    let field = |key: &str| stored.channel[key].as_str().unwrap_or_default().to_owned();
    Ok(Json(ChatChannelView {
        scope_id: field("scope_id"),
        bot_id: field("bot_id"),
        bot_name: field("bot_name"),
        secret_configured: !stored.secret_enc.is_empty(),
    }))
}

/// Sets the connection's Chats channel.
#[utoipa::path(put, path = "/v1/orgs/{org_id}/crm/connections/{connection_id}/chat-channel",
    tag = "crm",
    params(("connection_id" = Uuid, Path)),
    request_body = PutChatChannel,
    responses((status = 200, body = ChatChannelView)))]
pub async fn put(
    State(state): State<AppState>,
    OrgTx {
        user,
        org_id,
        mut tx,
        ..
    }: OrgTx<Write>,
    meta: RequestMeta,
    ApiPath((_, connection_id)): ApiPath<(Uuid, ConnectionId)>,
    ApiJson(body): ApiJson<PutChatChannel>,
) -> ApiResult<Json<ChatChannelView>> {
    let secret = state.kommo.keys()?.encrypt(
        body.secret.as_bytes(),
        connection_id.0,
        crypto::CHAT_SECRET,
    )?;
    let channel = json!({
        "scope_id": body.scope_id,
        "bot_id": body.bot_id,
        "bot_name": body.bot_name,
    });
    if !db::crm::set_chat_channel(&mut tx, org_id, connection_id, Some((&channel, &secret))).await?
    {
        return Err(ApiError::NotFound);
    }
    let change = Change::new(
        "crm.chat_channel.update",
        "crm_connection",
        connection_id,
        json!({"scope_id": body.scope_id, "secret": "changed"}),
    );
    db::audit::record(&mut tx, org_id, Some(user.id), &meta, change).await?;
    tx.commit().await?;
    Ok(Json(ChatChannelView {
        scope_id: body.scope_id,
        bot_id: body.bot_id,
        bot_name: body.bot_name,
        secret_configured: true,
    }))
}

/// Removes the connection's Chats channel: answers go as notes only.
#[utoipa::path(delete, path = "/v1/orgs/{org_id}/crm/connections/{connection_id}/chat-channel",
    tag = "crm",
    params(("connection_id" = Uuid, Path)),
    responses((status = 204)))]
pub async fn remove(
    OrgTx {
        user,
        org_id,
        mut tx,
        ..
    }: OrgTx<Write>,
    meta: RequestMeta,
    ApiPath((_, connection_id)): ApiPath<(Uuid, ConnectionId)>,
) -> ApiResult<StatusCode> {
    if db::crm::chat_channel(&mut tx, org_id, connection_id)
        .await?
        .is_none()
    {
        return Err(ApiError::NotFound);
    }
    db::crm::set_chat_channel(&mut tx, org_id, connection_id, None).await?;
    let change = Change::new(
        "crm.chat_channel.delete",
        "crm_connection",
        connection_id,
        json!({}),
    );
    db::audit::record(&mut tx, org_id, Some(user.id), &meta, change).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
