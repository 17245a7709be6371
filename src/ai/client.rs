//! The HTTP client for OpenAI-compatible providers. Every call waits for the org's turn at
//! the call gate, has a connect timeout and a per-call timeout (per chunk when streaming),
//! follows no redirects, and retries overload and gateway failures with backoff, honouring
//! `Retry-After`.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_openai::types::chat::{ChatCompletionMessageToolCalls, CreateChatCompletionResponse};
use async_openai::types::embeddings::{
    CreateEmbeddingRequest, CreateEmbeddingResponse, EmbeddingInput,
};
use futures_util::{Stream, StreamExt};
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::Instrument;
use uuid::Uuid;

use crate::ai::compat;
use crate::ai::error::is_retryable_status;
use crate::ai::sse::{ChatAssembler, SseDecoder};
use crate::ai::types::wire_chat_request;
use crate::ai::{
    AiError, ChatRequest, ChatResponse, ChatStream, Embeddings, StreamEvent, ToolCall, Usage,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_ATTEMPTS: u32 = 4;
const BASE_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// A provider asking for a longer pause than this is out of quota rather than briefly
/// overloaded: the call gives up at once with `RateLimited` and the job reschedules.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// An embeddings answer for a large batch is JSON numbers: ~20 bytes per dimension.
const MAX_BODY: usize = 64 * 1024 * 1024;
/// Error bodies are read only far enough to find the provider's message.
const MAX_ERROR_BODY: usize = 64 * 1024;
const MAX_DETAIL_CHARS: usize = 200;

/// Where an org's (or the deployment's) model calls go.
#[derive(Clone)]
pub struct Provider {
    /// e.g. `https://api.openai.com/v1`; the endpoints are joined below it.
    pub base_url: url::Url,
    /// `None` for servers without auth (Ollama, LM Studio).
    pub api_key: Option<SecretString>,
    pub chat_model: String,
    pub embedding_model: String,
    /// The vector column's size; every embedding must have exactly this many.
    pub dimensions: u32,
    /// An org's own provider in production: connections go only to public addresses
    /// (the SSRF rule, checked again at every connection against DNS rebinding).
    pub public_only: bool,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("base_url", &redacted_url(&self.base_url))
            .field("api_key_configured", &self.api_key.is_some())
            .field("chat_model", &self.chat_model)
            .field("embedding_model", &self.embedding_model)
            .field("dimensions", &self.dimensions)
            .field("public_only", &self.public_only)
            .finish()
    }
}

/// The URL without credentials someone may have written into it.
fn redacted_url(url: &url::Url) -> String {
    let mut url = url.clone();
    if url.password().is_some() {
        let _ = url.set_password(Some("redacted"));
    }
    url.to_string()
}

impl Provider {
    /// `{base_url}/{path}`, whether or not the base ends with a slash; the base's query
    /// (an Azure-style `api-version`) is kept.
    fn endpoint(&self, path: &str) -> Result<url::Url, AiError> {
        let base = &self.base_url;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(AiError::Invalid("the provider URL must be http(s)".into()));
        }
        let mut url = base.clone();
        let joined = format!("{}/{path}", base.path().trim_end_matches('/'));
        url.set_path(&joined);
        Ok(url)
    }
}

/// The per-org call budget (the integrator plugs in the Redis GCRA). It is asked before
/// every attempt, retries included, since each attempt is a request the provider counts.
pub trait CallGate: Send + Sync {
    /// Resolves when `org` may make one call; `Err` (usually `RateLimited`) refuses it.
    fn wait_turn(
        &self,
        org: Uuid,
    ) -> Pin<Box<dyn Future<Output = Result<(), AiError>> + Send + '_>>;
}

/// A gate that never waits: for tests and deployments without a per-org limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoGate;

