//! Jobs across real `serve` processes: what happens to a job when its process is asked to
//! stop (SIGTERM, within and past `SHUTDOWN_GRACE_SECS`) or dies (`kill -9`), and that two
//! processes sharing one database and one Redis prefix never run a job twice.
//!
//! Each test has its own database and Redis key prefix, shared by the processes it starts
//! (one after the other, or side by side), with short job timings: a heartbeat of 1 s, so
//! a row lease of 3 s. A process is killed when its `Process` is dropped, so a failing
//! test leaves none behind. Waits are generous polls; nothing asserts how fast.

use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::support::cluster::Cluster;
use crate::support::process::Process;

#[track_caller]
fn assert_exit_0(process: &Process, status: std::process::ExitStatus, what: &str) {
    assert_eq!(
        status.code(),
        Some(0),
        "{what}: serve did not exit 0 ({status})\n{}",
        process.output()
    );
}

#[tokio::test]
async fn sigterm_lets_a_running_job_finish() {
    let t0 = Instant::now();
    let cluster = Cluster::new().await;
    let mut server = cluster
        .start(&[("SHUTDOWN_GRACE_SECS", "10"), ("JOB_CONCURRENCY", "1")])
        .await;
    let org = cluster.create_org(&server).await;

    let first = cluster.enqueue_sleep(&server, org, 2000).await;
    cluster
        .wait_status(&mut server, org, first, "running")
        .await;
    // With one worker busy, the second job waits; SIGTERM comes right after it is queued.
    let second = cluster.enqueue_sleep(&server, org, 200).await;
    server.process.terminate();
    let signalled = Instant::now();
    let status = server.process.wait_exit().await;
    assert_exit_0(&server.process, status, "SIGTERM with a job running");
    let stopped_after = signalled.elapsed();

    let row = cluster.row(first).await;
    assert_eq!(
        (row.status.as_str(), row.attempts),
        ("succeeded", 1),
        "the running job did not finish within the grace period: {row:?}\n{}",
        server.process.output()
    );
    let row = cluster.row(second).await;
    assert!(
        ["succeeded", "queued"].contains(&row.status.as_str()),
        "the job queued before SIGTERM is neither done nor still queued: {row:?}\n{}",
        server.process.output()
    );
    let second_before = row.status.clone();
    drop(server);

    // Whatever the stopped process left queued, the next one runs.
    let mut next = cluster.start(&[("JOB_CONCURRENCY", "1")]).await;
    let job = cluster
        .wait_status(&mut next, org, second, "succeeded")
        .await;
    assert_eq!(job["attempts"], 1, "{job}");
    let job = cluster.get_job(&next, org, first).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 1, "{job}");
    println!(
        "sigterm_lets_a_running_job_finish: exit {stopped_after:?} after SIGTERM; second job \
         `{second_before}` at exit; total {:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn sigterm_past_the_grace_period_returns_the_job() {
    let t0 = Instant::now();
    let cluster = Cluster::new().await;
    let mut server = cluster.start(&[("SHUTDOWN_GRACE_SECS", "1")]).await;
    let org = cluster.create_org(&server).await;

    let job = cluster.enqueue_sleep(&server, org, 6000).await;
    cluster.wait_status(&mut server, org, job, "running").await;
    let abandoned_by = cluster.row(job).await.worker;
    server.process.terminate();
    let signalled = Instant::now();
    let status = server.process.wait_exit().await;
    assert_exit_0(&server.process, status, "SIGTERM past the grace period");
    let stopped_after = signalled.elapsed();

    // The process did not wait for the job: it handed it back to the queue, unfinished,
    // neither lost nor failed.
    let row = cluster.row(job).await;
    assert!(
        row.status == "queued" && row.worker.is_none() && row.attempts == 1,
        "after SIGTERM past the grace period (exit after {stopped_after:?}) the job should \
         be abandoned or handed back, after one attempt: {row:?}\n{}",
        server.process.output()
    );
    let left_as = row.status.clone();
    drop(server);

    // Another process takes it over at once and runs it to the end.
    let mut next = cluster.start(&[]).await;
    let done = cluster.wait_status(&mut next, org, job, "succeeded").await;
    assert_eq!(done["attempts"], 2, "{done}");
    assert_eq!(done["result"]["attempt"], 2, "{done}");
    let row = cluster.row(job).await;
    assert!(
        row.worker.is_some() && row.worker != abandoned_by,
        "attempt 2 ran under {:?}, attempt 1 under {abandoned_by:?}",
        row.worker
    );
    println!(
        "sigterm_past_the_grace_period_returns_the_job: exit {stopped_after:?} after SIGTERM, \
         job left `{left_as}`; total {:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn sigkill_job_is_picked_up_after_restart() {
    let t0 = Instant::now();
    let cluster = Cluster::new().await;
    let mut server = cluster.start(&[]).await;
    let org = cluster.create_org(&server).await;

    let job = cluster.enqueue_sleep(&server, org, 3000).await;
    cluster.wait_status(&mut server, org, job, "running").await;
    let killed_worker = cluster.row(job).await.worker;
    server.process.kill9();
    let status = server.process.wait_exit().await;
    assert!(!status.success(), "kill -9 ended the process with {status}");
    drop(server);

    let restarted = Instant::now();
    let mut next = cluster.start(&[]).await;
    let done = cluster.wait_status(&mut next, org, job, "succeeded").await;
    assert_eq!(done["attempts"], 2, "{done}");
    assert_eq!(done["result"]["attempt"], 2, "{done}");
    let row = cluster.row(job).await;
    assert!(
        row.worker.is_some() && row.worker != killed_worker,
        "attempt 2 ran under {:?}, the killed one was {killed_worker:?}",
        row.worker
    );
    println!(
        "sigkill_job_is_picked_up_after_restart: done {:?} after the restart; total {:?}",
        restarted.elapsed(),
        t0.elapsed()
    );
}

#[tokio::test]
async fn no_job_runs_twice_at_the_same_time() {
    let t0 = Instant::now();
    let cluster = Cluster::new().await;
    let mut servers = [cluster.start(&[]).await, cluster.start(&[]).await];
    let org = cluster.create_org(&servers[0]).await;

    let mut jobs = Vec::new();
    for i in 0..20 {
        jobs.push(cluster.enqueue_sleep(&servers[i % 2], org, 200).await);
    }
    for (i, job) in jobs.iter().enumerate() {
        let done = cluster
            .wait_status(&mut servers[i % 2], org, *job, "succeeded")
            .await;
        // One attempt: the job was claimed once, so it never ran twice, let alone at once.
        assert_eq!(done["attempts"], 1, "job #{i}: {done}");
    }

    let mut admin = cluster.admin().await;
    let (total, distinct_workers, without_worker): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT worker), count(*) FILTER (WHERE worker IS NULL)
         FROM jobs WHERE id = ANY($1)",
    )
    .bind(&jobs)
    .fetch_one(&mut admin)
    .await
    .expect("count workers");
    assert_eq!(total, 20);
    assert_eq!(without_worker, 0, "every finished job names its worker");
    println!(
        "no_job_runs_twice_at_the_same_time: {distinct_workers} distinct worker(s) ran the 20 jobs"
    );

    // No worker ran more jobs at once than JOB_CONCURRENCY (2).
    let runs: Vec<(String, DateTime<Utc>, DateTime<Utc>)> =
        sqlx::query_as("SELECT worker, started_at, finished_at FROM jobs WHERE id = ANY($1)")
            .bind(&jobs)
            .fetch_all(&mut admin)
            .await
            .expect("read the runs");
    for (worker, started, _) in &runs {
        let overlapping = runs
            .iter()
            .filter(|(w, s, f)| w == worker && s <= started && started < f)
            .count();
        assert!(
            overlapping <= 2,
            "{overlapping} jobs ran at once under {worker} (JOB_CONCURRENCY=2): {runs:?}"
        );
    }
    for server in &mut servers {
        assert!(
            server.process.try_wait().is_none(),
            "a server died\n{}",
            server.process.output()
        );
    }
    println!(
        "no_job_runs_twice_at_the_same_time: total {:?}",
        t0.elapsed()
    );
}

/// `JOB_CONCURRENCY=0` makes an API-only process: it accepts jobs but runs none, and a
/// process with workers on the same database and Redis runs them.
#[tokio::test]
async fn an_api_only_process_queues_jobs_for_the_workers_of_another() {
    let cluster = Cluster::new().await;
    let mut api_only = cluster.start(&[("JOB_CONCURRENCY", "0")]).await;
    let org = cluster.create_org(&api_only).await;
    let job = cluster.enqueue_sleep(&api_only, org, 10).await;
    // Long enough for a worker to have taken it many times over (jobs start within
    // about 100 ms when a worker is idle).
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let row = cluster.row(job).await;
    assert_eq!(
        (row.status.as_str(), row.attempts),
        ("queued", 0),
        "the API-only process ran a job\n{}",
        api_only.process.output()
    );
    let mut worker = cluster.start(&[("JOB_CONCURRENCY", "1")]).await;
    let done = cluster
        .wait_status(&mut worker, org, job, "succeeded")
        .await;
    assert_eq!(done["attempts"], 1, "{done}");
    api_only.process.terminate();
    let status = api_only.process.wait_exit().await;
    assert_exit_0(&api_only.process, status, "SIGTERM to the API-only process");
}
