//! Liveness and readiness. Readiness checks PostgreSQL and Redis, each within 1 s, and
//! this process's job workers (when it runs any), and turns 503 as soon as the process
//! starts draining.

use std::time::{Duration, Instant};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::json::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use crate::jobs::WorkersState;
use crate::state::AppState;

const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        // The short alias load balancers often probe; not in the document.
        .route("/health", get(ready))
        .routes(routes!(live))
        .routes(routes!(ready))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Live {
    status: &'static str,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ok` or `fail`.
    status: &'static str,
    draining: bool,
    checks: Checks,
    knowledge: Knowledge,
}

/// What knowledge search can do here (never a reason to be unready).
#[derive(Serialize, utoipa::ToSchema)]
pub struct Knowledge {
    /// `hybrid` with pgvector and a deployment provider; `fulltext` otherwise (an org
    /// with a provider of its own still gets hybrid search where pgvector is).
    search: &'static str,
    /// Whether the database has pgvector (`null` when PostgreSQL did not answer).
    pgvector: Option<bool>,
    /// Whether the deployment has a model provider (`AI_BASE_URL`).
    ai_provider: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Checks {
    postgres: Check,
    redis: Check,
    /// `off` in a process that runs no jobs; `fail` when a lane's workers are not running
    /// or have not reached Redis for more than 5 s.
    workers: Check,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Check {
    status: &'static str,
    latency_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// 200 while the process runs.
#[utoipa::path(get, path = "/health/live", tag = "health",
    responses((status = 200, body = Live)))]
pub async fn live() -> Json<Live> {
    Json(Live { status: "ok" })
}

/// 200 when PostgreSQL and Redis both answer within 1 s, the job workers (if any) run,
/// and the process is not draining.
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn ready(State(state): State<AppState>) -> Response {
    let (postgres, redis) = tokio::join!(
        check(async {
            let mut conn = state.db.connection().await.map_err(|e| e.to_string())?;
            sqlx::query!("SELECT 1 AS one")
                .fetch_one(&mut *conn)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }),
        check(async { state.redis.ping().await.map_err(|e| e.to_string()) }),
    );
    let workers = match state.jobs.health.state() {
        WorkersState::Off => Check {
            status: "off",
            latency_ms: 0,
            error: None,
        },
        WorkersState::Ok => Check {
            status: "ok",
            latency_ms: 0,
            error: None,
        },
        WorkersState::Down(why) => Check {
            status: "fail",
            latency_ms: 0,
            error: Some(why),
        },
    };
    let pgvector = if postgres.status == "ok" {
        tokio::time::timeout(CHECK_TIMEOUT, async {
            let mut conn = state.db.connection().await.map_err(|e| e.to_string())?;
            crate::db::vectors::available(&mut conn)
                .await
                .map_err(|e| e.to_string())
        })
        .await
        .ok()
        .and_then(Result::ok)
    } else {
        None
    };
    let ai_provider = state.config.ai.is_some();
    let knowledge = Knowledge {
        search: if pgvector == Some(true) && ai_provider {
            "hybrid"
        } else {
            "fulltext"
        },
        pgvector,
        ai_provider,
    };
    let draining = state.lifecycle.is_draining();
    let healthy =
        postgres.status == "ok" && redis.status == "ok" && workers.status != "fail" && !draining;
    let body = Readiness {
        status: if healthy { "ok" } else { "fail" },
        draining,
        checks: Checks {
            postgres,
            redis,
            workers,
        },
        knowledge,
    };
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn check(probe: impl Future<Output = Result<(), String>>) -> Check {
    let started = Instant::now();
    let outcome = tokio::time::timeout(CHECK_TIMEOUT, probe).await;
    let latency_ms = started.elapsed().as_millis() as u64;
    match outcome {
        Ok(Ok(())) => Check {
            status: "ok",
            latency_ms,
            error: None,
        },
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check failed");
            Check {
                status: "fail",
                latency_ms,
                error: Some("unreachable".into()),
            }
        }
        Err(_) => Check {
            status: "fail",
            latency_ms,
            error: Some("timed out".into()),
        },
    }
}