impl CallGate for NoGate {
    fn wait_turn(
        &self,
        _org: Uuid,
    ) -> Pin<Box<dyn Future<Output = Result<(), AiError>> + Send + '_>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Counts one call, after its retries: `ai_requests_total{kind,outcome}`, its latency and
/// the tokens it used. `kind` is "chat", "chat_stream" or "embed"; `outcome` is "ok",
/// "cancelled" (a stream dropped by its reader) or `AiError::outcome()`.
fn observe(kind: &str, outcome: &str, elapsed: Duration, usage: Option<&Usage>) {
    let (prompt, completion) = usage.map_or((0, 0), |u| (u.prompt_tokens, u.completion_tokens));
    crate::metrics::observe_ai(
        kind,
        outcome,
        elapsed,
        u64::from(prompt),
        u64::from(completion),
    );
}

#[derive(Clone)]
pub struct AiClient {
    http: reqwest::Client,
    /// The same, resolving only to public addresses (`Provider::public_only`).
    guarded: reqwest::Client,
    timeout: Duration,
    gate: Arc<dyn CallGate>,
    attempts: u32,
    base_backoff: Duration,
}

impl std::fmt::Debug for AiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AiClient")
            .field("timeout", &self.timeout)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// How one attempt failed, and whether the provider said when to come back.
struct Failure {
    error: AiError,
    retry_after: Option<Duration>,
}

impl From<AiError> for Failure {
    fn from(error: AiError) -> Failure {
        Failure {
            error,
            retry_after: None,
        }
    }
}

impl AiClient {
    /// `timeout` is `AI_TIMEOUT_SECS`: the bound of one attempt, or of the wait for each
    /// chunk of a stream.
    pub fn new(timeout: Duration, gate: Arc<dyn CallGate>) -> Result<AiClient, AiError> {
        let builder = || {
            reqwest::Client::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                // A redirect could carry the bearer key to another host (and an org's own
                // provider URL is checked against SSRF only as given).
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("agents-api/", env!("CARGO_PKG_VERSION")))
        };
        let transport = |e: reqwest::Error| AiError::Transport(e.without_url().to_string());
        let http = builder().build().map_err(transport)?;
        let guarded = builder()
            .dns_resolver(Arc::new(crate::ai::ssrf::PublicOnlyResolver))
            .build()
            .map_err(transport)?;
        Ok(AiClient {
            http,
            guarded,
            timeout,
            gate,
            attempts: MAX_ATTEMPTS,
            base_backoff: BASE_BACKOFF,
        })
    }

    /// Other retry settings (tests shorten the backoff; `attempts` ≥ 1).
    pub fn with_retries(mut self, attempts: u32, base_backoff: Duration) -> AiClient {
        self.attempts = attempts.max(1);
        self.base_backoff = base_backoff;
        self
    }

    /// Embeds `inputs` in one request (the caller batches). Vectors come back in input
    /// order and each is checked against `provider.dimensions`.
    pub async fn embed(
        &self,
        org: Uuid,
        provider: &Provider,
        inputs: &[String],
    ) -> Result<Embeddings, AiError> {
        if inputs.is_empty() {
            return Ok(Embeddings {
                vectors: Vec::new(),
                usage: Usage::default(),
            });
        }
        let model = non_empty_model(&provider.embedding_model)?;
        let request = CreateEmbeddingRequest {
            model: model.to_owned(),
            input: EmbeddingInput::StringArray(inputs.to_vec()),
            encoding_format: None,
            user: None,
            // Only the v3 OpenAI models can shorten their vectors; other servers reject or
            // ignore the field, and their models have one fixed size anyway.
            dimensions: model
                .starts_with("text-embedding-3")
                .then_some(provider.dimensions),
        };
        let span = call_span("embed", model, provider);
        let started = Instant::now();
        let result = async {
            let url = provider.endpoint("embeddings")?;
            let answer: CreateEmbeddingResponse = self
                .call_json(org, provider, url, &request, |v| {
                    compat::patch_embeddings(v);
                    Ok(())
                })
                .await?;
            embeddings_from(answer, inputs.len(), provider.dimensions)
        }
        .instrument(span.clone())
        .await;
        finish_call(&span, "embed", started, &result, |e| Some(e.usage));
        result
    }

