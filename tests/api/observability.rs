//! Metrics on their own listener, labelled by route template, never by raw path.

use uuid::Uuid;

use crate::support::app::{OrgUsers, TestApp, into_response};

async fn scrape(app: &TestApp) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(agents_api::http::serve(
        listener,
        agents_api::metrics::router(app.state.clone()),
        8,
        std::future::pending(),
    ));
    let r = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"),
        "{:?}",
        r.headers()
    );
    r.text().await.unwrap()
}

#[tokio::test]
async fn metrics_use_route_templates_and_live_on_their_own_listener() {
    let app = TestApp::builder().spawn().await;
    let OrgUsers { org, admin, .. } = app.org_with_roles().await;
    app.create_agent(org, admin, "Alpha").await;
    app.get(&format!("/v1/orgs/{org}/agents"), admin)
        .await
        .expect(200);
    app.get(&format!("/v1/orgs/{org}/agents/{}", Uuid::now_v7()), admin)
        .await
        .expect(404);

    // Nothing on the public port.
    let r = into_response(app.client.get(app.url("/metrics")).send().await.unwrap()).await;
    assert_eq!(r.status, 404);

    let text = scrape(&app).await;
    assert!(
        text.contains(
            r#"http_requests_total{method="GET",route="/v1/orgs/{org_id}/agents",status="200"}"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"route="/v1/orgs/{org_id}/agents/{agent_id}",status="404""#),
        "{text}"
    );
    assert!(
        text.contains("http_request_duration_seconds_bucket"),
        "{text}"
    );
    // Labelled families appear once they have a value; these always do.
    for name in [
        "http_requests_in_flight",
        "db_pool_connections{state=\"size\"}",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    // No label carries an id.
    assert!(
        !text.contains(&org.to_string()),
        "raw ids in labels:\n{text}"
    );
}
