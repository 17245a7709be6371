//! Edge protection against running servers (spec §7, issue 6): rate limits (per user, per
//! client address, shared across replicas through Redis, per process when Redis is down),
//! client addresses behind proxies, CORS, security headers, body and time limits, slow and
//! surplus connections, and graceful shutdown of a real `serve` process.
//!
//! Each test starts its own app (own database, own Redis key prefix) with the limits it
//! needs; `base_env` makes the rate limits huge, so the rate-limit tests set small ones.
//! Raw TCP is used where an HTTP client would hide what is being tested (a trickled head,
//! idle connections, a body still being sent). Waits are polls with generous bounds.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Connection;
use tokio::net::TcpStream;
use uuid::Uuid;

use crate::helpers::{
    JWT_SECRET, Response, TestApp, admin_url_for, claims_for, fresh_database, into_response,
    runtime_url_for, sign_hs256,
};
use crate::process::{Process, free_port, serve_env};

const ALLOWED_ORIGIN: &str = "https://app.example.com";
const OTHER_ORIGIN: &str = "https://evil.example.com";
const CSP: &str = "default-src 'none'; frame-ancestors 'none'";

fn set(env: &mut HashMap<String, String>, pairs: &[(&str, &str)]) {
    for (k, v) in pairs {
        env.insert((*k).to_string(), (*v).to_string());
    }
}

