use std::time::Duration;

/// What went wrong with a provider call. No variant carries the API key or a whole body.
#[derive(Debug, thiserror::Error)]
pub enum AiError {
    /// No provider is set for the org or the deployment (the spec's error code).
    #[error("ai provider not configured")]
    NotConfigured,
    /// The request cannot be made as given (bad base URL, empty model name…).
    #[error("invalid ai request: {0}")]
    Invalid(String),
    /// The provider (or our per-org gate) asks us to wait.
    #[error("ai provider rate limited the call (retry after {retry_after:?})")]
    RateLimited { retry_after: Option<Duration> },
    #[error("ai provider answered {status}: {detail}")]
    Status { status: u16, detail: String },
    /// The provider reported a failure inside a 200 answer (mid-stream, mostly).
    #[error("ai provider reported a failure: {0}")]
    Upstream(String),
    #[error("ai provider timed out")]
    Timeout,
    #[error("ai provider could not be reached: {0}")]
    Transport(String),
    #[error("ai provider's answer could not be read: {0}")]
    Decode(String),
    /// The embedding model returns vectors of another size than the vector column's.
    #[error("embedding has {got} dimensions, expected {expected}")]
    WrongDimensions { expected: u32, got: usize },
}

impl AiError {
    /// Errors that another attempt with the same settings cannot fix: a job should fail
    /// for good rather than retry.
    pub fn is_permanent(&self) -> bool {
        match self {
            AiError::NotConfigured | AiError::Invalid(_) | AiError::WrongDimensions { .. } => true,
            AiError::Status { status, .. } => !is_retryable_status(*status),
            AiError::RateLimited { .. }
            | AiError::Upstream(_)
            | AiError::Timeout
            | AiError::Transport(_)
            | AiError::Decode(_) => false,
        }
    }

    /// A short label for metrics and logs (`ai_requests_total{outcome}`).
    pub fn outcome(&self) -> &'static str {
        match self {
            AiError::NotConfigured => "not_configured",
            AiError::Invalid(_) => "invalid",
            AiError::RateLimited { .. } => "rate_limited",
            AiError::Status { status, .. } if *status >= 500 => "status_5xx",
            AiError::Status { .. } => "status_4xx",
            AiError::Upstream(_) => "upstream_error",
            AiError::Timeout => "timeout",
            AiError::Transport(_) => "transport_error",
            AiError::Decode(_) => "decode_error",
            AiError::WrongDimensions { .. } => "wrong_dimensions",
        }
    }
}

/// Statuses worth another attempt: overload and gateway trouble (520–529 are the CDN's
/// "origin unreachable" family that hosted gateways answer with). Everything else — bad
/// request, bad key, unknown model, unprocessable, not implemented — fails the same way
/// again.
pub(crate) fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504 | 520..=529)
}
