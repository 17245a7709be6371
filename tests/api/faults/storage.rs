use super::*;

/// PostgreSQL reset, refused and blackholed under reads and writes: every answer is a
/// success, 503 or 504 (never 500), every write answered 201 is stored, and the service
/// serves again within seconds of each fault ending.
#[tokio::test]
async fn postgres_faults_answer_503_or_504_and_lose_no_write() {
    let admin_upstream = upstream_of(&crate::support::app::admin_url());
    let proxy = FaultProxy::start(&admin_upstream).await;
    let app = TestApp::builder()
        .configure(|env| {
            through(env, "DATABASE_URL", &proxy);
            env.insert("REQUEST_TIMEOUT_SECS".into(), "2".into());
        })
        .spawn()
        .await;
    let users = app.org_with_roles().await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let created = Arc::new(Mutex::new(Vec::<String>::new()));
    let load = {
        let (client, created) = (client.clone(), created.clone());
        let list = app.url(&format!("/v1/orgs/{}/agents?limit=20", users.org));
        let (member, admin) = (app.token(users.member), app.token(users.admin));
        move |i: usize| {
            let (client, created, list, member, admin) = (
                client.clone(),
                created.clone(),
                list.clone(),
                member.clone(),
                admin.clone(),
            );
            async move {
                if i.is_multiple_of(2) {
                    let (outcome, status) =
                        outcome_of(client.get(&list).bearer_auth(&member).send().await);
                    (outcome, status == 200)
                } else {
                    let name = format!("fault-agent-{i}");
                    let (outcome, status) = outcome_of(
                        client
                            .post(list.replace("?limit=20", ""))
                            .bearer_auth(&admin)
                            .json(&json!({"name": name, "model": "gpt-4o-mini"}))
                            .send()
                            .await,
                    );
                    if status == 201 {
                        created.lock().unwrap().push(name);
                    }
                    (outcome, status == 201)
                }
            }
        }
    };
    let phases = [
        (Fault::Reset, Duration::from_secs(2)),
        (Fault::Pass, Duration::from_secs(2)),
        (Fault::Refuse, Duration::from_secs(2)),
        (Fault::Pass, Duration::from_secs(2)),
        (Fault::Blackhole, Duration::from_secs(3)),
    ];
    let (tally, ended) = under_faults(&proxy, &phases, Duration::from_secs(4), 4, load).await;
    tally.print("postgres_faults");
    let outcomes = tally.outcomes();
    let recovered = tally.first_success_after(ended);
    println!("postgres_faults: {outcomes:?}; first success {recovered:?} after the last fault");
    for (outcome, n) in &outcomes {
        assert!(
            matches!(outcome.as_str(), "200" | "201" | "503" | "504"),
            "{n} answers {outcome} under PostgreSQL faults: {outcomes:?}"
        );
    }
    assert!(recovered.is_some(), "never served again after the faults");
    // Every write the service confirmed is there.
    let created = created.lock().unwrap().clone();
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM agents WHERE org_id = $1 AND name = ANY($2)")
            .bind(users.org)
            .bind(&created)
            .fetch_one(&mut app.admin_db().await)
            .await
            .unwrap();
    assert_eq!(stored as usize, created.len(), "confirmed writes lost");
    app.get("/health/ready", users.member).await.expect(200);
}

async fn delete_prefix(prefix: &str) -> usize {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    keys.len()
}

