//! CRM credentials, connections, their sync, synced data, token refresh and webhook
//! secrets. Secrets are write-only: no response ever carries one.

use crate::http::json::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;
use validator::Validate;

use crate::crypto;
use crate::db;
use crate::db::audit::Change;
use crate::db::crm::{Connection, ContactView, PipelineView, StoredTokens};
use crate::db::jobs::Job;
use crate::domain::ConnectionId;
use crate::domain::ConnectionStatus;
use crate::domain::page::{Page, Paginated};
use crate::http::error::{ApiError, ApiResult, kommo_unavailable};
use crate::http::extract::{ApiJson, ApiPath, ApiQuery, OrgTx, RequestMeta, Write};
use crate::http::validate::validate_http_url;
use crate::kommo::connect::{SyncPart, push_jobs, queue_syncs};
use crate::kommo::tokens::RefreshReason;
use crate::kommo::{KommoError, is_valid_base_domain, new_webhook_token, webhook_url};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(
            show_credentials,
            put_credentials,
            delete_credentials
        ))
        .routes(routes!(status))
        .routes(routes!(list_connections, create_connection))
        .routes(routes!(show_connection, delete_connection))
        .routes(routes!(sync))
        .routes(routes!(pipelines))
        .routes(routes!(contacts))
        .routes(routes!(rotate_webhook_secret))
        .routes(routes!(refresh_token))
}

/// Only Kommo is supported; any other provider is a resource that does not exist.
fn provider(name: &str) -> ApiResult<&'static str> {
    match name {
        "kommo" => Ok("kommo"),
        _ => Err(ApiError::NotFound),
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CredentialsView {
    pub provider: String,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub configured: bool,
    pub updated_at: Option<DateTime<Utc>>,
}

fn credentials_view(creds: Option<db::crm::Credentials>) -> CredentialsView {
    CredentialsView {
        provider: "kommo".into(),
        configured: creds.is_some(),
        client_id: creds.as_ref().map(|c| c.client_id.clone()),
        redirect_uri: creds.as_ref().and_then(|c| c.redirect_uri.clone()),
        updated_at: creds.map(|c| c.updated_at),
    }
}

/// A body field that must be an absolute http(s) URL.

#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutCredentials {
    #[validate(length(min = 1, max = 200, message = "must be 1 to 200 characters"))]
    #[schema(min_length = 1, max_length = 200)]
    pub client_id: String,
    /// Write-only: stored encrypted, never returned.
    #[validate(length(min = 1, max = 1000, message = "must be 1 to 1000 characters"))]
    #[schema(min_length = 1, max_length = 1000)]
    pub client_secret: String,
    #[validate(custom(function = "validate_http_url"))]
    #[schema(max_length = 2048)]
    pub redirect_uri: Option<String>,
}

/// The org's integration credentials (never the secret).
#[utoipa::path(get, path = "/v1/orgs/{org_id}/crm/credentials/{provider}", tag = "crm",
    params(("provider" = String, Path)),
    responses((status = 200, body = CredentialsView)))]
pub async fn show_credentials(
    OrgTx { org_id, mut tx, .. }: OrgTx,
    ApiPath((_, name)): ApiPath<(Uuid, String)>,
) -> ApiResult<Json<CredentialsView>> {
    let provider = provider(&name)?;
    let creds = db::crm::credentials(&mut tx, org_id, provider).await?;
    tx.commit().await?;
    Ok(Json(credentials_view(creds)))
}

/// Sets the integration's client id, secret and redirect URI.
#[utoipa::path(put, path = "/v1/orgs/{org_id}/crm/credentials/{provider}", tag = "crm",
    params(("provider" = String, Path)),
    request_body = PutCredentials, responses((status = 200, body = CredentialsView)))]
