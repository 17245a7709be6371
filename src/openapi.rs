//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Json, Response};
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
    components(schemas(crate::http::error::Problem, crate::http::error::FieldError)),
    modifiers(&BearerAuth, &ProblemResponses)
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

/// Every operation can fail with problem+json; the document says so once, as each
/// operation's `default` response, plus the codes every authenticated route can give.
struct ProblemResponses;

impl Modify for ProblemResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let problem = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/problem+json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build()
        };
        for item in openapi.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                let responses = &mut op.responses.responses;
                if op.security.is_some() {
                    for (code, text) in [
                        ("401", "No valid bearer token."),
                        (
                            "404",
                            "No such resource, or an org the caller is not a member of.",
                        ),
                        ("429", "Rate limited; see Retry-After and RateLimit-*."),
                    ] {
                        responses
                            .entry(code.into())
                            .or_insert_with(|| problem(text).into());
                    }
                }
                responses
                    .entry("default".into())
                    .or_insert_with(|| problem("An error, as RFC 9457 problem+json.").into());
            }
        }
    }
}

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

const DOCS_HTML: &str = include_str!("../assets/docs/index.html");
const DOCS_JS: &str = include_str!("../assets/docs/docs.js");
const DOCS_CSS: &str = include_str!("../assets/docs/docs.css");
/// The docs page loads its script, style and the document from this origin only.
const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                        img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, DOCS_CSP),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/openapi.json", get(|| async { Json(document()) }))
        .route(
            "/docs",
            get(|| async { asset("text/html; charset=utf-8", DOCS_HTML) }),
        )
        .route(
            "/docs/docs.js",
            get(|| async { asset("text/javascript; charset=utf-8", DOCS_JS) }),
        )
        .route(
            "/docs/docs.css",
            get(|| async { asset("text/css; charset=utf-8", DOCS_CSS) }),
        )
}
