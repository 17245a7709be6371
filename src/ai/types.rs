//! Our side of the provider API: the few request and answer shapes the service uses, kept
//! apart from `async-openai`'s wire types so that a change there touches only the mapping
//! below, not the agent runtime or the knowledge pipeline.

use std::pin::Pin;
use std::task::{Context, Poll};

use async_openai::types::chat::{
    ChatCompletionMessageToolCall, ChatCompletionMessageToolCalls,
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestAssistantMessageContent,
    ChatCompletionRequestMessage, ChatCompletionRequestSystemMessage,
    ChatCompletionRequestSystemMessageContent, ChatCompletionRequestToolMessage,
    ChatCompletionRequestToolMessageContent, ChatCompletionRequestUserMessage,
    ChatCompletionRequestUserMessageContent, ChatCompletionTool, ChatCompletionTools,
    CreateChatCompletionRequest, FunctionCall, FunctionObject, ResponseFormat,
    ResponseFormatJsonSchema,
};
use futures_util::Stream;
use serde_json::Value;

use crate::ai::AiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: String,
    /// The calls an assistant turn made (sent back so the model sees its own calls).
    pub tool_calls: Vec<ToolCall>,
    /// For a `Tool` message: the call it answers.
    pub tool_call_id: Option<String>,
}