pub async fn put_credentials(
    State(state): State<AppState>,
    OrgTx {
        user,
        org_id,
        mut tx,
        ..
    }: OrgTx<Write>,
    meta: RequestMeta,
    ApiPath((_, name)): ApiPath<(Uuid, String)>,
    ApiJson(body): ApiJson<PutCredentials>,
) -> ApiResult<Json<CredentialsView>> {
    let provider = provider(&name)?;
    let id = db::crm::lock_credentials_id(&mut tx, org_id, provider).await?;
    let secret =
        state
            .kommo
            .keys()?
            .encrypt(body.client_secret.as_bytes(), id, crypto::CLIENT_SECRET)?;
    let creds = db::crm::update_credentials(
        &mut tx,
        id,
        &body.client_id,
        &secret,
        body.redirect_uri.as_deref(),
    )
    .await?;
    // The secret itself never reaches the audit log; that it changed does.
    let change = Change::new(
        "crm.credentials.update",
        "crm_credentials",
        id,
        json!({"provider": provider, "client_id": creds.client_id, "redirect_uri": creds.redirect_uri, "client_secret": "changed"}),
    );
    db::audit::record(&mut tx, org_id, Some(user.id), &meta, change).await?;
    tx.commit().await?;
    Ok(Json(credentials_view(Some(creds))))
}

/// Removes the integration's credentials.
#[utoipa::path(delete, path = "/v1/orgs/{org_id}/crm/credentials/{provider}", tag = "crm",
    params(("provider" = String, Path)),
    responses((status = 204)))]
pub async fn delete_credentials(
    OrgTx {
        user,
        org_id,
        mut tx,
        ..
    }: OrgTx<Write>,
    meta: RequestMeta,
    ApiPath((_, name)): ApiPath<(Uuid, String)>,
) -> ApiResult<StatusCode> {
    let provider = provider(&name)?;
    if !db::crm::delete_credentials(&mut tx, org_id, provider).await? {
        return Err(ApiError::NotFound);
    }
    let change = Change::new(
        "crm.credentials.delete",
        "crm_credentials",
        provider,
        json!({}),
    );
    db::audit::record(&mut tx, org_id, Some(user.id), &meta, change).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ProviderQuery {
    pub provider: Option<String>,
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CrmStatus {
    pub provider: String,
    pub credentials_configured: bool,
    pub connection_configured: bool,
    pub connection: Option<Connection>,
    pub credentials: CredentialsView,
    #[schema(value_type = Object)]
    pub sync: Value,
}

/// Whether the org's CRM integration is set up, and how its sync is doing.
#[utoipa::path(get, path = "/v1/orgs/{org_id}/crm/status", tag = "crm",
    params(ProviderQuery),
    responses((status = 200, body = CrmStatus)))]
pub async fn status(
    OrgTx { org_id, mut tx, .. }: OrgTx,
    ApiQuery(query): ApiQuery<ProviderQuery>,
) -> ApiResult<Json<CrmStatus>> {
    let provider = provider(query.provider.as_deref().unwrap_or("kommo"))?;
    let creds = db::crm::credentials(&mut tx, org_id, provider).await?;
    let connection = db::crm::latest_connection(&mut tx, org_id, provider).await?;
    tx.commit().await?;
    Ok(Json(CrmStatus {
        provider: provider.into(),
        credentials_configured: creds.is_some(),
        connection_configured: connection
            .as_ref()
            .is_some_and(|c| c.status == ConnectionStatus::Connected),
        sync: connection
            .as_ref()
            .map(|c| c.sync.clone())
            .unwrap_or_else(|| json!({})),
        connection,
        credentials: credentials_view(creds),
    }))
}

/// The org's connections, newest first; never their tokens.
#[utoipa::path(get, path = "/v1/orgs/{org_id}/crm/connections", tag = "crm",
    params(ProviderQuery),
    responses((status = 200, body = inline(Paginated<Connection>))))]
pub async fn list_connections(
    OrgTx { org_id, mut tx, .. }: OrgTx,
    ApiQuery(query): ApiQuery<ProviderQuery>,
) -> ApiResult<Json<Paginated<Connection>>> {
    let page = Page::new(query.limit, query.cursor.as_deref())?;
    let provider = query.provider.as_deref().map(provider).transpose()?;
    let rows = db::crm::connections(&mut tx, org_id, provider, page).await?;
    tx.commit().await?;
    Ok(Json(Paginated::from_rows(rows, page, |c| c.id)))
}

