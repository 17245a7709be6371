use super::*;

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
