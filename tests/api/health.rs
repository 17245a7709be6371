use serde_json::Value;

use crate::support::app::{TestApp, into_response};

#[tokio::test]
async fn live_answers_ok() {
    let app = TestApp::builder().spawn().await;
    let r = into_response(
        app.client
            .get(app.url("/health/live"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["status"], "ok");
}

#[tokio::test]
async fn ready_checks_postgres_and_redis() {
    let app = TestApp::builder().spawn().await;
    for path in ["/health/ready", "/health"] {
        let r = into_response(app.client.get(app.url(path)).send().await.unwrap()).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.body["status"], "ok");
        assert_eq!(r.body["checks"]["postgres"]["status"], "ok");
        assert_eq!(r.body["checks"]["redis"]["status"], "ok");
        assert!(r.header("x-request-id").is_some());
    }
}

#[tokio::test]
async fn ready_fails_when_redis_is_unreachable() {
    // Nothing listens on port 1.
    let app = TestApp::builder()
        .configure(|env| {
            env.insert("REDIS_URL".into(), "redis://127.0.0.1:1".into());
        })
        .spawn()
        .await;
    let r = into_response(
        app.client
            .get(app.url("/health/ready"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.body["status"], "fail");
    assert_eq!(r.body["checks"]["postgres"]["status"], "ok");
    assert_eq!(r.body["checks"]["redis"]["status"], "fail");
}

#[tokio::test]
async fn ready_fails_when_postgres_is_unreachable() {
    // It starts with PostgreSQL there (serve checks its role first), then loses it.
    let admin = url::Url::parse(&crate::support::app::admin_url()).unwrap();
    let upstream = format!(
        "{}:{}",
        admin.host_str().unwrap(),
        admin.port_or_known_default().unwrap()
    );
    let proxy = crate::support::fault_proxy::FaultProxy::start(&upstream).await;
    let app = TestApp::builder()
        .configure(|env| {
            let url = env["DATABASE_URL"].clone();
            let named = if url.contains(&upstream) {
                upstream.clone()
            } else {
                admin.host_str().unwrap().to_string()
            };
            env.insert("DATABASE_URL".into(), proxy.url_for(&url, &named));
        })
        .spawn()
        .await;
    proxy.set(crate::support::fault_proxy::Fault::Refuse);
    let r = into_response(
        app.client
            .get(app.url("/health/ready"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.body["checks"]["postgres"]["status"], "fail");
    assert_eq!(r.body["checks"]["redis"]["status"], "ok");
}

#[tokio::test]
async fn ready_answers_503_while_draining() {
    let app = TestApp::builder().spawn().await;
    app.state.lifecycle.start_draining();
    let r = into_response(
        app.client
            .get(app.url("/health/ready"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body["draining"], Value::Bool(true));
    // Liveness is unaffected: the process is still healthy, only leaving.
    let r = into_response(
        app.client
            .get(app.url("/health/live"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
}
