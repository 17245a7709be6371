//! The HTTP conventions every endpoint shares: request ids, problem+json errors for every
//! kind of bad request, body limits and security headers.

use reqwest::Method;
use reqwest::header::CONTENT_TYPE;
use serde_json::json;
use uuid::Uuid;

use crate::support::app::{Response, TestApp, into_response};

/// A raw request with a valid token for `user` and the given body and content type.
async fn post_raw(
    app: &TestApp,
    path: &str,
    user: Uuid,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> Response {
    let mut request = app
        .client
        .post(app.url(path))
        .bearer_auth(app.token(user))
        .body(body);
    if let Some(content_type) = content_type {
        request = request.header(CONTENT_TYPE, content_type);
    }
    into_response(request.send().await.expect("request")).await
}

async fn get_with_request_id(app: &TestApp, path: &str, request_id: &str) -> Response {
    let response = app
        .client
        .get(app.url(path))
        .header("x-request-id", request_id)
        .send()
        .await
        .expect("request");
    into_response(response).await
}

/// The full RFC 9457 document, with the request id of the response's header.
#[track_caller]
fn assert_problem_document(r: &Response, status: u16, code: &str) {
    assert_eq!(r.status.as_u16(), status, "{}", r.text);
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "{}",
        r.text
    );
    let body = r.body.as_object().expect("a JSON object");
    for key in ["type", "title", "detail", "code", "request_id"] {
        assert!(
            body.get(key)
                .and_then(|v| v.as_str())
                .is_some_and(|v| !v.is_empty()),
            "`{key}` missing or empty: {}",
            r.text
        );
    }
    assert_eq!(r.body["status"], status, "{}", r.text);
    assert_eq!(r.body["code"], code, "{}", r.text);
    let header = r.header("x-request-id").expect("x-request-id");
    assert_eq!(r.body["request_id"], header, "{}", r.text);
}

// ---- request ids ----

#[tokio::test]
async fn every_response_has_a_request_id() {
    let app = TestApp::builder().spawn().await;
    let user = Uuid::now_v7();
    let responses = [
        app.send(Method::GET, "/health/live", None, None)
            .await
            .expect(200),
        app.get("/v1/me", user).await.expect(200),
        app.post("/v1/orgs", user, json!({"name": "Acme"}))
            .await
            .expect(201),
        app.send(Method::GET, "/v1/me", None, None)
            .await
            .expect(401),
        app.get("/v1/nowhere", user).await.expect(404),
        app.post("/v1/orgs", user, json!({"name": "A"}))
            .await
            .expect(422),
    ];
    let mut ids = Vec::new();
    for r in &responses {
        let id = r
            .header("x-request-id")
            .unwrap_or_else(|| panic!("no x-request-id: {}", r.text));
        assert!(!id.is_empty());
        ids.push(id.to_owned());
    }
    // Generated ids are unique per request.
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), responses.len(), "{ids:?}");
}

#[tokio::test]
async fn a_sane_request_id_is_echoed() {
    let app = TestApp::builder().spawn().await;
    let r = get_with_request_id(&app, "/health/live", "abc-123")
        .await
        .expect(200);
    assert_eq!(r.header("x-request-id"), Some("abc-123"));

    // And quoted by errors.
    let r = get_with_request_id(&app, "/v1/me", "abc-123").await;
    assert_problem_document(&r, 401, "unauthorized");
    assert_eq!(r.body["request_id"], "abc-123");
}

#[tokio::test]
async fn an_insane_request_id_is_replaced() {
    let app = TestApp::builder().spawn().await;
    let too_long = "a".repeat(200);
    for bad in [
        too_long.as_str(),
        "has spaces in it",
        "semi;colon",
        "quote\"d",
        "ünï",
    ] {
        let response = app
            .client
            .get(app.url("/v1/me"))
            .header(
                "x-request-id",
                reqwest::header::HeaderValue::from_bytes(bad.as_bytes()).expect("header"),
            )
            .send()
            .await
            .expect("request");
        let r = into_response(response).await;
        assert_problem_document(&r, 401, "unauthorized");
        let id = r.header("x-request-id").expect("x-request-id");
        assert_ne!(id, bad);
        assert!(
            (1..=128).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)),
            "generated id {id:?}"
        );
        assert_eq!(r.body["request_id"], id);
    }
}

