//! Kommo webhooks: `POST /v1/kommo/webhooks/{connection_id}/{token}`, checked, stored and
//! answered at once (a job parses them), and the org's received events.

use crate::http::json::Json;
use axum::body::to_bytes;
use axum::extract::{Path, Request, State};
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::db;
use crate::db::webhooks::WebhookEvent;
use crate::domain::ConnectionId;
use crate::domain::page::{Page, Paginated};
use crate::http::client_ip::ClientIp;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{ApiQuery, OrgTx};
use crate::http::rate_limit::{Decision, LimitClass};
use crate::jobs::Job as _;
use crate::jobs::kinds::Webhook;
use crate::kommo::webhook::{self, AccountClaim, is_form, is_json};
use crate::metrics;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(receive))
        .routes(routes!(list))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct WebhookAccepted {
    /// `accepted`, or `duplicate` for a body already accepted within 24 h.
    pub status: &'static str,
}

/// Receives a Kommo webhook. An unknown connection and a wrong token get the same 404.
#[utoipa::path(post, path = "/v1/kommo/webhooks/{connection_id}/{token}", tag = "webhooks",
    params(("connection_id" = Uuid, Path), ("token" = String, Path, description = "the secret from the webhook URL")),
    request_body(description = "The event as Kommo sends it: form fields such as `leads[add][0][id]`, or JSON.",
        content((HashMap<String, String> = "application/x-www-form-urlencoded"),
            (HashMap<String, serde_json::Value> = "application/json"))),
    responses((status = 200, body = WebhookAccepted)))]
pub async fn receive(
    State(app): State<AppState>,
    ClientIp(ip): ClientIp,
    Path((connection_id, token)): Path<(String, String)>,
    request: Request,
) -> Response {
    let mut limit = None;
    let mut response = match accept(&app, ip, &connection_id, &token, request, &mut limit).await {
        Ok(status) => {
            metrics::WEBHOOKS.with_label_values(&[status]).inc();
            Json(WebhookAccepted { status }).into_response()
        }
        Err(e) => {
            if matches!(e, ApiError::RateLimited { .. }) {
                metrics::RATE_LIMITED.with_label_values(&["webhook"]).inc();
            }
            metrics::WEBHOOKS.with_label_values(&["refused"]).inc();
            e.into_response()
        }
    };
    if let Some(decision) = limit {
        decision.write_headers(response.headers_mut());
    }
    response
}