    pub async fn chat(
        &self,
        org: Uuid,
        provider: &Provider,
        request: &ChatRequest,
    ) -> Result<ChatResponse, AiError> {
        let model = non_empty_model(request.model.as_deref().unwrap_or(&provider.chat_model))?;
        let wire = wire_chat_request(request, model, false);
        let span = call_span("chat", model, provider);
        let started = Instant::now();
        let result = async {
            let url = provider.endpoint("chat/completions")?;
            let answer: CreateChatCompletionResponse = self
                .call_json(org, provider, url, &wire, compat::patch_chat)
                .await?;
            chat_response_from(answer)
        }
        .instrument(span.clone())
        .await;
        finish_call(&span, "chat", started, &result, |r| Some(r.usage));
        result
    }

    /// A streamed chat answer. Retries happen only until the provider has answered 200;
    /// after that a failure ends the stream with an error.
    pub async fn chat_stream(
        &self,
        org: Uuid,
        provider: &Provider,
        request: &ChatRequest,
    ) -> Result<ChatStream, AiError> {
        let model = non_empty_model(request.model.as_deref().unwrap_or(&provider.chat_model))?;
        let wire = wire_chat_request(request, model, true);
        let span = call_span("chat_stream", model, provider);
        let started = Instant::now();
        let opened = async {
            let url = provider.endpoint("chat/completions")?;
            let body = to_body(&wire)?;
            self.with_retries_loop(org, || async {
                let response = tokio::time::timeout(
                    self.timeout,
                    self.send(provider, url.clone(), body.clone(), true),
                )
                .await
                .map_err(|_| AiError::Timeout)??;
                Ok(response)
            })
            .await
        }
        .instrument(span.clone())
        .await;
        let response = match opened {
            Ok(response) => response,
            Err(error) => {
                finish_call(&span, "chat_stream", started, &Err::<(), _>(&error), |_| {
                    None
                });
                return Err(error);
            }
        };
        let is_json = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let state = StreamState {
            body: Box::pin(response.bytes_stream()),
            decoder: SseDecoder::default(),
            assembler: ChatAssembler::default(),
            pending: VecDeque::new(),
            ended: false,
            idle_timeout: self.timeout,
            json_fallback: is_json.then(Vec::new),
            record: CallRecord {
                span: span.clone(),
                started,
                outcome: None,
                usage: None,
            },
        };
        let stream = futures_util::stream::unfold(state, |mut state| {
            let span = state.record.span.clone();
            async move {
                let item = state.next_event().await?;
                Some((item, state))
            }
            .instrument(span)
        });
        Ok(ChatStream {
            inner: Box::pin(stream),
        })
    }

    /// One POST with its retries, its body read whole (bounded) and decoded.
    /// `patch` brings a compatible server's answer into OpenAI's shape (see `compat`).
    async fn call_json<T: DeserializeOwned>(
        &self,
        org: Uuid,
        provider: &Provider,
        url: url::Url,
        request: &impl serde::Serialize,
        patch: impl FnOnce(&mut Value) -> Result<(), AiError>,
    ) -> Result<T, AiError> {
        let body = to_body(request)?;
        let bytes = self
            .with_retries_loop(org, || async {
                tokio::time::timeout(self.timeout, async {
                    let response = self
                        .send(provider, url.clone(), body.clone(), false)
                        .await?;
                    read_limited(response, MAX_BODY)
                        .await
                        .map_err(Failure::from)
                })
                .await
                .map_err(|_| AiError::Timeout)?
            })
            .await?;
        let mut value: Value =
            serde_json::from_slice(&bytes).map_err(|e| AiError::Decode(e.to_string()))?;
        patch(&mut value)?;
        serde_json::from_value(value).map_err(|e| AiError::Decode(e.to_string()))
    }