#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConnection {
    /// Only `kommo`.
    pub provider: Option<String>,
    /// The account's host, e.g. `acme.kommo.com` (a subdomain of kommo.com or amocrm.ru).
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{0,62}\\.(kommo\\.com|amocrm\\.ru)$")]
    pub base_domain: String,
    /// A Kommo long-lived token, or an access token (write-only).
    #[validate(length(min = 1, max = 4000, message = "must be 1 to 4000 characters"))]
    pub access_token: String,
    /// With an access token from OAuth: its refresh token (write-only).
    #[validate(length(min = 1, max = 4000, message = "must be 1 to 4000 characters"))]
    pub refresh_token: Option<String>,
    /// Seconds until the access token expires (absent: does not expire); at most ten
    /// years, which also keeps the expiry time representable.
    #[validate(range(min = 1, max = 315_360_000, message = "must be 1 to 315360000 seconds"))]
    #[schema(minimum = 1, maximum = 315_360_000)]
    pub expires_in: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ConnectionCreated {
    #[serde(flatten)]
    pub connection: Connection,
    /// The webhook address to configure in Kommo; shown only now.
    pub webhook_url: String,
    pub jobs: Vec<Job>,
}

/// Stores a connection from a token the user pasted, after Kommo accepted it.
#[utoipa::path(post, path = "/v1/orgs/{org_id}/crm/connections", tag = "crm",
    request_body = CreateConnection,
    responses((status = 201, body = ConnectionCreated)))]
pub async fn create_connection(
    State(state): State<AppState>,
    OrgTx {
        user,
        org_id,
        mut tx,
        ..
    }: OrgTx<Write>,
    meta: RequestMeta,
    ApiJson(body): ApiJson<CreateConnection>,
) -> ApiResult<(StatusCode, Json<ConnectionCreated>)> {
    let provider = match body.provider.as_deref().unwrap_or("kommo") {
        "kommo" => "kommo",
        _ => return Err(ApiError::validation("provider", "must be kommo")),
    };
    if !is_valid_base_domain(&body.base_domain) {
        return Err(ApiError::validation(
            "base_domain",
            "must be a subdomain of kommo.com or amocrm.ru, like acme.kommo.com",
        ));
    }
    let keys = state.kommo.keys()?.clone();
    let account = match state
        .kommo
        .client
        .account(&body.base_domain, &body.access_token)
        .await
    {
        Ok(account) => account,
        Err(KommoError::Unauthorized) => {
            return Err(ApiError::validation(
                "access_token",
                "Kommo refused this token",
            ));
        }
        Err(KommoError::Status { status: 404, .. }) => {
            return Err(ApiError::validation(
                "base_domain",
                "Kommo has no such account",
            ));
        }
        Err(e) => return Err(kommo_unavailable(e)),
    };
    let (id, _) =
        db::crm::lock_connection_id(&mut tx, org_id, provider, &body.base_domain, user.id).await?;
    let access = keys.encrypt(body.access_token.as_bytes(), id.0, crypto::ACCESS_TOKEN)?;
    let refresh = body
        .refresh_token
        .as_deref()
        .map(|t| keys.encrypt(t.as_bytes(), id.0, crypto::REFRESH_TOKEN))
        .transpose()?;
    let tokens = StoredTokens {
        access_token_enc: &access,
        refresh_token_enc: refresh.as_deref(),
        expires_at: body
            .expires_in
            .and_then(chrono::Duration::try_seconds)
            .and_then(|d| Utc::now().checked_add_signed(d)),
    };
    db::crm::store_tokens(&mut tx, id, &tokens, Some(account.id)).await?;
    let (token, hash) = new_webhook_token();
    db::crm::set_webhook_token_hash(&mut tx, org_id, id, &hash).await?;
    let jobs = queue_syncs(&mut tx, org_id, id, &[SyncPart::Pipelines], Some(user.id)).await?;
    let connection = db::crm::connection(&mut tx, org_id, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let change = Change::new(
        "crm.connection.create",
        "crm_connection",
        id,
        json!({"provider": provider, "base_domain": connection.base_domain, "account_id": connection.account_id, "method": "token"}),
    );
    db::audit::record(&mut tx, org_id, Some(user.id), &meta, change).await?;
    tx.commit().await?;
    state
        .kommo
        .announce(org_id, id, ConnectionStatus::Connected);
    push_jobs(&state.jobs, &jobs).await;
    Ok((
        StatusCode::CREATED,
        Json(ConnectionCreated {
            webhook_url: webhook_url(&state.config, id, &token),
            connection,
            jobs,
        }),
    ))
}

/// One connection: status, account, token expiry, sync state, last error.
#[utoipa::path(get, path = "/v1/orgs/{org_id}/crm/connections/{connection_id}", tag = "crm",
    params(("connection_id" = Uuid, Path)),
    responses((status = 200, body = Connection)))]
