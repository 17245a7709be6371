use super::*;

#[tokio::test]
async fn kommo_form_bodies_are_accepted_parsed_by_the_job_and_listed() {
    let h = Hooked::start(true, &[]).await;
    for body in [
        lead_added(LEAD_ID),
        lead_status_changed(LEAD_ID),
        contact_updated(CONTACT_ID),
        chat_message("Hello, is the offer still valid?"),
    ] {
        h.send_ok(body, "accepted").await;
    }

    let events = h.wait_events("", 4).await;
    for e in &events {
        assert_eq!(e["status"], "processed", "{e}");
        assert_eq!(e["kind"], "event", "{e}");
        assert_eq!(e["connection_id"], h.connection.to_string(), "{e}");
        assert!(e["delivery_id"].is_string(), "{e}");
        assert!(e["processed_at"].is_string(), "{e}");
        assert!(e["error"].is_null(), "{e}");
    }
    // Newest first, and four distinct deliveries.
    let listed = ids(&events);
    let mut sorted = listed.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(listed, sorted, "newest first");
    let deliveries: HashSet<&str> = events
        .iter()
        .filter_map(|e| e["delivery_id"].as_str())
        .collect();
    assert_eq!(deliveries.len(), 4);

    let added = event_of(&events, "leads", "add");
    assert_eq!(added["entity_id"], LEAD_ID);
    assert_eq!(added["payload"]["status_id"], STATUS_ID.to_string());
    assert_eq!(added["payload"]["pipeline_id"], PIPELINE_ID.to_string());
    assert_eq!(added["payload"]["name"], "Deal #1");

    let status = event_of(&events, "leads", "status");
    assert_eq!(status["entity_id"], LEAD_ID);
    assert_eq!(status["payload"]["status_id"], WON_STATUS_ID.to_string());
    assert_eq!(status["payload"]["old_status_id"], STATUS_ID.to_string());

    let contact = event_of(&events, "contacts", "update");
    assert_eq!(contact["entity_id"], CONTACT_ID);
    assert_eq!(contact["payload"]["name"], "Jane Roe");
    let fields = contact["payload"]["custom_fields"]
        .as_array()
        .unwrap_or_else(|| panic!("custom_fields as a list: {contact}"));
    assert_eq!(fields.len(), 2, "{contact}");
    assert_eq!(fields[0]["code"], "PHONE");
    assert_eq!(fields[0]["values"][0]["value"], "+15550100");
    assert_eq!(fields[1]["values"][0]["value"], "jane@example.com");

    let message = event_of(&events, "messages", "add");
    // Kommo's message ids are UUIDs, so there is no numeric entity id; the fields keep it.
    assert!(message["entity_id"].is_null(), "{message}");
    assert_eq!(message["payload"]["id"], MESSAGE_ID);
    assert_eq!(message["payload"]["chat_id"], CHAT_ID);
    assert_eq!(
        message["payload"]["text"],
        "Hello, is the offer still valid?"
    );
    assert_eq!(message["payload"]["author"]["name"], "Jane Roe");

    // One job per delivery, each finding one event; the incoming chat message is also
    // recorded for the agent runtime.
    let jobs = h.wait_webhook_jobs(4).await;
    for job in &jobs {
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["result"]["events"], 1, "{job}");
        assert_eq!(job["result"]["events_dropped"], 0, "{job}");
        assert_eq!(job["attempts"], 1, "{job}");
    }
    let messages: i64 = jobs
        .iter()
        .filter_map(|j| j["result"]["messages"].as_i64())
        .sum();
    assert_eq!(messages, 1, "{jobs:?}");
    assert_eq!(h.deliveries().await, 4);

    // Filters.
    let leads = h.events("?type=leads").await["data"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(leads.len(), 2, "{leads:?}");
    assert!(leads.iter().all(|e| e["type"] == "leads"));
    let contacts = h.events("?type=contacts").await;
    assert_eq!(contacts["data"].as_array().map(Vec::len), Some(1));
    let messages = h.events("?type=messages").await;
    assert_eq!(messages["data"].as_array().map(Vec::len), Some(1));
    let processed = h.events("?status=processed").await;
    assert_eq!(processed["data"].as_array().map(Vec::len), Some(4));
    let both = h.events("?type=leads&status=processed").await;
    assert_eq!(both["data"].as_array().map(Vec::len), Some(2));
    let failed = h.events("?status=failed").await;
    assert_eq!(failed["data"], json!([]));
    assert!(failed["next_cursor"].is_null());

    // Pagination: two pages of two, nothing repeated, nothing lost.
    let first = h.events("?limit=2").await;
    let first_page = first["data"].as_array().cloned().unwrap_or_default();
    assert_eq!(first_page.len(), 2, "{first}");
    let cursor = first["next_cursor"]
        .as_str()
        .unwrap_or_else(|| panic!("a next_cursor: {first}"));
    let second = h.events(&format!("?limit=2&cursor={cursor}")).await;
    let second_page = second["data"].as_array().cloned().unwrap_or_default();
    assert_eq!(second_page.len(), 2, "{second}");
    assert!(second["next_cursor"].is_null(), "{second}");
    let mut paged = ids(&first_page);
    paged.extend(ids(&second_page));
    assert_eq!(paged, listed);

    // Bad filters.
    let r = h
        .app
        .get(&h.events_path("?status=done"), h.users.member)
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(r.error_fields(), vec!["status"], "{}", r.text);
    h.app
        .get(&h.events_path("?cursor=not-a-cursor"), h.users.member)
        .await
        .expect_problem(400, "bad_request");
    h.app
        .get(&h.events_path("?limit=0"), h.users.member)
        .await
        .expect_problem(422, "validation_failed");
}

