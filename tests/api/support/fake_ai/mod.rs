//! A fake OpenAI-compatible provider: `/v1/embeddings` and `/v1/chat/completions` (JSON
//! and `stream: true` SSE). Embeddings are deterministic and carry meaning (texts sharing
//! words are close), so vector search can rank; chat answers come from a scripted queue,
//! or else are derived from the request (a knowledge graph of the passages' capitalised
//! names, a JSON value for any other schema, a tool call asked for
//! with `[[call:NAME {args}]]`, a quote of the system prompt's `Context:` block, an echo).
//! Faults (statuses with `Retry-After`, hangs, latency, slow chunks) are injectable and
//! every request is recorded. The app's `AI_BASE_URL` is `FakeAi::base_url()`.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

const DEFAULT_DIMENSIONS: usize = 1536;
/// How deep the schema-driven generator follows nested objects, arrays and `$ref`s
/// (a recursive schema would otherwise never end).
const MAX_SCHEMA_DEPTH: usize = 8;
const CONTEXT_QUOTE_CHARS: usize = 160;

/// One scripted chat answer, consumed in order by `/v1/chat/completions`.
#[derive(Debug, Clone)]
pub enum Answer {
    Text(String),
    /// Sent as the message content, serialised.
    Json(Value),
    ToolCall {
        name: String,
        arguments: Value,
    },
    /// An error answer, with `Retry-After` seconds when given.
    Status(u16, Option<u64>),
    /// Accept the request and never answer.
    Hang,
}

/// One request as it reached the fake.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub at: Instant,
    /// e.g. `/v1/embeddings`.
    pub path: String,
    pub authorization: Option<String>,
    /// The JSON body (`Null` when it was not JSON).
    pub body: Value,
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Status(u16, Option<u64>),
    Hang,
}

struct State {
    answers: VecDeque<Answer>,
    faults: VecDeque<Fault>,
    latency: Duration,
    chunk_delay: Duration,
    api_key: Option<String>,
    wrong_dimensions: Option<usize>,
    requests: Vec<RecordedRequest>,
    streams_started: usize,
    streams_finished: usize,
    /// Streams whose reader went away before the last chunk.
    disconnects: usize,
}

/// Aborts the server task when the last handle goes away.
struct ServerGuard(tokio::task::JoinHandle<()>);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Clone)]
pub struct FakeAi {
    origin: String,
    state: Arc<Mutex<State>>,
    _server: Arc<ServerGuard>,
}

