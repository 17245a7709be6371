//! Request ids: kept from the caller's `x-request-id` when it is a sane value, otherwise
//! generated, echoed on every response and visible to error rendering and logs.

use std::sync::{Arc, OnceLock};

use crate::domain::{OrgId, UserId};
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    static CURRENT: Arc<RequestContext>;
}

#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// What the access log line of a request reports: its id, and the user and org once the
/// extractors have established them.
#[derive(Debug, Default)]
pub struct RequestContext {
    pub id: String,
    pub user_id: OnceLock<UserId>,
    pub org_id: OnceLock<OrgId>,
}

/// The id of the request being served by this task, if any.
pub fn current() -> Option<String> {
    CURRENT.try_with(|ctx| ctx.id.clone()).ok()
}

/// Records the authenticated user for the request's log line.
pub fn note_user(user_id: UserId) {
    let _ = CURRENT.try_with(|ctx| ctx.user_id.set(user_id));
}

/// Records the org the request is scoped to for its log line.
pub fn note_org(org_id: OrgId) {
    let _ = CURRENT.try_with(|ctx| ctx.org_id.set(org_id));
}

/// Ids become log fields and response headers, so only short, plain tokens are kept.
fn is_sane(value: &str) -> bool {
    (1..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Runs the rest of the stack with the request's context in scope.
pub async fn scope(mut request: Request, next: Next) -> (Response, Arc<RequestContext>) {
    let id = request
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_sane(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    request.extensions_mut().insert(RequestId(id.clone()));
    let ctx = Arc::new(RequestContext {
        id,
        ..RequestContext::default()
    });
    let mut response = CURRENT.scope(ctx.clone(), next.run(request)).await;
    if let Ok(value) = HeaderValue::from_str(&ctx.id) {
        response.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }
    (response, ctx)
}

#[cfg(test)]
mod tests {
    use super::is_sane;

    #[test]
    fn only_plain_short_ids_are_kept() {
        assert!(is_sane("abc-123_x.y:z"));
        assert!(!is_sane(""));
        assert!(!is_sane("has space"));
        assert!(!is_sane(&"a".repeat(129)));
        assert!(!is_sane("line\nbreak"));
    }
}
