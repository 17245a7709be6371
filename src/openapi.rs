//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use axum::Router;
use axum::response::Json;
use axum::routing::get;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes;
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "agents-api", description = "AI sales agents over Kommo CRM."),
    paths(
        routes::health::live,
        routes::health::ready,
        routes::me::me,
        routes::orgs::create,
        routes::orgs::show,
        routes::members::list,
        routes::members::upsert,
        routes::members::remove,
        routes::agents::list,
        routes::agents::create,
        routes::agents::show,
        routes::agents::update,
        routes::agents::set_status,
        routes::agents::remove,
        routes::audit::list,
        routes::jobs::list,
        routes::jobs::create,
        routes::jobs::show,
        routes::jobs::cancel,
        routes::jobs::retry,
        routes::crm::show_credentials,
        routes::crm::put_credentials,
        routes::crm::delete_credentials,
        routes::crm::status,
        routes::crm::list_connections,
        routes::crm::create_connection,
        routes::crm::show_connection,
        routes::crm::delete_connection,
        routes::crm::sync,
        routes::crm::pipelines,
        routes::crm::contacts,
        routes::crm::rotate_webhook_secret,
        routes::crm::refresh_token,
        routes::kommo::start,
        routes::kommo::callback,
        routes::kommo::browser_callback,
        routes::kommo::send_message,
        routes::webhooks::receive,
        routes::webhooks::list,
    ),
    components(schemas(crate::http::error::Problem)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/openapi.json", get(|| async { Json(document()) }))
}
