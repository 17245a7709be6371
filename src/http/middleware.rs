//! Middleware of the public router: request context and access log, rate limits, CORS,
//! handler timeout, security headers, and panics turned into problem+json.

use std::any::Any;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::http::auth::bearer_token;
use crate::http::client_ip;
use crate::http::error::ApiError;
use crate::http::rate_limit::LimitClass;
use crate::http::request_id;
use crate::metrics;
use crate::state::AppState;
use crate::telemetry;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Gives the request its id (kept in a task-local so errors can quote it), then writes
/// one access-log line with what operators need and nothing secret: the route template,
/// never the raw path, because paths can carry ids and webhook tokens.
pub async fn request_context(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let in_flight = InFlight::start();
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format_args!("{method} {}", route.as_deref().unwrap_or("unmatched")),
        otel.kind = "server",
        http.request.method = %method,
        http.route = route.as_deref().unwrap_or("unmatched"),
        http.response.status_code = tracing::field::Empty,
    );
    let _ = span.set_parent(telemetry::incoming_context(request.headers()));
    let (response, ctx) = request_id::scope(request, next)
        .instrument(span.clone())
        .await;
    span.record("http.response.status_code", response.status().as_u16());
    drop(in_flight);
    let request_id = ctx.id.as_str();
    let user_id = ctx.user_id.get().map(|u| u.to_string());
    let org_id = ctx.org_id.get().map(|o| o.to_string());
    let status = response.status().as_u16();
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let route = route.as_deref().unwrap_or("unmatched");
    metrics::observe_http(method.as_str(), route, status, started.elapsed());
    if status >= 500 {
        tracing::error!(%method, route, status, latency_ms, request_id, user_id, org_id, "request failed");
    } else {
        tracing::info!(%method, route, status, latency_ms, request_id, user_id, org_id, "request");
    }
    response
}

/// Counts a request in flight until dropped, also when the client goes away mid-request
/// and the request's future is dropped.
struct InFlight;

impl InFlight {
    fn start() -> InFlight {
        metrics::HTTP_IN_FLIGHT.inc();
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::HTTP_IN_FLIGHT.dec();
    }
}

/// tower-http's CORS layer checks the origin only for `Access-Control-Allow-Origin`; the
/// other CORS headers it adds for everyone. A response that allows no origin carries none.
pub async fn cors_only_for_allowed(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if !headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
        let cors: Vec<HeaderName> = headers
            .keys()
            .filter(|name| name.as_str().starts_with("access-control-"))
            .cloned()
            .collect();
        for name in cors {
            headers.remove(name);
        }
    }
    response
}

/// Reads the whole request body, within its size limit and `BODY_READ_TIMEOUT_SECS`,
/// before the handler's extractors run. Extractors open the request's RLS transaction
/// before the body extractor reads, so without this a client trickling its body would
/// hold a pooled connection all that time; here it holds nothing but its socket.
pub async fn buffer_body(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    if axum::body::HttpBody::is_end_stream(&body) {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let path = parts.uri.path();
    let limit = if path.starts_with("/v1/kommo/webhooks/") {
        app.config.webhook_body_limit_bytes
    } else if parts.method == Method::POST
        && path.starts_with("/v1/orgs/")
        && path.ends_with("/knowledge/assets")
    {
        // An upload: the file may be ASSET_MAX_BYTES, inside its multipart envelope.
        app.config.asset_max_bytes + MULTIPART_OVERHEAD
    } else {
        app.config.body_limit_bytes
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return ApiError::PayloadTooLarge.into_response();
    }
    match tokio::time::timeout(app.config.body_read_timeout, read_body(body, limit)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
        Ok(Err(problem)) => problem.into_response(),
        Err(_) => ApiError::RequestTimeout.into_response(),
    }
}

/// Room for the multipart envelope (boundaries, part headers, `agent_id`) of an upload.
const MULTIPART_OVERHEAD: usize = 64 * 1024;

/// The whole body, or 413 as soon as it passes `limit` (a body without `Content-Length`
/// is counted as it arrives), or 400 when the connection fails mid-body.
async fn read_body(mut body: axum::body::Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    use axum::body::HttpBody as _;
    let mut bytes = Vec::new();
    while let Some(frame) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
    {
        let frame = frame
            .map_err(|_| ApiError::BadRequest("The request body could not be read.".into()))?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > limit {
                return Err(ApiError::PayloadTooLarge);
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes)
}

/// A handler that runs longer than `REQUEST_TIMEOUT_SECS` is dropped, which rolls its
/// transaction back, and the client gets 504.
pub async fn timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout.into_response(),
    }
}