    /// Runs `attempt` until it succeeds, fails for good, or the attempts run out. Waits
    /// for the gate before each try, and between tries for the provider's `Retry-After`
    /// or an exponential backoff with jitter.
    async fn with_retries_loop<T, F, Fut>(&self, org: Uuid, mut attempt: F) -> Result<T, AiError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut tries = 0;
        loop {
            tries += 1;
            self.gate.wait_turn(org).await?;
            let failure = match attempt().await {
                Ok(value) => {
                    tracing::Span::current().record("attempts", tries);
                    return Ok(value);
                }
                Err(failure) => failure,
            };
            tracing::Span::current().record("attempts", tries);
            let retryable = match &failure.error {
                AiError::Timeout | AiError::Transport(_) | AiError::RateLimited { .. } => true,
                AiError::Status { status, .. } => is_retryable_status(*status),
                _ => false,
            };
            if !retryable || tries >= self.attempts {
                return Err(failure.error);
            }
            let wait = match failure.retry_after {
                Some(wait) if wait > MAX_RETRY_AFTER => return Err(failure.error),
                Some(wait) => wait,
                None => backoff(self.base_backoff, tries),
            };
            tracing::warn!(
                attempt = tries,
                outcome = failure.error.outcome(),
                wait_ms = wait.as_millis() as u64,
                "ai call failed, retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// Sends one attempt; a non-2xx answer becomes a `Failure` with the provider's short
    /// reason and its `Retry-After`.
    async fn send(
        &self,
        provider: &Provider,
        url: url::Url,
        body: BodyBytes,
        stream: bool,
    ) -> Result<reqwest::Response, Failure> {
        if provider.public_only {
            // The resolver is not asked about addresses written as such.
            let literal = match url.host() {
                Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
                Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
                _ => None,
            };
            if url.scheme() != "https" || literal.is_some_and(|ip| !crate::ai::ssrf::is_public(ip))
            {
                return Err(Failure::from(AiError::Invalid(
                    "the org's provider URL must be https and public".into(),
                )));
            }
        }
        let client = if provider.public_only {
            &self.guarded
        } else {
            &self.http
        };
        let mut request = client
            .post(url)
            .header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )
            .header(
                header::ACCEPT,
                HeaderValue::from_static(if stream {
                    "text/event-stream"
                } else {
                    "application/json"
                }),
            )
            .body(body);
        if let Some(key) = &provider.api_key {
            request = request.bearer_auth(key.expose_secret());
        }
        // The provider's gateway (or our fake) joins its spans to ours.
        request = request.headers(crate::telemetry::outgoing_headers());
        let response = request.send().await.map_err(|e| {
            Failure::from(if e.is_timeout() {
                AiError::Timeout
            } else {
                AiError::Transport(e.without_url().to_string())
            })
        })?;
        let status = response.status();
        tracing::Span::current().record("status", status.as_u16());
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = retry_after(response.headers(), SystemTime::now());
        let detail = match read_limited(response, MAX_ERROR_BODY).await {
            Ok(bytes) => error_detail(&bytes, provider),
            Err(_) => status.canonical_reason().unwrap_or("no details").to_owned(),
        };
        let error = if status == StatusCode::TOO_MANY_REQUESTS {
            AiError::RateLimited { retry_after }
        } else {
            AiError::Status {
                status: status.as_u16(),
                detail,
            }
        };
        // Retry-After means something only on overload answers.
        let honoured = matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        );
        Err(Failure {
            error,
            retry_after: retry_after.filter(|_| honoured),
        })
    }
}

fn to_body(request: &impl serde::Serialize) -> Result<BodyBytes, AiError> {
    serde_json::to_vec(request)
        .map(|v| BodyBytes(v.into()))
        .map_err(|e| AiError::Invalid(format!("request could not be encoded: {e}")))
}

/// The request body, serialised once; `Clone` shares the bytes between attempts.
#[derive(Clone)]
struct BodyBytes(axum::body::Bytes);

impl From<BodyBytes> for reqwest::Body {
    fn from(body: BodyBytes) -> reqwest::Body {
        reqwest::Body::from(body.0)
    }
}

