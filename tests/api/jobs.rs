//! The job runner and the jobs API against real Redis and PostgreSQL (in-process
//! replicas; the process-level drain and crash tests are in `job_processes`).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::app::{OrgUsers, TestApp, eventually};

const PATIENCE: Duration = Duration::from_secs(30);

fn jobs_path(org: Uuid) -> String {
    format!("/v1/orgs/{org}/jobs")
}

async fn enqueue(app: &TestApp, org: Uuid, user: Uuid, body: Value) -> Value {
    app.post(&jobs_path(org), user, body).await.expect(202).body
}

/// Polls the job until `done` holds, returning the last view of it.
async fn wait_for(
    app: &TestApp,
    org: Uuid,
    user: Uuid,
    job: &Value,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let path = format!("{}/{}", jobs_path(org), job["id"].as_str().unwrap());
    eventually("the job reaches the state", PATIENCE, || async {
        let current = app.get(&path, user).await.expect(200).body;
        if done(&current) {
            Ok(current)
        } else {
            Err(current.to_string())
        }
    })
    .await
}

fn finished(job: &Value) -> bool {
    matches!(
        job["status"].as_str(),
        Some("succeeded" | "failed" | "cancelled")
    )
}

#[tokio::test]
async fn enqueued_job_runs_and_succeeds() {
    let app = TestApp::builder().with_jobs().spawn().await;
    let OrgUsers {
        org, admin, member, ..
    } = app.org_with_roles().await;
    let job = enqueue(
        &app,
        org,
        admin,
        json!({"type": "test:sleep", "millis": 10}),
    )
    .await;
    assert_eq!(job["status"], "queued");
    assert_eq!(job["type"], "test:sleep");
    assert_eq!(job["payload"], json!({"millis": 10}));
    assert_eq!(job["attempts"], 0);
    assert_eq!(job["max_attempts"], 5);

    let done = wait_for(&app, org, member, &job, finished).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 1);
    assert_eq!(done["result"]["slept_ms"], 10);
    assert_eq!(done["error"], Value::Null);
    assert!(done["started_at"].is_string() && done["finished_at"].is_string());
}

