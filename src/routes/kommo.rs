//! Kommo OAuth (start, and the two callbacks: from the frontend's server and from the
//! browser) and sending a message to a deal.

use crate::http::json::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::LOCATION;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;
use validator::Validate;

use crate::db;
use crate::db::audit::Change;
use crate::db::crm::Connection;
use crate::db::jobs::Job;
use crate::db::oauth::ConsumedState;
use crate::domain::{ConnectionId, JobId};
use crate::http::error::kommo_unavailable;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{ApiJson, ApiQuery, OrgTx, RequestMeta, UserTx, Write};
use crate::http::validate::validate_http_url;
use crate::jobs::job;
use crate::jobs::kinds::send_message;
use crate::kommo::connect::{Connected, Connector};
use crate::kommo::tokens::TokenError;
use crate::kommo::{KommoError, OAuthApp, is_valid_base_domain};
use crate::state::AppState;

const STATE_TTL_MINUTES: i64 = 15;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start))
        .routes(routes!(callback, browser_callback))
        .routes(routes!(send_message))
}

fn state_hash(state: &str) -> Vec<u8> {
    crate::crypto::token_digest(state)
}

#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartOauth {
    /// Default: the credentials' redirect URI, else `OAUTH_REDIRECT_URL`.
    #[validate(custom(function = "validate_http_url"))]
    #[schema(max_length = 2048)]
    pub redirect_uri: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct OauthStarted {
    pub auth_url: String,
    pub state: String,
    pub expires_at: DateTime<Utc>,
}

/// Starts connecting a Kommo account: where to send the user, and the one-time state.
#[utoipa::path(post, path = "/v1/orgs/{org_id}/kommo/oauth/start", tag = "kommo",
    request_body = StartOauth,
    responses((status = 200, body = OauthStarted)))]
pub async fn start(
    State(app): State<AppState>,
    OrgTx {
        user,
        org_id,
        mut tx,
        ..
    }: OrgTx<Write>,
    ApiJson(body): ApiJson<StartOauth>,
) -> ApiResult<Json<OauthStarted>> {
    let creds = db::crm::credentials(&mut tx, org_id, "kommo")
        .await?
        .ok_or_else(|| ApiError::conflict("Set the Kommo client credentials first."))?;
    let redirect_uri = body
        .redirect_uri
        .or(creds.redirect_uri)
        .or_else(|| {
            app.config
                .oauth_redirect_url
                .as_ref()
                .map(|u| u.to_string())
        })
        .ok_or_else(|| {
            ApiError::validation("redirect_uri", "is required (no default is configured)")
        })?;
    let (state, state_digest) = crate::crypto::new_url_token();
    let expires_at = Utc::now() + chrono::Duration::minutes(STATE_TTL_MINUTES);
    db::oauth::insert_state(
        &mut tx,
        org_id,
        user.id,
        &state_digest,
        &redirect_uri,
        expires_at,
    )
    .await?;
    tx.commit().await?;
    let mut auth_url = app.config.kommo_authorize_url.clone();
    auth_url
        .query_pairs_mut()
        .append_pair("client_id", &creds.client_id)
        .append_pair("state", &state)
        .append_pair("mode", "post_message");
    Ok(Json(OauthStarted {
        auth_url: auth_url.to_string(),
        state,
        expires_at,
    }))
}

#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OauthCallback {
    #[validate(length(min = 1, max = 2000))]
    pub code: String,
    #[validate(length(min = 1, max = 200))]
    pub state: String,
    /// The account's host as Kommo reports it, e.g. `acme.kommo.com`.
    pub referer: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct OauthConnected {
    pub connection: Connection,
    /// The webhook address to configure in Kommo; shown only now.
    pub webhook_url: String,
}

/// A consumed state: whose it was and where Kommo redirected.
/// Why a callback failed, as the browser redirect reports it (`reason=`).
#[derive(Debug)]
enum CallbackError {
    State,
    Referer,
    Denied,
    Code,
    Other(ApiError),
}

impl CallbackError {
    fn reason(&self) -> &'static str {
        match self {
            CallbackError::State => "invalid_state",
            CallbackError::Referer => "invalid_referer",
            CallbackError::Denied => "access_denied",
            CallbackError::Code => "invalid_code",
            CallbackError::Other(_) => "server_error",
        }
    }
}

impl From<CallbackError> for ApiError {
    fn from(e: CallbackError) -> ApiError {
        match e {
            CallbackError::State => ApiError::BadRequest(
                "The OAuth state is unknown, expired, already used or not yours.".into(),
            ),
            CallbackError::Referer => {
                ApiError::validation("referer", "must be a subdomain of kommo.com or amocrm.ru")
            }
            CallbackError::Denied => ApiError::BadRequest("The user denied access.".into()),
            CallbackError::Code => {
                ApiError::BadRequest("Kommo refused the authorization code.".into())
            }
            CallbackError::Other(e) => e,
        }
    }
}