// ---- routing ----

#[tokio::test]
async fn unknown_route_is_a_not_found_problem() {
    let app = TestApp::builder().spawn().await;
    let user = Uuid::now_v7();
    for path in ["/v1/nowhere", "/v2/me", "/"] {
        let r = app.send(Method::GET, path, None, None).await;
        assert_problem_document(&r, 404, "not_found");
        let r = app.get(path, user).await;
        assert_problem_document(&r, 404, "not_found");
    }
}

#[tokio::test]
async fn wrong_method_is_a_method_not_allowed_problem() {
    let app = TestApp::builder().spawn().await;
    let user = Uuid::now_v7();
    let r = app.delete("/v1/me", user).await;
    assert_problem_document(&r, 405, "method_not_allowed");
    let r = app
        .send(
            Method::PUT,
            "/v1/orgs",
            Some(&app.token(user)),
            Some(json!({})),
        )
        .await;
    assert_problem_document(&r, 405, "method_not_allowed");
    // RFC 9110 §15.5.6: a 405 names the methods the resource supports.
    let allow = r.header("allow").unwrap_or_default().to_ascii_uppercase();
    assert!(allow.contains("POST"), "Allow: {allow:?}");
}

// ---- bodies ----

#[tokio::test]
async fn malformed_json_is_a_bad_request() {
    let app = TestApp::builder().spawn().await;
    let user = Uuid::now_v7();
    for body in [
        r#"{"name": "#,
        "{name: 'Acme'}",
        r#"{"name": "Acme"} trailing"#,
        "",
    ] {
        let r = post_raw(&app, "/v1/orgs", user, Some("application/json"), body).await;
        assert_problem_document(&r, 400, "bad_request");
    }
    let me = app.get("/v1/me", user).await.expect(200);
    assert_eq!(me.body["orgs"], json!([]));
}

#[tokio::test]
async fn wrong_content_type_is_unsupported_media_type() {
    let app = TestApp::builder().spawn().await;
    let user = Uuid::now_v7();
    let json_text = r#"{"name": "Acme"}"#;
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/xml",
    ] {
        let r = post_raw(&app, "/v1/orgs", user, Some(content_type), json_text).await;
        assert_problem_document(&r, 415, "unsupported_media_type");
    }
    let me = app.get("/v1/me", user).await.expect(200);
    assert_eq!(me.body["orgs"], json!([]));
}

#[tokio::test]
async fn json_with_charset_is_accepted() {
    let app = TestApp::builder().spawn().await;
    let user = Uuid::now_v7();
    let r = post_raw(
        &app,
        "/v1/orgs",
        user,
        Some("application/json; charset=utf-8"),
        r#"{"name": "Acme"}"#,
    )
    .await
    .expect(201);
    assert_eq!(r.body["name"], "Acme");
}