// ---------------------------------------------------------------------------------------
// 2. JSON
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn json_bodies_are_accepted_too() {
    let h = Hooked::start(true, &[]).await;
    let body = json!({
        "leads": {"add": [{"id": 4242, "status_id": STATUS_ID, "pipeline_id": PIPELINE_ID}]},
        "account": {"id": ACCOUNT_ID.to_string(), "subdomain": "acme"},
    });
    let r = h
        .send("application/json; charset=utf-8", body.to_string())
        .await
        .expect(200);
    assert_eq!(r.body, json!({"status": "accepted"}));
    assert_secret_absent(&r, &h.token);

    let events = h.wait_events("", 1).await;
    let e = &events[0];
    assert_eq!(e["type"], "leads");
    assert_eq!(e["subtype"], "add");
    assert_eq!(e["entity_id"], 4242);
    assert_eq!(e["status"], "processed");
    assert_eq!(e["payload"]["status_id"], STATUS_ID);

    // The same JSON again is a duplicate; a JSON body claiming another account is refused.
    let again = h.send(JSON, body.to_string()).await.expect(200);
    assert_eq!(again.body, json!({"status": "duplicate"}));
    let foreign = json!({"leads": {"add": [{"id": 1}]}, "account": {"id": 999}});
    h.send(JSON, foreign.to_string())
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(h.deliveries().await, 1);
}

// ---------------------------------------------------------------------------------------
// 3. Replays
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_deeply_nested_body_is_refused_and_the_server_lives_on() {
    let h = Hooked::start(true, &[]).await;
    // ~9 KB, 3,000 levels: this overflowed the stack and aborted the process.
    let form = format!("a{}=1", "[b]".repeat(3_000));
    let r = h
        .send(FORM, form)
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(r.error_fields(), vec!["body"], "{}", r.text);
    let json_body = format!("{{\"a\":{}1{}}}", "[".repeat(200), "]".repeat(200));
    h.send(JSON, json_body)
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(h.deliveries().await, 0);
    // Still serving, and a normal body still goes through.
    h.send_ok(lead_added(LEAD_ID), "accepted").await;
    assert_eq!(h.wait_events("", 1).await.len(), 1);
}