/// Redis reset, restarted with its data gone, refused and blackholed while jobs are
/// queued: every accepted job runs (the sweep pushes what Redis lost), enqueueing never
/// waits on a dead Redis, the workers come back on their own, and readiness says so.
#[tokio::test]
async fn redis_faults_and_data_loss_lose_no_job_and_workers_recover() {
    let proxy = FaultProxy::start(&upstream_of(&redis_url())).await;
    let app = TestApp::builder()
        .with_jobs()
        .configure(|env| {
            through(env, "REDIS_URL", &proxy);
            env.insert("JOB_CONCURRENCY".into(), "4".into());
        })
        .spawn()
        .await;
    let prefix = app.env["REDIS_KEY_PREFIX"].clone();
    let users = app.org_with_roles().await;
    let ready: Value = reqwest::get(app.url("/health/ready"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["workers"]["status"], "ok", "{ready}");

    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let latencies = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let load = {
        let url = app.url(&format!("/v1/orgs/{}/jobs", users.org));
        let token = app.token(users.admin);
        let (accepted, latencies) = (accepted.clone(), latencies.clone());
        move |_| {
            let (client, url, token, accepted, latencies) = (
                client.clone(),
                url.clone(),
                token.clone(),
                accepted.clone(),
                latencies.clone(),
            );
            async move {
                let started = Instant::now();
                let sent = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"type": "test:sleep", "millis": 5}))
                    .send()
                    .await;
                let elapsed = started.elapsed();
                let (outcome, status) = match sent {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let body: Value = r.json().await.unwrap_or(Value::Null);
                        if status == 202 {
                            accepted
                                .lock()
                                .unwrap()
                                .push(body["id"].as_str().unwrap().to_string());
                            latencies.lock().unwrap().push(elapsed);
                        }
                        (status.to_string(), status)
                    }
                    Err(e) => (format!("transport error: {e}"), 0),
                };
                (outcome, status == 202)
            }
        }
    };
    // The data-loss phase: connections reset while every key of ours disappears, as
    // when Redis restarts without persistence (the shared test Redis itself must stay up).
    let flusher = {
        let prefix = prefix.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(800 + 2000 + 2000 + 500)).await;
            let deleted = delete_prefix(&prefix).await;
            println!("redis_faults: deleted {deleted} keys of ours mid-run");
        })
    };
    let readiness = {
        let url = app.url("/health/ready");
        tokio::spawn(async move {
            let mut seen = BTreeMap::<String, usize>::new();
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(20) {
                if let Ok(r) = reqwest::get(&url).await
                    && let Ok(body) = r.json::<Value>().await
                {
                    let workers = body["checks"]["workers"]["status"]
                        .as_str()
                        .unwrap_or("?")
                        .to_string();
                    *seen.entry(workers).or_default() += 1;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            seen
        })
    };
    let phases = [
        (Fault::Reset, Duration::from_secs(2)),
        (Fault::Pass, Duration::from_secs(2)),
        (Fault::Reset, Duration::from_secs(1)),
        (Fault::Pass, Duration::from_secs(2)),
        (Fault::Refuse, Duration::from_secs(2)),
        (Fault::Pass, Duration::from_secs(1)),
        (Fault::Blackhole, Duration::from_secs(7)),
    ];
    let (tally, ended) = under_faults(&proxy, &phases, Duration::from_secs(3), 2, load).await;
    flusher.await.unwrap();
    tally.print("redis_faults");
    let outcomes = tally.outcomes();
    for (outcome, n) in &outcomes {
        assert!(
            matches!(outcome.as_str(), "202" | "503"),
            "{n} answers {outcome} under Redis faults: {outcomes:?}"
        );
    }
    let mut latencies = latencies.lock().unwrap().clone();
    latencies.sort();
    let max = latencies.last().copied().unwrap_or_default();
    println!(
        "redis_faults: enqueue p50 {:?}, max {max:?} over {} accepted",
        latencies.get(latencies.len() / 2),
        latencies.len()
    );
    // A blackholed push used to hold each write for 2 s (the response timeout).
    assert!(
        max < Duration::from_millis(1500),
        "an enqueue waited {max:?} on a dead Redis"
    );

    // Every accepted job runs, exactly once.
    let accepted = accepted.lock().unwrap().clone();
    let ids: Vec<Uuid> = accepted.iter().map(|s| s.parse().unwrap()).collect();
    let mut db = app.admin_db().await;
    let started = Instant::now();
    loop {
        let (done, failed, max_attempts): (i64, i64, Option<i32>) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status = 'succeeded'),
                    count(*) FILTER (WHERE status IN ('failed', 'cancelled')),
                    max(attempts)
             FROM jobs WHERE id = ANY($1)",
        )
        .bind(&ids)
        .fetch_one(&mut db)
        .await
        .unwrap();
        assert_eq!(failed, 0, "jobs failed under Redis faults");
        if done as usize == ids.len() {
            println!(
                "redis_faults: all {} accepted jobs succeeded {:?} after the last fault (max attempts {max_attempts:?})",
                ids.len(),
                ended.elapsed()
            );
            break;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "{done} of {} accepted jobs ran",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = readiness.await.unwrap();
    println!("redis_faults: readiness saw workers {seen:?}");
    assert!(
        seen.get("fail").is_some_and(|n| *n > 0),
        "readiness never reported the workers down: {seen:?}"
    );
    let ready: Value = reqwest::get(app.url("/health/ready"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ok", "{ready}");
    assert_eq!(ready["checks"]["workers"]["status"], "ok", "{ready}");
    // Every key of the queue lives under this deployment's prefix.
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let foreign: Vec<String> = redis::cmd("KEYS")
        .arg("*apalis*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        foreign.is_empty(),
        "queue keys outside the prefix: {foreign:?}"
    );
}

/// A process without workers reports them `off`, not down.
#[tokio::test]
async fn readiness_reports_workers_off_where_none_run() {
    let app = TestApp::builder().spawn().await;
    let ready: Value = reqwest::get(app.url("/health/ready"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ok", "{ready}");
    assert_eq!(ready["checks"]["workers"]["status"], "off", "{ready}");
}

/// A Redis server of this test's own (the shared one must stay up), without persistence:
/// killed with SIGKILL and started again empty, as a Redis restart without data is.
struct OwnRedis {
    port: u16,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    async fn start() -> OwnRedis {
        let mut redis = OwnRedis {
            port: crate::support::process::free_port(),
            child: None,
        };
        redis.restart().await;
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn restart(&mut self) {
        self.kill();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server package) must be installed");
        self.child = Some(child);
        let started = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The real thing behind the proxy's resets: the Redis process killed under load and
/// started again with no data, twice (down for 2 s, then restarted at once). Every
/// accepted job runs, once, and the workers come back without the service restarting.
#[tokio::test]
async fn redis_killed_and_restarted_empty_loses_no_job() {
    let mut redis = OwnRedis::start().await;
    let url = redis.url();
    let app = TestApp::builder()
        .with_jobs()
        .configure(|env| {
            env.insert("REDIS_URL".into(), url);
        })
        .spawn()
        .await;
    let users = app.org_with_roles().await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let jobs_url = app.url(&format!("/v1/orgs/{}/jobs", users.org));
    let token = app.token(users.admin);
    let stop = tokio_util::sync::CancellationToken::new();
    let load = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let mut accepted = Vec::<Uuid>::new();
            let mut statuses = BTreeMap::<u16, usize>::new();
            while !stop.is_cancelled() {
                let sent = client
                    .post(&jobs_url)
                    .bearer_auth(&token)
                    .json(&json!({"type": "test:sleep", "millis": 5}))
                    .send()
                    .await
                    .expect("the service answers");
                let status = sent.status().as_u16();
                *statuses.entry(status).or_default() += 1;
                if status == 202 {
                    let body: Value = sent.json().await.unwrap();
                    accepted.push(body["id"].as_str().unwrap().parse().unwrap());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (accepted, statuses)
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let down: Value = reqwest::get(app.url("/health/ready"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    redis.restart().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.restart().await;
    let restarted = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    let (accepted, statuses) = load.await.unwrap();
    println!(
        "redis_restart: statuses {statuses:?}; readiness while down: {}",
        down["checks"]
    );
    assert!(
        statuses.keys().all(|s| matches!(s, 202 | 503)),
        "{statuses:?}"
    );
    assert_eq!(down["checks"]["redis"]["status"], "fail", "{down}");

    let mut db = app.admin_db().await;
    loop {
        let (done, failed): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status = 'succeeded' AND attempts = 1),
                    count(*) FILTER (WHERE status IN ('failed', 'cancelled'))
             FROM jobs WHERE id = ANY($1)",
        )
        .bind(&accepted)
        .fetch_one(&mut db)
        .await
        .unwrap();
        assert_eq!(failed, 0);
        if done as usize == accepted.len() {
            println!(
                "redis_restart: all {} accepted jobs ran once, the last {:?} after the second restart",
                accepted.len(),
                restarted.elapsed()
            );
            break;
        }
        assert!(
            restarted.elapsed() < PATIENCE,
            "{done} of {} accepted jobs ran",
            accepted.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready: Value = reqwest::get(app.url("/health/ready"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["workers"]["status"], "ok", "{ready}");
}