impl From<TokenError> for CallbackError {
    fn from(e: TokenError) -> CallbackError {
        CallbackError::Other(e.into())
    }
}

/// Exchanges the code for tokens and stores the connection.
async fn finish(
    app: &AppState,
    consumed: ConsumedState,
    code: &str,
    referer: &str,
    meta: &RequestMeta,
) -> Result<OauthConnected, CallbackError> {
    if !is_valid_base_domain(referer) {
        return Err(CallbackError::Referer);
    }
    let (client_id, client_secret, _) = {
        let mut tx = app
            .db
            .begin_worker(consumed.org_id)
            .await
            .map_err(|e| CallbackError::Other(e.into()))?;
        let creds = app.kommo.credentials(&mut tx, consumed.org_id).await?;
        tx.commit()
            .await
            .map_err(|e| CallbackError::Other(e.into()))?;
        creds
    };
    let tokens = app
        .kommo
        .client
        .exchange_code(
            referer,
            &OAuthApp {
                client_id: &client_id,
                client_secret: client_secret.expose_secret(),
                redirect_uri: &consumed.redirect_uri,
            },
            code,
        )
        .await
        .map_err(|e| match e {
            KommoError::InvalidGrant(_) => CallbackError::Code,
            other => CallbackError::Other(kommo_unavailable(other)),
        })?;
    let account = app
        .kommo
        .client
        .account(referer, &tokens.access_token)
        .await
        .map_err(|e| CallbackError::Other(kommo_unavailable(e)))?;
    let connector = Connector {
        db: &app.db,
        kommo: &app.kommo,
        queue: &app.jobs,
        config: &app.config,
    };
    let Connected {
        connection,
        webhook_url,
    } = connector
        .complete_oauth(
            consumed.org_id,
            consumed.user_id,
            referer,
            &tokens,
            account.id,
            meta,
        )
        .await?;
    tracing::info!(connection_id = %connection.id, org_id = %consumed.org_id, "Kommo account connected");
    Ok(OauthConnected {
        connection,
        webhook_url,
    })
}

/// Completes OAuth for the user who started it (the frontend's server calls this with
/// that user's token); a state of another user is refused like an unknown one.
#[utoipa::path(post, path = "/v1/kommo/oauth/callback", tag = "kommo",
    security(("bearer" = [])), request_body = OauthCallback,
    responses((status = 200, body = OauthConnected)))]
pub async fn callback(
    State(app): State<AppState>,
    UserTx { user, mut tx }: UserTx,
    meta: RequestMeta,
    ApiJson(body): ApiJson<OauthCallback>,
) -> ApiResult<Json<OauthConnected>> {
    // Consumed under the user's claims: the policy shows only their own states.
    let consumed =
        db::oauth::consume_state(&mut tx, &state_hash(&body.state), Some(user.id)).await?;
    tx.commit().await?;
    // Unknown, expired, or its user is no longer an owner or admin of the org.
    let Some(consumed) = consumed.filter(ConsumedState::valid) else {
        return Err(CallbackError::State.into());
    };
    Ok(Json(
        finish(&app, consumed, &body.code, &body.referer, &meta).await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BrowserCallback {
    pub code: Option<String>,
    pub state: Option<String>,
    pub referer: Option<String>,
    pub error: Option<String>,
}

/// Kommo sends the browser here; it is sent on to `FRONTEND_URL` with
/// `status=connected&connection_id=…` or `status=error&reason=…`.
#[utoipa::path(get, path = "/v1/kommo/oauth/callback", tag = "kommo",
    params(BrowserCallback), responses((status = 302, description = "to FRONTEND_URL"),
        (status = 200, description = "Without FRONTEND_URL: `{\"status\": \"connected\", \"connection_id\": …}`",
            body = serde_json::Value)))]
pub async fn browser_callback(
    State(app): State<AppState>,
    meta: RequestMeta,
    ApiQuery(query): ApiQuery<BrowserCallback>,
) -> Response {
    let outcome = browser_flow(&app, query, &meta).await;
    if let Err(CallbackError::Other(e)) = &outcome {
        tracing::warn!(error = %e, "OAuth browser callback failed");
    }
    let Some(frontend) = app.config.frontend_url.clone() else {
        return match outcome {
            Ok(done) => Json(json!({"status": "connected", "connection_id": done.connection.id}))
                .into_response(),
            Err(e) => ApiError::from(e).into_response(),
        };
    };
    let mut target = frontend;
    match &outcome {
        Ok(done) => {
            target
                .query_pairs_mut()
                .append_pair("status", "connected")
                .append_pair("connection_id", &done.connection.id.to_string());
        }
        Err(e) => {
            target
                .query_pairs_mut()
                .append_pair("status", "error")
                .append_pair("reason", e.reason());
        }
    }
    (StatusCode::FOUND, [(LOCATION, target.to_string())]).into_response()
}

async fn browser_flow(
    app: &AppState,
    query: BrowserCallback,
    meta: &RequestMeta,
) -> Result<OauthConnected, CallbackError> {
    let state = query
        .state
        .filter(|s| !s.is_empty() && s.len() <= 200)
        .ok_or(CallbackError::State)?;
    // Consumed even when the user denied access, so the state cannot be used later.
    let consumed = {
        let mut tx = app
            .db
            .begin_system()
            .await
            .map_err(|e| CallbackError::Other(e.into()))?;
        let row = db::oauth::consume_state(&mut tx, &state_hash(&state), None)
            .await
            .map_err(|e| CallbackError::Other(e.into()))?;
        tx.commit()
            .await
            .map_err(|e| CallbackError::Other(e.into()))?;
        row
    };
    let Some(consumed) = consumed.filter(ConsumedState::valid) else {
        return Err(CallbackError::State);
    };
    if query.error.is_some() {
        return Err(CallbackError::Denied);
    }
    let code = query
        .code
        .filter(|c| !c.is_empty())
        .ok_or(CallbackError::Code)?;
    let referer = query.referer.unwrap_or_default();
    finish(app, consumed, &code, &referer, meta).await
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Chat,
    Email,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Chat => "chat",
            Channel::Email => "email",
        }
    }
}

