//! Which Kommo pipeline stages an agent works (spec §13): read and replace the agent's
//! routes. At most one active agent may work a stage (409 otherwise).

use crate::http::json::Json;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::db;
use crate::db::agent_routes::{Route, Stages};
use crate::db::agents::AgentStatus;
use crate::db::audit::Change;
use crate::domain::{AgentId, ConnectionId, FieldError};
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{ApiJsonList, ApiPath, OrgTx, RequestMeta, Write};
use crate::state::AppState;

const MAX_ROUTES: usize = 100;
const MAX_STAGES: usize = 200;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(show, replace))
}

fn check(routes: &[Route]) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    if routes.len() > MAX_ROUTES {
        errors.push(FieldError::new(
            "",
            format!("must hold at most {MAX_ROUTES} routes"),
        ));
    }
    for (i, route) in routes.iter().enumerate() {
        if route.pipeline_id <= 0 {
            errors.push(FieldError::new(
                format!("[{i}].pipeline_id"),
                "must be a positive Kommo pipeline id",
            ));
        }
        if let Stages::Some(ids) = &route.stage_ids {
            if ids.is_empty() || ids.len() > MAX_STAGES {
                errors.push(FieldError::new(
                    format!("[{i}].stage_ids"),
                    format!("must be \"all\" or 1 to {MAX_STAGES} stage ids"),
                ));
            }
            if ids.iter().any(|id| *id <= 0) {
                errors.push(FieldError::new(
                    format!("[{i}].stage_ids"),
                    "must be positive Kommo stage ids",
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// The agent's routes, by connection and pipeline.
#[utoipa::path(get, path = "/v1/orgs/{org_id}/agents/{agent_id}/routes", tag = "agents",
    params(("agent_id" = Uuid, Path)),
    responses((status = 200, body = Vec<Route>)))]
pub async fn show(
    OrgTx { org_id, mut tx, .. }: OrgTx,
    ApiPath((_, agent_id)): ApiPath<(Uuid, AgentId)>,
) -> ApiResult<Json<Vec<Route>>> {
    if db::agents::get(&mut tx, org_id, agent_id).await?.is_none() {
        return Err(ApiError::NotFound);
    }
    let routes = db::agent_routes::routes_of(&mut tx, org_id, agent_id).await?;
    tx.commit().await?;
    Ok(Json(routes))
}

/// Replaces the agent's routes: `[{connection_id, pipeline_id, stage_ids: [..] | "all"}]`.
#[utoipa::path(put, path = "/v1/orgs/{org_id}/agents/{agent_id}/routes", tag = "agents",
    params(("agent_id" = Uuid, Path)),
    request_body = Vec<Route>,
    responses((status = 200, body = Vec<Route>),
              (status = 409, description = "Another active agent works one of these stages")))]
pub async fn replace(
    OrgTx {
        user,
        org_id,
        mut tx,
        ..
    }: OrgTx<Write>,
    meta: RequestMeta,
    ApiPath((_, agent_id)): ApiPath<(Uuid, AgentId)>,
    ApiJsonList(routes): ApiJsonList<Route>,
) -> ApiResult<Json<Vec<Route>>> {
    check(&routes).map_err(ApiError::Validation)?;
    let Some(agent) = db::agents::get_for_update(&mut tx, org_id, agent_id).await? else {
        return Err(ApiError::NotFound);
    };
    for (i, route) in routes.iter().enumerate() {
        let connection = ConnectionId(route.connection_id);
        if !db::agents::connection_exists(&mut tx, org_id, connection).await? {
            return Err(ApiError::validation(
                format!("[{i}].connection_id"),
                "must be a CRM connection of this organization",
            ));
        }
    }
    db::agent_routes::replace(&mut tx, org_id, agent_id, &routes).await?;
    if agent.status == AgentStatus::Active
        && let Some(conflict) = db::agent_routes::check_free(&mut tx, org_id, agent_id).await?
    {
        return Err(ApiError::conflict(conflict.to_string()));
    }
    let stored = db::agent_routes::routes_of(&mut tx, org_id, agent_id).await?;
    let change = Change::new(
        "agent.routes",
        "agent",
        agent_id,
        json!({ "routes": stored.len() }),
    );
    db::audit::record(&mut tx, org_id, Some(user.id), &meta, change).await?;
    tx.commit().await?;
    Ok(Json(stored))
}
