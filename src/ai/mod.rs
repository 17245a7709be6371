//! The OpenAI-compatible model provider (SPEC §11): chat completions (plain, streamed,
//! with tools or a JSON schema) and embeddings, over our own reqwest client. The wire
//! types are `async-openai`'s (types only); this module owns the transport: per-org call
//! gate, timeouts, retries, Retry-After, SSE parsing and the key's secrecy.

mod client;
mod compat;
mod error;
mod service;
mod sse;
pub mod ssrf;
mod types;

pub use client::{AiClient, CallGate, NoGate, Provider};
pub use error::AiError;
pub use service::{Ai, LookupError, RedisGate};
pub use types::{
    ChatRequest, ChatResponse, ChatStream, Embeddings, FinishReason, Message, Role, StreamEvent,
    Tool, ToolCall, Usage,
};