#[tokio::test]
async fn one_delivery_makes_at_most_500_events_and_keeps_its_body() {
    let h = Hooked::start(true, &[("WEBHOOK_BODY_LIMIT_BYTES", "2000000")]).await;
    let mut body: String = (0..1_200)
        .map(|i| format!("leads[update][{i}][id]={}&", 1_000 + i))
        .collect();
    body.push_str(&format!("account[id]={ACCOUNT_ID}"));
    h.send_ok(body.clone(), "accepted").await;
    let jobs = h.wait_webhook_jobs(1).await;
    assert_eq!(jobs[0]["status"], "succeeded", "{}", jobs[0]);
    assert_eq!(jobs[0]["result"]["events"], 500, "{}", jobs[0]);
    assert_eq!(jobs[0]["result"]["events_dropped"], 700, "{}", jobs[0]);
    let stored: (i64, String) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM webhook_events WHERE kind = 'event'),
                (SELECT raw_body FROM webhook_events WHERE kind = 'delivery')",
    )
    .fetch_one(&mut h.app.admin_db().await)
    .await
    .unwrap();
    assert_eq!(stored.0, 500);
    assert_eq!(stored.1, body, "the whole body is kept");
}

#[tokio::test]
async fn a_stored_payload_too_deep_or_too_big_is_listed_without_it() {
    let h = Hooked::start(true, &[]).await;
    h.send_ok(lead_added(LEAD_ID), "accepted").await;
    h.wait_events("", 1).await;
    // Rows stored before the parser's bounds existed: 200 levels, and 100 KB.
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let big = json!({ "text": "x".repeat(100_000) }).to_string();
    for payload in [deep, big] {
        sqlx::query(
            "INSERT INTO webhook_events (id, org_id, connection_id, kind, type, subtype, payload, status)
             SELECT gen_random_uuid(), org_id, connection_id, 'event', 'leads', 'update', $1::jsonb, 'processed'
             FROM webhook_events WHERE kind = 'event' LIMIT 1",
        )
        .bind(payload)
        .execute(&mut h.app.admin_db().await)
        .await
        .unwrap();
    }
    let listed = h.events("").await;
    let data = listed["data"].as_array().unwrap();
    assert_eq!(data.len(), 3, "{listed}");
    let truncated: Vec<&Value> = data
        .iter()
        .filter(|e| e["payload_truncated"] == true)
        .collect();
    assert_eq!(truncated.len(), 2, "{listed}");
    assert!(truncated.iter().all(|e| e["payload"].is_null()));
    let whole = data
        .iter()
        .find(|e| e["payload_truncated"] == false)
        .unwrap();
    assert_eq!(whole["entity_id"], LEAD_ID);
    assert!(whole["payload"].is_object());
}

