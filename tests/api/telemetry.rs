//! Traces over OTLP/HTTP and error reports to Sentry, each received by a local stand-in
//! from a real `serve` process.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;

use crate::support::app::{fresh_database, runtime_url_for};
use crate::support::process::{Process, free_port, serve_env};

type Received = Arc<Mutex<Vec<Vec<u8>>>>;

/// A local HTTP endpoint that keeps every body POSTed to `path`.
async fn receiver(path: &'static str) -> (String, Received) {
    let received: Received = Arc::default();
    let router = Router::new()
        .route(
            path,
            post(|State(store): State<Received>, body: Bytes| async move {
                store.lock().unwrap().push(body.to_vec());
                "{}"
            }),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (format!("http://{addr}"), received)
}

async fn wait_for(received: &Received, what: impl Fn(&[u8]) -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if received.lock().unwrap().iter().any(|b| what(b)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn traces_are_exported_over_otlp_and_continue_the_callers_trace() {
    let (endpoint, received) = receiver("/v1/traces").await;
    let db = fresh_database().await;
    let port = free_port();
    let mut env = serve_env(&db, runtime_url_for(&db), port);
    env.insert("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint);
    let mut server = Process::spawn(&env, &["serve"]);
    server
        .wait_for_200(&format!("http://127.0.0.1:{port}/health/live"))
        .await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/health/ready"))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Shutting down flushes the batch exporter.
    server.terminate();
    assert_eq!(
        server.wait_exit().await.code(),
        Some(0),
        "{}",
        server.output()
    );

    let id = hex::decode(trace_id).unwrap();
    assert!(
        wait_for(&received, |body| contains(body, &id)
            && contains(body, b"/health/ready"))
        .await,
        "no exported span carried the caller's trace id; bodies: {}",
        received.lock().unwrap().len()
    );
    assert!(wait_for(&received, |body| contains(body, b"agents-api")).await);
}

#[tokio::test]
async fn server_errors_are_reported_to_sentry_with_the_request_id_and_requests_traced() {
    let (endpoint, received) = receiver("/api/1/envelope/").await;
    let db = fresh_database().await;
    let port = free_port();
    let mut env = serve_env(&db, runtime_url_for(&db), port);
    env.insert(
        "SENTRY_DSN".into(),
        endpoint.replace("http://", "http://publickey@") + "/1",
    );
    env.insert("SENTRY_TRACES_SAMPLE_RATE".into(), "1.0".into());
    let mut server = Process::spawn(&env, &["serve"]);
    server
        .wait_for_200(&format!("http://127.0.0.1:{port}/health/live"))
        .await;

    let response = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/v1/test-support/panic"))
        .header("x-request-id", "sentry-check-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    assert!(
        wait_for(&received, |body| contains(body, b"sentry-check-42")).await,
        "Sentry received no event with the request id ({} envelopes)\n{}",
        received.lock().unwrap().len(),
        server.output()
    );
    // Every request is a transaction named by its route pattern, not by its path (a
    // per-request hub from sentry-tower).
    let org = uuid::Uuid::now_v7();
    let response = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/v1/orgs/{org}/agents"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(
        wait_for(&received, |body| contains(body, b"\"transaction\"")
            && contains(body, b"GET /v1/orgs/{org_id}/agents"))
        .await,
        "Sentry received no transaction named by the route ({} envelopes)\n{}",
        received.lock().unwrap().len(),
        server.output()
    );
    assert!(
        !received
            .lock()
            .unwrap()
            .iter()
            .any(|body| contains(body, org.to_string().as_bytes())),
        "the org id of the path reached Sentry"
    );
    server.terminate();
    server.wait_exit().await;
}