/// The original URI while Sentry's layer sees the route pattern instead.
#[derive(Clone)]
struct OriginalUri(axum::http::Uri);

/// Sentry records the request URL; paths carry ids and webhook tokens, query strings
/// carry anything. It is shown the route pattern (`/v1/orgs/{org_id}/agents`) and
/// [`sentry_restore_uri`] puts the real URI back before the handler runs.
pub async fn sentry_route_as_uri(mut request: Request, next: Next) -> Response {
    let pattern = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/unmatched".to_owned());
    // A pattern's braces are not valid in a URI; percent-encode them.
    let pattern = pattern.replace('{', "%7B").replace('}', "%7D");
    if let Ok(masked) = axum::http::Uri::try_from(pattern) {
        let original = std::mem::replace(request.uri_mut(), masked);
        request.extensions_mut().insert(OriginalUri(original));
    }
    next.run(request).await
}

pub async fn sentry_restore_uri(mut request: Request, next: Next) -> Response {
    if let Some(OriginalUri(original)) = request.extensions_mut().remove::<OriginalUri>() {
        *request.uri_mut() = original;
    }
    next.run(request).await
}

pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        );
    }
    response
}

/// The request id is already in the task-local, so the 500 can quote it.
pub fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = telemetry::panic_message(&*panic);
    ApiError::internal(anyhow::anyhow!("handler panicked: {message}")).into_response()
}

/// Rate limits every request but health checks and webhooks (those have their own, per
/// connection): per user when the bearer token is valid, else per client address. The
/// verified user is kept on the request, so the `AuthUser` extractor does not verify the
/// token twice.
pub async fn rate_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path.starts_with("/health") || path.starts_with("/v1/kommo/webhooks/") {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let verified = match bearer_token(&parts) {
        Some(token) => state.jwt.verify(token).await.ok(),
        None => None,
    };
    let (class, key) = match verified {
        Some(user) => {
            let key = user.id.to_string();
            parts.extensions.insert(user);
            (LimitClass::User, key)
        }
        None => {
            let peer = parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip())
                .unwrap_or(IpAddr::from([0, 0, 0, 0]));
            let ip = client_ip::resolve(peer, &parts.headers, &state.config.trusted_proxies);
            (LimitClass::Anon, ip.to_string())
        }
    };
    let decision = state.limiter.check(class, &key).await;
    let mut response = if decision.allowed {
        next.run(Request::from_parts(parts, body)).await
    } else {
        metrics::RATE_LIMITED
            .with_label_values(&[class.name()])
            .inc();
        ApiError::RateLimited {
            retry_after: decision.retry_after,
        }
        .into_response()
    };
    decision.write_headers(response.headers_mut());
    response
}

/// CORS for the configured origins only (exact match, echoed, with credentials); none
/// configured means no CORS headers at all. `*` (refused in production) allows any origin
/// without credentials.
pub fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let layer = CorsLayer::new()
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            request_id::X_REQUEST_ID.clone(),
            // Event stream clients resume with it (GET …/events).
            HeaderName::from_static("last-event-id"),
        ])
        .expose_headers([
            request_id::X_REQUEST_ID.clone(),
            header::RETRY_AFTER,
            HeaderName::from_static("ratelimit-limit"),
            HeaderName::from_static("ratelimit-remaining"),
            HeaderName::from_static("ratelimit-reset"),
        ])
        .max_age(Duration::from_secs(600));
    if origins.iter().any(|o| o == "*") {
        return Some(layer.allow_origin(AllowOrigin::any()));
    }
    let exact: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    Some(
        layer
            .allow_origin(AllowOrigin::list(exact))
            .allow_credentials(true),
    )
}
