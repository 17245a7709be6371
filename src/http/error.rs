//! The one error type of the API, rendered as RFC 9457 `application/problem+json`.

use std::borrow::Cow;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::http::request_id;

pub use crate::domain::FieldError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("bad request: {0}")]
    BadRequest(Cow<'static, str>),
    #[error("unauthorized: {0}")]
    Unauthorized(Cow<'static, str>),
    #[error("forbidden: {0}")]
    Forbidden(Cow<'static, str>),
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("conflict: {0}")]
    Conflict(Cow<'static, str>),
    #[error("payload too large")]
    PayloadTooLarge,
    /// The client did not send its whole body within `BODY_READ_TIMEOUT_SECS`.
    #[error("request body timeout")]
    RequestTimeout,
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(Cow<'static, str>),
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("rate limited")]
    RateLimited { retry_after: Duration },
    #[error("unavailable: {0}")]
    Unavailable(Cow<'static, str>),
    /// The feature needs a model and neither the org nor the deployment has one (SPEC §11).
    #[error("ai provider not configured")]
    AiNotConfigured,
    #[error("timeout")]
    Timeout,
    /// Anything the client cannot fix. The cause is logged with the request id and
    /// never shown.
    #[error("internal error: {0:#}")]
    Internal(anyhow::Error),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::Validation(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }

    pub fn forbidden(detail: impl Into<Cow<'static, str>>) -> ApiError {
        ApiError::Forbidden(detail.into())
    }

    pub fn conflict(detail: impl Into<Cow<'static, str>>) -> ApiError {
        ApiError::Conflict(detail.into())
    }

    pub fn unauthorized(detail: impl Into<Cow<'static, str>>) -> ApiError {
        ApiError::Unauthorized(detail.into())
    }

    pub fn internal(error: impl Into<anyhow::Error>) -> ApiError {
        ApiError::Internal(error.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) | ApiError::AiNotConfigured => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::AiNotConfigured => "ai_provider_not_configured",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Validation(_) => "validation_failed",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Timeout => "timeout",
            ApiError::Internal(_) => "internal",
        }
    }

    fn detail(&self) -> Cow<'static, str> {
        match self {
            ApiError::BadRequest(d)
            | ApiError::Unauthorized(d)
            | ApiError::Forbidden(d)
            | ApiError::Conflict(d)
            | ApiError::UnsupportedMediaType(d)
            | ApiError::Unavailable(d) => d.clone(),
            ApiError::NotFound => "The requested resource does not exist.".into(),
            ApiError::AiNotConfigured => "ai provider not configured: set this organization's AI settings or the deployment's AI_BASE_URL.".into(),
            ApiError::MethodNotAllowed => "This method is not allowed on this resource.".into(),
            ApiError::PayloadTooLarge => "The request body is larger than allowed.".into(),
            ApiError::RequestTimeout => "The request body did not arrive in time.".into(),
            ApiError::Validation(_) => "The request did not pass validation.".into(),
            ApiError::RateLimited { .. } => "Too many requests; retry later.".into(),
            ApiError::Timeout => "The request took too long and was abandoned.".into(),
            ApiError::Internal(_) => {
                "An internal error occurred; quote the request_id when reporting it.".into()
            }
        }
    }
}

/// The problem document, as sent and as documented in the OpenAPI schema.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub code: String,
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

pub const PROBLEM_JSON: &str = "application/problem+json";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let request_id = request_id::current();
        match &self {
            ApiError::Internal(cause) => {
                let cause = format!("{cause:#}");
                tracing::error!(error = %cause, request_id = request_id.as_deref().unwrap_or(""), "internal error");
                crate::telemetry::report(&cause, request_id.as_deref(), None);
            }
            ApiError::Unavailable(detail) => {
                tracing::warn!(%detail, "service unavailable");
            }
            _ => {}
        }
        let code = self.code();
        let retry_after = match &self {
            ApiError::RateLimited { retry_after } => Some(retry_after.as_secs().max(1)),
            ApiError::Unavailable(_) => Some(1),
            _ => None,
        };
        let problem = Problem {
            type_: format!("urn:agents-api:problem:{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: self.detail().into_owned(),
            code: code.to_string(),
            request_id,
            errors: match self {
                ApiError::Validation(errors) => errors,
                _ => Vec::new(),
            },
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// Turns the violation of one named constraint into the problem the caller chooses; any
/// other error maps as usual. Constraint names are ours (see migrations/), so a call
/// site says exactly which rule it expects to trip.
pub trait OnConstraint<T> {
    fn on_constraint(self, name: &str, problem: impl FnOnce() -> ApiError) -> ApiResult<T>;
}

impl<T> OnConstraint<T> for Result<T, sqlx::Error> {
    fn on_constraint(self, name: &str, problem: impl FnOnce() -> ApiError) -> ApiResult<T> {
        self.map_err(
            |error| match error.as_database_error().and_then(|db| db.constraint()) {
                Some(constraint) if constraint == name => problem(),
                _ => error.into(),
            },
        )
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> ApiError {
        if let sqlx::Error::PoolTimedOut = error {
            return ApiError::Unavailable("The database is busy; retry shortly.".into());
        }
        if connection_lost(&error) {
            tracing::warn!(%error, "database connection lost");
            return ApiError::Unavailable("The database is unavailable; retry shortly.".into());
        }
        if let Some(db) = error.as_database_error() {
            // Constraint names are ours (see migrations/), so they map to field errors.
            match (db.code().as_deref(), db.constraint()) {
                // Call sites name the constraints they expect (`on_constraint`); an
                // unexpected duplicate is still a conflict, not a 500.
                (Some("23505"), _) => {
                    return ApiError::Conflict("The resource already exists.".into());
                }
                // A CHECK constraint caught what validation let through: still the
                // client's input, never a 500.
                (Some("23514"), constraint) => {
                    // PostgreSQL names column checks `<table>_<column>_check`.
                    let field = match (constraint, db.table()) {
                        (Some(c), Some(t)) => c
                            .strip_prefix(t)
                            .and_then(|c| c.strip_prefix('_'))
                            .and_then(|c| c.strip_suffix("_check"))
                            .unwrap_or("")
                            .to_string(),
                        _ => String::new(),
                    };
                    return ApiError::validation(field, "is not an allowed value");
                }
                // The database refused a row because of its row-level security policy:
                // the caller's role is too low for this write.
                (Some("42501"), _) => {
                    return ApiError::forbidden("Your role does not allow this change.");
                }
                (Some("57014"), _) => return ApiError::Timeout,
                _ => {}
            }
        }
        ApiError::Internal(error.into())
    }
}

/// Whether the error says the database went away (restart, network, overload) rather
/// than that this request was wrong: the client should retry, so it is a 503, not a 500.
fn connection_lost(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // Class 08 is connection exceptions; 57P01–57P03 are admin/crash shutdown and
            // "cannot connect now"; 53300 is too many connections.
            code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

impl From<crate::db::Error> for ApiError {
    fn from(error: crate::db::Error) -> ApiError {
        match error {
            crate::db::Error::Sqlx(error) => error.into(),
            aborted @ crate::db::Error::Aborted(_) => ApiError::internal(aborted),
        }
    }
}

impl From<crate::jobs::Rejected> for ApiError {
    fn from(rejected: crate::jobs::Rejected) -> ApiError {
        match rejected {
            crate::jobs::Rejected::Invalid(field) => ApiError::Validation(vec![field]),
            crate::jobs::Rejected::Db(e) => e.into(),
        }
    }
}

impl From<crate::domain::PageError> for ApiError {
    fn from(error: crate::domain::PageError) -> ApiError {
        match error {
            crate::domain::PageError::Limit => ApiError::validation("limit", error.to_string()),
            crate::domain::PageError::Cursor => ApiError::BadRequest(error.to_string().into()),
        }
    }
}

impl From<crate::kommo::tokens::TokenError> for ApiError {
    fn from(e: crate::kommo::tokens::TokenError) -> ApiError {
        match e {
            crate::kommo::tokens::TokenError::NotFound => ApiError::NotFound,
            crate::kommo::tokens::TokenError::NotConnected(why) => {
                ApiError::conflict(format!("The connection cannot call Kommo: {why}."))
            }
            crate::kommo::tokens::TokenError::InvalidGrant(_) => ApiError::conflict(
                "Kommo refused the refresh token; the connection is now in error. Reconnect the account.",
            ),
            crate::kommo::tokens::TokenError::Kommo(k) => kommo_unavailable(k),
            crate::kommo::tokens::TokenError::Crypto(crate::crypto::CryptoError::NoKey) => {
                ApiError::Unavailable(
                    "Secrets cannot be stored: ENCRYPTION_KEYS is not configured.".into(),
                )
            }
            crate::kommo::tokens::TokenError::Crypto(c) => ApiError::internal(c),
            crate::kommo::tokens::TokenError::Db(d) => d.into(),
        }
    }
}

/// A Kommo call failed: the cause is logged, the client told to come back.
pub fn kommo_unavailable(e: crate::kommo::KommoError) -> ApiError {
    tracing::warn!(error = %e, "Kommo call failed");
    ApiError::Unavailable(
        "Kommo could not be reached or refused the request; try again later.".into(),
    )
}

impl From<crate::crypto::CryptoError> for ApiError {
    fn from(e: crate::crypto::CryptoError) -> ApiError {
        crate::kommo::tokens::TokenError::Crypto(e).into()
    }
}

/// A provider failure the client cannot fix reads as the provider's trouble (503), never
/// with the key (no `AiError` carries it).
impl From<crate::ai::AiError> for ApiError {
    fn from(e: crate::ai::AiError) -> ApiError {
        use crate::ai::AiError;
        match e {
            AiError::NotConfigured => ApiError::AiNotConfigured,
            AiError::RateLimited { retry_after } => ApiError::RateLimited {
                retry_after: retry_after.unwrap_or(Duration::from_secs(1)),
            },
            other => {
                tracing::warn!(error = %other, "model provider call failed");
                ApiError::Unavailable(format!("The model provider failed: {other}.").into())
            }
        }
    }
}

impl From<crate::ai::LookupError> for ApiError {
    fn from(e: crate::ai::LookupError) -> ApiError {
        match e {
            crate::ai::LookupError::Db(e) => e.into(),
            crate::ai::LookupError::Ai(e) => e.into(),
        }
    }
}

/// The file store's trouble is the service's, for now: the client may retry. Its cause
/// (which may name a bucket or a path) is logged, not shown.
impl From<crate::knowledge::store::StoreError> for ApiError {
    fn from(e: crate::knowledge::store::StoreError) -> ApiError {
        use crate::knowledge::store::StoreError;
        match e {
            StoreError::Db(e) => e.into(),
            StoreError::Object(e) => {
                tracing::warn!(error = %e, "file store call failed");
                ApiError::Unavailable("The file store is unavailable; retry shortly.".into())
            }
            not_configured @ StoreError::NotConfigured => ApiError::internal(not_configured),
        }
    }
}

impl From<crate::knowledge::search::SearchError> for ApiError {
    fn from(e: crate::knowledge::search::SearchError) -> ApiError {
        use crate::knowledge::search::SearchError;
        match e {
            SearchError::Db(e) => e.into(),
            SearchError::VectorsUnavailable(why) => ApiError::conflict(why),
            SearchError::NotMember => ApiError::NotFound,
            SearchError::Ai(e) => e.into(),
            SearchError::Lookup(e) => e.into(),
        }
    }
}

impl From<redis::RedisError> for ApiError {
    fn from(error: redis::RedisError) -> ApiError {
        ApiError::Internal(error.into())
    }
}

impl From<validator::ValidationErrors> for ApiError {
    fn from(errors: validator::ValidationErrors) -> ApiError {
        let mut out = Vec::new();
        collect_validation_errors(&errors, String::new(), &mut out);
        out.sort_by(|a, b| a.field.cmp(&b.field));
        ApiError::Validation(out)
    }
}

fn collect_validation_errors(
    errors: &validator::ValidationErrors,
    prefix: String,
    out: &mut Vec<FieldError>,
) {
    use validator::ValidationErrorsKind;
    for (field, kind) in errors.errors() {
        let path = if prefix.is_empty() {
            field.to_string()
        } else {
            format!("{prefix}.{field}")
        };
        match kind {
            ValidationErrorsKind::Field(list) => {
                for e in list {
                    let message = e
                        .message
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_else(|| format!("is invalid ({})", e.code));
                    out.push(FieldError {
                        field: path.clone(),
                        message,
                    });
                }
            }
            ValidationErrorsKind::Struct(inner) => collect_validation_errors(inner, path, out),
            ValidationErrorsKind::List(items) => {
                for (i, inner) in items {
                    collect_validation_errors(inner, format!("{path}[{i}]"), out);
                }
            }
        }
    }
}
