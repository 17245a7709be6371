use super::*;

#[tokio::test]
async fn a_replayed_body_is_answered_duplicate_and_processed_once() {
    let h = Hooked::start(true, &[]).await;
    let body = lead_added(LEAD_ID);
    h.send_ok(body.clone(), "accepted").await;
    h.send_ok(body.clone(), "duplicate").await;
    h.wait_events("", 1).await;
    // Also after it was processed.
    h.send_ok(body, "duplicate").await;
    // A different body of the same lead is new.
    h.send_ok(lead_status_changed(LEAD_ID), "accepted").await;

    let events = h.wait_events("", 2).await;
    assert_eq!(events.iter().filter(|e| e["subtype"] == "add").count(), 1);
    assert_eq!(h.wait_webhook_jobs(2).await.len(), 2);
    assert_eq!(h.deliveries().await, 2);
    // Nothing more shows up later.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.events("").await["data"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn two_replicas_racing_with_the_same_body_store_it_once() {
    let h = Hooked::start(true, &[]).await;
    let other = h.app.replica(true).await;
    const ROUNDS: i64 = 5;
    for round in 0..ROUNDS {
        let body = lead_added(LEAD_ID + round);
        let (a, b) = tokio::join!(
            post_webhook(&h.app, &h.path, Some(FORM), body.clone(), &[]),
            post_webhook(&other, &h.path, Some(FORM), body, &[]),
        );
        let a = a.expect(200);
        let b = b.expect(200);
        let mut statuses = vec![
            a.body["status"].as_str().unwrap_or_default().to_string(),
            b.body["status"].as_str().unwrap_or_default().to_string(),
        ];
        statuses.sort();
        assert_eq!(
            statuses,
            vec!["accepted", "duplicate"],
            "round {round}: {} / {}",
            a.text,
            b.text
        );
    }
    assert_eq!(h.deliveries().await, ROUNDS);
    let events = h.wait_events("", ROUNDS as usize).await;
    let leads: HashSet<i64> = events
        .iter()
        .filter_map(|e| e["entity_id"].as_i64())
        .collect();
    assert_eq!(leads.len(), ROUNDS as usize, "{events:?}");
    assert_eq!(h.wait_webhook_jobs(ROUNDS as usize).await.len(), 5);
}

