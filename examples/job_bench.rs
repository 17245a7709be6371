//! The job rows of spec §9, from the client's side (bench/jobs.sh runs it against a
//! replica started with `JOB_CONCURRENCY` > 0): enqueues no-op jobs (`test:sleep` with
//! 0 ms, hence the `test-support` feature) through the typed enqueue, waits until every
//! one has succeeded, and prints what the rows say as one JSON line. Times come from the
//! rows (PostgreSQL's clock): `enqueued_at` is the enqueuing transaction's start,
//! `started_at` the claiming transaction's, `finished_at` the recording one's.
//!
//! `job_bench latency COUNT GAP_MS`: one job at a time, GAP_MS apart (an idle replica).
//! `job_bench throughput COUNT BATCH`: COUNT jobs in transactions of BATCH, as fast as
//! they go in, while the replica works them off.
//! The org is `BENCH_ORG_ID`; the rest of the environment is the service's own.

//! The no-op job type exists only with `test-support`; without it the example only says
//! so (it is not declared in Cargo.toml, whose every target the container build parses).

#[cfg(feature = "test-support")]
mod bench {
    use std::time::{Duration, Instant};

    use agents_api::config::Config;
    use agents_api::domain::{JobId, OrgId};
    use agents_api::jobs::job;
    use agents_api::jobs::kinds::testing::TestSleep;
    use anyhow::{Context, bail};
    use uuid::Uuid;

    #[tokio::main(flavor = "current_thread")]
    pub async fn main() -> anyhow::Result<()> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let org: Uuid = std::env::var("BENCH_ORG_ID")
            .context("BENCH_ORG_ID")?
            .parse()
            .context("BENCH_ORG_ID is not a UUID")?;
        let org = OrgId(org);
        let state = agents_api::build_state(Config::from_env()?)?;
        let number = |i: usize| -> anyhow::Result<usize> {
            args.get(i)
                .context("usage: job_bench latency COUNT GAP_MS | throughput COUNT BATCH")?
                .parse()
                .context("not a number")
        };
        match args.first().map(String::as_str) {
            Some("latency") => {
                let (count, gap) = (number(1)?, number(2)?);
                let mut ids = Vec::with_capacity(count);
                for _ in 0..count {
                    ids.extend(enqueue(&state, org, 1).await?);
                    tokio::time::sleep(Duration::from_millis(gap as u64)).await;
                }
                wait_done(&state, org, &ids).await?;
                let mut ms: Vec<f64> = query_f64(
                    &state,
                    org,
                    "SELECT (extract(epoch FROM started_at - enqueued_at) * 1000)::float8
                     FROM jobs WHERE id = ANY($1)",
                    &ids,
                )
                .await?;
                ms.sort_by(f64::total_cmp);
                println!(
                    "{{\"jobs\": {}, \"p50_ms\": {:.3}, \"p90_ms\": {:.3}, \"p99_ms\": {:.3}, \"max_ms\": {:.3}}}",
                    ms.len(),
                    percentile(&ms, 0.50),
                    percentile(&ms, 0.90),
                    percentile(&ms, 0.99),
                    ms.last().copied().unwrap_or(0.0),
                );
            }
            Some("throughput") => {
                let (count, batch) = (number(1)?, number(2)?.max(1));
                let started = Instant::now();
                let mut ids = Vec::with_capacity(count);
                while ids.len() < count {
                    let n = batch.min(count - ids.len());
                    ids.extend(enqueue(&state, org, n).await?);
                }
                let enqueued = started.elapsed();
                wait_done(&state, org, &ids).await?;
                let client_secs = started.elapsed().as_secs_f64();
                let span = query_f64(
                    &state,
                    org,
                    "SELECT extract(epoch FROM max(finished_at) - min(enqueued_at))::float8
                     FROM jobs WHERE id = ANY($1)",
                    &ids,
                )
                .await?;
                let secs = span.first().copied().unwrap_or(client_secs);
                println!(
                    "{{\"jobs\": {}, \"enqueue_s\": {:.3}, \"span_s\": {:.3}, \"client_s\": {:.3}, \"jobs_per_s\": {:.1}}}",
                    ids.len(),
                    enqueued.as_secs_f64(),
                    secs,
                    client_secs,
                    ids.len() as f64 / secs,
                );
            }
            _ => bail!("usage: job_bench latency COUNT GAP_MS | throughput COUNT BATCH"),
        }
        Ok(())
    }

    /// `n` no-op jobs in one transaction, pushed after the commit: the typed enqueue.
    async fn enqueue(
        state: &agents_api::state::AppState,
        org: OrgId,
        n: usize,
    ) -> anyhow::Result<Vec<JobId>> {
        let jobs: Vec<TestSleep> = (0..n).map(|_| TestSleep { millis: 0 }).collect();
        let mut tx = state.db.begin_worker(org).await?;
        let ids = job::insert_many(&mut tx, org, &jobs, None).await?;
        tx.commit().await?;
        state
            .jobs
            .enqueue_committed_many(&ids, org, <TestSleep as job::Job>::TYPE)
            .await;
        Ok(ids)
    }

    /// Polls until every job has succeeded; fails on a failed one or after two minutes. The
    /// replica's lists are first in, first out, so the last job is watched alone (a cheap
    /// query, not to steal the CPU being measured) before all of them are counted.
    async fn wait_done(
        state: &agents_api::state::AppState,
        org: OrgId,
        ids: &[JobId],
    ) -> anyhow::Result<()> {
        let uuids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
        let deadline = Instant::now() + Duration::from_secs(120);
        if let Some(last) = uuids.last() {
            loop {
                let mut tx = state.db.begin_worker(org).await?;
                let status: Option<String> =
                    sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1")
                        .bind(last)
                        .fetch_optional(&mut *tx)
                        .await?;
                tx.commit().await?;
                if matches!(status.as_deref(), Some("succeeded" | "failed"))
                    || Instant::now() > deadline
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        loop {
            let mut tx = state.db.begin_worker(org).await?;
            let (done, failed): (i64, i64) = sqlx::query_as(
                "SELECT count(*) FILTER (WHERE status = 'succeeded'),
                        count(*) FILTER (WHERE status = 'failed')
                 FROM jobs WHERE id = ANY($1)",
            )
            .bind(&uuids)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            if failed > 0 {
                bail!("{failed} jobs failed");
            }
            if done as usize == ids.len() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "only {done} of {} jobs succeeded within two minutes",
                    ids.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn query_f64(
        state: &agents_api::state::AppState,
        org: OrgId,
        sql: &'static str,
        ids: &[JobId],
    ) -> anyhow::Result<Vec<f64>> {
        let uuids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
        let mut tx = state.db.begin_worker(org).await?;
        let rows: Vec<(Option<f64>,)> =
            sqlx::query_as(sql).bind(&uuids).fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok(rows.into_iter().filter_map(|(v,)| v).collect())
    }

    fn percentile(sorted: &[f64], p: f64) -> f64 {
        if sorted.is_empty() {
            return 0.0;
        }
        let rank = ((sorted.len() as f64) * p).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }
}

#[cfg(feature = "test-support")]
fn main() -> anyhow::Result<()> {
    bench::main()
}

#[cfg(not(feature = "test-support"))]
fn main() {
    eprintln!("job_bench needs the no-op job type: build it with --features test-support");
    std::process::exit(2);
}