impl FakeAi {
    pub async fn start() -> FakeAi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake AI provider");
        let addr: SocketAddr = listener.local_addr().expect("fake AI address");
        let state = Arc::new(Mutex::new(State {
            answers: VecDeque::new(),
            faults: VecDeque::new(),
            latency: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            api_key: None,
            wrong_dimensions: None,
            requests: Vec::new(),
            streams_started: 0,
            streams_finished: 0,
            disconnects: 0,
        }));
        let shared = state.clone();
        let app = Router::new().fallback(move |req: Request| handle(shared.clone(), req));
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("fake AI serves");
        });
        FakeAi {
            origin: format!("http://{addr}"),
            state,
            _server: Arc::new(ServerGuard(server)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `http://127.0.0.1:PORT/v1`: the value for `AI_BASE_URL`.
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.origin)
    }

    /// Queues a chat answer; queued answers go before the derived ones.
    pub fn push_answer(&self, answer: Answer) {
        self.lock().answers.push_back(answer);
    }

    /// The next `n` requests (either endpoint) answer `status`, with `Retry-After` when
    /// given. Faults go before scripted answers.
    pub fn fail_next(&self, n: usize, status: u16, retry_after: Option<u64>) {
        let mut state = self.lock();
        state
            .faults
            .extend(std::iter::repeat_n(Fault::Status(status, retry_after), n));
    }

    /// The next `n` requests are accepted and never answered.
    pub fn hang_next(&self, n: usize) {
        self.lock()
            .faults
            .extend(std::iter::repeat_n(Fault::Hang, n));
    }

    /// A pause before every answer (before its first byte).
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// A pause between the chunks of a streamed answer.
    pub fn set_chunk_delay(&self, delay: Duration) {
        self.lock().chunk_delay = delay;
    }

    /// Requests without `Authorization: Bearer {key}` then answer 401; `None` (the
    /// default) accepts any, like Ollama.
    pub fn require_api_key(&self, key: Option<&str>) {
        self.lock().api_key = key.map(str::to_owned);
    }

    /// Embeddings of this many dimensions, whatever was asked (a misconfigured model).
    pub fn set_wrong_dimensions(&self, dimensions: Option<usize>) {
        self.lock().wrong_dimensions = dimensions;
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    pub fn embedding_calls(&self) -> Vec<RecordedRequest> {
        self.requests_to("/v1/embeddings")
    }

    pub fn chat_calls(&self) -> Vec<RecordedRequest> {
        self.requests_to("/v1/chat/completions")
    }

    fn requests_to(&self, path: &str) -> Vec<RecordedRequest> {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// (started, finished, disconnected) streamed answers.
    pub fn stream_counts(&self) -> (usize, usize, usize) {
        let state = self.lock();
        (
            state.streams_started,
            state.streams_finished,
            state.disconnects,
        )
    }

    /// The vector the fake gives `text`, for tests that compute expected rankings.
    pub fn embedding_of(text: &str, dimensions: usize) -> Vec<f32> {
        embed_text(text, dimensions)
    }
}

async fn handle(state: Arc<Mutex<State>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, 64 * 1024 * 1024).await {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        Err(_) => return StatusCode::BAD_REQUEST.into_response(),
    };
    let path = parts.uri.path().to_owned();
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (fault, latency, authorized) = {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        s.requests.push(RecordedRequest {
            at: Instant::now(),
            path: path.clone(),
            authorization: authorization.clone(),
            body: body.clone(),
        });
        let authorized = match &s.api_key {
            Some(key) => authorization.as_deref() == Some(format!("Bearer {key}").as_str()),
            None => true,
        };
        (s.faults.pop_front(), s.latency, authorized)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match fault {
        Some(Fault::Status(status, retry_after)) => return error_response(status, retry_after),
        Some(Fault::Hang) => return hang().await,
        None => {}
    }
    if !authorized {
        return error_response(401, None);
    }
    match path.as_str() {
        "/v1/embeddings" => embeddings(&state, &body),
        "/v1/chat/completions" => chat(&state, &body).await,
        _ => error_response(404, None),
    }
}

async fn hang() -> Response {
    // Long enough for any test; the server task is aborted when the fake goes away.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    error_response(504, None)
}

fn error_response(status: u16, retry_after: Option<u64>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (message, kind) = match status.as_u16() {
        401 => ("Incorrect API key provided", "invalid_request_error"),
        404 => ("The model or route does not exist", "invalid_request_error"),
        429 => ("Rate limit reached for requests", "requests"),
        400..=499 => (
            "The request was refused by the fake",
            "invalid_request_error",
        ),
        _ => ("The fake provider failed", "server_error"),
    };
    let mut response = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
            .to_string(),
    )
        .into_response();
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

fn json_response(body: Value) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------
// Embeddings

fn embeddings(state: &Arc<Mutex<State>>, body: &Value) -> Response {
    let inputs: Vec<String> = match &body["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_owned())
            .collect(),
        _ => return error_response(400, None),
    };
    let requested = body["dimensions"]
        .as_u64()
        .map_or(DEFAULT_DIMENSIONS, |d| d as usize);
    let dimensions = state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .wrong_dimensions
        .unwrap_or(requested);
    let tokens: usize = inputs.iter().map(|t| words(t).len()).sum();
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            json!({"object": "embedding", "index": index,
                   "embedding": embed_text(text, dimensions)})
        })
        .collect();
    json_response(json!({
        "object": "list",
        "data": data,
        "model": body["model"].as_str().unwrap_or("fake-embedding"),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
}

/// Lowercase Unicode words (letters and digits), for Russian as for English.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// FNV-1a: stable across runs and Rust versions, unlike the std hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Each word, and its first five characters (a crude stem, so "доставка" and "доставку"
/// meet), adds ±1 to one bucket; the sum is L2-normalised.
fn embed_text(text: &str, dimensions: usize) -> Vec<f32> {
    let dimensions = dimensions.max(1);
    let mut vector = vec![0f32; dimensions];
    let mut add = |feature: &str| {
        let hash = fnv1a(feature.as_bytes());
        let bucket = (hash % dimensions as u64) as usize;
        vector[bucket] += if hash >> 63 == 0 { 1.0 } else { -1.0 };
    };
    for word in words(text) {
        add(&word);
        if word.chars().count() > 5 {
            let stem: String = word.chars().take(5).collect();
            add(&format!("stem:{stem}"));
        }
    }
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm == 0.0 {
        // An empty text still gets a unit vector: a zero vector has no cosine.
        vector[0] = 1.0;
    } else {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
    vector
}

// ---------------------------------------------------------------------------------------
// Chat

/// What to say, before it is shaped as JSON or as chunks.
enum Reply {
    Text(String),
    ToolCall { name: String, arguments: String },
}

async fn chat(state: &Arc<Mutex<State>>, body: &Value) -> Response {
    let scripted = state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .answers
        .pop_front();
    let reply = match scripted {
        Some(Answer::Text(text)) => Reply::Text(text),
        Some(Answer::Json(value)) => Reply::Text(value.to_string()),
        Some(Answer::ToolCall { name, arguments }) => Reply::ToolCall {
            name,
            arguments: arguments.to_string(),
        },
        Some(Answer::Status(status, retry_after)) => return error_response(status, retry_after),
        Some(Answer::Hang) => return hang().await,
        None => derived_reply(body),
    };
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let prompt_tokens: usize = messages
        .iter()
        .map(|m| words(m["content"].as_str().unwrap_or_default()).len())
        .sum();
    let completion_tokens = match &reply {
        Reply::Text(text) => words(text).len(),
        Reply::ToolCall { arguments, .. } => words(arguments).len().max(1),
    };
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    });
    let model = body["model"].as_str().unwrap_or("fake-chat").to_owned();
    if body["stream"].as_bool() == Some(true) {
        return stream_reply(state, &model, reply, usage);
    }
    let (message, finish_reason) = match reply {
        Reply::Text(text) => (json!({"role": "assistant", "content": text}), "stop"),
        Reply::ToolCall { name, arguments } => (
            json!({"role": "assistant", "content": null, "tool_calls": [{
                "id": "call_fake_0", "type": "function",
                "function": {"name": name, "arguments": arguments},
            }]}),
            "tool_calls",
        ),
    };
    json_response(json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": usage,
    }))
}

