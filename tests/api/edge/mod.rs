//! Edge protection against running servers (spec §7, issue 6): rate limits (per user, per
//! client address, shared across replicas through Redis, per process when Redis is down),
//! client addresses behind proxies, CORS, security headers, body and time limits, slow and
//! surplus connections, and graceful shutdown of a real `serve` process.
//!
//! Each test starts its own app (own database, own Redis key prefix) with the limits it
//! needs; `base_env` makes the rate limits huge, so the rate-limit tests set small ones.
//! Raw TCP is used where an HTTP client would hide what is being tested (a trickled head,
//! idle connections, a body still being sent). Waits are polls with generous bounds.

mod headers;
mod limits;
mod rate_limits;
mod shutdown;

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

use crate::support::app::{
    JWT_SECRET, Response, TestApp, admin_url_for, claims_for, fresh_database, into_response,
    runtime_url_for, sign_hs256,
};
use crate::support::process::{Process, free_port, serve_env};

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