/// `method path` with extra headers and no body.
async fn request(app: &TestApp, method: Method, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut request = app.client.request(method, app.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    into_response(request.send().await.expect("request")).await
}

/// A header that must be present and a whole number.
#[track_caller]
fn num(r: &Response, name: &str) -> u64 {
    let value = r
        .header(name)
        .unwrap_or_else(|| panic!("no `{name}` header; headers: {:?}", r.headers));
    value
        .parse()
        .unwrap_or_else(|_| panic!("`{name}: {value}` is not a whole number"))
}

/// A successful answer under a limit of `limit`: the `RateLimit-*` headers, with
/// `remaining` as given. Returns the response.
#[track_caller]
fn assert_allowed(r: Response, status: u16, limit: u64, remaining: u64) -> Response {
    let r = r.expect(status);
    assert_eq!(num(&r, "ratelimit-limit"), limit, "{:?}", r.headers);
    assert_eq!(num(&r, "ratelimit-remaining"), remaining, "{:?}", r.headers);
    let reset = num(&r, "ratelimit-reset");
    assert!((1..=60).contains(&reset), "ratelimit-reset {reset}");
    assert!(r.header("retry-after").is_none(), "{:?}", r.headers);
    r
}

/// A 429 problem with `Retry-After` and the `RateLimit-*` headers.
#[track_caller]
fn assert_limited(r: Response, limit: u64) -> Response {
    let r = r.expect_problem(429, "rate_limited");
    let retry_after = num(&r, "retry-after");
    assert!((1..=60).contains(&retry_after), "retry-after {retry_after}");
    assert_eq!(num(&r, "ratelimit-limit"), limit, "{:?}", r.headers);
    assert_eq!(num(&r, "ratelimit-remaining"), 0, "{:?}", r.headers);
    let reset = num(&r, "ratelimit-reset");
    assert!((1..=60).contains(&reset), "ratelimit-reset {reset}");
    assert_security_headers(&r);
    r
}

#[track_caller]
fn assert_no_rate_headers(r: &Response) {
    for name in ["ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"] {
        assert!(r.header(name).is_none(), "`{name}` on {:?}", r.headers);
    }
}

#[track_caller]
fn assert_security_headers(r: &Response) {
    let what = format!("{} {:?}", r.status, r.headers);
    assert_eq!(
        r.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(r.header("x-frame-options"), Some("DENY"), "{what}");
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"), "{what}");
    assert_eq!(r.header("content-security-policy"), Some(CSP), "{what}");
}

/// Every `access-control-*` header of a response.
fn cors_headers(r: &Response) -> Vec<String> {
    r.headers
        .keys()
        .map(|k| k.as_str().to_string())
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

/// Every `Vary` value, split and lower-cased.
fn vary(r: &Response) -> Vec<String> {
    r.headers
        .get_all("vary")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_ascii_lowercase())
        .collect()
}

// --- raw TCP, with only the `net` feature of tokio ---

async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Some bytes, `Ok(0)` at end of stream.
async fn read_some(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        stream.readable().await?;
        match stream.try_read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Reads one HTTP/1.1 response (head, then `Content-Length` bytes of body): its status
/// and body. Panics if it does not arrive within `patience`.
async fn read_response(stream: &TcpStream, patience: Duration) -> (u16, String) {
    let read = async {
        let mut data = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&data[..end]).to_string();
                let length = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if data.len() >= end + 4 + length {
                    let status = head
                        .split_whitespace()
                        .nth(1)
                        .and_then(|s| s.parse().ok())
                        .unwrap_or_else(|| panic!("not an HTTP response: {head}"));
                    let body = String::from_utf8_lossy(&data[end + 4..end + 4 + length]);
                    return (status, body.to_string());
                }
            }
            let n = read_some(stream, &mut buf)
                .await
                .unwrap_or_else(|e| panic!("reading the response: {e}"));
            if n == 0 {
                panic!(
                    "the connection closed before a whole response: {:?}",
                    String::from_utf8_lossy(&data)
                );
            }
            data.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(patience, read)
        .await
        .expect("no response in time")
}

/// Waits up to `patience` for the server to close `stream`: `Some(bytes it sent first)`
/// when it did (end of stream or reset), `None` when it is still open.
async fn wait_closed(stream: &TcpStream, patience: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + patience;
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, read_some(stream, &mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(received),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

// --- 1. rate limits ---

#[tokio::test]
async fn user_limit_answers_429_with_all_headers_and_spares_other_users() {
    let app = TestApp::builder()
        .configure(|env| set(env, &[("RATE_LIMIT_USER_PER_MIN", "5")]))
        .spawn()
        .await;
    let user = Uuid::now_v7();
    for i in 1..=5u64 {
        let r = assert_allowed(app.get("/v1/me", user).await, 200, 5, 5 - i);
        assert_eq!(r.body["user_id"], user.to_string(), "{}", r.text);
    }
    let r = assert_limited(app.get("/v1/me", user).await, 5);
    assert_eq!(
        r.header("x-request-id"),
        r.body["request_id"].as_str(),
        "{}",
        r.text
    );
    // Still limited: a refused request does not reset anything.
    assert_limited(app.get("/v1/me", user).await, 5);

    // Another user has a limit of their own.
    let other = Uuid::now_v7();
    let r = assert_allowed(app.get("/v1/me", other).await, 200, 5, 4);
    assert_eq!(r.body["user_id"], other.to_string());
}

#[tokio::test]
async fn anonymous_limit_is_per_address_and_invalid_tokens_count_as_anonymous() {
    let app = TestApp::builder()
        .configure(|env| set(env, &[("RATE_LIMIT_ANON_PER_MIN", "3")]))
        .spawn()
        .await;
    // A token signed with another secret is no token at all.
    let forged = sign_hs256(
        &claims_for(Uuid::now_v7()),
        "another-secret-that-is-long-enough-for-hs256-xyz",
    );
    let bearer = format!("Bearer {forged}");

    let r = assert_allowed(
        request(&app, Method::GET, "/v1/openapi.json", &[]).await,
        200,
        3,
        2,
    );
    assert!(r.body["paths"].is_object(), "{}", r.text);
    // Same address, invalid token: the same anonymous budget.
    let r = assert_allowed(
        request(
            &app,
            Method::GET,
            "/v1/openapi.json",
            &[("authorization", &bearer)],
        )
        .await,
        200,
        3,
        1,
    );
    assert!(r.body["paths"].is_object(), "{}", r.text);
    // Unknown routes are limited too.
    let r = assert_allowed(
        request(&app, Method::GET, "/v1/edge-unknown", &[]).await,
        404,
        3,
        0,
    );
    assert_eq!(r.body["code"], "not_found", "{}", r.text);

    assert_limited(request(&app, Method::GET, "/v1/openapi.json", &[]).await, 3);
    // The invalid token is limited before it is even refused (429, not 401).
    assert_limited(
        request(&app, Method::GET, "/v1/me", &[("authorization", &bearer)]).await,
        3,
    );
    assert_limited(
        request(
            &app,
            Method::GET,
            "/v1/edge-unknown",
            &[("authorization", "Bearer not-a-jwt")],
        )
        .await,
        3,
    );

    // A valid token is limited per user, not by the exhausted address.
    let user = Uuid::now_v7();
    let r = app.get("/v1/me", user).await.expect(200);
    assert_eq!(r.body["user_id"], user.to_string());

    // Health checks are never limited and carry no RateLimit headers.
    for _ in 0..30 {
        for path in ["/health/live", "/health/ready", "/health"] {
            let r = request(&app, Method::GET, path, &[]).await.expect(200);
            assert_no_rate_headers(&r);
        }
    }
}

// --- 2. one limit across replicas ---

#[tokio::test]
async fn two_instances_sharing_redis_enforce_one_limit() {
    let app = TestApp::builder()
        .configure(|env| set(env, &[("RATE_LIMIT_USER_PER_MIN", "4")]))
        .spawn()
        .await;
    let replica = app.replica(false).await;
    assert_ne!(app.addr, replica.addr);
    let user = Uuid::now_v7();
    for i in 0..4u64 {
        let instance = if i % 2 == 0 { &app } else { &replica };
        assert_allowed(instance.get("/v1/me", user).await, 200, 4, 3 - i);
    }
    // Four requests in total, two on each: both instances refuse the fifth.
    assert_limited(app.get("/v1/me", user).await, 4);
    assert_limited(replica.get("/v1/me", user).await, 4);
    // The shared limit did not fall back to per-process counting.
    assert_eq!(
        app.state
            .limiter
            .fallbacks
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

// --- 3. Redis down: per-process fallback ---

#[tokio::test]
async fn without_redis_requests_are_served_with_a_per_process_limit() {
    // Nothing listens on port 1.
    let app = TestApp::builder()
        .configure(|env| {
            set(
                env,
                &[
                    ("REDIS_URL", "redis://127.0.0.1:1"),
                    ("RATE_LIMIT_USER_PER_MIN", "3"),
                ],
            )
        })
        .spawn()
        .await;
    let user = Uuid::now_v7();
    for i in 1..=3u64 {
        let r = assert_allowed(app.get("/v1/me", user).await, 200, 3, 3 - i);
        assert_eq!(r.body["user_id"], user.to_string());
    }
    assert_limited(app.get("/v1/me", user).await, 3);
    let fallbacks = app
        .state
        .limiter
        .fallbacks
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(fallbacks >= 4, "fallback decisions counted: {fallbacks}");

    // Each process limits on its own: another instance still serves this user.
    let replica = app.replica(false).await;
    assert_allowed(replica.get("/v1/me", user).await, 200, 3, 2);

    let r = request(&app, Method::GET, "/health/ready", &[]).await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.body["checks"]["redis"]["status"], "fail", "{}", r.text);
    assert_eq!(r.body["checks"]["postgres"]["status"], "ok", "{}", r.text);
}

// --- 4. client address and X-Forwarded-For ---

#[tokio::test]
async fn forged_forwarded_for_from_an_untrusted_peer_does_not_change_the_key() {
    let app = TestApp::builder()
        .configure(|env| set(env, &[("RATE_LIMIT_ANON_PER_MIN", "2")]))
        .spawn()
        .await;
    let path = "/v1/edge-unknown";
    let xff = |ip: &'static str| [("x-forwarded-for", ip)];
    assert_allowed(
        request(&app, Method::GET, path, &xff("198.51.100.1")).await,
        404,
        2,
        1,
    );
    assert_allowed(
        request(&app, Method::GET, path, &xff("198.51.100.2")).await,
        404,
        2,
        0,
    );
    assert_limited(
        request(&app, Method::GET, path, &xff("198.51.100.3")).await,
        2,
    );
    assert_limited(request(&app, Method::GET, path, &[]).await, 2);
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit() {
    let app = TestApp::builder()
        .configure(|env| {
            set(
                env,
                &[
                    ("RATE_LIMIT_ANON_PER_MIN", "2"),
                    ("TRUSTED_PROXIES", "127.0.0.1/32"),
                ],
            )
        })
        .spawn()
        .await;
    let path = "/v1/edge-unknown";
    let get = |xff: &'static str| {
        let app = &app;
        async move { request(app, Method::GET, path, &[("x-forwarded-for", xff)]).await }
    };
    assert_allowed(get("198.51.100.1").await, 404, 2, 1);
    assert_allowed(get("198.51.100.1").await, 404, 2, 0);
    assert_limited(get("198.51.100.1").await, 2);
    // A forged leftmost hop does not help: the rightmost untrusted hop is the client.
    assert_limited(get("203.0.113.66, 198.51.100.1").await, 2);
    // Other clients behind the same proxy are not affected.
    assert_allowed(get("198.51.100.2").await, 404, 2, 1);
    assert_allowed(get("203.0.113.7, 198.51.100.3").await, 404, 2, 1);
    // No header: the proxy itself is the client.
    assert_allowed(request(&app, Method::GET, path, &[]).await, 404, 2, 1);
}

// --- 5. CORS ---

fn preflight(origin: &'static str) -> [(&'static str, &'static str); 3] {
    [
        ("origin", origin),
        ("access-control-request-method", "GET"),
        ("access-control-request-headers", "authorization"),
    ]
}

async fn cors_app() -> TestApp {
    TestApp::builder()
        .configure(|env| set(env, &[("CORS_ALLOWED_ORIGINS", ALLOWED_ORIGIN)]))
        .spawn()
        .await
}

/// `GET /v1/me` as `user`, from `origin`.
async fn get_me_from(app: &TestApp, user: Uuid, origin: &str) -> Response {
    let token = format!("Bearer {}", app.token(user));
    request(
        app,
        Method::GET,
        "/v1/me",
        &[("origin", origin), ("authorization", &token)],
    )
    .await
}

#[tokio::test]
async fn cors_allowed_origin_is_echoed_with_credentials() {
    let app = cors_app().await;
    let r = request(&app, Method::OPTIONS, "/v1/me", &preflight(ALLOWED_ORIGIN)).await;
    assert!(r.status.is_success(), "{} {:?}", r.status, r.headers);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some(ALLOWED_ORIGIN),
        "{:?}",
        r.headers
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert!(vary(&r).contains(&"origin".to_string()), "{:?}", r.headers);
    let methods = r
        .header("access-control-allow-methods")
        .unwrap_or_default()
        .to_ascii_uppercase();
    assert!(methods.contains("GET"), "{:?}", r.headers);
    let headers = r
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(headers.contains("authorization"), "{:?}", r.headers);
    assert_security_headers(&r);

    let user = Uuid::now_v7();
    let r = get_me_from(&app, user, ALLOWED_ORIGIN).await.expect(200);
    assert_eq!(r.body["user_id"], user.to_string());
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some(ALLOWED_ORIGIN)
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert!(vary(&r).contains(&"origin".to_string()), "{:?}", r.headers);
    let exposed = r
        .header("access-control-expose-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    for name in ["x-request-id", "retry-after", "ratelimit-remaining"] {
        assert!(exposed.contains(name), "{name} not exposed: {exposed}");
    }
    // Never `*`, even for the allowed origin.
    assert_ne!(r.header("access-control-allow-origin"), Some("*"));
}

#[tokio::test]
async fn cors_other_origins_get_no_allow_origin() {
    let app = cors_app().await;
    let r = request(&app, Method::OPTIONS, "/v1/me", &preflight(OTHER_ORIGIN)).await;
    assert!(
        r.header("access-control-allow-origin").is_none(),
        "{:?}",
        r.headers
    );
    // The server still answers (the browser is what refuses); no origin is echoed.
    let user = Uuid::now_v7();
    let r = get_me_from(&app, user, OTHER_ORIGIN).await.expect(200);
    assert!(
        r.header("access-control-allow-origin").is_none(),
        "{:?}",
        r.headers
    );
    assert_eq!(r.body["user_id"], user.to_string());
    // A near miss is another origin: exact match only.
    for origin in [
        "http://app.example.com",
        "https://app.example.com.evil.com",
        "https://app.example.com:444",
    ] {
        let r = get_me_from(&app, user, origin).await.expect(200);
        assert!(
            r.header("access-control-allow-origin").is_none(),
            "{origin}: {:?}",
            r.headers
        );
    }
}

/// Spec §7: "any other origin gets no CORS headers" — none of `Access-Control-*`, on the
/// preflight and on the request itself.
#[tokio::test]
async fn cors_other_origins_get_no_cors_headers_at_all() {
    let app = cors_app().await;
    let preflight = request(&app, Method::OPTIONS, "/v1/me", &preflight(OTHER_ORIGIN)).await;
    let simple = get_me_from(&app, Uuid::now_v7(), OTHER_ORIGIN)
        .await
        .expect(200);
    // Nor a request without any `Origin` (not a CORS request at all).
    let no_origin = request(&app, Method::GET, "/health/live", &[])
        .await
        .expect(200);
    assert_eq!(
        (
            cors_headers(&preflight),
            cors_headers(&simple),
            cors_headers(&no_origin)
        ),
        (Vec::new(), Vec::new(), Vec::new()),
        "CORS headers sent to {OTHER_ORIGIN}\npreflight ({}): {:?}\nGET: {:?}\nno Origin: {:?}",
        preflight.status,
        preflight.headers,
        simple.headers,
        no_origin.headers
    );
}

#[tokio::test]
async fn without_configured_origins_there_are_no_cors_headers() {
    let app = TestApp::builder().spawn().await;
    for origin in [ALLOWED_ORIGIN, OTHER_ORIGIN] {
        let r = request(&app, Method::OPTIONS, "/v1/me", &preflight(origin)).await;
        assert_eq!(cors_headers(&r), Vec::<String>::new(), "{:?}", r.headers);
        assert!(!r.status.is_success(), "{} {:?}", r.status, r.headers);
        let r = get_me_from(&app, Uuid::now_v7(), origin).await.expect(200);
        assert_eq!(cors_headers(&r), Vec::<String>::new(), "{:?}", r.headers);
    }
}

// --- 6. security headers ---

#[tokio::test]
async fn security_headers_are_on_every_response() {
    let app = TestApp::builder()
        .configure(|env| set(env, &[("RATE_LIMIT_USER_PER_MIN", "1")]))
        .spawn()
        .await;
    let mut responses = Vec::new();

    let r = request(&app, Method::GET, "/health/live", &[])
        .await
        .expect(200);
    responses.push(r);
    let r = request(&app, Method::GET, "/v1/edge-unknown", &[])
        .await
        .expect_problem(404, "not_found");
    responses.push(r);
    let r = request(&app, Method::DELETE, "/v1/me", &[])
        .await
        .expect_problem(405, "method_not_allowed");
    responses.push(r);
    let r = request(&app, Method::GET, "/v1/me", &[])
        .await
        .expect_problem(401, "unauthorized");
    responses.push(r);
    let user = Uuid::now_v7();
    responses.push(app.get("/v1/me", user).await.expect(200));
    responses.push(assert_limited(app.get("/v1/me", user).await, 1));

    for r in &responses {
        assert_security_headers(r);
        assert!(
            r.header("strict-transport-security").is_none(),
            "HSTS outside production: {:?}",
            r.headers
        );
    }
}

#[tokio::test]
async fn a_panic_answers_500_problem_with_security_headers_and_no_panic_text() {
    let app = TestApp::builder().spawn().await;
    let r = request(&app, Method::GET, "/v1/test-support/panic", &[])
        .await
        .expect_problem(500, "internal");
    let request_id = r.body["request_id"].as_str().expect("request_id");
    assert!(!request_id.is_empty());
    assert_eq!(r.header("x-request-id"), Some(request_id));
    let text = r.text.to_ascii_lowercase();
    assert!(
        !text.contains("panic") && !text.contains("on purpose"),
        "the panic leaks: {}",
        r.text
    );

    assert_security_headers(&r);
    assert!(r.header("strict-transport-security").is_none());
    // The app survived the panic.
    request(&app, Method::GET, "/health/live", &[])
        .await
        .expect(200);
}

#[tokio::test]
async fn hsts_is_sent_in_production() {
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let app = TestApp::builder()
        .configure(|env| {
            set(
                env,
                &[
                    ("APP_ENV", "production"),
                    ("ENCRYPTION_KEYS", &format!("k1:{key}")),
                    ("PUBLIC_BASE_URL", "https://api.example.com"),
                    ("FRONTEND_URL", "https://app.example.com"),
                    (
                        "OAUTH_REDIRECT_URL",
                        "https://api.example.com/v1/kommo/oauth/callback",
                    ),
                ],
            )
        })
        .spawn()
        .await;
    for (path, status) in [("/health/live", 200), ("/v1/edge-unknown", 404)] {
        let r = request(&app, Method::GET, path, &[]).await.expect(status);
        assert_security_headers(&r);
        let hsts = r
            .header("strict-transport-security")
            .unwrap_or_else(|| panic!("no HSTS in production on {path}: {:?}", r.headers));
        let max_age: u64 = hsts
            .split(';')
            .find_map(|p| p.trim().strip_prefix("max-age="))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("HSTS without max-age: {hsts}"));
        assert!(max_age >= 31_536_000, "{hsts}");
    }
}

// --- 7. body limit ---

#[tokio::test]
async fn a_six_megabyte_body_is_refused_with_413() {
    let app = TestApp::builder().spawn().await;
    let user = Uuid::now_v7();
    let body = json!({"name": "x".repeat(6 * 1024 * 1024)});
    let r = app
        .post("/v1/orgs", user, body)
        .await
        .expect_problem(413, "payload_too_large");
    assert_security_headers(&r);
    // Nothing was created.
    let r = app.get("/v1/me", user).await.expect(200);
    assert_eq!(r.body["orgs"], json!([]), "{}", r.text);
    // A body under the limit still works.
    let r = app
        .post("/v1/orgs", user, json!({"name": "Small"}))
        .await
        .expect(201);
    assert_eq!(r.body["name"], "Small", "{}", r.text);
}

// --- 8. handler timeout ---

#[tokio::test]
async fn a_handler_over_the_timeout_answers_504() {
    let app = TestApp::builder()
        .configure(|env| set(env, &[("REQUEST_TIMEOUT_SECS", "1")]))
        .spawn()
        .await;
    let r = request(&app, Method::GET, "/v1/test-support/sleep?ms=20", &[])
        .await
        .expect(200);
    assert_eq!(r.text, "slept");

    let started = Instant::now();
    let r = request(&app, Method::GET, "/v1/test-support/sleep?ms=3000", &[])
        .await
        .expect_problem(504, "timeout");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2900),
        "504 after {took:?}"
    );
    assert_security_headers(&r);
    assert!(r.header("ratelimit-limit").is_some(), "{:?}", r.headers);
}

// --- 9. slowloris ---

#[tokio::test]
async fn a_client_trickling_its_headers_is_disconnected() {
    let app = TestApp::builder().spawn().await;
    let stream = TcpStream::connect(app.addr).await.expect("connect");
    write_all(&stream, b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write the request line");
    let started = Instant::now();
    let trickle = b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut received = Vec::new();
    let mut served_meanwhile = 0;
    let mut sent = 0;
    let closed_after = loop {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the slow client is still connected after {:?} ({sent} header bytes sent)",
            started.elapsed()
        );
        if write_all(&stream, &trickle[sent % trickle.len()..][..1])
            .await
            .is_err()
        {
            break started.elapsed();
        }
        sent += 1;
        // Others are served while the slow client hangs on.
        if sent % 3 == 0 {
            let r = request(&app, Method::GET, "/health/live", &[])
                .await
                .expect(200);
            assert_eq!(r.body["status"], "ok");
            served_meanwhile += 1;
        }
        if let Some(bytes) = wait_closed(&stream, Duration::from_secs(1)).await {
            received = bytes;
            break started.elapsed();
        }
    };
    let answer = String::from_utf8_lossy(&received);
    assert!(
        !answer.contains(" 200 "),
        "the unfinished request was answered: {answer}"
    );
    // Disconnected by the header timeout (10 s), not refused outright.
    assert!(
        closed_after >= Duration::from_secs(5),
        "closed after only {closed_after:?}: {answer}"
    );
    assert!(served_meanwhile >= 1);
    request(&app, Method::GET, "/health/live", &[])
        .await
        .expect(200);
}

// --- 10. connection cap ---

/// A connection that has had one request answered and stays open (keep-alive).
async fn held_connection(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).await.expect("connect");
    write_all(&stream, b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let (status, body) = read_response(&stream, Duration::from_secs(5)).await;
    assert_eq!(status, 200, "{body}");
    stream
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once() {
    let app = TestApp::builder()
        .configure(|env| set(env, &[("HTTP_MAX_CONNECTIONS", "2")]))
        .spawn()
        .await;
    let first = held_connection(app.addr).await;
    let second = held_connection(app.addr).await;

    let third = TcpStream::connect(app.addr).await.expect("connect");
    // The write may already fail if the server dropped the connection.
    let _ = write_all(&third, b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let closed = wait_closed(&third, Duration::from_secs(5)).await;
    match closed {
        None => panic!("a third connection stayed open over HTTP_MAX_CONNECTIONS=2"),
        Some(bytes) => assert!(
            bytes.is_empty(),
            "the third connection was served: {}",
            String::from_utf8_lossy(&bytes)
        ),
    }

    // The held connections still work.
    write_all(&second, b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let (status, _) = read_response(&second, Duration::from_secs(5)).await;
    assert_eq!(status, 200);

    // Once one is gone, a new client is served again.
    drop(first);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client");
    let started = Instant::now();
    loop {
        match client.get(app.url("/health/live")).send().await {
            Ok(r) if r.status() == 200 => break,
            other => {
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "no new connection served after one was freed: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    drop(second);
}

// --- 11. graceful shutdown of a real `serve` process ---

/// A `serve` process with its own database and Redis prefix, ready.
async fn serve(extra: &[(&str, &str)]) -> (Process, String, u16, String) {
    let db = fresh_database().await;
    let (process, base, port) = serve_on(&db, extra).await;
    (process, base, port, db)
}

/// A `serve` process on `db` with a Redis prefix of its own, ready.
async fn serve_on(db: &str, extra: &[(&str, &str)]) -> (Process, String, u16) {
    let port = free_port();
    let mut env = serve_env(db, runtime_url_for(db), port);
    let prefix = format!("test:{}:", Uuid::new_v4().simple());
    set(
        &mut env,
        &[("REDIS_KEY_PREFIX", &prefix), ("RUST_LOG", "info")],
    );
    set(&mut env, extra);
    let mut process = Process::spawn(&env, &["serve"]);
    let base = format!("http://127.0.0.1:{port}");
    process.wait_for_200(&format!("{base}/health/ready")).await;
    (process, base, port)
}

/// Waits up to `within` for `process` to exit after a second signal.
async fn wait_forced_exit(process: &mut Process, within: Duration) {
    let signalled = Instant::now();
    loop {
        if let Some(status) = process.try_wait() {
            // Exiting at once; a non-zero code is fine.
            assert!(
                status.code().is_some(),
                "killed by the signal instead of exiting ({status})"
            );
            return;
        }
        assert!(
            signalled.elapsed() < within,
            "still running {:?} after a second SIGTERM\n{}",
            signalled.elapsed(),
            process.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A client that opens a new connection for every request.
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client")
}

/// Polls readiness until it answers 503 (draining); panics after `within`.
async fn wait_not_ready(process: &Process, base: &str, within: Duration) -> Value {
    let client = fresh_client();
    let started = Instant::now();
    loop {
        let last = match client.get(format!("{base}/health/ready")).send().await {
            Ok(r) if r.status() == 503 => {
                return r.json().await.unwrap_or(Value::Null);
            }
            Ok(r) => r.status().to_string(),
            Err(e) => e.to_string(),
        };
        assert!(
            started.elapsed() < within,
            "readiness did not turn 503 within {within:?} (last: {last})\n{}",
            process.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_request_finish_then_exits_0() {
    let (mut server, base, port, db) = serve(&[
        ("SHUTDOWN_GRACE_SECS", "10"),
        ("SHUTDOWN_DRAIN_DELAY_SECS", "2"),
    ])
    .await;
    let user = Uuid::now_v7();
    let token = sign_hs256(&claims_for(user), JWT_SECRET);
    let body = json!({"name": "Drained While Sending"}).to_string();
    let (first_half, second_half) = body.split_at(body.len() / 2);
    let head = format!(
        "POST /v1/orgs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    write_all(&stream, head.as_bytes()).await.expect("head");
    write_all(&stream, first_half.as_bytes())
        .await
        .expect("half the body");
    // Let the server read the head and start the handler.
    tokio::time::sleep(Duration::from_millis(300)).await;

    server.terminate();
    let signalled = Instant::now();
    // Readiness turns 503 at once, while new connections are still accepted.
    let ready = wait_not_ready(&server, &base, Duration::from_secs(2)).await;
    assert_eq!(ready["draining"], true, "{ready}");

    // After the drain delay the listener stops accepting.
    loop {
        match tokio::time::timeout(
            Duration::from_secs(1),
            TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        {
            Ok(Err(_)) => break,
            _ => {
                assert!(
                    signalled.elapsed() < Duration::from_secs(8),
                    "still accepting connections {:?} after SIGTERM\n{}",
                    signalled.elapsed(),
                    server.output()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert!(
        signalled.elapsed() >= Duration::from_millis(1500),
        "stopped accepting after {:?}, before SHUTDOWN_DRAIN_DELAY_SECS=2",
        signalled.elapsed()
    );
    assert!(
        server.try_wait().is_none(),
        "serve exited with a request in flight\n{}",
        server.output()
    );

    // The request in flight completes with its normal answer.
    write_all(&stream, second_half.as_bytes())
        .await
        .expect("the rest of the body");
    let (status, text) = read_response(&stream, Duration::from_secs(10)).await;
    assert_eq!(status, 201, "{text}\n{}", server.output());
    let org: Value = serde_json::from_str(&text).expect("JSON body");
    assert_eq!(org["name"], "Drained While Sending", "{text}");
    let org_id: Uuid = org["id"].as_str().expect("id").parse().expect("uuid");

    let status = server.wait_exit().await;
    assert_eq!(
        status.code(),
        Some(0),
        "serve did not exit 0 ({status})\n{}",
        server.output()
    );
    // The org was committed before the process left.
    let mut admin = sqlx::PgConnection::connect(&admin_url_for(&db))
        .await
        .expect("admin");
    let found: i64 = sqlx::query_scalar("SELECT count(*) FROM organizations WHERE id = $1")
        .bind(org_id)
        .fetch_one(&mut admin)
        .await
        .expect("count");
    assert_eq!(found, 1);
}

#[tokio::test]
async fn a_second_sigterm_exits_at_once() {
    let (mut server, base, _port, _db) = serve(&[
        ("SHUTDOWN_GRACE_SECS", "30"),
        ("SHUTDOWN_DRAIN_DELAY_SECS", "30"),
    ])
    .await;
    server.terminate();
    wait_not_ready(&server, &base, Duration::from_secs(5)).await;
    assert!(
        server.try_wait().is_none(),
        "one SIGTERM must wait for the 30 s drain delay\n{}",
        server.output()
    );
    server.terminate();
    wait_forced_exit(&mut server, Duration::from_secs(5)).await;
}

// --- stalled bodies ---

/// Sends the head of a POST and the first byte of its body, then stalls.
async fn stall_post(app: &TestApp, path: &str, token: &str) -> TcpStream {
    let stream = TcpStream::connect(app.addr).await.expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{{",
        app.addr
    );
    write_all(&stream, head.as_bytes()).await.expect("head");
    stream
}

/// Clients that send headers and trickle their body hold no pooled connection: with
/// twice as many stalled as the pool holds, other requests and readiness are served at
/// once, and each stalled one gets 408 when its read timeout ends.
#[tokio::test]
async fn stalled_bodies_hold_no_database_connection_and_get_408() {
    let app = TestApp::builder()
        .configure(|env| {
            set(
                env,
                &[
                    ("DATABASE_MAX_CONNECTIONS", "4"),
                    ("BODY_READ_TIMEOUT_SECS", "2"),
                    ("RATE_LIMIT_USER_PER_MIN", "1000"),
                ],
            )
        })
        .spawn()
        .await;
    let users = app.org_with_roles().await;
    let admin = app.token(users.admin);
    let agents = format!("/v1/orgs/{}/agents", users.org);
    let mut stalled = Vec::new();
    for _ in 0..8 {
        stalled.push(stall_post(&app, &agents, &admin).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    app.get(&agents, users.member).await.expect(200);
    let ready = reqwest::get(app.url("/health/ready")).await.expect("ready");
    assert_eq!(ready.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "served only after {:?}: the stalled bodies held the pool",
        started.elapsed()
    );
    for stream in &stalled {
        let (status, body) = read_response(stream, Duration::from_secs(5)).await;
        assert_eq!(status, 408, "{body}");
        let problem: Value = serde_json::from_str(&body).expect("problem+json");
        assert_eq!(problem["code"], "request_timeout", "{body}");
    }
    // Nothing was written by the abandoned requests.
    let listed = app.get(&agents, users.member).await.expect(200);
    assert_eq!(listed.body["data"], json!([]));
}

/// A declared length over the limit is refused before a byte of the body is read.
#[tokio::test]
async fn a_declared_oversize_body_gets_413_without_being_read() {
    let app = TestApp::builder()
        .configure(|env| set(env, &[("BODY_LIMIT_BYTES", "4096")]))
        .spawn()
        .await;
    let users = app.org_with_roles().await;
    let stream = TcpStream::connect(app.addr).await.expect("connect");
    let head = format!(
        "POST /v1/orgs/{}/agents HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 10000000\r\nConnection: close\r\n\r\n",
        users.org,
        app.addr,
        app.token(users.admin)
    );
    write_all(&stream, head.as_bytes()).await.expect("head");
    let (status, body) = read_response(&stream, Duration::from_secs(3)).await;
    assert_eq!(status, 413, "{body}");
}