pub async fn show_connection(
    OrgTx { org_id, mut tx, .. }: OrgTx,
    ApiPath((_, id)): ApiPath<(Uuid, ConnectionId)>,
) -> ApiResult<Json<Connection>> {
    let connection = db::crm::connection(&mut tx, org_id, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    tx.commit().await?;
    Ok(Json(connection))
}

/// Deletes the connection and everything synced from it.
#[utoipa::path(delete, path = "/v1/orgs/{org_id}/crm/connections/{connection_id}", tag = "crm",
    params(("connection_id" = Uuid, Path)),
    responses((status = 204)))]
pub async fn delete_connection(
    State(state): State<AppState>,
    OrgTx {
        user,
        org_id,
        mut tx,
        ..
    }: OrgTx<Write>,
    meta: RequestMeta,
    ApiPath((_, id)): ApiPath<(Uuid, ConnectionId)>,
) -> ApiResult<StatusCode> {
    if !db::crm::delete_connection(&mut tx, org_id, id).await? {
        return Err(ApiError::NotFound);
    }
    let change = Change::new("crm.connection.delete", "crm_connection", id, json!({}));
    db::audit::record(&mut tx, org_id, Some(user.id), &meta, change).await?;
    tx.commit().await?;
    state
        .kommo
        .announce(org_id, id, ConnectionStatus::Disconnected);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SyncScope {
    Pipelines,
    Contacts,
    All,
}

#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    pub scope: SyncScope,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct QueuedJobs {
    pub jobs: Vec<Job>,
}

/// Queues a sync of pipelines, contacts or both; 202 with the jobs.
#[utoipa::path(post, path = "/v1/orgs/{org_id}/crm/connections/{connection_id}/sync", tag = "crm",
    params(("connection_id" = Uuid, Path)),
    request_body = SyncRequest, responses((status = 202, body = QueuedJobs)))]
pub async fn sync(
    State(state): State<AppState>,
    OrgTx {
        user,
        org_id,
        mut tx,
        ..
    }: OrgTx<Write>,
    meta: RequestMeta,
    ApiPath((_, id)): ApiPath<(Uuid, ConnectionId)>,
    ApiJson(body): ApiJson<SyncRequest>,
) -> ApiResult<(StatusCode, Json<QueuedJobs>)> {
    db::crm::connection(&mut tx, org_id, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let parts: &[SyncPart] = match body.scope {
        SyncScope::Pipelines => &[SyncPart::Pipelines],
        SyncScope::Contacts => &[SyncPart::Contacts],
        SyncScope::All => &[SyncPart::Pipelines, SyncPart::Contacts],
    };
    let jobs = queue_syncs(&mut tx, org_id, id, parts, Some(user.id)).await?;
    let change = Change::new(
        "crm.connection.sync",
        "crm_connection",
        id,
        json!({"jobs": jobs.iter().map(|j| j.job_type.as_str()).collect::<Vec<_>>()}),
    );
    db::audit::record(&mut tx, org_id, Some(user.id), &meta, change).await?;
    tx.commit().await?;
    push_jobs(&state.jobs, &jobs).await;
    Ok((StatusCode::ACCEPTED, Json(QueuedJobs { jobs })))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PipelineList {
    pub data: Vec<PipelineView>,
}

/// The connection's synced pipelines with their stages.
#[utoipa::path(get, path = "/v1/orgs/{org_id}/crm/connections/{connection_id}/pipelines", tag = "crm",
    params(("connection_id" = Uuid, Path)),
    responses((status = 200, body = PipelineList)))]
