use super::*;

#[tokio::test]
async fn pipelines_and_contacts_sync() {
    let c = Connected::start().await;
    c.fake.set_contact_count(DOMAIN, 510);

    let jobs = c.sync("all").await;
    let types: Vec<&str> = jobs.iter().map(|j| j["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["crm:sync-pipelines", "crm:sync-contacts"]);
    for job in &jobs {
        assert_eq!(job["status"], "queued", "{job}");
        assert_eq!(job["payload"], json!({"connection_id": c.connection}));
    }
    let mut results = Vec::new();
    for job in &jobs {
        let done = c.finished(job).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(done["attempts"], 1, "{done}");
        results.push(done["result"]["count"].clone());
    }
    assert_eq!(results, [json!(2), json!(510)]);

    // Kommo's pipelines with their stages, in Kommo's order.
    let pipelines = c.app.get(&c.path("/pipelines"), c.users.member).await;
    let pipelines = pipelines.expect(200).body["data"].clone();
    let pipelines = pipelines.as_array().expect("data");
    assert_eq!(pipelines.len(), 2, "{pipelines:?}");
    let sales = &pipelines[0];
    assert_eq!(
        (
            &sales["external_id"],
            &sales["name"],
            &sales["sort"],
            &sales["is_main"],
            &sales["is_archive"]
        ),
        (
            &json!(1001),
            &json!("Sales"),
            &json!(1),
            &json!(true),
            &json!(false)
        )
    );
    assert_eq!(
        stages(sales),
        [
            stage(1, "New", 10),
            stage(142, "Closed - won", 10000),
            stage(143, "Closed - lost", 11000)
        ]
    );
    assert_eq!(sales["stages"][0]["color"], "#99ccff");
    let partners = &pipelines[1];
    assert_eq!(
        (
            &partners["external_id"],
            &partners["name"],
            &partners["is_main"]
        ),
        (&json!(1002), &json!("Partners"), &json!(false))
    );
    assert_eq!(
        stages(partners),
        [
            stage(2, "Contacted", 10),
            stage(142, "Closed - won", 10000),
            stage(143, "Closed - lost", 11000)
        ]
    );

    // All 510 contacts, each once, through pages of 100.
    let (contacts, pages) = all_contacts(&c, 100).await;
    assert_eq!(pages, 6);
    let external: BTreeSet<i64> = contacts
        .iter()
        .map(|c| c["external_id"].as_i64().unwrap())
        .collect();
    assert_eq!(contacts.len(), 510);
    assert_eq!(
        external,
        (FIRST_CONTACT_ID..FIRST_CONTACT_ID + 510).collect::<BTreeSet<_>>()
    );
    let second = contacts
        .iter()
        .find(|c| c["external_id"] == FIRST_CONTACT_ID + 1)
        .unwrap();
    assert_eq!(second["name"], "Contact 2");
    assert_eq!(second["first_name"], "Contact");
    assert_eq!(second["last_name"], "2");
    assert_eq!(second["responsible_user_id"], 6_000_001);
    assert_eq!(
        time(&second["external_created_at"]),
        DateTime::from_timestamp(1_700_000_060, 0).unwrap()
    );
    assert_eq!(
        time(&second["external_updated_at"]),
        DateTime::from_timestamp(1_700_003_660, 0).unwrap()
    );
    assert_eq!(second["custom_fields"][0]["field_code"], "PHONE");
    assert_eq!(
        second["custom_fields"][1]["values"][0]["value"],
        "contact2@example.com"
    );

    // Kommo was paged 250 at a time and the sync stopped after the last page.
    let pages = contact_pages(&c.fake, DOMAIN);
    assert!(
        pages == ["1", "2", "3"] || pages == ["1", "2", "3", "4"],
        "contacts pages requested: {pages:?}"
    );

    let connection = c.connection().await;
    let sync = &connection["sync"];
    assert_eq!(sync["status"], "completed", "{sync}");
    for (part, count) in [("pipelines", 2), ("contacts", 510)] {
        assert_eq!(sync[part]["status"], "completed", "{sync}");
        assert_eq!(sync[part]["count"], count, "{sync}");
        assert!(time(&sync[part]["finished_at"]) >= time(&sync[part]["started_at"]));
        assert!(sync[part]["error"].is_null(), "{sync}");
    }

    // Again, after Kommo's pipelines changed: contacts are upserted (the same 510 rows),
    // pipelines replaced.
    c.fake.set_pipelines(
        DOMAIN,
        json!([{
            "id": 2001, "name": "Renewals", "sort": 5, "is_main": true, "is_archive": false,
            "is_unsorted_on": false, "account_id": 31_000_001,
            "_embedded": {"statuses": [
                {"id": 21, "name": "Due", "sort": 10, "color": "#fffeb2", "type": 0,
                 "pipeline_id": 2001, "is_editable": true},
                {"id": 22, "name": "Renewed", "sort": 20, "color": "#ccff66", "type": 0,
                 "pipeline_id": 2001, "is_editable": true},
                {"id": 142, "name": "Closed - won", "sort": 10000, "color": "#CCFF66",
                 "type": 1, "pipeline_id": 2001, "is_editable": false},
                {"id": 143, "name": "Closed - lost", "sort": 11000, "color": "#D5D8DB",
                 "type": 2, "pipeline_id": 2001, "is_editable": false},
            ]},
        }]),
    );
    let ids_before: HashSet<String> = contacts
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    let done = c.sync_ok("all").await;
    assert_eq!(done[0]["result"]["count"], 1);
    assert_eq!(done[1]["result"]["count"], 510);

    let pipelines = c.app.get(&c.path("/pipelines"), c.users.member).await;
    let pipelines = pipelines.expect(200).body["data"].clone();
    let pipelines = pipelines.as_array().expect("data");
    assert_eq!(pipelines.len(), 1, "old pipelines are gone: {pipelines:?}");
    assert_eq!(pipelines[0]["external_id"], 2001);
    assert_eq!(pipelines[0]["name"], "Renewals");
    assert_eq!(
        stages(&pipelines[0]),
        [
            stage(21, "Due", 10),
            stage(22, "Renewed", 20),
            stage(142, "Closed - won", 10000),
            stage(143, "Closed - lost", 11000)
        ]
    );
    assert_eq!(pipelines[0]["stages"][3]["type"], 2);

    let (again, _) = all_contacts(&c, 100).await;
    let ids_after: HashSet<String> = again
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(again.len(), 510);
    assert_eq!(ids_after, ids_before, "contacts are updated in place");
    let sync = c.connection().await["sync"].clone();
    assert_eq!(sync["pipelines"]["count"], 1, "{sync}");
    assert_eq!(sync["contacts"]["count"], 510, "{sync}");

    // Refusals.
    let path = c.path("/sync");
    for bad in [
        json!({"scope": "everything"}),
        json!({}),
        json!({"scope": "all", "extra": 1}),
    ] {
        let r = c.app.post(&path, c.users.admin, bad.clone()).await;
        let r = r.expect_problem(422, "validation_failed");
        assert!(!r.error_fields().is_empty(), "{bad}: {}", r.text);
    }
    let r = c
        .app
        .post(&path, c.users.admin, json!({"scope": "everything"}))
        .await;
    assert_eq!(r.error_fields(), ["scope"], "{}", r.text);
    c.app
        .post(&path, c.users.member, json!({"scope": "all"}))
        .await
        .expect_problem(403, "forbidden");
    let stranger = Uuid::now_v7();
    let other_org = c.app.create_org(stranger).await;
    c.app
        .post(&path, stranger, json!({"scope": "all"}))
        .await
        .expect_problem(404, "not_found");
    // The connection is not in the stranger's own org either.
    let foreign = connection_path(other_org, c.connection, "/sync");
    c.app
        .post(&foreign, stranger, json!({"scope": "all"}))
        .await
        .expect_problem(404, "not_found");
    for listing in ["/pipelines", "/contacts"] {
        let foreign = connection_path(other_org, c.connection, listing);
        c.app
            .get(&foreign, stranger)
            .await
            .expect_problem(404, "not_found");
    }
    let unknown = connection_path(c.users.org, Uuid::now_v7(), "/sync");
    c.app
        .post(&unknown, c.users.admin, json!({"scope": "all"}))
        .await
        .expect_problem(404, "not_found");
    // Refused requests queued nothing.
    let listed = c
        .app
        .get(
            &format!("/v1/orgs/{}/jobs?limit=100", c.users.org),
            c.users.admin,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(listed["data"].as_array().unwrap().len(), 5, "{listed}");
}

#[tokio::test]
async fn rate_limited_answers_are_waited_out() {
    let c = Connected::start().await;
    let seen_before = c.fake.requests_to(DOMAIN, "/api/v4/leads/pipelines").len();
    c.fake.fail_next_with_429(DOMAIN, 2, 1);
    let started = Instant::now();
    let done = c.sync_ok("pipelines").await;
    let elapsed = started.elapsed();
    assert!(
        run_time(&done[0]) >= chrono::Duration::seconds(2),
        "the job did not wait out two Retry-After: 1 answers: {}",
        done[0]
    );
    assert!(elapsed >= Duration::from_secs(2), "{elapsed:?}");
    let calls = c.fake.requests_to(DOMAIN, "/api/v4/leads/pipelines");
    let calls = &calls[seen_before..];
    assert_eq!(calls.len(), 3, "two refused calls, then the one answered");
    for pair in calls.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(
            gap >= Duration::from_secs(1),
            "Retry-After ignored: {gap:?}"
        );
    }
    let sync = c.connection().await["sync"].clone();
    assert_eq!(sync["pipelines"]["status"], "completed", "{sync}");

    // Kommo keeps refusing past what one call waits out: the job is retried later (not
    // failed) and then succeeds.
    c.fake.fail_next_with_429(DOMAIN, 5, 1);
    let job = c.sync("pipelines").await.remove(0);
    let job = c.finished(&job).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert!(job["attempts"].as_i64().unwrap() >= 2, "{job}");
    assert_eq!(job["result"]["count"], 2);
}

#[tokio::test]
async fn calls_to_one_account_stay_under_7_per_second() {
    // An app without workers, and two worker replicas taking one job at a time, so that
    // the two syncs run at the same time in two replicas.
    let fake = FakeKommo::start().await;
    fake.register_client(CLIENT_ID, CLIENT_SECRET, REDIRECT_URI);
    let mut api = TestApp::builder()
        .configure(|env| {
            env.insert("KOMMO_BASE_URL".into(), fake.base_url_template.clone());
            env.insert("ENCRYPTION_KEYS".into(), format!("test:{TEST_KEY}"));
            env.insert("FRONTEND_URL".into(), FRONTEND_URL.into());
            env.insert("OAUTH_REDIRECT_URL".into(), REDIRECT_URI.into());
            env.insert("PUBLIC_BASE_URL".into(), "https://api.example.com".into());
        })
        .spawn()
        .await;
    for (key, value) in [
        ("JOB_CONCURRENCY", "1"),
        ("JOB_HEARTBEAT_SECS", "1"),
        ("JOB_RETRY_BASE_MS", "100"),
    ] {
        api.env.insert(key.into(), value.into());
    }
    let one = api.replica(true).await;
    let two = api.replica(true).await;
    let (users, connection) = connect(&api, &fake, DOMAIN).await;
    fake.set_contact_count(DOMAIN, 250 * 12);

    let path = connection_path(users.org, connection, "/sync");
    let body = json!({"scope": "contacts"});
    let (a, b) = tokio::join!(
        one.post(&path, users.admin, body.clone()),
        two.post(&path, users.admin, body.clone())
    );
    let jobs: Vec<Uuid> = [a, b]
        .into_iter()
        .map(|r| {
            let r = r.expect(202);
            r.body["jobs"][0]["id"].as_str().unwrap().parse().unwrap()
        })
        .collect();

    // Watch the two jobs' rows until both are done: who ran them, and when together.
    let mut db = api.admin_db().await;
    let mut overlapping_workers: Option<(String, String)> = None;
    let started = Instant::now();
    loop {
        let rows: Vec<(Uuid, String, Option<String>)> =
            sqlx::query_as("SELECT id, status, worker FROM jobs WHERE id = ANY($1) ORDER BY id")
                .bind(&jobs)
                .fetch_all(&mut db)
                .await
                .expect("jobs rows");
        if let [(_, s1, Some(w1)), (_, s2, Some(w2))] = rows.as_slice()
            && s1 == "running"
            && s2 == "running"
        {
            overlapping_workers.get_or_insert((w1.clone(), w2.clone()));
        }
        if rows
            .iter()
            .all(|(_, s, _)| matches!(s.as_str(), "succeeded" | "failed" | "cancelled"))
        {
            break;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "syncs never finished: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for id in &jobs {
        let job = wait_job(&api, users.org, users.member, &json!({"id": id})).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["result"]["count"], 3000, "{job}");
        eprintln!("contacts sync {id}: attempts {}", job["attempts"]);
    }
    let (w1, w2) = overlapping_workers.expect("the two syncs never ran at the same time");
    assert_ne!(w1, w2, "both syncs ran in one worker");

    let pages = contact_pages(&fake, DOMAIN);
    assert_eq!(pages.len(), 24, "12 pages for each sync: {pages:?}");
    let peak = fake.max_requests_in_any_second(DOMAIN);
    eprintln!("peak: {peak} requests in one second");
    assert!(peak <= 7, "{peak} requests to one account within a second");
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM crm_contacts WHERE connection_id = $1")
            .bind(connection)
            .fetch_one(&mut db)
            .await
            .expect("count");
    assert_eq!(count, 3000);
}