fn message_text(message: &Value) -> &str {
    message["content"].as_str().unwrap_or_default()
}

/// The answer when nothing is scripted: schema → conforming JSON; `[[call:…]]` in the
/// last user turn → that tool call; else a quote of the `Context:` block or an echo.
fn derived_reply(body: &Value) -> Reply {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .map(message_text)
        .unwrap_or_default()
        .to_owned();
    let format = &body["response_format"];
    if format["type"] == "json_schema" {
        if format["json_schema"]["name"] == "knowledge_graph"
            && let Some(passages) = messages
                .iter()
                .map(message_text)
                .find(|text| text.starts_with("Passages:"))
        {
            return Reply::Text(graph_for(passages).to_string());
        }
        let schema = &format["json_schema"]["schema"];
        return Reply::Text(value_for_schema(schema, &last_user).to_string());
    }
    let offered: Vec<&str> = body["tools"]
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .filter_map(|t| t["function"]["name"].as_str())
                .collect()
        })
        .unwrap_or_default();
    let last_is_user = messages.last().is_some_and(|m| m["role"] == "user");
    if last_is_user
        && let Some((name, arguments)) = requested_tool_call(&last_user)
        && offered.contains(&name.as_str())
    {
        return Reply::ToolCall { name, arguments };
    }
    let context = messages
        .iter()
        .rev()
        .filter(|m| m["role"] == "system")
        .find_map(|m| {
            let text = message_text(m);
            text.find("Context:")
                .map(|at| text[at + "Context:".len()..].trim_start().to_owned())
        });
    match context {
        Some(context) => {
            let quote: String = context.chars().take(CONTEXT_QUOTE_CHARS).collect();
            Reply::Text(format!("From the context: {quote}"))
        }
        None => Reply::Text(format!("You said: {last_user}")),
    }
}

