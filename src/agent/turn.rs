//! One answer of an agent: the model called with the agent's settings and tools until it
//! answers in words (at most `MAX_ROUNDS` calls). Tool calls are checked and recorded as
//! intents; the model is told they will be done, and the caller does them afterwards,
//! once the answer is stored, so a retried job never repeats an effect it already had.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::agent::tools::{self, Intent};
use crate::ai::{Ai, AiError, ChatRequest, Message, Provider, ToolCall, Usage};
use crate::db::Db;
use crate::domain::OrgId;

/// Model calls per answer: tool results go back at most twice.
pub const MAX_ROUNDS: usize = 3;

/// The model settings an answer is made with (the agent's).
pub struct Settings<'a> {
    pub model: &'a str,
    pub temperature: f64,
    pub max_tokens: i32,
}

pub fn request(settings: &Settings<'_>, messages: Vec<Message>) -> ChatRequest {
    ChatRequest {
        model: Some(settings.model.to_owned()),
        messages,
        tools: tools::definitions(),
        json_schema: None,
        temperature: Some(settings.temperature as f32),
        max_tokens: u32::try_from(settings.max_tokens).ok(),
    }
}

/// A tool call as recorded on the outbound message and shown by the test chat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ToolUse {
    pub name: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub arguments: Value,
    /// What will be done; absent when the call was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub intent: Option<Intent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ToolUse {
    pub fn of(call: &ToolCall) -> ToolUse {
        let arguments = serde_json::from_str(&call.arguments).unwrap_or(Value::Null);
        match tools::parse(call) {
            Ok(intent) => ToolUse {
                name: call.name.clone(),
                arguments,
                intent: Some(intent),
                error: None,
            },
            Err(error) => ToolUse {
                name: call.name.clone(),
                arguments,
                intent: None,
                error: Some(error),
            },
        }
    }

    /// What the model is told the call did.
    pub fn result_for_model(&self) -> String {
        match (&self.intent, &self.error) {
            (Some(Intent::HandoffToHuman { .. }), _) => {
                "A person from the team will take over this conversation. Tell the lead so, briefly.".into()
            }
            (Some(Intent::CreateTask { .. }), _) => "The task will be created.".into(),
            (None, Some(error)) => format!("The call was refused: {error}"),
            (None, None) => "The call was refused.".into(),
        }
    }

    pub fn is_handoff(&self) -> bool {
        matches!(self.intent, Some(Intent::HandoffToHuman { .. }))
    }
}

#[derive(Debug, Clone, Default)]
pub struct Answer {
    pub text: String,
    pub tools: Vec<ToolUse>,
    pub usage: Usage,
}

fn add(total: &mut Usage, more: Usage) {
    total.prompt_tokens = total.prompt_tokens.saturating_add(more.prompt_tokens);
    total.completion_tokens = total
        .completion_tokens
        .saturating_add(more.completion_tokens);
}

/// Appends the model's tool calls and their results to the conversation it sees next.
pub fn continue_after_tools(request: &mut ChatRequest, calls: Vec<ToolCall>, uses: &[ToolUse]) {
    let results: Vec<Message> = calls
        .iter()
        .zip(uses)
        .map(|(call, used)| Message::tool_result(call.id.clone(), used.result_for_model()))
        .collect();
    request.messages.push(Message::assistant_tool_calls(calls));
    request.messages.extend(results);
}

/// Calls the model until it answers in words, recording its tool calls; usage is
/// recorded under `kind`.
pub async fn complete(
    ai: &Ai,
    db: &Db,
    org_id: OrgId,
    provider: &Provider,
    mut request: ChatRequest,
    kind: &str,
) -> Result<Answer, AiError> {
    let mut answer = Answer::default();
    for round in 0..MAX_ROUNDS {
        // The last round may not call tools again: it must answer.
        if round + 1 == MAX_ROUNDS {
            request.tools.clear();
        }
        let response = ai.chat(db, org_id, provider, &request, kind).await?;
        add(&mut answer.usage, response.usage);
        let text = response.content.unwrap_or_default();
        if response.tool_calls.is_empty() {
            answer.text = text.trim().to_owned();
            return Ok(answer);
        }
        let uses: Vec<ToolUse> = response.tool_calls.iter().map(ToolUse::of).collect();
        answer.tools.extend(uses.iter().cloned());
        continue_after_tools(&mut request, response.tool_calls, &uses);
        if !text.trim().is_empty() {
            answer.text = text.trim().to_owned();
        }
    }
    Ok(answer)
}
