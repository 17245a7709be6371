//! An org's own model provider (SPEC §11): owners and admins only; the key is write-only.

use crate::http::json::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;
use validator::{Validate, ValidationError};

use crate::crypto;
use crate::db;
use crate::db::ai::{AiSettings, NewSettings};
use crate::db::audit::Change;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{ApiJson, OrgTx, RequestMeta, Write};
use crate::http::validate::{present, validate_http_url};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(show, put, remove))
}

/// The org's settings; `null` fields use the deployment's (`AI_*`). The key never comes
/// back, only whether one is set.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AiSettingsView {
    pub base_url: Option<String>,
    pub chat_model: Option<String>,
    pub embedding_model: Option<String>,
    pub api_key_configured: bool,
    /// Where the org's calls go now: `org` (its own base URL), `deployment` (the
    /// service's provider) or `none` (AI features off).
    pub provider: &'static str,
    pub updated_at: Option<DateTime<Utc>>,
}

/// The whole settings: an absent or `null` field uses the deployment's. `api_key`
/// absent keeps the stored key as long as `base_url` stays the same (a key is never sent
/// to a host it was not given for); `null` removes it.
#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutAiSettings {
    /// An OpenAI-compatible API root, e.g. `https://api.openai.com/v1`. In production:
    /// https, and not a loopback, private or link-local address.
    #[validate(custom(function = "validate_http_url"))]
    #[schema(max_length = 2000)]
    pub base_url: Option<String>,
    /// Write-only.
    #[serde(default, deserialize_with = "present")]
    #[validate(custom(function = "validate_api_key"))]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 1000)]
    pub api_key: Option<Option<String>>,
    #[validate(custom(function = "validate_model_name"))]
    #[schema(max_length = 200)]
    pub chat_model: Option<String>,
    #[validate(custom(function = "validate_model_name"))]
    #[schema(max_length = 200)]
    pub embedding_model: Option<String>,
}

fn validate_model_name(model: &str) -> Result<(), ValidationError> {
    crate::config::parse_model_name(model)
        .map(|_| ())
        .map_err(|m| ValidationError::new("model").with_message(m.into()))
}

fn validate_api_key(key: &str) -> Result<(), ValidationError> {
    if key.is_empty() || key.len() > 1000 || key.chars().any(char::is_control) {
        return Err(ValidationError::new("api_key")
            .with_message("must be 1 to 1000 characters without control characters".into()));
    }
    Ok(())
}

fn view(state: &AppState, settings: Option<AiSettings>) -> AiSettingsView {
    let provider = if settings.as_ref().is_some_and(|s| s.base_url.is_some()) {
        "org"
    } else if state.config.ai.is_some() {
        "deployment"
    } else {
        "none"
    };
    match settings {
        Some(s) => AiSettingsView {
            api_key_configured: s.api_key_enc.is_some(),
            base_url: s.base_url,
            chat_model: s.chat_model,
            embedding_model: s.embedding_model,
            provider,
            updated_at: Some(s.updated_at),
        },
        None => AiSettingsView {
            base_url: None,
            chat_model: None,
            embedding_model: None,
            api_key_configured: false,
            provider,
            updated_at: None,
        },
    }
}

/// The org's provider settings.
#[utoipa::path(get, path = "/v1/orgs/{org_id}/ai-settings", tag = "ai",
    responses((status = 200, body = AiSettingsView), (status = 403, description = "Not an owner or admin")))]
pub async fn show(
    State(state): State<AppState>,
    OrgTx { org_id, mut tx, .. }: OrgTx<Write>,
) -> ApiResult<Json<AiSettingsView>> {
    let settings = db::ai::get_settings(&mut tx, org_id).await?;
    tx.commit().await?;
    Ok(Json(view(&state, settings)))
}

/// Sets the org's own provider, models and key.
#[utoipa::path(put, path = "/v1/orgs/{org_id}/ai-settings", tag = "ai",
    request_body = PutAiSettings,
    responses((status = 200, body = AiSettingsView), (status = 403, description = "Not an owner or admin"),
        (status = 422, description = "A field is invalid, or the base URL breaks the SSRF rule")))]
pub async fn put(
    State(state): State<AppState>,
    OrgTx {
        user,
        org_id,
        mut tx,
        ..
    }: OrgTx<Write>,
    meta: RequestMeta,
    ApiJson(body): ApiJson<PutAiSettings>,
) -> ApiResult<Json<AiSettingsView>> {
    let base_url = body
        .base_url
        .as_deref()
        .map(|u| u.trim_end_matches('/').to_owned());
    if state.ai.production()
        && let Some(url) = &base_url
    {
        // The URL parsed in validation; the check resolves its host name.
        let parsed = url::Url::parse(url)
            .map_err(|_| ApiError::validation("base_url", "must be an http(s) URL"))?;
        crate::ai::ssrf::check_url(&parsed)
            .await
            .map_err(|why| ApiError::validation("base_url", why))?;
    }
    let existing = db::ai::lock_settings(&mut tx, org_id).await?;
    let id = existing.as_ref().map_or_else(Uuid::now_v7, |s| s.id);
    let api_key_enc = match &body.api_key {
        Some(Some(key)) => Some(state.ai.keys()?.encrypt(
            key.as_bytes(),
            id,
            crypto::AI_API_KEY,
        )?),
        Some(None) => None,
        None => existing
            .as_ref()
            .filter(|s| s.base_url == base_url)
            .and_then(|s| s.api_key_enc.clone()),
    };
    let key_change = match (&body.api_key, &api_key_enc) {
        (Some(Some(_)), _) => "changed",
        (Some(None), _) => "removed",
        (None, Some(_)) => "kept",
        (None, None) if existing.as_ref().is_some_and(|s| s.api_key_enc.is_some()) => "removed",
        (None, None) => "none",
    };
    let settings = db::ai::put_settings(
        &mut tx,
        org_id,
        &NewSettings {
            id,
            base_url: base_url.as_deref(),
            api_key_enc: api_key_enc.as_deref(),
            chat_model: body.chat_model.as_deref(),
            embedding_model: body.embedding_model.as_deref(),
            updated_by: user.id.0,
        },
    )
    .await?;
    // The key itself never reaches the audit log; what happened to it does.
    let change = Change::new(
        "ai.settings.update",
        "ai_settings",
        id,
        json!({
            "base_url": settings.base_url,
            "chat_model": settings.chat_model,
            "embedding_model": settings.embedding_model,
            "api_key": key_change,
        }),
    );
    db::audit::record(&mut tx, org_id, Some(user.id), &meta, change).await?;
    tx.commit().await?;
    Ok(Json(view(&state, Some(settings))))
}

/// Removes the org's settings: its calls use the deployment's provider again.
#[utoipa::path(delete, path = "/v1/orgs/{org_id}/ai-settings", tag = "ai",
    responses((status = 204), (status = 403, description = "Not an owner or admin"),
        (status = 404, description = "The org has no settings of its own")))]
pub async fn remove(
    OrgTx {
        user,
        org_id,
        mut tx,
        ..
    }: OrgTx<Write>,
    meta: RequestMeta,
) -> ApiResult<StatusCode> {
    if !db::ai::delete_settings(&mut tx, org_id).await? {
        return Err(ApiError::NotFound);
    }
    let change = Change::new("ai.settings.delete", "ai_settings", org_id.0, json!({}));
    db::audit::record(&mut tx, org_id, Some(user.id), &meta, change).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
