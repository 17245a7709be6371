//! agents-api: a REST API on which companies run AI sales agents over their Kommo CRM.
//!
//! `main.rs` is only the command line; this crate builds the application state, the
//! router and the server so that tests run exactly what production runs.

pub mod agent;
pub mod ai;
pub mod app;
pub mod config;
pub mod crypto;
pub mod db;
pub mod domain;
pub mod events;
pub mod gcra;
pub mod http;
pub mod jobs;
pub mod knowledge;
pub mod kommo;
pub mod metrics;
pub mod openapi;
pub mod redis_conn;
pub mod routes;
pub mod state;
pub mod telemetry;

use std::sync::Arc;
use std::time::Duration;

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
    let events = events::Events::new(&redis, &config);
    Ok(AppState::new(Shared {
        db: Db::new(pool, config.request_timeout),
        jobs: JobQueue::new(&redis, events.publisher.clone()),
        kommo: Kommo::new(config.clone(), redis.clone())?.with_events(events.publisher.clone()),
        limiter: RateLimiter::new(
            redis.clone(),
            config.rate_limit_anon_per_min,
            config.rate_limit_user_per_min,
            config.rate_limit_webhook_per_min,
        ),
        ai: Arc::new(ai::Ai::from_config(&config, redis.clone())?),
        redis,
        jwt: Arc::new(JwtVerifier::from_config(&config)?),
        lifecycle: Lifecycle::default(),
        assets: knowledge::store::AssetStore::from_url(config.asset_store_url.as_ref())?,
        clock: Arc::new(agent::schedule::SystemClock),
        events,
        config,
    }))
}

/// `agents-api serve`: refuses a privileged database role, serves until SIGTERM or
/// SIGINT, then drains (`App::run`); a second signal exits at once.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let listeners = app::Listeners::bind(&config).await?;
    let app = app::App::build(config, listeners).await?;
    let mut signals = ShutdownSignals::register();
    app.run(async move {
        signals.next().await;
        tokio::spawn(async move {
            signals.next().await;
            tracing::warn!("second signal: exiting at once");
            std::process::exit(1);
        });
    })
    .await
}

pub fn job_context(state: &AppState) -> JobContext {
    JobContext {
        db: state.db.clone(),
        ai: state.ai.clone(),
        redis: state.redis.clone(),
        config: state.config.clone(),
        queue: state.jobs.clone(),
        kommo: state.kommo.clone(),
        settings: JobSettings::from_config(&state.config),
        worker: jobs::worker_name().into(),
        in_flight: Default::default(),
        assets: state.assets.clone(),
        clock: state.clock.clone(),
        events: state.events.publisher.clone(),
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