/// A knowledge graph read off `[chunk N]` passages the way a model would, but
/// predictably: every capitalised word of three letters or more is an `organization`
/// mentioned in the chunks it appears in, and two such names in one sentence are
/// `mentioned_with` each other (first to second).
fn graph_for(passages: &str) -> Value {
    let mut entities: Vec<(String, Vec<usize>)> = Vec::new();
    let mut edges: Vec<(String, String, usize)> = Vec::new();
    // Names count only inside a passage, not in the prompt's own header.
    let mut chunk: Option<usize> = None;
    for line in passages.lines() {
        if let Some(n) = line
            .strip_prefix("[chunk ")
            .and_then(|rest| rest.strip_suffix(']'))
            .and_then(|n| n.parse().ok())
        {
            chunk = Some(n);
            continue;
        }
        let Some(chunk) = chunk else {
            continue;
        };
        for sentence in line.split(['.', '!', '?']) {
            let names: Vec<String> = sentence
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| {
                    w.chars().count() >= 3 && w.chars().next().is_some_and(char::is_uppercase)
                })
                .map(str::to_owned)
                .collect();
            for name in &names {
                match entities.iter_mut().find(|(n, _)| n == name) {
                    Some((_, chunks)) if !chunks.contains(&chunk) => chunks.push(chunk),
                    Some(_) => {}
                    None => entities.push((name.clone(), vec![chunk])),
                }
            }
            if let [first, second, ..] = names.as_slice()
                && first != second
            {
                edges.push((first.clone(), second.clone(), chunk));
            }
        }
    }
    entities.truncate(100);
    edges.retain(|(a, b, _)| {
        entities.iter().any(|(n, _)| n == a) && entities.iter().any(|(n, _)| n == b)
    });
    edges.truncate(200);
    json!({
        "entities": entities.iter().map(|(name, chunks)| json!({
            "name": name, "type": "organization",
            "description": format!("{name}, as the passages name it."), "chunks": chunks,
        })).collect::<Vec<_>>(),
        "relationships": edges.iter().map(|(source, target, chunk)| json!({
            "source": source, "target": target, "type": "mentioned_with",
            "description": null, "chunks": [chunk],
        })).collect::<Vec<_>>(),
    })
}

/// `[[call:NAME {json}]]` → (NAME, the JSON text; `{}` when absent).
fn requested_tool_call(text: &str) -> Option<(String, String)> {
    let start = text.find("[[call:")? + "[[call:".len();
    let rest = &text[start..];
    let name_end = rest.find(|c: char| c.is_whitespace() || c == ']' || c == '{')?;
    let name = rest[..name_end].to_owned();
    let after = rest[name_end..].trim_start();
    let arguments = if after.starts_with('{') {
        let mut values = serde_json::Deserializer::from_str(after).into_iter::<Value>();
        values.next()?.ok()?.to_string()
    } else {
        "{}".to_owned()
    };
    (!name.is_empty()).then_some((name, arguments))
}