fn non_empty_model(model: &str) -> Result<&str, AiError> {
    let model = model.trim();
    if model.is_empty() {
        return Err(AiError::Invalid("no model named".into()));
    }
    Ok(model)
}

fn call_span(kind: &'static str, model: &str, provider: &Provider) -> tracing::Span {
    tracing::info_span!(
        "ai.request",
        otel.kind = "client",
        kind,
        model,
        server.address = provider.base_url.host_str().unwrap_or(""),
        status = tracing::field::Empty,
        attempts = tracing::field::Empty,
        outcome = tracing::field::Empty,
    )
}

fn finish_call<T, E: std::borrow::Borrow<AiError>>(
    span: &tracing::Span,
    kind: &str,
    started: Instant,
    result: &Result<T, E>,
    usage: impl Fn(&T) -> Option<Usage>,
) {
    let elapsed = started.elapsed();
    match result {
        Ok(value) => {
            span.record("outcome", "ok");
            observe(kind, "ok", elapsed, usage(value).as_ref());
        }
        Err(error) => {
            let error = error.borrow();
            span.record("outcome", error.outcome());
            span.in_scope(|| tracing::warn!(error = %error, "ai call failed"));
            observe(kind, error.outcome(), elapsed, None);
        }
    }
}

/// Backoff before try `tries + 1`: base·2^(tries−1), capped, with half of it random so
/// that replicas hit by the same outage do not retry in step.
fn backoff(base: Duration, tries: u32) -> Duration {
    let exp = base
        .saturating_mul(1u32 << (tries.saturating_sub(1)).min(16))
        .min(MAX_BACKOFF);
    let half = exp / 2;
    let jitter_ms = rand::random_range(0..=half.as_millis() as u64);
    half + Duration::from_millis(jitter_ms)
}

