use super::*;

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
