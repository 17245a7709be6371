//! agents-api: a REST API on which companies run AI sales agents over their Kommo CRM.
//!
//! `main.rs` is only the command line; this crate builds the application state, the
//! router and the server so that tests run exactly what production runs.

pub mod config;
pub mod db;
pub mod http;
pub mod openapi;
pub mod redis_conn;
pub mod routes;
pub mod state;
pub mod telemetry;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::db::Db;
use crate::http::auth::JwtVerifier;
use crate::redis_conn::RedisConn;
use crate::state::{AppState, Lifecycle};

/// The Redis key prefix of a production deployment.
pub const REDIS_PREFIX: &str = "agents-api:";

/// Connects (lazily) to PostgreSQL and Redis and builds what handlers share.
pub fn build_state(config: Config, redis_prefix: &str) -> anyhow::Result<AppState> {
    let pool = db::connect(&config)?;
    Ok(AppState {
        db: Db::new(pool, config.request_timeout),
        redis: RedisConn::new(&config, redis_prefix)?,
        jwt: Arc::new(JwtVerifier::from_config(&config)?),
        lifecycle: Lifecycle::default(),
        config: Arc::new(config),
    })
}

/// `agents-api serve`: refuses a privileged database role, serves until SIGTERM or
/// SIGINT, then drains.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let state = build_state(config, REDIS_PREFIX)?;
    db::check_runtime_role(state.db.pool(), &state.config)
        .await
        .context("checking the database role of DATABASE_URL")?;
    let config = state.config.clone();
    let listener = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding HTTP_ADDR {}", config.http_addr))?;
    tracing::info!(addr = %config.http_addr, env = config.app_env.as_str(), "agents-api listening");

    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let router = http::router(state.clone());
    let server = tokio::spawn(http::serve(listener, router, async move {
        let _ = stop_rx.wait_for(|stop| *stop).await;
    }));

    shutdown_signal().await;
    tracing::info!("shutdown signal received; draining");
    state.lifecycle.start_draining();
    tokio::spawn(async {
        shutdown_signal().await;
        tracing::warn!("second signal: exiting at once");
        std::process::exit(1);
    });
    tokio::time::sleep(config.shutdown_drain_delay).await;
    let _ = stop_tx.send(true);
    match tokio::time::timeout(config.shutdown_grace, server).await {
        Ok(Ok(Ok(()))) => tracing::info!("drained; bye"),
        Ok(Ok(Err(e))) => return Err(e).context("HTTP server"),
        Ok(Err(e)) => return Err(e).context("HTTP server task"),
        Err(_) => tracing::warn!(
            grace_secs = config.shutdown_grace.as_secs(),
            "requests still running after SHUTDOWN_GRACE_SECS; exiting anyway"
        ),
    }
    state.db.pool().close().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
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