/// `retry-after-ms` (OpenAI's precise hint) or `Retry-After` in seconds or as an HTTP
/// date.
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return (ms.is_finite() && ms >= 0.0).then(|| Duration::from_secs_f64(ms / 1000.0));
    }
    let value = text(header::RETRY_AFTER.as_str())?;
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e9)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The body, refusing more than `limit` bytes (a misbehaving server must not fill memory).
async fn read_limited(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, AiError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| AiError::Transport(e.without_url().to_string()))?
    {
        if bytes.len() + chunk.len() > limit {
            return Err(AiError::Decode(format!("answer over {limit} bytes")));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// A short reason from the provider's error JSON: OpenAI/OpenRouter `{error:{message}}`,
/// Ollama `{error:"…"}`, FastAPI-style `{detail}`. Never the whole body, never the key.
fn error_detail(bytes: &[u8], provider: &Provider) -> String {
    let value: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    let detail = match value.get("error") {
        Some(error) => error_detail_from_value(error),
        None => error_detail_from_value(&value),
    };
    match &provider.api_key {
        Some(key) if !key.expose_secret().is_empty() => {
            detail.replace(key.expose_secret(), "[redacted]")
        }
        _ => detail,
    }
}

pub(crate) fn error_detail_from_value(error: &Value) -> String {
    let text = match error {
        Value::String(s) => Some(s.as_str()),
        other => ["message", "detail", "error", "msg"]
            .iter()
            .find_map(|k| other.get(*k).and_then(Value::as_str)),
    };
    text.unwrap_or("no details")
        .chars()
        .take(MAX_DETAIL_CHARS)
        .collect()
}

fn embeddings_from(
    answer: CreateEmbeddingResponse,
    expected: usize,
    dimensions: u32,
) -> Result<Embeddings, AiError> {
    let mut data = answer.data;
    if data.len() != expected {
        return Err(AiError::Decode(format!(
            "{} embeddings for {expected} inputs",
            data.len()
        )));
    }
    data.sort_by_key(|d| d.index);
    if data.iter().enumerate().any(|(i, d)| d.index as usize != i) {
        return Err(AiError::Decode(
            "embedding indexes do not match the inputs".into(),
        ));
    }
    if let Some(bad) = data
        .iter()
        .find(|d| d.embedding.len() != dimensions as usize)
    {
        return Err(AiError::WrongDimensions {
            expected: dimensions,
            got: bad.embedding.len(),
        });
    }
    Ok(Embeddings {
        vectors: data.into_iter().map(|d| d.embedding).collect(),
        usage: Usage {
            prompt_tokens: answer.usage.prompt_tokens,
            completion_tokens: 0,
        },
    })
}

fn chat_response_from(answer: CreateChatCompletionResponse) -> Result<ChatResponse, AiError> {
    let usage = answer.usage.as_ref().map(Usage::from).unwrap_or_default();
    let choice = answer
        .choices
        .into_iter()
        .min_by_key(|c| c.index)
        .ok_or_else(|| AiError::Decode("an answer without choices".into()))?;
    let tool_calls = choice
        .message
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .filter_map(|call| match call {
            ChatCompletionMessageToolCalls::Function(call) => Some(ToolCall {
                id: call.id,
                name: call.function.name,
                arguments: call.function.arguments,
            }),
            // We offer only function tools.
            ChatCompletionMessageToolCalls::Custom(_) => None,
        })
        .collect();
    Ok(ChatResponse {
        content: choice.message.content.filter(|c| !c.is_empty()),
        tool_calls,
        usage,
        finish_reason: choice.finish_reason.map(Into::into),
        model: answer.model,
    })
}

/// Finishes the span and the metrics of a stream once, however it ends: done, failed,
/// or dropped by its reader ("cancelled").
struct CallRecord {
    span: tracing::Span,
    started: Instant,
    outcome: Option<&'static str>,
    usage: Option<Usage>,
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        let outcome = self.outcome.unwrap_or("cancelled");
        self.span.record("outcome", outcome);
        observe(
            "chat_stream",
            outcome,
            self.started.elapsed(),
            self.usage.as_ref(),
        );
    }
}

struct StreamState {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<axum::body::Bytes>> + Send>>,
    decoder: SseDecoder,
    assembler: ChatAssembler,
    pending: VecDeque<StreamEvent>,
    ended: bool,
    idle_timeout: Duration,
    /// Set when the provider ignored `stream: true` and answered plain JSON: the body is
    /// collected (bounded) and turned into events at the end.
    json_fallback: Option<Vec<u8>>,
    record: CallRecord,
}

impl StreamState {
    /// The next event, `None` after `Done` or after the first error.
    async fn next_event(&mut self) -> Option<Result<StreamEvent, AiError>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                if let StreamEvent::Done { usage, .. } = &event {
                    self.record.usage = Some(*usage);
                    self.record.outcome = Some("ok");
                }
                return Some(Ok(event));
            }
            if self.ended {
                return None;
            }
            if let Err(error) = self.read_more().await {
                self.ended = true;
                self.record.outcome = Some(error.outcome());
                self.record
                    .span
                    .in_scope(|| tracing::warn!(error = %error, "ai stream failed"));
                return Some(Err(error));
            }
        }
    }

    async fn read_more(&mut self) -> Result<(), AiError> {
        let next = tokio::time::timeout(self.idle_timeout, self.body.next())
            .await
            .map_err(|_| AiError::Timeout)?;
        let mut events = Vec::new();
        match next {
            Some(chunk) => {
                let chunk = chunk.map_err(|e| AiError::Transport(e.without_url().to_string()))?;
                if let Some(buffer) = &mut self.json_fallback {
                    if buffer.len() + chunk.len() > MAX_BODY {
                        return Err(AiError::Decode(format!("answer over {MAX_BODY} bytes")));
                    }
                    buffer.extend_from_slice(&chunk);
                    return Ok(());
                }
                self.decoder.push(&chunk, &mut events)?;
            }
            None => {
                self.ended = true;
                if let Some(buffer) = self.json_fallback.take() {
                    return self.events_from_whole_answer(&buffer);
                }
                self.decoder.finish(&mut events)?;
            }
        }
        for data in &events {
            self.assembler.event(data, &mut self.pending)?;
            if self.assembler.is_done() {
                // Whatever follows `[DONE]` is not ours to read; drop the connection.
                self.ended = true;
                return Ok(());
            }
        }
        if self.ended {
            self.assembler.end(&mut self.pending)?;
        }
        Ok(())
    }

    fn events_from_whole_answer(&mut self, bytes: &[u8]) -> Result<(), AiError> {
        let mut value: Value =
            serde_json::from_slice(bytes).map_err(|e| AiError::Decode(e.to_string()))?;
        compat::patch_chat(&mut value)?;
        let answer: CreateChatCompletionResponse =
            serde_json::from_value(value).map_err(|e| AiError::Decode(e.to_string()))?;
        let response = chat_response_from(answer)?;
        if let Some(text) = response.content {
            self.pending.push_back(StreamEvent::Delta(text));
        }
        self.pending
            .extend(response.tool_calls.into_iter().map(StreamEvent::ToolCall));
        self.pending.push_back(StreamEvent::Done {
            usage: response.usage,
            finish_reason: response.finish_reason,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(base: &str) -> Provider {
        Provider {
            base_url: url::Url::parse(base).unwrap(),
            api_key: Some(SecretString::from("sk-test-SECRET-123")),
            chat_model: "gpt-4o-mini".into(),
            embedding_model: "text-embedding-3-small".into(),
            dimensions: 8,
            public_only: false,
        }
    }

    #[test]
    fn endpoints_join_below_the_base() {
        for base in ["https://api.openai.com/v1", "http://127.0.0.1:1234/v1/"] {
            let url = provider(base).endpoint("chat/completions").unwrap();
            assert!(url.as_str().ends_with("/v1/chat/completions"), "{url}");
        }
        let azure = provider("https://x.example.com/openai/deployments/d?api-version=2024-02-01");
        assert_eq!(
            azure.endpoint("embeddings").unwrap().as_str(),
            "https://x.example.com/openai/deployments/d/embeddings?api-version=2024-02-01"
        );
        assert!(
            provider("ftp://x.example.com/v1")
                .endpoint("embeddings")
                .is_err()
        );
    }

    #[test]
    fn debug_never_shows_the_key() {
        let mut p = provider("https://user:pw-SECRET@api.example.com/v1");
        let client = AiClient::new(Duration::from_secs(1), Arc::new(NoGate)).unwrap();
        let body = br#"{"error":{"message":"Incorrect API key provided: sk-test-SECRET-123"}}"#;
        let error = AiError::Status {
            status: 401,
            detail: error_detail(body, &p),
        };
        for text in [
            format!("{p:?}"),
            format!("{client:?}"),
            format!("{error:?}"),
            error.to_string(),
        ] {
            assert!(!text.contains("SECRET"), "{text}");
        }
        p.api_key = None;
        assert!(format!("{p:?}").contains("api_key_configured: false"));
    }

    #[test]
    fn retry_after_reads_seconds_dates_and_ms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut headers = HeaderMap::new();
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(3)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(20));
        headers.insert(header::RETRY_AFTER, HeaderValue::from_str(&later).unwrap());
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(20)));
        headers.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&headers, now), Some(Duration::from_millis(250)));
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        for tries in 1..10 {
            let wait = backoff(base, tries);
            let exp = (base * 2u32.pow(tries - 1)).min(MAX_BACKOFF);
            assert!(wait >= exp / 2 && wait <= exp, "{tries}: {wait:?}");
        }
    }

    #[test]
    fn statuses_sort_into_permanent_and_transient() {
        let status = |status| AiError::Status {
            status,
            detail: String::new(),
        };
        for s in [400, 401, 403, 404, 422] {
            assert!(status(s).is_permanent(), "{s}");
        }
        for s in [500, 502, 503, 504] {
            assert!(!status(s).is_permanent(), "{s}");
        }
        assert!(AiError::NotConfigured.is_permanent());
        assert!(!AiError::Timeout.is_permanent());
    }
}
