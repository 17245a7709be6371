//! Routes that exist only for tests (feature `test-support`, never in a production
//! build): a handler that panics and one that outlasts the request timeout.

use std::time::Duration;

use axum::Router;
use axum::routing::get;

use crate::http::extract::ApiQuery;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/test-support/panic", get(panic))
        .route("/v1/test-support/sleep", get(sleep))
}

async fn panic() -> &'static str {
    panic!("a handler panicked on purpose")
}

#[derive(serde::Deserialize)]
struct Sleep {
    ms: u64,
}

async fn sleep(ApiQuery(q): ApiQuery<Sleep>) -> &'static str {
    tokio::time::sleep(Duration::from_millis(q.ms)).await;
    "slept"
}
