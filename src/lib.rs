//! agents-api: a REST API on which companies run AI sales agents over their Kommo CRM.
//!
//! `main.rs` is only the command line; this crate builds the application state, the
//! router and the server so that tests run exactly what production runs.

pub mod config;
pub mod crypto;
pub mod db;
pub mod domain;
pub mod http;
pub mod jobs;
pub mod kommo;
pub mod metrics;
pub mod openapi;
pub mod redis_conn;
pub mod routes;
pub mod state;
pub mod telemetry;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::db::Db;
use crate::http::auth::JwtVerifier;
use crate::http::rate_limit::RateLimiter;
use crate::jobs::{JobContext, JobQueue, JobSettings};
use crate::kommo::Kommo;
use crate::redis_conn::RedisConn;
use crate::state::{AppState, Lifecycle, Shared};

/// Connects (lazily) to PostgreSQL and Redis and builds what handlers share.
pub fn build_state(config: Config) -> anyhow::Result<AppState> {
    let pool = db::connect(&config)?;
    let redis = RedisConn::new(&config)?;
    let config = Arc::new(config);
    Ok(AppState::new(Shared {
        db: Db::new(pool, config.request_timeout),
        jobs: JobQueue::new(&redis),
        kommo: Kommo::new(config.clone(), redis.clone())?,
        limiter: RateLimiter::new(
            redis.clone(),
            config.rate_limit_anon_per_min,
            config.rate_limit_user_per_min,
            config.rate_limit_webhook_per_min,
        ),
        redis,
        jwt: Arc::new(JwtVerifier::from_config(&config)?),
        lifecycle: Lifecycle::default(),
        config,
    }))
}

/// `agents-api serve`: refuses a privileged database role, serves until SIGTERM or
/// SIGINT, then drains.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let state = build_state(config)?;
    db::check_runtime_role(state.db.pool(), &state.config)
        .await
        .context("checking the database role of DATABASE_URL")?;
    let config = state.config.clone();
    let listener = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding HTTP_ADDR {}", config.http_addr))?;
    tracing::info!(addr = %config.http_addr, env = config.app_env.as_str(), "agents-api listening");

    let mut signals = ShutdownSignals::register();
    let stop = CancellationToken::new();
    let router = http::router(state.clone());
    let server = tokio::spawn(http::serve(
        listener,
        router,
        config.http_max_connections,
        stop.clone().cancelled_owned(),
    ));
    let job_context = job_context(&state);
    // JOB_CONCURRENCY=0: an API-only replica; jobs run on the replicas that have workers.
    let workers = if config.job_concurrency > 0 {
        tokio::spawn(jobs::run_workers(
            job_context.clone(),
            stop.clone().cancelled_owned(),
        ))
    } else {
        tracing::info!("JOB_CONCURRENCY=0: this process runs no jobs");
        tokio::spawn(async { Ok(()) })
    };
    tokio::spawn(scheduler(&state).run(stop.clone()));
    if let Some(addr) = config.metrics_addr {
        let metrics = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding METRICS_ADDR {addr}"))?;
        tracing::info!(%addr, "metrics listening");
        tokio::spawn(http::serve(
            metrics,
            crate::metrics::router(state.clone()),
            64,
            stop.clone().cancelled_owned(),
        ));
    }

    signals.next().await;
    tracing::info!("shutdown signal received; draining");
    state.lifecycle.start_draining();
    tokio::spawn(async move {
        signals.next().await;
        tracing::warn!("second signal: exiting at once");
        std::process::exit(1);
    });
    tokio::time::sleep(config.shutdown_drain_delay).await;
    // The listener closes and the workers take no new job; both get the grace period
    // for what they are still doing.
    stop.cancel();
    let drained = tokio::time::timeout(config.shutdown_grace, async {
        let (http, jobs) = tokio::join!(server, workers);
        (http, jobs)
    })
    .await;
    match drained {
        Ok((http, jobs)) => {
            if let Ok(Err(e)) = http {
                tracing::error!(error = %e, "HTTP server failed");
            }
            if let Ok(Err(e)) = jobs {
                tracing::error!(error = %e, "job workers failed");
            }
            tracing::info!("drained; bye");
        }
        Err(_) => tracing::warn!(
            grace_secs = config.shutdown_grace.as_secs(),
            "still busy after SHUTDOWN_GRACE_SECS; exiting anyway"
        ),
    }
    // Jobs still running past the grace period go back to the queue now rather than
    // after their lease lapses.
    job_context.release_in_flight().await;
    state.db.pool().close().await;
    Ok(())
}

pub fn job_context(state: &AppState) -> JobContext {
    JobContext {
        db: state.db.clone(),
        redis: state.redis.clone(),
        config: state.config.clone(),
        queue: state.jobs.clone(),
        kommo: state.kommo.clone(),
        settings: JobSettings::from_config(&state.config),
        worker: jobs::worker_name().into(),
        in_flight: Default::default(),
    }
}

/// One scheduler per process; Redis locks make each tick run on one replica only.
pub fn scheduler(state: &AppState) -> jobs::scheduler::Scheduler {
    let settings = JobSettings::from_config(&state.config);
    jobs::scheduler::Scheduler {
        db: state.db.clone(),
        redis: state.redis.clone(),
        queue: state.jobs.clone(),
        period: settings.heartbeat,
        replica: jobs::worker_name(),
        retention_webhook_days: state.config.retention_webhook_days,
        retention_jobs_days: state.config.retention_jobs_days,
    }
}

/// SIGTERM and SIGINT, registered once at start-up so that a second signal arriving right
/// after the first is never missed.
struct ShutdownSignals {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignals {
    fn register() -> ShutdownSignals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            ShutdownSignals {
                terminate: signal(SignalKind::terminate()).ok(),
                interrupt: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        ShutdownSignals {}
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        {
            async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                _ = recv(&mut self.terminate) => {}
                _ = recv(&mut self.interrupt) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Parses `--ttl` values such as `90s`, `15m`, `1h` or `7d`.
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 1h"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(format!("`{text}`: use s, m, h or d")),
    };
    if secs == 0 || secs > 30 * 86400 {
        return Err("the TTL must be between 1s and 30d".into());
    }
    Ok(Duration::from_secs(secs))
}
