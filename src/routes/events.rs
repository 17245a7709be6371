//! `GET /v1/orgs/{org_id}/events`: the org's live events as server-sent events (see
//! `crate::events` for where they come from and how resumption works).
//!
//! The caller's token and membership are checked at connect, in the request's RLS
//! transaction like any read, which then ends: the stream holds no database connection.
//! It ends when the token expires, when the server drains, or when the client goes; a
//! browser's `EventSource` cannot send `Authorization`, so clients use a fetch-based SSE
//! client that can (the token never goes into a URL, where proxies would log it).

use std::convert::Infallible;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::AuthUser;
use crate::events::stream::{self, Frame, Open, OpenError};
use crate::events::{EventId, ResetEvent};
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{OrgTx, Read};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(events))
}

/// The org's changes as they happen: server-sent events with `id:` on every event.
/// Reconnect with `Last-Event-ID` (the last `id:` received) to get what was missed, kept
/// for at least `EVENTS_RETENTION_SECS` (5 minutes by default); an older or unknown id
/// gets a `reset` event first, then what is kept: refetch what you show. A comment line
/// (`: keep-alive`) comes every `EVENTS_HEARTBEAT_SECS`. The stream ends when the access
/// token expires and when the server restarts (reconnect with a fresh token). At most
/// `EVENTS_MAX_STREAMS_PER_USER` streams per user are open at once (429 beyond).
#[utoipa::path(get, path = "/v1/orgs/{org_id}/events", tag = "events",
    params(("Last-Event-ID" = Option<String>, Header,
        description = "The `id` of the last event received, to resume after it")),
    responses(
        (status = 200, content_type = "text/event-stream", body = crate::events::LiveEvent,
         description = "Server-sent events; each has `id:`, `event:` (the kind) and `data:` \
                        (JSON of the kind's schema)"),
        (status = 400, description = "`Last-Event-ID` is not an id this API sent"),
        (status = 429, description = "Too many streams open for this user; see Retry-After"),
        (status = 503, description = "Live events are unavailable (Redis); retry shortly")))]
pub async fn events(
    State(state): State<AppState>,
    OrgTx {
        user, org_id, tx, ..
    }: OrgTx<Read>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    // Membership is checked; the stream needs nothing more from the database.
    tx.commit().await?;
    let last_event_id = last_event_id(&headers)?;
    let deadline = token_deadline(&user)?;
    if state.lifecycle.closing().is_cancelled() {
        return Err(ApiError::Unavailable(
            "The server is shutting down; reconnect.".into(),
        ));
    }
    let request = Open {
        org_id,
        user,
        db: state.db.clone(),
        last_event_id,
        deadline,
        closing: state.lifecycle.closing().clone(),
    };
    let frames = stream::open(&state.events, request)
        .await
        .map_err(|e| match e {
            OpenError::TooMany { retry_after } => ApiError::RateLimited {
                retry_after: retry_after.max(Duration::from_secs(1)),
            },
            OpenError::Unavailable(why) => {
                tracing::warn!(error = %why, "an event stream could not open");
                ApiError::Unavailable("Live events are unavailable; retry shortly.".into())
            }
        })?;
    let body = Sse::new(frames.map(|frame| Ok::<_, Infallible>(sse(frame))));
    let mut response = body.into_response();
    // nginx and similar proxies buffer responses unless told not to.
    response.headers_mut().insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    Ok(response)
}

fn sse(frame: Frame) -> Event {
    match frame {
        Frame::Event(stored) => Event::default()
            .id(stored.id.to_string())
            .event(stored.kind)
            .data(stored.data),
        Frame::Reset { id, reason } => {
            let data = serde_json::to_string(&ResetEvent {
                reason: reason.to_owned(),
            })
            .unwrap_or_else(|_| "{}".into());
            Event::default()
                .id(id.to_string())
                .event("reset")
                .data(data)
        }
        Frame::Heartbeat => Event::default().comment("keep-alive"),
        Frame::End(why) => Event::default().comment(why),
    }
}

/// The header, when sent; 400 when it is not an id of ours (an `EventSource` only ever
/// sends back one it was given).
fn last_event_id(headers: &HeaderMap) -> ApiResult<Option<EventId>> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|()| {
        ApiError::BadRequest("Last-Event-ID is not an event id this API sent.".into())
    })
}

/// When the stream must end: the token's `exp`. A token past it (accepted within the
/// verifier's clock-skew leeway) cannot open a stream.
fn token_deadline(user: &AuthUser) -> ApiResult<tokio::time::Instant> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    match user.expires_at().map(|exp| exp.saturating_mul(1000)) {
        Some(exp_ms) if exp_ms > now_ms => {
            Ok(tokio::time::Instant::now() + Duration::from_millis(exp_ms - now_ms))
        }
        _ => Err(ApiError::unauthorized(
            "The access token is invalid or expired.",
        )),
    }
}
