use super::*;

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