#[tokio::test]
async fn failing_job_retries_with_growing_delays_then_fails() {
    // Long enough waits that polling sees each of them.
    let app = TestApp::builder()
        .with_jobs()
        .configure(|env| {
            env.insert("JOB_RETRY_BASE_MS".into(), "300".into());
        })
        .spawn()
        .await;
    let OrgUsers { org, admin, .. } = app.org_with_roles().await;
    let job = enqueue(&app, org, admin, json!({"type": "test:fail"})).await;

    // Between attempts the job is queued again with `run_after` = failure + backoff.
    let path = format!("{}/{}", jobs_path(org), job["id"].as_str().unwrap());
    let mut delays: Vec<(i64, f64)> = Vec::new();
    let started = Instant::now();
    let last = loop {
        let j = app.get(&path, admin).await.expect(200).body;
        if j["status"] == "queued" && j["run_after"].is_string() {
            let attempt = j["attempts"].as_i64().unwrap();
            if delays.last().map(|(a, _)| *a) != Some(attempt) {
                let run_after =
                    chrono::DateTime::parse_from_rfc3339(j["run_after"].as_str().unwrap()).unwrap();
                let began = chrono::DateTime::parse_from_rfc3339(j["started_at"].as_str().unwrap())
                    .unwrap();
                delays.push((attempt, (run_after - began).as_seconds_f64()));
            }
        }
        if finished(&j) {
            break j;
        }
        assert!(started.elapsed() < PATIENCE, "{j}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(last["status"], "failed", "{last}");
    assert_eq!(last["attempts"], 5);
    assert_eq!(last["error"], "failure on attempt 5");
    // Polling sees the waits after most attempts (at least two); each is at least as long as the one
    // before and within the jittered bounds of base 300 ms doubling.
    assert!(delays.len() >= 2, "{delays:?}");
    for (attempt, delay) in &delays {
        let full = 0.3 * 2f64.powi(*attempt as i32 - 1);
        assert!(
            *delay >= full / 2.0 - 0.01 && *delay <= full + 0.05,
            "{delays:?}"
        );
    }
    for pair in delays.windows(2) {
        assert!(pair[1].1 >= pair[0].1 - 0.01, "{delays:?}");
    }
}

#[tokio::test]
async fn job_that_recovers_succeeds_on_a_later_attempt() {
    let app = TestApp::builder().with_jobs().spawn().await;
    let OrgUsers { org, admin, .. } = app.org_with_roles().await;
    let job = enqueue(
        &app,
        org,
        admin,
        json!({"type": "test:fail", "failures": 2}),
    )
    .await;
    let done = wait_for(&app, org, admin, &job, finished).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 3);
    assert_eq!(done["error"], Value::Null);
}

#[tokio::test]
async fn permanent_errors_and_panics_fail_at_once() {
    let app = TestApp::builder().with_jobs().spawn().await;
    let OrgUsers { org, admin, .. } = app.org_with_roles().await;
    let permanent = enqueue(
        &app,
        org,
        admin,
        json!({"type": "test:fail", "permanent": true}),
    )
    .await;
    let panicking = enqueue(&app, org, admin, json!({"type": "test:panic"})).await;

    let done = wait_for(&app, org, admin, &permanent, finished).await;
    assert_eq!(done["status"], "failed");
    assert_eq!(done["attempts"], 1);
    assert_eq!(done["error"], "permanent failure on attempt 1");

    let done = wait_for(&app, org, admin, &panicking, finished).await;
    assert_eq!(done["status"], "failed");
    assert_eq!(done["attempts"], 1);
    assert!(
        done["error"].as_str().unwrap().contains("panicked"),
        "{done}"
    );

    // The worker survives a panic and goes on with the next job.
    let next = enqueue(&app, org, admin, json!({"type": "test:sleep", "millis": 1})).await;
    let done = wait_for(&app, org, admin, &next, finished).await;
    assert_eq!(done["status"], "succeeded");
}

#[tokio::test]
async fn graph_jobs_without_a_provider_or_for_an_article_fail_at_once_saying_why() {
    let app = TestApp::builder().with_jobs().spawn().await;
    let OrgUsers { org, admin, .. } = app.org_with_roles().await;
    let agent = app.create_agent(org, admin, "Alpha").await;
    let jobs = [
        json!({"type": "extract-knowledge-graph", "agent_id": agent["id"], "chunk_ids": [Uuid::now_v7()]}),
        json!({"type": "extract-knowledge-graph", "article_id": Uuid::now_v7()}),
    ];
    let reasons = ["ai provider not configured", "article_id is not supported"];
    for (body, reason) in jobs.into_iter().zip(reasons) {
        let job = enqueue(&app, org, admin, body.clone()).await;
        let mut expected = body.clone();
        expected.as_object_mut().unwrap().remove("type");
        assert_eq!(job["payload"], expected);
        let done = wait_for(&app, org, admin, &job, finished).await;
        assert_eq!(done["status"], "failed", "{done}");
        assert!(
            done["error"].as_str().unwrap().starts_with(reason),
            "{done}"
        );
        assert_eq!(done["attempts"], 1);
    }
}

#[tokio::test]
async fn repeated_requests_for_the_same_work_each_run() {
    let app = TestApp::builder().with_jobs().spawn().await;
    let OrgUsers { org, admin, .. } = app.org_with_roles().await;
    let body = json!({"type": "test:sleep", "millis": 5});
    let first = enqueue(&app, org, admin, body.clone()).await;
    let second = enqueue(&app, org, admin, body).await;
    assert_ne!(first["id"], second["id"]);
    for job in [first, second] {
        let done = wait_for(&app, org, admin, &job, finished).await;
        assert_eq!(done["status"], "succeeded");
    }
}

#[tokio::test]
async fn invalid_jobs_are_refused_with_the_field() {
    let app = TestApp::builder().spawn().await;
    let OrgUsers { org, admin, .. } = app.org_with_roles().await;
    let foreign_owner = Uuid::now_v7();
    let foreign_org = app.create_org(foreign_owner).await;
    let foreign_agent = app.create_agent(foreign_org, foreign_owner, "Theirs").await;
    let cases = [
        (json!({}), "type"),
        (json!({"type": 7}), "type"),
        (json!({"type": "mine-bitcoin"}), "type"),
        (json!({"type": "process-asset"}), "asset_id"),
        (
            json!({"type": "process-asset", "asset_id": "nope"}),
            "asset_id",
        ),
        (
            json!({"type": "process-asset", "asset_id": Uuid::now_v7(), "org_id": org}),
            "org_id",
        ),
        (
            json!({"type": "process-asset", "asset_id": Uuid::now_v7()}),
            "asset_id",
        ),
        (json!({"type": "extract-knowledge-graph"}), "asset_id"),
        (
            json!({"type": "extract-knowledge-graph", "agent_id": foreign_agent["id"]}),
            "agent_id",
        ),
        // 130,000 ids made one page of the jobs list 120 MB.
        (
            json!({"type": "extract-knowledge-graph", "chunk_ids": vec![Uuid::nil(); 1001]}),
            "chunk_ids",
        ),
        (json!({"type": "crm:sync-pipelines"}), "connection_id"),
        (
            json!({"type": "crm:sync-contacts", "connection_id": Uuid::now_v7()}),
            "connection_id",
        ),
    ];
    for (body, field) in cases {
        let r = app
            .post(&jobs_path(org), admin, body.clone())
            .await
            .expect_problem(422, "validation_failed");
        assert!(
            r.error_fields().iter().any(|f| f == field),
            "{body}: {}",
            r.text
        );
    }
    let list = app.get(&jobs_path(org), admin).await.expect(200);
    assert_eq!(list.body["data"], json!([]));
}

#[tokio::test]
async fn jobs_routes_refuse_outsiders_and_members_writing() {
    let app = TestApp::builder().spawn().await;
    let OrgUsers {
        org, admin, member, ..
    } = app.org_with_roles().await;
    let job = enqueue(&app, org, admin, json!({"type": "test:sleep", "millis": 1})).await;
    let job_path = format!("{}/{}", jobs_path(org), job["id"].as_str().unwrap());
    let body = json!({"type": "test:sleep", "millis": 1});

    app.get(&jobs_path(org), member).await.expect(200);
    app.get(&job_path, member).await.expect(200);
    app.post(&jobs_path(org), member, body.clone())
        .await
        .expect_problem(403, "forbidden");
    app.post(&format!("{job_path}/cancel"), member, json!({}))
        .await
        .expect_problem(403, "forbidden");
    app.post(&format!("{job_path}/retry"), member, json!({}))
        .await
        .expect_problem(403, "forbidden");

    let outsider = Uuid::now_v7();
    app.create_org(outsider).await;
    for path in [jobs_path(org), job_path.clone()] {
        app.get(&path, outsider)
            .await
            .expect_problem(404, "not_found");
    }
    app.post(&jobs_path(org), outsider, body.clone())
        .await
        .expect_problem(404, "not_found");
    app.post(&format!("{job_path}/cancel"), outsider, json!({}))
        .await
        .expect_problem(404, "not_found");
    let r = app.send(reqwest::Method::GET, &job_path, None, None).await;
    assert_eq!(r.status, 401);
    app.get(&format!("{}/{}", jobs_path(org), Uuid::now_v7()), admin)
        .await
        .expect_problem(404, "not_found");
}

#[tokio::test]
async fn cancelled_job_never_runs() {
    // No workers yet: the job stays queued until we cancel it.
    let app = TestApp::builder().spawn().await;
    let OrgUsers { org, admin, .. } = app.org_with_roles().await;
    let job = enqueue(&app, org, admin, json!({"type": "test:sleep", "millis": 1})).await;
    let path = format!("{}/{}", jobs_path(org), job["id"].as_str().unwrap());
    let cancelled = app
        .post(&format!("{path}/cancel"), admin, json!({}))
        .await
        .expect(200);
    assert_eq!(cancelled.body["status"], "cancelled");
    app.post(&format!("{path}/cancel"), admin, json!({}))
        .await
        .expect_problem(409, "conflict");
    app.post(&format!("{path}/retry"), admin, json!({}))
        .await
        .expect_problem(409, "conflict");

    // A replica with workers now drains the queue: a job pushed after the cancelled one
    // finishing proves the cancelled one was delivered, and it did not run.
    let worker = app.replica(true).await;
    let later = enqueue(
        &worker,
        org,
        admin,
        json!({"type": "test:sleep", "millis": 1}),
    )
    .await;
    let done = wait_for(&worker, org, admin, &later, finished).await;
    assert_eq!(done["status"], "succeeded");
    let still = app.get(&path, admin).await.expect(200).body;
    assert_eq!(still["status"], "cancelled");
    assert_eq!(still["attempts"], 0);
    assert_eq!(still["started_at"], Value::Null);
}

#[tokio::test]
async fn failed_job_can_be_retried_once_failed() {
    let app = TestApp::builder().with_jobs().spawn().await;
    let OrgUsers { org, admin, .. } = app.org_with_roles().await;
    let job = enqueue(
        &app,
        org,
        admin,
        json!({"type": "test:fail", "permanent": true}),
    )
    .await;
    let path = format!("{}/{}", jobs_path(org), job["id"].as_str().unwrap());
    let failed = wait_for(&app, org, admin, &job, finished).await;
    assert_eq!(failed["status"], "failed");

    let retried = app
        .post(&format!("{path}/retry"), admin, json!({}))
        .await
        .expect(202);
    assert_eq!(retried.body["status"], "queued");
    assert_eq!(retried.body["attempts"], 0);
    assert_eq!(retried.body["error"], Value::Null);
    let again = wait_for(&app, org, admin, &job, |j| {
        finished(j) && j["finished_at"] != failed["finished_at"]
    })
    .await;
    assert_eq!(again["status"], "failed");
    assert_eq!(again["attempts"], 1);

    // Succeeded and queued jobs cannot be retried; succeeded ones cannot be cancelled.
    let ok = enqueue(&app, org, admin, json!({"type": "test:sleep", "millis": 1})).await;
    wait_for(&app, org, admin, &ok, finished).await;
    let ok_path = format!("{}/{}", jobs_path(org), ok["id"].as_str().unwrap());
    app.post(&format!("{ok_path}/retry"), admin, json!({}))
        .await
        .expect_problem(409, "conflict");
    app.post(&format!("{ok_path}/cancel"), admin, json!({}))
        .await
        .expect_problem(409, "conflict");
    app.post(
        &format!("{}/{}/retry", jobs_path(org), Uuid::now_v7()),
        admin,
        json!({}),
    )
    .await
    .expect_problem(404, "not_found");
}

#[tokio::test]
async fn list_filters_by_status_and_type_and_paginates() {
    let app = TestApp::builder().with_jobs().spawn().await;
    let OrgUsers { org, admin, .. } = app.org_with_roles().await;
    let mut all = Vec::new();
    for _ in 0..3 {
        all.push(enqueue(&app, org, admin, json!({"type": "test:sleep", "millis": 1})).await);
    }
    all.push(
        enqueue(
            &app,
            org,
            admin,
            json!({"type": "test:fail", "permanent": true}),
        )
        .await,
    );
    for job in &all {
        wait_for(&app, org, admin, job, finished).await;
    }
    let r = app
        .get(&format!("{}?status=failed", jobs_path(org)), admin)
        .await
        .expect(200);
    assert_eq!(r.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(r.body["data"][0]["type"], "test:fail");
    let r = app
        .get(&format!("{}?type=test:sleep", jobs_path(org)), admin)
        .await
        .expect(200);
    assert_eq!(r.body["data"].as_array().unwrap().len(), 3);
    let r = app
        .get(&format!("{}?limit=3", jobs_path(org)), admin)
        .await
        .expect(200);
    assert_eq!(r.body["data"].as_array().unwrap().len(), 3);
    let cursor = r.body["next_cursor"].as_str().unwrap().to_string();
    let r = app
        .get(
            &format!("{}?limit=3&cursor={cursor}", jobs_path(org)),
            admin,
        )
        .await
        .expect(200);
    assert_eq!(r.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(r.body["next_cursor"], Value::Null);
    // Newest first: the last page holds the first job.
    assert_eq!(r.body["data"][0]["id"], all[0]["id"]);
    app.get(&format!("{}?status=sleeping", jobs_path(org)), admin)
        .await
        .expect_problem(400, "bad_request");
}

#[tokio::test]
async fn two_replicas_process_each_job_once() {
    let first = TestApp::builder()
        .with_jobs()
        .configure(|env| {
            env.insert("JOB_CONCURRENCY".into(), "3".into());
        })
        .spawn()
        .await;
    let second = first.replica(true).await;
    let OrgUsers { org, admin, .. } = first.org_with_roles().await;
    let mut jobs = Vec::new();
    for i in 0..20 {
        let app = if i % 2 == 0 { &first } else { &second };
        jobs.push(enqueue(app, org, admin, json!({"type": "test:sleep", "millis": 50})).await);
    }
    for job in &jobs {
        let done = wait_for(&first, org, admin, job, finished).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        // Claiming increments attempts, so 1 means exactly one claim.
        assert_eq!(done["attempts"], 1, "{done}");
    }
    let workers: i64 = sqlx::query_scalar("SELECT count(DISTINCT worker) FROM jobs")
        .fetch_one(&mut first.admin_db().await)
        .await
        .unwrap();
    assert!(workers >= 1);
}

#[tokio::test]
async fn job_committed_but_never_pushed_is_picked_up_by_the_scheduler() {
    let app = TestApp::builder().with_jobs().spawn().await;
    let OrgUsers { org, admin, .. } = app.org_with_roles().await;
    // As if the process died between the commit and the push.
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO jobs (id, org_id, type, payload, created_at)
         VALUES ($1, $2, 'test:sleep', '{\"millis\": 1}', now() - interval '1 minute')",
    )
    .bind(id)
    .bind(org)
    .execute(&mut app.admin_db().await)
    .await
    .unwrap();
    let done = wait_for(&app, org, admin, &json!({"id": id}), finished).await;
    assert_eq!(done["status"], "succeeded", "{done}");
}

#[tokio::test]
async fn scheduler_ticks_run_on_exactly_one_replica() {
    let first = TestApp::builder().spawn().await;
    let second = first.replica(false).await;
    let a = agents_api::scheduler(&first.state);
    let b = agents_api::scheduler(&second.state);
    for tick in 1..=20u64 {
        let (x, y) = tokio::join!(a.try_lock("test", tick), b.try_lock("test", tick));
        assert!(
            x.unwrap() ^ y.unwrap(),
            "tick {tick} must have exactly one winner"
        );
    }
}

#[tokio::test]
async fn housekeeping_removes_expired_oauth_states() {
    let app = TestApp::builder().with_jobs().spawn().await;
    let OrgUsers { org, owner, .. } = app.org_with_roles().await;
    let mut db = app.admin_db().await;
    sqlx::query(
        "INSERT INTO oauth_states (org_id, user_id, state_hash, redirect_uri, expires_at)
         VALUES ($1, $2, 'expired', 'https://x', now() - interval '1 minute'),
                ($1, $2, 'live', 'https://x', now() + interval '10 minutes')",
    )
    .bind(org)
    .bind(owner)
    .execute(&mut db)
    .await
    .unwrap();
    let started = Instant::now();
    loop {
        let left: Vec<Vec<u8>> = sqlx::query_scalar("SELECT state_hash FROM oauth_states")
            .fetch_all(&mut db)
            .await
            .unwrap();
        if left == vec![b"live".to_vec()] {
            break;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "expired state not removed: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Not a test of a bound: measures how long a job waits between enqueue and start on
/// this machine. `cargo test --features test-support --test api -- --ignored --nocapture
/// job_start_latency`
#[tokio::test]
#[ignore]
async fn job_start_latency() {
    let app = TestApp::builder().with_jobs().spawn().await;
    let OrgUsers { org, admin, .. } = app.org_with_roles().await;
    let mut waits = Vec::new();
    for _ in 0..100 {
        let job = enqueue(&app, org, admin, json!({"type": "test:sleep", "millis": 0})).await;
        let done = wait_for(&app, org, admin, &job, finished).await;
        let created =
            chrono::DateTime::parse_from_rfc3339(done["created_at"].as_str().unwrap()).unwrap();
        let started =
            chrono::DateTime::parse_from_rfc3339(done["started_at"].as_str().unwrap()).unwrap();
        waits.push((started - created).as_seconds_f64() * 1000.0);
    }
    waits.sort_by(|a, b| a.total_cmp(b));
    println!(
        "enqueue → start over 100 jobs: median {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        waits[49], waits[89], waits[99]
    );
}

/// apalis kept its queue list under an unprefixed key, so two deployments sharing a
/// Redis consumed each other's queue. On a Redis database of its own, this app's every
/// key (queue, wake lists, limits, scheduler locks) is under its `REDIS_KEY_PREFIX`.
#[tokio::test]
async fn every_redis_key_is_under_the_prefix() {
    let isolated = format!(
        "{}/13",
        crate::support::app::redis_url().trim_end_matches('/')
    );
    let prefix = format!("isolated:{}:", Uuid::new_v4().simple());
    let app = TestApp::builder()
        .with_jobs()
        .configure(|env| {
            env.insert("REDIS_URL".into(), isolated.clone());
            env.insert("REDIS_KEY_PREFIX".into(), prefix.clone());
        })
        .spawn()
        .await;
    let OrgUsers { org, admin, .. } = app.org_with_roles().await;
    let mut jobs = Vec::new();
    for millis in [1, 1, 300] {
        jobs.push(
            enqueue(
                &app,
                org,
                admin,
                json!({"type": "test:sleep", "millis": millis}),
            )
            .await,
        );
    }
    let retried = enqueue(
        &app,
        org,
        admin,
        json!({"type": "test:fail", "failures": 1}),
    )
    .await;
    for job in jobs.iter().chain([&retried]) {
        wait_for(&app, org, admin, job, finished).await;
    }
    let client = redis::Client::open(isolated.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!keys.is_empty(), "the app wrote nothing to Redis");
    let foreign: Vec<&String> = keys
        .iter()
        .filter(|k| !k.starts_with("isolated:"))
        .collect();
    assert!(foreign.is_empty(), "keys outside any prefix: {foreign:?}");
    let ours = keys.iter().filter(|k| k.starts_with(&prefix)).count();
    assert!(ours > 0, "{keys:?}");
}

/// 25 jobs of 130,000 chunk ids (stored before the cap) made one page 120 MB: a list
/// returns at most 64 KB of each job's payload, the job itself shows it whole.
#[tokio::test]
async fn a_list_bounds_what_it_returns_per_job() {
    let app = TestApp::builder().spawn().await;
    let OrgUsers { org, admin, .. } = app.org_with_roles().await;
    let ids: Vec<String> = (0..5_000).map(|_| Uuid::now_v7().to_string()).collect();
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO jobs (id, org_id, type, payload, max_attempts)
         VALUES ($1, $2, 'extract-knowledge-graph', $3, 1)",
    )
    .bind(id)
    .bind(org)
    .bind(json!({ "chunk_ids": ids }))
    .execute(&mut app.admin_db().await)
    .await
    .unwrap();
    let small = enqueue(&app, org, admin, json!({"type": "test:sleep", "millis": 1})).await;
    let list = app.get(&jobs_path(org), admin).await.expect(200);
    let data = list.body["data"].as_array().unwrap();
    let big = data.iter().find(|j| j["id"] == id.to_string()).unwrap();
    assert_eq!(big["payload"], json!({"truncated": true}));
    let listed_small = data.iter().find(|j| j["id"] == small["id"]).unwrap();
    assert_eq!(listed_small["payload"], small["payload"]);
    let whole = app
        .get(&format!("{}/{id}", jobs_path(org)), admin)
        .await
        .expect(200);
    assert_eq!(
        whole.body["payload"]["chunk_ids"].as_array().map(Vec::len),
        Some(5_000)
    );
}

/// Pushes made together share one script call (`queue::Batcher`): every job must land in
/// its own org's list of its own lane, in order, held as pending, with its `queued` event
/// in its org's stream, however the batches mixed them.
#[tokio::test]
async fn pushes_batched_together_land_in_their_own_orgs_and_lanes() {
    use crate::support::app::{base_env, config_from, redis_url};
    use agents_api::domain::{JobId, OrgId};
    use agents_api::events::{Publisher, stream_key};
    use agents_api::jobs::{JobQueue, Lane};
    use agents_api::redis_conn::RedisConn;

    let mut env = base_env("unused");
    env.insert("REDIS_URL".into(), redis_url());
    env.insert(
        "REDIS_KEY_PREFIX".into(),
        format!("test:{}:", Uuid::new_v4().simple()),
    );
    let redis = RedisConn::new(&config_from(&env)).expect("a Redis client");
    let queue = JobQueue::new(
        &redis,
        Publisher::new(redis.clone(), Duration::from_secs(600)),
    );

    let orgs: Vec<OrgId> = (0..3).map(|_| OrgId(Uuid::now_v7())).collect();
    let mut expected: std::collections::HashMap<String, Vec<String>> = Default::default();
    for i in 0..300 {
        let org = orgs[i % 3];
        let job_type = ["kommo:webhook", "crm:sync-pipelines"][i / 3 % 2];
        let job = JobId(Uuid::now_v7());
        // Returns once the push is queued for the writer, which batches what queued up.
        queue.enqueue_committed(job, org, job_type).await;
        let list = redis.key(&format!("q:{}:org:{org}", Lane::of(job_type).name()));
        expected.entry(list).or_default().push(job.to_string());
    }
    assert_eq!(expected.len(), 6, "three orgs in two lanes");

    let mut conn = redis.connection();
    let pending = redis.key("q:pending");
    eventually("every push is written", PATIENCE, || {
        let mut conn = conn.clone();
        let pending = pending.clone();
        async move {
            let held: usize = redis::cmd("SCARD")
                .arg(&pending)
                .query_async(&mut conn)
                .await
                .unwrap();
            (held == 300).then_some(()).ok_or(format!("{held} held"))
        }
    })
    .await;
    for (list, jobs) in &expected {
        let listed: Vec<String> = redis::cmd("LRANGE")
            .arg(list)
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(&listed, jobs, "{list}");
    }
    for org in &orgs {
        let queued: usize = redis::cmd("XLEN")
            .arg(stream_key(&redis, *org))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(queued, 100, "the org's queued events");
    }
}
