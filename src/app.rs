//! The one composition root: `App::build` wires the state, the listeners and the
//! database role check; `App::run` starts every long-lived task (HTTP, job workers,
//! scheduler, metrics), waits for the shutdown signal it is given, drains, and joins
//! them all. `main` and the tests run exactly this.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::state::AppState;
use crate::{db, http, jobs};

/// The sockets the service serves on, bound before anything else starts (tests bind
/// port 0 and read the address back).
pub struct Listeners {
    pub http: TcpListener,
    pub metrics: Option<TcpListener>,
}

impl Listeners {
    /// `HTTP_ADDR`, and `METRICS_ADDR` when set.
    pub async fn bind(config: &Config) -> anyhow::Result<Listeners> {
        let http = TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("binding HTTP_ADDR {}", config.http_addr))?;
        let metrics = match config.metrics_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding METRICS_ADDR {addr}"))?,
            ),
            None => None,
        };
        Ok(Listeners { http, metrics })
    }
}

fn serve(
    listener: TcpListener,
    router: axum::Router,
    max_connections: usize,
    stop: &CancellationToken,
) -> JoinHandle<anyhow::Result<()>> {
    let stopped = stop.clone().cancelled_owned();
    tokio::spawn(async move {
        http::serve(listener, router, max_connections, stopped)
            .await
            .map_err(Into::into)
    })
}

pub struct App {
    state: AppState,
    listeners: Listeners,
}

impl App {
    /// The state (pools connect lazily), after refusing a privileged database role.
    pub async fn build(config: Config, listeners: Listeners) -> anyhow::Result<App> {
        let state = crate::build_state(config)?;
        db::check_runtime_role(state.db.pool(), &state.config)
            .await
            .context("checking the database role of DATABASE_URL")?;
        Ok(App { state, listeners })
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Before `run`: the parts, for tests that swap one in.
    pub fn state_mut(&mut self) -> &mut AppState {
        &mut self.state
    }

    pub fn http_addr(&self) -> std::io::Result<SocketAddr> {
        self.listeners.http.local_addr()
    }

    /// Serves until `shutdown` resolves, then drains: readiness answers 503 at once, the
    /// listener stays open for `SHUTDOWN_DRAIN_DELAY_SECS` (so load balancers notice),
    /// then closes while requests and jobs in flight get `SHUTDOWN_GRACE_SECS`; jobs still
    /// running after that are handed back to the queue. Every task is joined.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let App { state, listeners } = self;
        let config = state.config.clone();
        tracing::info!(addr = %config.http_addr, env = config.app_env.as_str(), "agents-api listening");
        let stop = CancellationToken::new();
        let mut tasks: Vec<(&str, JoinHandle<anyhow::Result<()>>)> = Vec::new();
        tasks.push((
            "HTTP server",
            serve(
                listeners.http,
                http::router(state.clone()),
                config.http_max_connections,
                &stop,
            ),
        ));
        let job_context = crate::job_context(&state);
        // JOB_CONCURRENCY=0: an API-only replica; jobs run on the replicas that have workers.
        if config.job_concurrency > 0 {
            tasks.push((
                "job workers",
                tokio::spawn(jobs::run_workers(
                    job_context.clone(),
                    stop.clone().cancelled_owned(),
                )),
            ));
        } else {
            tracing::info!("JOB_CONCURRENCY=0: this process runs no jobs");
        }
        tasks.push((
            "live events",
            tokio::spawn({
                let hub = state.events.hub.clone();
                let stop = stop.clone();
                async move {
                    hub.run(stop).await;
                    Ok(())
                }
            }),
        ));
        let scheduler = crate::scheduler(&state);
        let scheduler_stop = stop.clone();
        tasks.push((
            "scheduler",
            tokio::spawn(async move {
                scheduler.run(scheduler_stop).await;
                Ok(())
            }),
        ));
        if let Some(metrics) = listeners.metrics {
            tracing::info!(addr = ?metrics.local_addr().ok(), "metrics listening");
            tasks.push((
                "metrics server",
                serve(metrics, crate::metrics::router(state.clone()), 64, &stop),
            ));
        }

        shutdown.await;
        tracing::info!("shutdown signal received; draining");
        state.lifecycle.start_draining();
        tokio::time::sleep(config.shutdown_drain_delay).await;
        // The listeners close and the workers take no new job; all get the grace period
        // for what they are still doing. Event streams end now (their clients reconnect
        // elsewhere), so the drain does not wait on them.
        state.lifecycle.close();
        stop.cancel();
        let joined = tokio::time::timeout(config.shutdown_grace, async {
            for (name, task) in tasks {
                match task.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, task = name, "task failed"),
                    Err(e) => tracing::error!(error = %e, task = name, "task panicked"),
                }
            }
        })
        .await;
        match joined {
            Ok(()) => tracing::info!("drained; bye"),
            Err(_) => tracing::warn!(
                grace_secs = config.shutdown_grace.as_secs(),
                "still busy after SHUTDOWN_GRACE_SECS; exiting anyway"
            ),
        }
        // Jobs still running past the grace period go back to the queue now rather than
        // after their lease lapses.
        job_context.release_in_flight().await;
        state.db.close().await;
        Ok(())
    }
}
