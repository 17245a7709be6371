//! The HTTP side: router assembly, middleware, extractors and the error type.

pub mod auth;
pub mod client_ip;
pub mod error;
pub mod extract;
pub mod json;
pub mod middleware;
pub mod rate_limit;
pub mod request_id;
pub mod server;
pub mod validate;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderValue;
use axum::middleware::from_fn;
use axum::middleware::from_fn_with_state;
use axum::response::IntoResponse;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::http::error::ApiError;
use crate::routes;
use crate::state::AppState;

/// The public router: every route, then the middleware that wraps them all (the last
/// layer added runs first).
pub fn router(state: AppState) -> Router {
    let config = state.config.clone();
    let (routes, mut document) = routes::api().split_for_parts();
    crate::openapi::finish(&mut document);
    let routes = routes.merge(crate::openapi::router(document));
    #[cfg(feature = "test-support")]
    let routes = routes.merge(routes::test_support::router());
    let routes = routes
        .fallback(|| async { ApiError::NotFound.into_response() })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed.into_response() })
        .with_state(state.clone());
    // Innermost first: what a handler sees, up to what every response passes through.
    let mut router = routes
        .layer(DefaultBodyLimit::max(config.body_limit_bytes))
        .layer(from_fn_with_state(state.clone(), middleware::buffer_body))
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        .layer(from_fn_with_state(
            config.request_timeout,
            middleware::timeout,
        ))
        .layer(from_fn_with_state(state, middleware::rate_limit));
    if let Some(cors) = middleware::cors(&config.cors_allowed_origins) {
        router = router
            .layer(cors)
            .layer(from_fn(middleware::cors_only_for_allowed));
    }
    if config.is_production() {
        router = router.layer(SetResponseHeaderLayer::overriding(
            axum::http::header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=63072000; includeSubDomains"),
        ));
    }
    if config.sentry_dsn.is_some() {
        // A hub per request (tags and breadcrumbs stay with their request) and a
        // transaction named by the matched route, sampled by SENTRY_TRACES_SAMPLE_RATE.
        router = router
            .layer(from_fn(middleware::sentry_restore_uri))
            .layer(sentry::integrations::tower::SentryHttpLayer::new().enable_transaction())
            .layer(from_fn(middleware::sentry_route_as_uri))
            .layer(sentry::integrations::tower::NewSentryLayer::<
                axum::extract::Request,
            >::new_from_top());
    }
    router
        .layer(from_fn(middleware::security_headers))
        .layer(from_fn(middleware::request_context))
}

pub use server::serve;