/// A value conforming to `schema` (the subset strict mode allows): objects with every
/// property, arrays of one item, the first enum value, strings derived from the property
/// name and the prompt.
fn value_for_schema(root: &Value, prompt: &str) -> Value {
    let seed: String = words(prompt)
        .into_iter()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    generate(root, root, "value", &seed, 0)
}

fn generate(root: &Value, schema: &Value, name: &str, seed: &str, depth: usize) -> Value {
    if depth > MAX_SCHEMA_DEPTH {
        return Value::Null;
    }
    if let Some(reference) = schema["$ref"].as_str() {
        let target = reference
            .strip_prefix("#/")
            .map(|path| {
                path.split('/')
                    .fold(root, |node, key| node.get(key).unwrap_or(&Value::Null))
            })
            .unwrap_or(&Value::Null);
        return generate(root, target, name, seed, depth + 1);
    }
    if let Some(value) = schema.get("const") {
        return value.clone();
    }
    if let Some(first) = schema["enum"].as_array().and_then(|e| e.first()) {
        return first.clone();
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(first) = schema[key].as_array().and_then(|alts| {
            alts.iter()
                .find(|a| a["type"] != "null")
                .or_else(|| alts.first())
        }) {
            return generate(root, first, name, seed, depth + 1);
        }
    }
    let kind = match &schema["type"] {
        Value::String(kind) => kind.as_str(),
        Value::Array(kinds) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|k| *k != "null")
            .unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ if schema.get("items").is_some() => "array",
        _ => "string",
    };
    match kind {
        "object" => {
            let mut object = Map::new();
            if let Some(properties) = schema["properties"].as_object() {
                for (key, property) in properties {
                    object.insert(key.clone(), generate(root, property, key, seed, depth + 1));
                }
            }
            Value::Object(object)
        }
        "array" => Value::Array(vec![generate(
            root,
            &schema["items"],
            name,
            seed,
            depth + 1,
        )]),
        "integer" => json!(schema["minimum"].as_i64().unwrap_or(1)),
        "number" => json!(schema["minimum"].as_f64().unwrap_or(1.0)),
        "boolean" => Value::Bool(true),
        "null" => Value::Null,
        _ => Value::String(match schema["format"].as_str() {
            Some("date-time") => "2024-01-01T00:00:00Z".to_owned(),
            Some("date") => "2024-01-01".to_owned(),
            Some("email") => "lead@example.com".to_owned(),
            Some("uuid") => "00000000-0000-4000-8000-000000000000".to_owned(),
            _ if seed.is_empty() => name.to_owned(),
            _ => format!("{name} {seed}"),
        }),
    }
}

/// Text split into words that keep their leading space, so the pieces join back exactly.
fn word_chunks(text: &str) -> Vec<String> {
    let mut chunks: Vec<String> = Vec::new();
    for piece in text.split_inclusive(' ') {
        if piece == " " && !chunks.is_empty() {
            if let Some(last) = chunks.last_mut() {
                last.push(' ');
            }
        } else {
            chunks.push(piece.to_owned());
        }
    }
    chunks
}

