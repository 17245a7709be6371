use super::*;

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
