//! `GET /v1/orgs/{org_id}/audit-logs`: the org's audit trail, for admins and owners.

use crate::http::json::Json;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::db;
use crate::db::audit::AuditEntry;
use crate::domain::page::{Page, Paginated};
use crate::http::error::ApiResult;
use crate::http::extract::{ApiQuery, OrgTx, Write};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListAudit {
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// Who changed what, newest first (admins and owners; members get 403).
#[utoipa::path(get, path = "/v1/orgs/{org_id}/audit-logs", tag = "audit",
    params(("org_id" = uuid::Uuid, Path), ListAudit),
    responses((status = 200, body = inline(Paginated<AuditEntry>))))]
pub async fn list(
    OrgTx { org_id, mut tx, .. }: OrgTx<Write>,
    ApiQuery(query): ApiQuery<ListAudit>,
) -> ApiResult<Json<Paginated<AuditEntry>>> {
    let page = Page::new(query.limit, query.cursor.as_deref())?;
    let rows = db::audit::list(&mut tx, org_id, page).await?;
    tx.commit().await?;
    Ok(Json(Paginated::from_rows(rows, page, |e| e.id)))
}