#[tokio::test]
async fn a_body_older_than_24_hours_counts_as_new_again() {
    let h = Hooked::start(true, &[]).await;
    let body = lead_added(LEAD_ID);
    h.send_ok(body.clone(), "accepted").await;
    h.wait_events("", 1).await;
    let mut db = h.app.admin_db().await;
    sqlx::query(
        "UPDATE webhook_events SET received_at = now() - interval '25 hours'
         WHERE kind = 'delivery'",
    )
    .execute(&mut db)
    .await
    .expect("age the delivery");
    // Kommo resends a day later: the scheduler's housekeeping releases the digest
    // (it ticks every second in tests), then the body is new again.
    let started = Instant::now();
    loop {
        let released: bool = sqlx::query_scalar(
            "SELECT body_sha256 IS NULL FROM webhook_events WHERE kind = 'delivery'",
        )
        .fetch_one(&mut db)
        .await
        .expect("digest");
        if released {
            break;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "the digest of a 25 h old delivery was never released"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.send_ok(body, "accepted").await;
    h.wait_events("", 2).await;
    assert_eq!(h.deliveries().await, 2);
}

// ---------------------------------------------------------------------------------------
// 4. The secret URL
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn other_content_types_get_415_and_large_bodies_413() {
    let h = Hooked::start(false, &[("WEBHOOK_BODY_LIMIT_BYTES", "2048")]).await;

    let r = h
        .send("text/plain", lead_added(LEAD_ID))
        .await
        .expect_problem(415, "unsupported_media_type");
    assert_secret_absent(&r, &h.token);
    post_webhook(&h.app, &h.path, None, lead_added(LEAD_ID), &[])
        .await
        .expect_problem(415, "unsupported_media_type");
    h.send("multipart/form-data; boundary=x", lead_added(LEAD_ID))
        .await
        .expect_problem(415, "unsupported_media_type");

    let big = lead_added_with(LEAD_ID, ACCOUNT_ID, &"x".repeat(4096));
    assert!(big.len() > 4096);
    let r = h
        .send(FORM, big)
        .await
        .expect_problem(413, "payload_too_large");
    assert_secret_absent(&r, &h.token);
    let big_json = json!({"leads": {"add": [{"id": 1, "name": "y".repeat(4096)}]}});
    h.send(JSON, big_json.to_string())
        .await
        .expect_problem(413, "payload_too_large");
    assert_eq!(h.deliveries().await, 0);

    // Just under the limit is fine.
    let fits = lead_added_with(LEAD_ID, ACCOUNT_ID, "small");
    assert!(fits.len() < 2048);
    h.send_ok(fits, "accepted").await;
    assert_eq!(h.deliveries().await, 1);
}

// ---------------------------------------------------------------------------------------
// 7. IP allow-list and trusted proxies
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn webhooks_are_rate_limited_per_connection() {
    let h = Hooked::start(false, &[("RATE_LIMIT_WEBHOOK_PER_MIN", "3")]).await;
    for lead in 0..3 {
        h.send_ok(lead_added(LEAD_ID + lead), "accepted").await;
    }
    let r = h
        .send(FORM, lead_added(LEAD_ID + 3))
        .await
        .expect_problem(429, "rate_limited");
    assert_secret_absent(&r, &h.token);
    let retry_after: u64 = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("a Retry-After header: {:?}", r.headers))
        .parse()
        .expect("Retry-After in seconds");
    // 3 a minute: the next one is allowed within 20 s.
    assert!((1..=20).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(h.deliveries().await, 3, "a refused webhook is not stored");

    // Another connection (another org, another account) has its own budget.
    let (_, _, other_path, other_token) = connect(&h.app, &h.fake, "beta.kommo.com").await;
    for lead in 0..3 {
        let r = post_webhook(
            &h.app,
            &other_path,
            Some(FORM),
            lead_added(LEAD_ID + lead),
            &[],
        )
        .await
        .expect(200);
        assert_eq!(r.body, json!({"status": "accepted"}));
        assert_secret_absent(&r, &other_token);
    }
    // The first one is still limited.
    h.send(FORM, lead_added(LEAD_ID + 4))
        .await
        .expect_problem(429, "rate_limited");
    assert_eq!(h.deliveries().await, 6);
}

// ---------------------------------------------------------------------------------------
// 9. Rotation
// ---------------------------------------------------------------------------------------

/// A webhook whose body trickles in must not hold a database connection meanwhile: the
/// pool is small (5 here), and a handful of slow senders would otherwise starve every
/// other request.
#[tokio::test]
async fn slow_webhook_bodies_do_not_hold_database_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let h = Hooked::start(false, &[("DATABASE_MAX_CONNECTIONS", "5")]).await;
    let mut slow = Vec::new();
    for lead in 0..6 {
        let body = lead_added(LEAD_ID + lead);
        let mut stream = tokio::net::TcpStream::connect(h.app.addr)
            .await
            .expect("connect");
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {KOMMO_AGENT}\r\n\
             Content-Type: {FORM}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            h.path,
            h.app.addr,
            body.len()
        );
        stream.write_all(head.as_bytes()).await.expect("head");
        stream
            .write_all(&body.as_bytes()[..10])
            .await
            .expect("first bytes");
        slow.push((stream, body));
    }
    // Let the handlers reach the body.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    let listed = h
        .app
        .get(&h.events_path(""), h.users.member)
        .await
        .expect(200);
    assert_eq!(listed.body["data"], json!([]));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the listing waited {:?} for a database connection",
        started.elapsed()
    );

    // The slow senders finish and are accepted.
    for (mut stream, body) in slow {
        stream
            .write_all(&body.as_bytes()[10..])
            .await
            .expect("rest of the body");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("answer");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains(r#"{"status":"accepted"}"#), "{answer}");
        assert!(!answer.contains(&h.token), "{answer}");
    }
    assert_eq!(h.deliveries().await, 6);
}

// ---------------------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------------------
