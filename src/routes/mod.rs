//! One module per resource, each exposing `router()`: its routes, registered once from
//! their `#[utoipa::path]` annotations (the path is written nowhere else).

pub mod agent_routes;
pub mod agents;
pub mod ai_settings;
pub mod audit;
pub mod chat_channel;
pub mod conversations;
pub mod crm;
pub mod events;
pub mod health;
pub mod jobs;
pub mod knowledge;
pub mod knowledge_entities;
pub mod kommo;
pub mod me;
pub mod members;
pub mod orgs;
pub mod test_chat;
#[cfg(feature = "test-support")]
pub mod test_support;
pub mod usage;
pub mod webhooks;

use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

/// Every documented route, with the OpenAPI paths they make.
pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(<crate::openapi::ApiDoc as utoipa::OpenApi>::openapi())
        .merge(health::router())
        .merge(me::router())
        .merge(orgs::router())
        .merge(members::router())
        .merge(agents::router())
        .merge(agent_routes::router())
        .merge(test_chat::router())
        .merge(conversations::router())
        .merge(audit::router())
        .merge(jobs::router())
        .merge(events::router())
        .merge(crm::router())
        .merge(chat_channel::router())
        .merge(knowledge::router())
        .merge(knowledge_entities::router())
        .merge(ai_settings::router())
        .merge(usage::router())
        .merge(kommo::router())
        .merge(webhooks::router())
}
