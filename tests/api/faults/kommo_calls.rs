use super::*;

async fn send_message(app: &TestApp, users: &OrgUsers, deal_id: i64) -> String {
    let r = app
        .post(
            &format!("/v1/orgs/{}/kommo/messages", users.org),
            users.admin,
            json!({"deal_id": deal_id, "channel": "chat", "message": {"body": format!("Offer {deal_id}")}}),
        )
        .await
        .expect(202);
    r.body["id"].as_str().unwrap().to_string()
}

fn notes_per_deal(fake: &FakeKommo) -> BTreeMap<i64, usize> {
    let mut per = BTreeMap::new();
    for note in fake.notes(DOMAIN) {
        *per.entry(note["entity_id"].as_i64().unwrap()).or_default() += 1;
    }
    per
}

/// PostgreSQL fails after Kommo stored the note and before the outcome is recorded: the
/// outcome is written once PostgreSQL is back, and the note is not posted again.
#[tokio::test]
async fn postgres_failing_after_the_kommo_call_posts_no_second_note() {
    let proxy = FaultProxy::start(&upstream_of(&crate::support::app::admin_url())).await;
    let fake = FakeKommo::start().await;
    let app = {
        fake.register_client(
            crate::support::kommo::CLIENT_ID,
            crate::support::kommo::CLIENT_SECRET,
            crate::support::kommo::REDIRECT_URI,
        );
        let template = fake.base_url_template.clone();
        let proxy = &proxy;
        TestApp::builder()
            .with_jobs()
            .configure(move |env| {
                env.insert("KOMMO_BASE_URL".into(), template);
                env.insert(
                    "ENCRYPTION_KEYS".into(),
                    format!("test:{}", crate::support::kommo::TEST_KEY),
                );
                env.insert(
                    "FRONTEND_URL".into(),
                    crate::support::kommo::FRONTEND_URL.into(),
                );
                env.insert(
                    "OAUTH_REDIRECT_URL".into(),
                    crate::support::kommo::REDIRECT_URI.into(),
                );
                env.insert("PUBLIC_BASE_URL".into(), PUBLIC_BASE_URL.into());
                env.insert(
                    "KOMMO_AUTHORIZE_URL".into(),
                    "https://www.kommo.com/oauth".into(),
                );
                through(env, "DATABASE_URL", proxy);
            })
            .spawn()
            .await
    };
    let (users, _) = connected_org(&app, &fake, DOMAIN).await;
    fake.set_answer_delay(Duration::from_millis(1500));
    let jobs: Vec<String> = {
        let mut jobs = Vec::new();
        for deal in 1..=5 {
            jobs.push(send_message(&app, &users, deal).await);
        }
        jobs
    };
    // Once Kommo holds the notes, PostgreSQL goes away until after Kommo answered.
    let started = Instant::now();
    while fake.notes(DOMAIN).len() < jobs.len() {
        assert!(started.elapsed() < PATIENCE, "notes never reached Kommo");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.set(Fault::Reset);
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.set(Fault::Pass);
    fake.set_answer_delay(Duration::ZERO);
    for job in &jobs {
        let done = wait_job(&app, users.org, users.admin, job).await;
        assert_eq!(done["status"], "succeeded", "{done}");
    }
    let per = notes_per_deal(&fake);
    println!("postgres_after_kommo: notes per deal {per:?}");
    assert!(
        per.values().all(|n| *n == 1),
        "a note was posted twice: {per:?}"
    );
    assert_eq!(per.len(), jobs.len());
}

/// `kill -9` while Kommo is answering the notes: after the lease lapses another process
/// runs the jobs again, finds each note by its marker and posts none twice.
#[tokio::test]
async fn kill_9_mid_send_message_posts_each_note_once() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let (users, _) = connected_org(&app, &fake, DOMAIN).await;
    let mut cluster = Cluster::on(app.db_name.clone());
    cluster.prefix = app.env["REDIS_KEY_PREFIX"].clone();
    for key in [
        "KOMMO_BASE_URL",
        "ENCRYPTION_KEYS",
        "FRONTEND_URL",
        "OAUTH_REDIRECT_URL",
        "PUBLIC_BASE_URL",
        "KOMMO_AUTHORIZE_URL",
    ] {
        cluster.env.insert(key.into(), app.env[key].clone());
    }
    cluster.env.insert("JOB_CONCURRENCY".into(), "8".into());
    fake.set_answer_delay(Duration::from_secs(30));
    let mut jobs = Vec::new();
    for deal in 1..=6 {
        jobs.push(send_message(&app, &users, deal).await);
    }
    let worker = cluster.start(&[]).await;
    let started = Instant::now();
    while fake.notes(DOMAIN).len() < jobs.len() {
        assert!(
            started.elapsed() < PATIENCE,
            "notes never reached Kommo\n{}",
            worker.process.output()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.process.kill9();
    fake.set_answer_delay(Duration::ZERO);
    let _next = cluster.start(&[]).await;
    for job in &jobs {
        let done = wait_job(&app, users.org, users.admin, job).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(done["result"]["delivered_earlier"], true, "{done}");
        assert_eq!(done["attempts"], 2, "{done}");
    }
    let per = notes_per_deal(&fake);
    println!("kill_9_send_message: notes per deal {per:?}");
    assert!(
        per.values().all(|n| *n == 1),
        "a note was posted twice: {per:?}"
    );
    assert_eq!(per.len(), jobs.len());
}

fn webhook_body(lead_id: i64) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in [
        ("leads[add][0][id]", lead_id.to_string()),
        ("leads[add][0][name]", "Deal".into()),
        ("account[subdomain]", "acme".into()),
        ("account[id]", ACCOUNT_ID.to_string()),
    ] {
        s.append_pair(k, &v);
    }
    s.finish()
}

/// While Kommo hangs, the jobs that call it wait in their own lane: webhook parsing
/// (which never calls Kommo) goes on, even with every Kommo-bound slot taken.
#[tokio::test]
async fn a_hanging_kommo_does_not_hold_up_webhook_parsing() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder()
        .with_kommo(&fake)
        .with_jobs()
        .spawn()
        .await;
    let (users, created) = connected_org(&app, &fake, DOMAIN).await;
    let connection = created["id"].as_str().unwrap().to_string();
    // Let the connection's own syncs finish before Kommo starts hanging.
    for job in created["jobs"].as_array().unwrap() {
        wait_job(&app, users.org, users.admin, job["id"].as_str().unwrap()).await;
    }
    fake.set_answer_delay(Duration::from_secs(15));
    let sync_path = format!("/v1/orgs/{}/crm/connections/{connection}/sync", users.org);
    let mut syncs = Vec::new();
    for _ in 0..3 {
        let r = app
            .post(&sync_path, users.admin, json!({"scope": "all"}))
            .await
            .expect(202);
        for job in r.body["jobs"].as_array().unwrap() {
            syncs.push(job["id"].as_str().unwrap().to_string());
        }
    }
    let url = created["webhook_url"].as_str().unwrap();
    let path = url.strip_prefix(PUBLIC_BASE_URL).unwrap();
    let mut hooks = 0;
    for lead in 0..10 {
        let r = app
            .client
            .post(app.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("user-agent", "amoCRM-Webhooks/3.0")
            .body(webhook_body(1000 + lead))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        hooks += 1;
    }
    let jobs_path = format!("/v1/orgs/{}/jobs?type=kommo:webhook&limit=100", users.org);
    let started = Instant::now();
    loop {
        let body = app.get(&jobs_path, users.member).await.expect(200).body;
        let done = body["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| j["status"] == "succeeded")
            .count();
        if done == hooks {
            break;
        }
        assert!(started.elapsed() < PATIENCE, "webhooks not parsed: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let parsed_after = started.elapsed();
    // The Kommo-bound jobs are still waiting on Kommo: the webhooks did not queue behind them.
    let mut unfinished = 0;
    for id in &syncs {
        let job = app
            .get(&format!("/v1/orgs/{}/jobs/{id}", users.org), users.member)
            .await
            .expect(200)
            .body;
        if matches!(job["status"].as_str(), Some("queued" | "running")) {
            unfinished += 1;
        }
    }
    println!(
        "hanging_kommo: {hooks} webhooks parsed in {parsed_after:?} while {unfinished} of {} syncs waited on Kommo",
        syncs.len()
    );
    assert!(
        unfinished > 0,
        "the syncs were expected to still wait on Kommo"
    );
    fake.set_answer_delay(Duration::ZERO);
}