pub async fn pipelines(
    OrgTx { org_id, mut tx, .. }: OrgTx,
    ApiPath((_, id)): ApiPath<(Uuid, ConnectionId)>,
) -> ApiResult<Json<PipelineList>> {
    db::crm::connection(&mut tx, org_id, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let data = db::crm::pipelines(&mut tx, org_id, id).await?;
    tx.commit().await?;
    Ok(Json(PipelineList { data }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// The connection's synced contacts, paginated.
#[utoipa::path(get, path = "/v1/orgs/{org_id}/crm/connections/{connection_id}/contacts", tag = "crm",
    params(("connection_id" = Uuid, Path), PageQuery),
    responses((status = 200, body = inline(Paginated<ContactView>))))]
pub async fn contacts(
    OrgTx { org_id, mut tx, .. }: OrgTx,
    ApiPath((_, id)): ApiPath<(Uuid, ConnectionId)>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<Json<Paginated<ContactView>>> {
    let page = Page::new(query.limit, query.cursor.as_deref())?;
    db::crm::connection(&mut tx, org_id, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let rows = db::crm::contacts(&mut tx, org_id, id, page).await?;
    tx.commit().await?;
    Ok(Json(Paginated::from_rows(rows, page, |c| c.id)))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct WebhookSecret {
    /// The new webhook address; the previous one stops working now.
    pub webhook_url: String,
}

/// Replaces the connection's webhook secret; returns the new URL once.
#[utoipa::path(post, path = "/v1/orgs/{org_id}/crm/connections/{connection_id}/webhook-secret", tag = "crm",
    params(("connection_id" = Uuid, Path)),
    responses((status = 200, body = WebhookSecret)))]
pub async fn rotate_webhook_secret(
    State(state): State<AppState>,
    OrgTx {
        user,
        org_id,
        mut tx,
        ..
    }: OrgTx<Write>,
    meta: RequestMeta,
    ApiPath((_, id)): ApiPath<(Uuid, ConnectionId)>,
) -> ApiResult<Json<WebhookSecret>> {
    let (token, hash) = new_webhook_token();
    if !db::crm::set_webhook_token_hash(&mut tx, org_id, id, &hash).await? {
        return Err(ApiError::NotFound);
    }
    let change = Change::new("crm.webhook_secret.rotate", "crm_connection", id, json!({}));
    db::audit::record(&mut tx, org_id, Some(user.id), &meta, change).await?;
    tx.commit().await?;
    Ok(Json(WebhookSecret {
        webhook_url: webhook_url(&state.config, id, &token),
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RefreshedToken {
    pub token_expires_at: Option<DateTime<Utc>>,
}

/// Refreshes the connection's tokens now (concurrent requests share one refresh).
#[utoipa::path(post, path = "/v1/orgs/{org_id}/crm/connections/{connection_id}/token/refresh", tag = "crm",
    params(("connection_id" = Uuid, Path)),
    responses((status = 200, body = RefreshedToken)))]
pub async fn refresh_token(
    State(state): State<AppState>,
    OrgTx {
        user, org_id, tx, ..
    }: OrgTx<Write>,
    meta: RequestMeta,
    ApiPath((_, id)): ApiPath<(Uuid, ConnectionId)>,
) -> ApiResult<Json<RefreshedToken>> {
    let requested_at = Utc::now();
    // Permission is checked; the refresh runs in its own (locked) transaction, and only a
    // refresh that happened is recorded.
    drop(tx);
    let token_expires_at = state
        .kommo
        .refresh(
            &state.db,
            org_id,
            id,
            RefreshReason::RequestedAt(requested_at),
        )
        .await?;
    let mut tx = state.db.begin_worker(org_id).await?;
    let change = Change::new(
        "crm.token.refresh",
        "crm_connection",
        id,
        json!({"token_expires_at": token_expires_at}),
    );
    db::audit::record(&mut tx, org_id, Some(user.id), &meta, change).await?;
    tx.commit().await?;
    Ok(Json(RefreshedToken { token_expires_at }))
}