#[derive(Debug, Deserialize, Serialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    #[validate(custom(function = "validate_http_url"))]
    pub url: String,
    #[validate(length(min = 1, max = 255))]
    pub name: String,
}

#[derive(Debug, Deserialize, Serialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageContent {
    #[validate(length(min = 1, max = 255))]
    pub subject: Option<String>,
    #[validate(length(min = 1, max = 20000, message = "must be 1 to 20000 characters"))]
    pub body: String,
    #[validate(nested, length(max = 20))]
    pub attachments: Option<Vec<Attachment>>,
}

#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    /// Default: the org's connected Kommo account.
    pub connection_id: Option<Uuid>,
    #[validate(range(min = 1, message = "must be a Kommo deal (lead) id"))]
    pub deal_id: i64,
    pub channel: Channel,
    #[validate(nested)]
    pub message: MessageContent,
}

/// Queues a message to a deal: a note in Kommo (`common` for chat, `outgoing_email`).
#[utoipa::path(post, path = "/v1/orgs/{org_id}/kommo/messages", tag = "kommo",
    request_body = SendMessage,
    responses((status = 202, body = Job)))]
pub async fn send_message(
    State(app): State<AppState>,
    OrgTx {
        user,
        org_id,
        mut tx,
        ..
    }: OrgTx<Write>,
    meta: RequestMeta,
    ApiJson(body): ApiJson<SendMessage>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    if matches!(body.channel, Channel::Email) && body.message.subject.is_none() {
        return Err(ApiError::validation(
            "message.subject",
            "is required for email",
        ));
    }
    let connection = match body.connection_id {
        Some(id) => db::crm::connection(&mut tx, org_id, ConnectionId(id))
            .await?
            .ok_or_else(|| {
                ApiError::validation(
                    "connection_id",
                    "must be a CRM connection of this organization",
                )
            })?,
        None => db::crm::latest_connection(&mut tx, org_id, "kommo")
            .await?
            .ok_or_else(|| {
                ApiError::validation("connection_id", "the organization has no Kommo connection")
            })?,
    };
    let message = send_message::SendMessage {
        connection_id: ConnectionId(connection.id),
        deal_id: body.deal_id,
        channel: body.channel.as_str().into(),
        message: send_message::Message {
            subject: body.message.subject,
            body: body.message.body,
            attachments: body.message.attachments.map(|list| {
                list.into_iter()
                    .map(|a| send_message::Attachment {
                        url: a.url,
                        name: a.name,
                    })
                    .collect()
            }),
        },
    };
    let job = job::insert(&mut tx, org_id, &message, Some(user.id)).await?;
    let change = Change::new(
        "kommo.message.send",
        "job",
        job.id,
        json!({"connection_id": connection.id, "deal_id": body.deal_id, "channel": body.channel}),
    );
    db::audit::record(&mut tx, org_id, Some(user.id), &meta, change).await?;
    tx.commit().await?;
    app.jobs
        .enqueue_committed(JobId(job.id), org_id, &job.job_type)
        .await;
    Ok((StatusCode::ACCEPTED, Json(job)))
}
