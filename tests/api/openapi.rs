//! The OpenAPI document and the router come from the same annotations; the docs page is
//! served by the binary itself.

use serde_json::Value;

use crate::support::app::{TestApp, into_response};

/// Routes are registered from their `#[utoipa::path]` annotations, so the document and
/// the router cannot disagree; this checks the other direction at the HTTP level (every
/// documented operation is served with its method), and the rules added once for all
/// org routes.
#[tokio::test]
async fn every_documented_operation_is_routed_and_org_routes_say_how() {
    let app = TestApp::builder().spawn().await;
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
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() > 25, "{} paths", paths.len());
    let id = "01900000-0000-7000-8000-000000000000";
    let mut operations = 0;
    let mut operation_ids = std::collections::HashMap::new();
    for (path, item) in paths {
        let concrete: String = path
            .split('/')
            .map(|part| if part.starts_with('{') { id } else { part })
            .collect::<Vec<_>>()
            .join("/");
        for (method, op) in item.as_object().unwrap() {
            let Ok(m) = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()) else {
                continue;
            };
            operations += 1;
            let operation_id = op["operationId"].as_str().unwrap_or_default().to_owned();
            assert!(
                !operation_id.is_empty(),
                "{method} {path} has no operationId"
            );
            if let Some(other) =
                operation_ids.insert(operation_id.clone(), format!("{method} {path}"))
            {
                panic!("operationId {operation_id} names both {other} and {method} {path}");
            }
            let status = app
                .client
                .request(m, app.url(&concrete))
                .send()
                .await
                .unwrap()
                .status();
            assert_ne!(status, 405, "{method} {path} is documented but not routed");
            if path.starts_with("/v1/orgs/{org_id}") {
                assert_eq!(
                    op["security"][0]["bearer"],
                    serde_json::json!([]),
                    "{method} {path}"
                );
                assert_eq!(op["parameters"][0]["name"], "org_id", "{method} {path}");
                assert_eq!(op["parameters"][0]["in"], "path", "{method} {path}");
                assert_eq!(status, 401, "{method} {path} without a token");
            }
        }
    }
    assert!(operations >= 39, "{operations} operations");

    // Errors are documented as problem+json, and authenticated routes say so.
    let list = &doc["paths"]["/v1/orgs/{org_id}/agents"]["get"];
    assert_eq!(
        list["responses"]["default"]["content"]["application/problem+json"]["schema"]["$ref"],
        "#/components/schemas/Problem"
    );
    assert!(!list["responses"]["401"].is_null());
    // Every error response, the annotations' own included, has the problem body, so that a
    // client generated from the document types its `error` (the readiness probe's 503 is
    // its own report instead).
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let Some(responses) = op["responses"].as_object() else {
                continue;
            };
            for (code, response) in responses {
                let error = code == "default" || code.starts_with('4') || code.starts_with('5');
                if !error || path == "/health/ready" {
                    continue;
                }
                assert_eq!(
                    response["content"]["application/problem+json"]["schema"]["$ref"],
                    "#/components/schemas/Problem",
                    "{method} {path} {code} has no problem body: {response}"
                );
            }
        }
    }
    assert_eq!(list["security"][0]["bearer"], serde_json::json!([]));
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

#[tokio::test]
async fn docs_page_is_served_without_any_cdn() {
    let app = TestApp::builder().spawn().await;
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