async fn accept(
    app: &AppState,
    ip: std::net::IpAddr,
    connection_id: &str,
    token: &str,
    request: Request,
    limit: &mut Option<Decision>,
) -> ApiResult<&'static str> {
    let allowed = &app.config.webhook_allowed_cidrs;
    if !allowed.is_empty() && !allowed.iter().any(|net| net.contains(&ip)) {
        return Err(ApiError::forbidden("This address may not send webhooks."));
    }
    // An address that sent too many refused webhooks waits, before any database work.
    if let Some(retry_after) = app.limiter.webhook_blocked(ip) {
        return Err(ApiError::RateLimited { retry_after });
    }
    // The body is read before any database work, so a client trickling it in holds no
    // pooled connection (the request timeout bounds how long it may take).
    let content_type = content_type(request.headers());
    if !is_form(&content_type) && !is_json(&content_type) {
        return Err(ApiError::UnsupportedMediaType(
            "Send application/x-www-form-urlencoded (as Kommo does) or application/json.".into(),
        ));
    }
    let body = to_bytes(request.into_body(), app.config.webhook_body_limit_bytes)
        .await
        .map_err(|_| ApiError::PayloadTooLarge)?;

    // Anything wrong with the URL is the same 404, whichever part it was; a URL that
    // cannot be one we issued is refused without asking the database.
    let connection_id = match connection_id.parse::<ConnectionId>() {
        Ok(id) if well_formed_token(token) => id,
        _ => return Err(refused(app, ip).await),
    };
    // The body is checked and parsed before the transaction begins, so the pooled
    // connection is not held through it; what it finds is answered after the token and
    // rate checks, as before.
    // The account check needs the body parsed. Parsing takes time linear in the body,
    // so a large one is parsed off the runtime; a small one (Kommo's are a few KB) in
    // place, since handing it to a blocking thread cost more than parsing it (12 % of
    // the route's instructions in `bench/profile.sh`). A body over the parser's bounds
    // is refused; one that merely does not parse is still stored (and fails visibly in
    // its job), never lost. `None`: not UTF-8 text without NUL bytes.
    let checked = match std::str::from_utf8(&body)
        .ok()
        .filter(|t| !t.contains('\0'))
    {
        None => None,
        Some(text) if body.len() <= PARSE_IN_PLACE_BYTES => {
            Some((text, webhook::to_document(&content_type, &body)))
        }
        Some(text) => {
            let (content_type, body) = (content_type.clone(), body.clone());
            let parsed =
                tokio::task::spawn_blocking(move || webhook::to_document(&content_type, &body))
                    .await
                    .map_err(|e| {
                        ApiError::internal(anyhow::Error::new(e).context("parsing a webhook"))
                    })?;
            Some((text, parsed))
        }
    };
    let (tx, connection) = app.db.begin_webhook(connection_id).await?;
    let Some(db::WebhookConnection {
        org_id,
        token_digest,
        account_id,
    }) = connection
    else {
        drop(tx);
        return Err(refused(app, ip).await);
    };
    let digest = Sha256::digest(token.as_bytes());
    if !bool::from(digest[..].ct_eq(&token_digest)) {
        drop(tx);
        return Err(refused(app, ip).await);
    }
    let decision = app
        .limiter
        .check(LimitClass::Webhook, &connection_id.to_string())
        .await;
    *limit = Some(decision);
    if !decision.allowed {
        return Err(ApiError::RateLimited {
            retry_after: decision.retry_after,
        });
    }
    let Some((text, parsed)) = checked else {
        return Err(ApiError::BadRequest(
            "The body is not UTF-8 text without NUL bytes.".into(),
        ));
    };
    match parsed {
        Ok(document) => match (webhook::account_id(&document), account_id) {
            (AccountClaim::Id(claimed), Some(ours)) if claimed == ours => {}
            (AccountClaim::Absent, _) | (AccountClaim::Id(_), None) => {}
            _ => {
                return Err(ApiError::validation(
                    "account[id]",
                    "does not match the Kommo account of this connection",
                ));
            }
        },
        Err(error @ webhook::ParseError::Limit(_)) => {
            return Err(ApiError::validation("body", error.to_string()));
        }
        Err(_) => {}
    }

    let body_digest = Sha256::digest(&body);
    let delivery = db::webhooks::NewDelivery {
        org_id,
        connection_id,
        digest: &body_digest,
        content_type: &content_type,
        body: text,
    };
    let job_id =
        db::webhooks::insert_delivery(tx, delivery, Webhook::TYPE, Webhook::MAX_ATTEMPTS).await?;
    let Some(job_id) = job_id else {
        return Ok("duplicate");
    };
    app.jobs
        .enqueue_committed(job_id, org_id, Webhook::TYPE)
        .await;
    Ok("accepted")
}

/// Bodies up to this size are parsed on the request's task (tens of microseconds).
const PARSE_IN_PLACE_BYTES: usize = 8 * 1024;

/// Our webhook tokens are 32 random bytes in unpadded base64url: 43 characters.
fn well_formed_token(token: &str) -> bool {
    token.len() == 43
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The answer to a webhook URL that names no connection of ours: 404, counted against
/// the sender's address; 429 once the address has used up its quota of refusals.
async fn refused(app: &AppState, ip: std::net::IpAddr) -> ApiError {
    let decision = app.limiter.webhook_refused(ip).await;
    if decision.allowed {
        ApiError::NotFound
    } else {
        ApiError::RateLimited {
            retry_after: decision.retry_after,
        }
    }
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListEvents {
    /// `leads`, `contacts`, `messages`, …
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub event_type: Option<String>,
    /// `received`, `processed` or `failed`.
    pub status: Option<String>,
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// Webhook events received for the org, newest first.
#[utoipa::path(get, path = "/v1/orgs/{org_id}/webhook-events", tag = "webhooks",
    params(ListEvents),
    responses((status = 200, body = inline(Paginated<WebhookEvent>))))]
pub async fn list(
    OrgTx { org_id, mut tx, .. }: OrgTx,
    ApiQuery(query): ApiQuery<ListEvents>,
) -> ApiResult<Json<Paginated<WebhookEvent>>> {
    let page = Page::new(query.limit, query.cursor.as_deref())?;
    if let Some(status) = &query.status
        && !matches!(status.as_str(), "received" | "processed" | "failed")
    {
        return Err(ApiError::validation(
            "status",
            "must be received, processed or failed",
        ));
    }
    let rows = db::webhooks::list(
        &mut tx,
        org_id,
        query.event_type.as_deref(),
        query.status.as_deref(),
        page,
    )
    .await?;
    tx.commit().await?;
    Ok(Json(Paginated::from_rows(rows, page, |e| e.id)))
}