#[tokio::test]
async fn missing_content_type_is_unsupported_media_type() {
    let app = TestApp::builder().spawn().await;
    let user = Uuid::now_v7();
    let r = post_raw(&app, "/v1/orgs", user, None, r#"{"name": "Acme"}"#).await;
    assert_problem_document(&r, 415, "unsupported_media_type");
    let me = app.get("/v1/me", user).await.expect(200);
    assert_eq!(me.body["orgs"], json!([]));
}

#[tokio::test]
async fn body_over_the_limit_is_payload_too_large() {
    let app = TestApp::builder()
        .configure(|env| {
            env.insert("BODY_LIMIT_BYTES".into(), "2048".into());
        })
        .spawn()
        .await;
    let user = Uuid::now_v7();
    // Valid JSON of about 4 KB: only its size is wrong.
    let body = json!({"name": "Acme", "slug": "x".repeat(4096)}).to_string();
    assert!(body.len() > 4096);
    let r = post_raw(&app, "/v1/orgs", user, Some("application/json"), body).await;
    assert_problem_document(&r, 413, "payload_too_large");

    // Below the limit the same endpoint works.
    app.post("/v1/orgs", user, json!({"name": "Acme"}))
        .await
        .expect(201);
    let me = app.get("/v1/me", user).await.expect(200);
    assert_eq!(me.body["orgs"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_payload_too_large() {
    let app = TestApp::builder()
        .configure(|env| {
            env.insert("BODY_LIMIT_BYTES".into(), "2048".into());
        })
        .spawn()
        .await;
    let user = Uuid::now_v7();
    // Without a Content-Length the limit must hold while the body is read.
    let body = json!({"name": "Acme", "slug": "x".repeat(4096)}).to_string();
    let mut request = format!(
        "POST /v1/orgs HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n",
        app.addr,
        app.token(user)
    );
    for chunk in body.as_bytes().chunks(1024) {
        request.push_str(&format!("{:x}\r\n", chunk.len()));
        request.push_str(std::str::from_utf8(chunk).expect("ascii"));
        request.push_str("\r\n");
    }
    request.push_str("0\r\n\r\n");
    let addr = app.addr;
    let answer = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .expect("timeout");
        // The server may answer and close before reading everything.
        let _ = stream.write_all(request.as_bytes());
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
    .expect("join");
    let status_line = answer.lines().next().unwrap_or_default();
    assert!(status_line.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{answer}"
    );
    assert!(answer.contains(r#""code":"payload_too_large""#), "{answer}");
    let me = app.get("/v1/me", user).await.expect(200);
    assert_eq!(me.body["orgs"], json!([]));
}

#[tokio::test]
async fn json_array_where_an_object_is_expected_is_a_validation_error() {
    let app = TestApp::builder().spawn().await;
    let user = Uuid::now_v7();
    // Arrays that happen to line up with the fields of the body, in order, too: a body
    // is an object, never a tuple.
    for body in [
        json!([{"name": "Acme"}]),
        json!(["Acme Corp"]),
        json!(["Acme Corp", "acme-corp"]),
        json!("Acme"),
        json!(42),
        json!(null),
    ] {
        let r = app.post("/v1/orgs", user, body.clone()).await;
        assert_problem_document(&r, 422, "validation_failed");
        assert!(
            !r.body["errors"].as_array().expect("errors").is_empty(),
            "{body}: {}",
            r.text
        );
    }
    let me = app.get("/v1/me", user).await.expect(200);
    assert_eq!(me.body["orgs"], json!([]));

    let users = app.org_with_roles().await;
    let newcomer = Uuid::now_v7();
    let r = app
        .put(
            &format!("/v1/orgs/{}/members/{newcomer}", users.org),
            users.owner,
            json!(["admin"]),
        )
        .await;
    assert_problem_document(&r, 422, "validation_failed");
    app.get(&format!("/v1/orgs/{}", users.org), newcomer)
        .await
        .expect_problem(404, "not_found");
}

#[tokio::test]
async fn validation_problems_name_each_field() {
    let app = TestApp::builder().spawn().await;
    let user = Uuid::now_v7();
    let r = app
        .post("/v1/orgs", user, json!({"name": "A", "slug": "Not A Slug"}))
        .await;
    assert_problem_document(&r, 422, "validation_failed");
    let mut fields = r.error_fields();
    fields.sort();
    assert_eq!(fields, vec!["name", "slug"], "{}", r.text);
    for error in r.body["errors"].as_array().expect("errors") {
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}",
            r.text
        );
    }
}

// ---- the problem document ----

#[tokio::test]
async fn problems_carry_every_rfc_9457_field() {
    let app = TestApp::builder().spawn().await;
    let users = app.org_with_roles().await;
    let stranger = Uuid::now_v7();
    let org = users.org;
    let cases = [
        (
            app.send(Method::GET, "/v1/me", None, None).await,
            401,
            "unauthorized",
        ),
        (
            app.delete(
                &format!("/v1/orgs/{org}/members/{}", users.member),
                users.admin,
            )
            .await,
            403,
            "forbidden",
        ),
        (
            app.get(&format!("/v1/orgs/{org}"), stranger).await,
            404,
            "not_found",
        ),
        (
            app.delete(
                &format!("/v1/orgs/{org}/members/{}", users.owner),
                users.owner,
            )
            .await,
            409,
            "conflict",
        ),
        (
            app.get(&format!("/v1/orgs/{org}/members?limit=abc"), users.member)
                .await,
            400,
            "bad_request",
        ),
        (
            app.post("/v1/orgs", stranger, json!({"name": "A"})).await,
            422,
            "validation_failed",
        ),
    ];
    for (r, status, code) in &cases {
        assert_problem_document(r, *status, code);
    }
    // The 401 also tells the client how to authenticate.
    assert_eq!(cases[0].0.header("www-authenticate"), Some("Bearer"));
}

// ---- security headers ----

#[tokio::test]
async fn security_headers_are_on_successes_and_errors() {
    let app = TestApp::builder().spawn().await;
    let user = Uuid::now_v7();
    let responses = [
        app.get("/v1/me", user).await.expect(200),
        app.post("/v1/orgs", user, json!({"name": "Acme"}))
            .await
            .expect(201),
        app.send(Method::GET, "/v1/me", None, None)
            .await
            .expect(401),
        app.get("/v1/nowhere", user).await.expect(404),
        app.delete("/v1/me", user).await.expect(405),
        app.post("/v1/orgs", user, json!({"name": "A"}))
            .await
            .expect(422),
    ];
    for r in &responses {
        let status = r.status;
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{status}"
        );
        assert_eq!(r.header("x-frame-options"), Some("DENY"), "{status}");
        assert_eq!(r.header("referrer-policy"), Some("no-referrer"), "{status}");
        let csp = r.header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("default-src 'none'"), "{status}: CSP {csp:?}");
        // HSTS only in production.
        assert_eq!(r.header("strict-transport-security"), None, "{status}");
    }
}

#[tokio::test]
async fn nul_characters_are_refused_not_500() {
    let app = TestApp::builder().spawn().await;
    let crate::support::app::OrgUsers { org, admin, .. } = app.org_with_roles().await;
    let r = app
        .post(
            "/v1/orgs",
            admin,
            serde_json::json!({"name": "Nul\u{0}org"}),
        )
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(r.error_fields(), vec!["name"]);
    let r = app
        .post(
            &format!("/v1/orgs/{org}/agents"),
            admin,
            serde_json::json!({"name": "Bot", "model": "m", "settings": {"a": ["ok", "b\u{0}"]}}),
        )
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(r.error_fields(), vec!["settings.a[1]"]);
    app.get(&format!("/v1/orgs/{org}/agents?search=%00"), admin)
        .await
        .expect_problem(400, "bad_request");
}

#[tokio::test]
async fn extreme_numbers_in_json_columns_read_back() {
    let app = TestApp::builder().spawn().await;
    let crate::support::app::OrgUsers { org, admin, .. } = app.org_with_roles().await;
    let created = app
        .post(
            &format!("/v1/orgs/{org}/agents"),
            admin,
            serde_json::json!({"name": "Bot", "model": "m", "settings": {"x": -1.7976931348623157e308}}),
        )
        .await
        .expect(201);
    assert_eq!(created.body["settings"]["x"], -1.7976931348623157e308);
    app.get(&format!("/v1/orgs/{org}/agents"), admin)
        .await
        .expect(200);
}