impl Message {
    fn new(role: Role, content: impl Into<String>) -> Message {
        Message {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    pub fn system(content: impl Into<String>) -> Message {
        Message::new(Role::System, content)
    }

    pub fn user(content: impl Into<String>) -> Message {
        Message::new(Role::User, content)
    }

    pub fn assistant(content: impl Into<String>) -> Message {
        Message::new(Role::Assistant, content)
    }

    /// The assistant turn that asked for these tool calls.
    pub fn assistant_tool_calls(tool_calls: Vec<ToolCall>) -> Message {
        Message {
            tool_calls,
            ..Message::new(Role::Assistant, "")
        }
    }

    /// The result of one tool call, answering `tool_call_id`.
    pub fn tool_result(tool_call_id: impl Into<String>, content: impl Into<String>) -> Message {
        Message {
            tool_call_id: Some(tool_call_id.into()),
            ..Message::new(Role::Tool, content)
        }
    }
}

/// A function the model may call; `parameters` is its JSON Schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: String,
    pub parameters: Value,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatRequest {
    /// `None`: the provider's `chat_model`.
    pub model: Option<String>,
    pub messages: Vec<Message>,
    pub tools: Vec<Tool>,
    /// `(name, schema)`: the answer must be JSON conforming to the schema (strict mode).
    pub json_schema: Option<(String, Value)>,
    pub temperature: Option<f32>,
    pub max_tokens: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as the model wrote them: JSON text, not yet validated.
    pub arguments: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    pub content: Option<String>,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Usage,
    pub finish_reason: Option<FinishReason>,
    /// The model that answered, as the provider names it.
    pub model: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    /// One vector per input, in input order.
    pub vectors: Vec<Vec<f32>>,
    pub usage: Usage,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// Text as the model writes it.
    Delta(String),
    /// A tool call, once all its pieces have arrived.
    ToolCall(ToolCall),
    /// The last event: nothing follows.
    Done {
        usage: Usage,
        finish_reason: Option<FinishReason>,
    },
}

/// A streamed chat answer. Dropping it closes the connection, which stops the generation
/// (and its cost) at the provider.
pub struct ChatStream {
    pub(crate) inner: Pin<Box<dyn Stream<Item = Result<StreamEvent, AiError>> + Send>>,
}

impl Stream for ChatStream {
    type Item = Result<StreamEvent, AiError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl std::fmt::Debug for ChatStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatStream").finish_non_exhaustive()
    }
}

impl From<async_openai::types::chat::FinishReason> for FinishReason {
    fn from(reason: async_openai::types::chat::FinishReason) -> FinishReason {
        use async_openai::types::chat::FinishReason as Wire;
        match reason {
            Wire::Stop => FinishReason::Stop,
            Wire::Length => FinishReason::Length,
            // The deprecated single function call is a tool call to us.
            Wire::ToolCalls | Wire::FunctionCall => FinishReason::ToolCalls,
            Wire::ContentFilter => FinishReason::ContentFilter,
        }
    }
}

impl From<&async_openai::types::chat::CompletionUsage> for Usage {
    fn from(usage: &async_openai::types::chat::CompletionUsage) -> Usage {
        Usage {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
        }
    }
}

fn wire_message(message: &Message) -> ChatCompletionRequestMessage {
    match message.role {
        Role::System => ChatCompletionRequestMessage::System(ChatCompletionRequestSystemMessage {
            content: ChatCompletionRequestSystemMessageContent::Text(message.content.clone()),
            name: None,
        }),
        Role::User => ChatCompletionRequestMessage::User(ChatCompletionRequestUserMessage {
            content: ChatCompletionRequestUserMessageContent::Text(message.content.clone()),
            name: None,
        }),
        Role::Assistant => {
            let tool_calls: Vec<_> = message
                .tool_calls
                .iter()
                .map(|call| {
                    ChatCompletionMessageToolCalls::Function(ChatCompletionMessageToolCall {
                        id: call.id.clone(),
                        function: FunctionCall {
                            name: call.name.clone(),
                            arguments: call.arguments.clone(),
                        },
                    })
                })
                .collect();
            // A turn that only called tools has no text; providers want `null` there, and
            // some reject an empty string next to tool calls.
            let content = (!message.content.is_empty() || tool_calls.is_empty()).then(|| {
                ChatCompletionRequestAssistantMessageContent::Text(message.content.clone())
            });
            ChatCompletionRequestMessage::Assistant(ChatCompletionRequestAssistantMessage {
                content,
                tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                ..Default::default()
            })
        }
        Role::Tool => ChatCompletionRequestMessage::Tool(ChatCompletionRequestToolMessage {
            content: ChatCompletionRequestToolMessageContent::Text(message.content.clone()),
            tool_call_id: message.tool_call_id.clone().unwrap_or_default(),
        }),
    }
}

/// The wire request for `model`; `stream` adds the options that make the last chunk carry
/// the usage.
pub(crate) fn wire_chat_request(
    request: &ChatRequest,
    model: &str,
    stream: bool,
) -> CreateChatCompletionRequest {
    let tools: Vec<_> = request
        .tools
        .iter()
        .map(|tool| {
            ChatCompletionTools::Function(ChatCompletionTool {
                function: FunctionObject {
                    name: tool.name.clone(),
                    description: Some(tool.description.clone()),
                    parameters: Some(tool.parameters.clone()),
                    strict: None,
                },
            })
        })
        .collect();
    let response_format =
        request
            .json_schema
            .as_ref()
            .map(|(name, schema)| ResponseFormat::JsonSchema {
                json_schema: ResponseFormatJsonSchema {
                    description: None,
                    name: name.clone(),
                    schema: schema.clone(),
                    strict: Some(true),
                },
            });
    #[allow(deprecated)]
    CreateChatCompletionRequest {
        model: model.to_owned(),
        messages: request.messages.iter().map(wire_message).collect(),
        tools: (!tools.is_empty()).then_some(tools),
        response_format,
        temperature: request.temperature,
        // `max_tokens`, though OpenAI calls it deprecated: it is the one that Ollama,
        // vLLM, LM Studio and OpenRouter all read; `max_completion_tokens` is not.
        max_tokens: request.max_tokens,
        stream: stream.then_some(true),
        stream_options: stream.then_some(async_openai::types::chat::ChatCompletionStreamOptions {
            include_usage: Some(true),
            include_obfuscation: None,
        }),
        ..Default::default()
    }
}