fn stream_reply(state: &Arc<Mutex<State>>, model: &str, reply: Reply, usage: Value) -> Response {
    let chunk = |delta: Value, finish: Option<&str>| {
        json!({
            "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    };
    let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
    let finish = match reply {
        Reply::Text(text) => {
            events.extend(
                word_chunks(&text)
                    .into_iter()
                    .map(|w| chunk(json!({"content": w}), None)),
            );
            "stop"
        }
        Reply::ToolCall { name, arguments } => {
            events.push(chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_fake_0", "type": "function",
                    "function": {"name": name, "arguments": ""}}]}),
                None,
            ));
            // The arguments in three pieces, cut on character boundaries, as real
            // providers cut them anywhere.
            let chars: Vec<char> = arguments.chars().collect();
            let step = chars.len().div_ceil(3).max(1);
            for piece in chars.chunks(step) {
                let piece: String = piece.iter().collect();
                events.push(chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                    None,
                ));
            }
            "tool_calls"
        }
    };
    events.push(chunk(json!({}), Some(finish)));
    events.push(json!({
        "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": model, "choices": [], "usage": usage,
    }));
    let mut lines: Vec<String> = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    lines.push("data: [DONE]\n\n".to_owned());

    let (delay, shared) = {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        s.streams_started += 1;
        (s.chunk_delay, state.clone())
    };
    // A capacity of one makes a send fail soon after the reader hangs up, which is how
    // the fake notices a dropped stream.
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    tokio::spawn(async move {
        for (i, line) in lines.into_iter().enumerate() {
            if i > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if tx.send(Bytes::from(line)).await.is_err() {
                shared.lock().unwrap_or_else(|e| e.into_inner()).disconnects += 1;
                return;
            }
        }
        shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .streams_finished += 1;
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, Infallible>(bytes), rx))
    });
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn embeddings_are_stable_and_rank_by_shared_words() {
        let a = embed_text("Доставка товаров по Москве", 256);
        assert_eq!(a, embed_text("доставка ТОВАРОВ по москве!", 256));
        assert!((cosine(&a, &a) - 1.0).abs() < 1e-5);
        let inflected = embed_text("доставку товара в Москву", 256);
        let unrelated = embed_text("refund policy for damaged goods", 256);
        assert!(cosine(&a, &inflected) > cosine(&a, &unrelated) + 0.2);
        assert_eq!(embed_text("", 16).len(), 16);
    }

    #[test]
    fn schema_values_follow_the_schema() {
        let schema = json!({
            "type": "object",
            "properties": {
                "entities": {"type": "array", "items": {"$ref": "#/$defs/entity"}},
                "confidence": {"type": "number"},
                "note": {"type": ["string", "null"]},
            },
            "$defs": {"entity": {"type": "object", "properties": {
                "name": {"type": "string"},
                "type": {"type": "string", "enum": ["person", "company"]},
                "child": {"$ref": "#/$defs/entity"},
            }}},
        });
        let value = value_for_schema(&schema, "Acme sells pumps");
        assert_eq!(value["entities"][0]["type"], "person");
        assert_eq!(value["entities"][0]["name"], "name acme sells pumps");
        assert!(value["confidence"].is_number());
        assert!(value["note"].is_string());
        // The recursive `child` ends at the depth cap instead of looping.
        assert!(value["entities"][0]["child"].is_object());
    }

    #[test]
    fn tool_call_markers_parse() {
        assert_eq!(
            requested_tool_call(
                "please [[call:create_task {\"text\": \"a]]b\", \"due_in_hours\": 2}]] now"
            ),
            Some((
                "create_task".to_owned(),
                json!({"text": "a]]b", "due_in_hours": 2}).to_string()
            ))
        );
        assert_eq!(
            requested_tool_call("[[call:handoff_to_human]]"),
            Some(("handoff_to_human".to_owned(), "{}".to_owned()))
        );
        assert_eq!(requested_tool_call("no marker"), None);
    }

    #[test]
    fn derived_text_quotes_the_context_or_echoes() {
        let body = json!({"messages": [
            {"role": "system", "content": "Be brief.\nContext:\nDelivery takes 3 days."},
            {"role": "user", "content": "How long?"},
        ]});
        match derived_reply(&body) {
            Reply::Text(text) => assert!(text.contains("Delivery takes 3 days."), "{text}"),
            Reply::ToolCall { .. } => panic!("a tool call"),
        }
        let body = json!({"messages": [{"role": "user", "content": "hello"}]});
        match derived_reply(&body) {
            Reply::Text(text) => assert_eq!(text, "You said: hello"),
            Reply::ToolCall { .. } => panic!("a tool call"),
        }
    }

    #[test]
    fn word_chunks_join_back() {
        let text = "Hello  big world ";
        assert_eq!(word_chunks(text).concat(), text);
        assert_eq!(word_chunks("a b"), vec!["a ", "b"]);
    }
}