#[tokio::test]
async fn an_unparseable_body_is_kept_and_fails_visibly() {
    let h = Hooked::start(true, &[]).await;
    h.send_ok("[x]=1", "accepted").await;
    let r = h.send(JSON, "{").await.expect(200);
    assert_eq!(r.body, json!({"status": "accepted"}));

    let failed = h.wait_events("", 2).await;
    for e in &failed {
        assert_eq!(e["status"], "failed", "{e}");
        assert_eq!(e["kind"], "delivery", "{e}");
        assert!(e["processed_at"].is_string(), "{e}");
    }
    let errors: Vec<&str> = failed.iter().filter_map(|e| e["error"].as_str()).collect();
    assert_eq!(errors.len(), 2, "{failed:?}");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("form") && e.contains("[x]")),
        "{errors:?}"
    );
    assert!(errors.iter().any(|e| e.contains("JSON")), "{errors:?}");
    let listed = h.events("?status=failed").await;
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(2), "{listed}");
    assert_eq!(h.events("?status=processed").await["data"], json!([]));

    // The raw bodies are kept.
    let mut db = h.app.admin_db().await;
    let mut bodies: Vec<String> = sqlx::query_scalar(
        "SELECT raw_body FROM webhook_events WHERE kind = 'delivery' AND status = 'failed'",
    )
    .fetch_all(&mut db)
    .await
    .expect("raw bodies");
    bodies.sort();
    assert_eq!(bodies, vec!["[x]=1", "{"]);

    // The jobs failed, with the same errors, and were not retried.
    let jobs = h.wait_webhook_jobs(2).await;
    let mut job_errors: Vec<&str> = Vec::new();
    for job in &jobs {
        assert_eq!(job["status"], "failed", "{job}");
        assert_eq!(job["attempts"], 1, "{job}");
        job_errors.push(job["error"].as_str().unwrap_or_else(|| panic!("{job}")));
    }
    job_errors.sort();
    let mut errors = errors;
    errors.sort();
    assert_eq!(job_errors, errors);

    // A good body is still processed afterwards.
    h.send_ok(lead_added(LEAD_ID), "accepted").await;
    let processed = h.wait_events("?status=processed", 1).await;
    assert_eq!(processed[0]["entity_id"], LEAD_ID);
}

// ---------------------------------------------------------------------------------------
// 11. Org isolation
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_backlog_is_parsed_in_batches_and_every_job_says_what_became_of_it() {
    // The deliveries wait while no replica runs jobs, then one replica with workers
    // starts: its parse jobs take the org's other waiting deliveries along.
    let h = Hooked::start(false, &[]).await;
    const GOOD: usize = 39;
    for i in 0..GOOD {
        h.send_ok(lead_added(LEAD_ID + i as i64), "accepted").await;
    }
    let r = h.send(JSON, "{").await.expect(200);
    assert_eq!(r.body, json!({"status": "accepted"}));
    let _worker = h.app.replica(true).await;

    let jobs = h.wait_webhook_jobs(GOOD + 1).await;
    let by_id: std::collections::HashMap<&str, &Value> = jobs
        .iter()
        .filter_map(|j| Some((j["id"].as_str()?, j)))
        .collect();
    let mut taken_along = 0;
    for job in &jobs {
        assert_eq!(job["attempts"], 1, "every job ran once: {job}");
        let Some(by) = job["result"]["parsed_by"].as_str() else {
            continue;
        };
        taken_along += 1;
        // The job that parsed it is listed, ran, and counts what it took.
        let parser = by_id
            .get(by)
            .unwrap_or_else(|| panic!("no job {by}: {job}"));
        assert!(parser["result"]["parsed_by"].is_null(), "{parser}");
        assert!(
            parser["result"]["batch"].as_u64().unwrap_or(0) > 0,
            "{parser}"
        );
    }
    assert!(
        taken_along > 0,
        "no job took other deliveries along: {jobs:?}"
    );
    let failed: Vec<&Value> = jobs.iter().filter(|j| j["status"] == "failed").collect();
    assert_eq!(failed.len(), 1, "only the unparseable body fails: {jobs:?}");
    assert!(
        failed[0]["error"].as_str().unwrap_or("").contains("JSON"),
        "{}",
        failed[0]
    );
    for job in jobs.iter().filter(|j| j["status"] != "failed") {
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["result"]["events"], 1, "{job}");
    }

    // Every good delivery made its one event, exactly once.
    let events = h.wait_events("?status=processed&limit=100", GOOD).await;
    let entities: HashSet<i64> = events
        .iter()
        .filter_map(|e| e["entity_id"].as_i64())
        .collect();
    assert_eq!(entities.len(), GOOD, "{events:?}");
    let failed_deliveries = h.events("?status=failed").await;
    assert_eq!(
        failed_deliveries["data"].as_array().map(Vec::len),
        Some(1),
        "{failed_deliveries}"
    );
}
