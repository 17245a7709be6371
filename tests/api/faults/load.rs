use super::*;

/// One org's burst does not starve another: the other org's single job runs after at
/// most a few of the burst's, not after all of them.
#[tokio::test]
async fn one_orgs_burst_does_not_starve_another_org() {
    let app = TestApp::builder()
        .with_jobs()
        .configure(|env| {
            env.insert("JOB_CONCURRENCY".into(), "2".into());
        })
        .spawn()
        .await;
    let busy = app.org_with_roles().await;
    let quiet = app.org_with_roles().await;
    let mut burst = Vec::new();
    for _ in 0..30 {
        let r = app
            .post(
                &format!("/v1/orgs/{}/jobs", busy.org),
                busy.admin,
                json!({"type": "test:sleep", "millis": 100}),
            )
            .await
            .expect(202);
        burst.push(r.body["id"].as_str().unwrap().parse::<Uuid>().unwrap());
    }
    let single = app
        .post(
            &format!("/v1/orgs/{}/jobs", quiet.org),
            quiet.admin,
            json!({"type": "test:sleep", "millis": 1}),
        )
        .await
        .expect(202);
    let done = wait_job(
        &app,
        quiet.org,
        quiet.admin,
        single.body["id"].as_str().unwrap(),
    )
    .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let finished_before: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE id = ANY($1) AND finished_at < $2::timestamptz",
    )
    .bind(&burst)
    .bind(done["finished_at"].as_str().unwrap())
    .fetch_one(&mut app.admin_db().await)
    .await
    .unwrap();
    println!(
        "org_fairness: the quiet org's job finished after {finished_before} of the burst's 30"
    );
    assert!(
        finished_before < 10,
        "the quiet org waited for {finished_before} of the other org's jobs"
    );
}

/// Bad-token webhooks cost a database transaction each and were never limited (4,556/s
/// from one client). Refusals now count per client address; once its quota is used, the
/// address gets 429 without any database work: here, even with PostgreSQL blackholed.
#[tokio::test]
async fn junk_webhooks_are_limited_per_address_before_any_database_work() {
    let proxy = FaultProxy::start(&upstream_of(&crate::support::app::admin_url())).await;
    let app = TestApp::builder()
        .configure(|env| {
            through(env, "DATABASE_URL", &proxy);
            env.insert("RATE_LIMIT_ANON_PER_MIN".into(), "10".into());
            env.insert("REQUEST_TIMEOUT_SECS".into(), "3".into());
        })
        .spawn()
        .await;
    let client = reqwest::Client::new();
    let send = |token: String| {
        let url = app.url(&format!("/v1/kommo/webhooks/{}/{token}", Uuid::now_v7()));
        let client = client.clone();
        async move {
            client
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body("leads[add][0][id]=1")
                .send()
                .await
                .expect("answer")
        }
    };
    let mut statuses = Vec::new();
    for i in 0..14 {
        // Well-formed tokens reach the database; malformed ones are refused before it.
        let token = if i % 2 == 0 {
            "A".repeat(43)
        } else {
            "short".into()
        };
        let r = send(token).await;
        if r.status() == 429 {
            assert!(r.headers().contains_key("retry-after"));
        }
        statuses.push(r.status().as_u16());
    }
    println!("junk_webhooks: statuses {statuses:?}");
    assert_eq!(statuses[..10], [404; 10], "{statuses:?}");
    assert_eq!(statuses[10..], [429; 4], "{statuses:?}");

    proxy.set(Fault::Blackhole);
    let started = Instant::now();
    let r = send("A".repeat(43)).await;
    assert_eq!(r.status(), 429);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the blocked address waited {:?}: it reached the database",
        started.elapsed()
    );
    proxy.set(Fault::Pass);
}
