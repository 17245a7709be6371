//! The OpenAPI document covers every route of the router, and the docs page is served by
//! the binary itself.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::helpers::{TestApp, into_response};

/// Routes deliberately outside the document: the document and its page themselves, the
/// `/health` alias of `/health/ready`, and the test-only routes of `test_support.rs`.
const UNDOCUMENTED: &[&str] = &[
    "/v1/openapi.json",
    "/docs",
    "/docs/docs.js",
    "/docs/docs.css",
    "/health",
];

/// Every `(METHOD, path)` registered with `.route(…)` in `src/routes/*.rs` and
/// `src/openapi.rs`, read from the source so a new route cannot slip past the document.
fn routes_in_source() -> BTreeSet<(String, String)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/routes");
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n != "test_support.rs"))
        .collect();
    files.push(concat!(env!("CARGO_MANIFEST_DIR"), "/src/openapi.rs").into());
    let mut found = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find(".route(") {
            let call = &rest[at + ".route(".len()..];
            // The call's arguments, up to its balanced closing parenthesis.
            let mut depth = 1;
            let mut end = 0;
            for (i, c) in call.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            end = i;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let args = &call[..end];
            let path = args.split('"').nth(1).unwrap_or_default().to_string();
            for method in ["get", "post", "put", "patch", "delete"] {
                let called = args.contains(&format!(" {method}("))
                    || args.contains(&format!("\t{method}("))
                    || args.contains(&format!("\n{method}("))
                    || args.contains(&format!(".{method}("))
                    || args
                        .trim_start_matches(|c: char| c != ',')
                        .trim_start_matches(',')
                        .trim_start()
                        .starts_with(&format!("{method}("));
                if called {
                    found.insert((method.to_uppercase(), path.clone()));
                }
            }
            rest = &call[end..];
        }
    }
    found
}

#[tokio::test]
async fn every_route_is_in_the_document() {
    let app = TestApp::spawn().await;
    let doc: Value = into_response(
        app.client
            .get(app.url("/v1/openapi.json"))
            .send()
            .await
            .unwrap(),
    )
    .await
    .body;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let routes = routes_in_source();
    assert!(
        routes.len() > 40,
        "the source scan found too few routes: {routes:?}"
    );
    let mut missing = Vec::new();
    for (method, path) in &routes {
        if UNDOCUMENTED.contains(&path.as_str()) {
            continue;
        }
        if doc["paths"][path][method.to_lowercase()].is_null() {
            missing.push(format!("{method} {path}"));
        }
    }
    assert!(
        missing.is_empty(),
        "routes missing from the OpenAPI document: {missing:#?}"
    );

    // Errors are documented as problem+json, and authenticated routes say so.
    let list = &doc["paths"]["/v1/orgs/{org_id}/agents"]["get"];
    assert_eq!(
        list["responses"]["default"]["content"]["application/problem+json"]["schema"]["$ref"],
        "#/components/schemas/Problem"
    );
    assert!(!list["responses"]["401"].is_null());
    assert_eq!(list["security"][0]["bearer"], serde_json::json!([]));
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

#[tokio::test]
async fn docs_page_is_served_without_any_cdn() {
    let app = TestApp::spawn().await;
    let page = app.client.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains("/docs/docs.js") && html.contains("/docs/docs.css"));
    assert!(
        !html.contains("https://"),
        "the page must not load anything from elsewhere"
    );
    for asset in ["/docs/docs.js", "/docs/docs.css"] {
        let r = app.client.get(app.url(asset)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{asset}");
        assert!(
            !r.text().await.unwrap().contains("https://"),
            "{asset} loads from elsewhere"
        );
    }
}
