//! The test chat (spec §13): an agent answers messages typed in the app, with the same
//! prompt, knowledge and tools as in Kommo but touching nothing there (tool calls are
//! shown, not carried out). With `Accept: text/event-stream` the answer streams as the
//! model writes it — `sources`, `delta`…, `tool`, `done` (or `error`) events — else it
//! comes as one JSON answer.
//!
//! Nothing holds a database connection while the model answers. A streaming client that
//! goes away ends the model call: the task forwarding the stream stops as soon as the
//! channel to the client closes, and dropping the provider's stream closes its connection.

use std::convert::Infallible;
use std::time::Duration;

use crate::http::json::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::ACCEPT;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;
use validator::Validate;

use crate::agent::prompt::{self, Prompt, Source, Turn};
use crate::agent::turn::{self, Settings, ToolUse};
use crate::ai::{AiError, ChatRequest, FinishReason, Provider, StreamEvent, Usage};
use crate::db;
use crate::db::agents::Agent;
use crate::domain::{AgentId, AuthUser, OrgId};
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{ApiJson, ApiPath, OrgTx, Write};
use crate::knowledge::search::{self, Reader, SearchMode};
use crate::state::AppState;

const USAGE_KIND: &str = "test_chat";
const MAX_MESSAGES: usize = 50;
const MAX_CONTENT_CHARS: usize = 20_000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(test_chat))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChatRole {
    User,
    Assistant,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    pub role: ChatRole,
    #[schema(min_length = 1, max_length = 20000)]
    pub content: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestChat {
    /// The conversation so far, oldest first; the last one is the lead's (`user`).
    #[schema(min_items = 1, max_items = 50)]
    pub messages: Vec<ChatMessage>,
}

impl Validate for TestChat {
    fn validate(&self) -> Result<(), validator::ValidationErrors> {
        let mut errors = validator::ValidationErrors::new();
        let mut add = |field: &'static str, message: String| {
            errors.add(
                field,
                validator::ValidationError::new(field).with_message(message.into()),
            );
        };
        if self.messages.is_empty() || self.messages.len() > MAX_MESSAGES {
            add(
                "messages",
                format!("must hold 1 to {MAX_MESSAGES} messages"),
            );
        } else if self.messages.last().map(|m| m.role) != Some(ChatRole::User) {
            add(
                "messages",
                "the last message must be the lead's (role user)".into(),
            );
        }
        if self
            .messages
            .iter()
            .any(|m| m.content.trim().is_empty() || m.content.chars().count() > MAX_CONTENT_CHARS)
        {
            add(
                "messages",
                format!("every content must be 1 to {MAX_CONTENT_CHARS} characters"),
            );
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TestChatAnswer {
    pub reply: String,
    /// The passages the answer was given.
    pub sources: Vec<Source>,
    /// Tool calls the model made (not carried out in the test chat).
    pub tool_calls: Vec<ToolUse>,
    pub model: String,
    pub tokens_in: u32,
    pub tokens_out: u32,
}

/// Runs the agent on the messages without touching Kommo.
#[utoipa::path(post, path = "/v1/orgs/{org_id}/agents/{agent_id}/test-chat", tag = "agents",
    params(("agent_id" = Uuid, Path)),
    request_body = TestChat,
    responses(
        (status = 200, body = TestChatAnswer,
         description = "The answer; with `Accept: text/event-stream`, server-sent events \
                        `sources`, `delta`, `tool`, `done` (or `error`)"),
        (status = 409, description = "No model provider is configured"),
        (status = 429, description = "The org's daily token quota is used up")))]
pub async fn test_chat(
    State(state): State<AppState>,
    OrgTx {
        user,
        org_id,
        mut tx,
        ..
    }: OrgTx<Write>,
    headers: HeaderMap,
    ApiPath((_, agent_id)): ApiPath<(Uuid, AgentId)>,
    ApiJson(body): ApiJson<TestChat>,
) -> ApiResult<Response> {
    let agent = db::agents::get(&mut tx, org_id, agent_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    tx.commit().await?;
    let provider = state
        .ai
        .provider_for(&state.db, org_id)
        .await?
        .ok_or(ApiError::AiNotConfigured)?;
    if state.ai.over_quota(&state.db, org_id).await? {
        return Err(ApiError::RateLimited {
            retry_after: until_utc_midnight(),
        });
    }
    let (request, sources) = prepare(&state, &user, org_id, &agent, &body).await;
    let streaming = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"));
    if streaming {
        return Ok(stream(state, org_id, provider, request, sources, agent.model).into_response());
    }
    let answer =
        turn::complete(&state.ai, &state.db, org_id, &provider, request, USAGE_KIND).await?;
    Ok(Json(TestChatAnswer {
        reply: answer.text,
        sources,
        tool_calls: answer.tools,
        model: agent.model,
        tokens_in: answer.usage.prompt_tokens,
        tokens_out: answer.usage.completion_tokens,
    })
    .into_response())
}

fn until_utc_midnight() -> Duration {
    let now = chrono::Utc::now();
    let midnight = (now.date_naive() + chrono::Days::new(1))
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc());
    midnight
        .and_then(|m| (m - now).to_std().ok())
        .unwrap_or(Duration::from_secs(3600))
}

/// The prompt, with the knowledge found for the lead's last message.
async fn prepare(
    state: &AppState,
    user: &AuthUser,
    org_id: OrgId,
    agent: &Agent,
    body: &TestChat,
) -> (ChatRequest, Vec<Source>) {
    let turns: Vec<Turn> = body
        .messages
        .iter()
        .map(|m| Turn {
            from_lead: m.role == ChatRole::User,
            text: m.content.clone(),
        })
        .collect();
    let (history, latest) = turns.split_at(turns.len().saturating_sub(1));
    let question: String = latest
        .iter()
        .map(|t| t.text.as_str())
        .collect::<String>()
        .chars()
        .take(1000)
        .collect();
    let query = search::Query {
        text: &question,
        agent: Some(AgentId(agent.id)),
        limit: prompt::KNOWLEDGE_HITS,
        mode: SearchMode::Hybrid,
    };
    let knowledge = match search::search(&state.db, &state.ai, Reader::Member(user), org_id, &query)
        .await
    {
        Ok(found) => found.hits,
        Err(e) => {
            tracing::warn!(error = %e, "knowledge search failed; the test chat answers without it");
            Vec::new()
        }
    };
    let built = prompt::build(&Prompt {
        agent_name: &agent.name,
        instructions: &agent.instructions,
        knowledge: &knowledge,
        lead_facts: &[],
        history,
        latest,
    });
    let settings = Settings {
        model: &agent.model,
        temperature: agent.temperature,
        max_tokens: agent.max_tokens,
    };
    (turn::request(&settings, built.messages), built.sources)
}

/// The answer as server-sent events, forwarded by a task that stops when the client goes.
fn stream(
    state: AppState,
    org_id: OrgId,
    provider: Provider,
    request: ChatRequest,
    sources: Vec<Source>,
    model: String,
) -> impl IntoResponse {
    let (events, receiver) = mpsc::channel::<Event>(32);
    tokio::spawn(async move {
        let forward = forward(&state, org_id, &provider, request, sources, model, &events);
        tokio::select! {
            () = forward => {}
            // The client hung up: dropping `forward` drops the provider's stream.
            () = events.closed() => {}
        }
    });
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|event| (Ok::<_, Infallible>(event), receiver))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

fn event(name: &str, data: serde_json::Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

async fn forward(
    state: &AppState,
    org_id: OrgId,
    provider: &Provider,
    mut request: ChatRequest,
    sources: Vec<Source>,
    model: String,
    events: &mpsc::Sender<Event>,
) {
    let send = |e: Event| async move { events.send(e).await.is_ok() };
    if !send(event("sources", json!(sources))).await {
        return;
    }
    let mut total = Usage::default();
    for round in 0..turn::MAX_ROUNDS {
        if round + 1 == turn::MAX_ROUNDS {
            request.tools.clear();
        }
        let outcome = one_round(state, org_id, provider, &request, events).await;
        let (calls, usage, finish_reason) = match outcome {
            Ok(Some(done)) => done,
            Ok(None) => return, // The client went away.
            Err(e) => {
                tracing::warn!(error = %e, "the test chat's model call failed");
                let _ = events
                    .send(event(
                        "error",
                        json!({"detail": format!("The model provider failed: {e}.")}),
                    ))
                    .await;
                return;
            }
        };
        total.prompt_tokens = total.prompt_tokens.saturating_add(usage.prompt_tokens);
        total.completion_tokens = total
            .completion_tokens
            .saturating_add(usage.completion_tokens);
        if calls.is_empty() {
            let done = json!({
                "model": model,
                "finish_reason": finish_reason,
                "tokens_in": total.prompt_tokens,
                "tokens_out": total.completion_tokens,
            });
            let _ = send(event("done", done)).await;
            return;
        }
        let uses: Vec<ToolUse> = calls.iter().map(ToolUse::of).collect();
        for used in &uses {
            if !send(event("tool", json!(used))).await {
                return;
            }
        }
        turn::continue_after_tools(&mut request, calls, &uses);
    }
}

type RoundOutcome = (Vec<crate::ai::ToolCall>, Usage, Option<String>);

/// One streamed model call: its deltas forwarded, its tool calls and usage returned;
/// `None` when the client went away.
async fn one_round(
    state: &AppState,
    org_id: OrgId,
    provider: &Provider,
    request: &ChatRequest,
    events: &mpsc::Sender<Event>,
) -> Result<Option<RoundOutcome>, AiError> {
    let mut stream = state
        .ai
        .client()
        .chat_stream(org_id.0, provider, request)
        .await?;
    let mut calls = Vec::new();
    while let Some(item) = stream.next().await {
        match item? {
            StreamEvent::Delta(text) => {
                if events
                    .send(event("delta", json!({"text": text})))
                    .await
                    .is_err()
                {
                    return Ok(None);
                }
            }
            StreamEvent::ToolCall(call) => calls.push(call),
            StreamEvent::Done {
                usage,
                finish_reason,
            } => {
                let model = request.model.as_deref().unwrap_or(&provider.chat_model);
                state
                    .ai
                    .record_usage(&state.db, org_id, USAGE_KIND, model, usage)
                    .await;
                let reason = finish_reason.map(|r| {
                    match r {
                        FinishReason::Stop => "stop",
                        FinishReason::Length => "length",
                        FinishReason::ToolCalls => "tool_calls",
                        FinishReason::ContentFilter => "content_filter",
                    }
                    .to_owned()
                });
                return Ok(Some((calls, usage, reason)));
            }
        }
    }
    Err(AiError::Upstream(
        "the stream ended before it was done".into(),
    ))
}
