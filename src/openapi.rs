//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use std::collections::HashMap;

use crate::http::json::Json;
use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes;
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "agents-api", description = "AI sales agents over Kommo CRM."),
    components(schemas(
        crate::http::error::Problem,
        crate::http::error::FieldError,
        crate::events::LiveEvent,
        crate::events::JobEvent,
        crate::events::AssetEvent,
        crate::events::ConversationMessageEvent,
        crate::events::ConversationHandoffEvent,
        crate::events::ConnectionEvent,
        crate::events::ResetEvent,
    )),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// The operations of a path, whichever methods it has.
fn operations(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        &mut item.get,
        &mut item.post,
        &mut item.put,
        &mut item.patch,
        &mut item.delete,
    ]
    .into_iter()
    .flatten()
}

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
/// An error an annotation declares with a description only (`(status = 409, description =
/// "…")`) gets the problem body too, so that no error response of the document is untyped.
struct ProblemResponses;

impl Modify for ProblemResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
        const PROBLEM_JSON: &str = "application/problem+json";
        let content = || {
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build()
        };
        let problem = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(PROBLEM_JSON, content())
                .build()
        };
        for item in openapi.paths.paths.values_mut() {
            for op in operations(item) {
                let responses = &mut op.responses.responses;
                for (code, response) in responses.iter_mut() {
                    let error = code.starts_with('4') || code.starts_with('5');
                    if let RefOr::T(response) = response
                        && error
                        && response.content.is_empty()
                    {
                        response
                            .content
                            .insert(PROBLEM_JSON.into(), content().into());
                    }
                }
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

/// The whole document: the routes' paths, then what applies to all of them.
pub fn document() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = routes::api().split_for_parts();
    finish(&mut doc);
    doc
}

/// The modifiers that need the paths, in order: org scoping adds the security that the
/// problem responses read.
pub fn finish(doc: &mut utoipa::openapi::OpenApi) {
    OrgScoped.modify(doc);
    ProblemResponses.modify(doc);
    UniqueOperationIds.modify(doc);
}

/// utoipa names an operation after its handler, and every resource module has its
/// `list`, `show`, `create`: OpenAPI wants the ids unique (client generators key their
/// operations by them), so each is prefixed with its resource's tag (`agents_list`),
/// and one still shared (two modules under one tag) gets its path's last word as well
/// (`agents_show_routes`).
struct UniqueOperationIds;

impl Modify for UniqueOperationIds {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let mut seen: HashMap<String, usize> = HashMap::new();
        for item in openapi.paths.paths.values_mut() {
            for op in operations(item) {
                let tag = op.tags.as_ref().and_then(|tags| tags.first()).cloned();
                if let (Some(tag), Some(id)) = (tag, op.operation_id.as_mut())
                    && *id != tag
                    && !id.starts_with(&format!("{tag}_"))
                {
                    *id = format!("{tag}_{id}");
                }
                if let Some(id) = &op.operation_id {
                    *seen.entry(id.clone()).or_default() += 1;
                }
            }
        }
        for (path, item) in openapi.paths.paths.iter_mut() {
            let word = path
                .rsplit('/')
                .find(|part| !part.is_empty() && !part.starts_with('{'))
                .unwrap_or("root")
                .replace('-', "_");
            for op in operations(item) {
                if let Some(id) = op.operation_id.as_mut()
                    && seen.get(id.as_str()).is_some_and(|n| *n > 1)
                    && !id.ends_with(&format!("_{word}"))
                {
                    *id = format!("{id}_{word}");
                }
            }
        }
    }
}

/// Every `/v1/orgs/{org_id}/…` operation needs a bearer token and takes the org id from
/// its path: said here once instead of in each annotation.
struct OrgScoped;

impl Modify for OrgScoped {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        use utoipa::openapi::security::SecurityRequirement;
        use utoipa::openapi::{KnownFormat, ObjectBuilder, Required, SchemaFormat, Type};
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/v1/orgs/{org_id}") {
                continue;
            }
            for op in operations(item) {
                op.security.get_or_insert_with(|| {
                    vec![SecurityRequirement::new("bearer", Vec::<String>::new())]
                });
                let params = op.parameters.get_or_insert_with(Vec::new);
                let named = |p: &utoipa::openapi::RefOr<utoipa::openapi::path::Parameter>| matches!(p, utoipa::openapi::RefOr::T(p) if p.name == "org_id");
                if !params.iter().any(named) {
                    let org_id = ParameterBuilder::new()
                        .name("org_id")
                        .parameter_in(ParameterIn::Path)
                        .required(Required::True)
                        .schema(Some(
                            ObjectBuilder::new()
                                .schema_type(Type::String)
                                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
                        ))
                        .build();
                    params.insert(0, org_id.into());
                }
            }
        }
    }
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

/// `/v1/openapi.json` (the document the routes made) and the `/docs` page.
pub fn router(document: utoipa::openapi::OpenApi) -> Router<AppState> {
    let document = std::sync::Arc::new(document);
    Router::new()
        .route(
            "/v1/openapi.json",
            get(move || async move { Json(document.as_ref().clone()) }),
        )
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
