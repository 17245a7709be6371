//! `GET /v1/me`: who the token belongs to and their orgs.

use crate::http::json::Json;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::db;
use crate::db::orgs::OrgMembership;
use crate::http::error::ApiResult;
use crate::http::extract::UserTx;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(me))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Me {
    pub user_id: Uuid,
    pub email: Option<String>,
    pub orgs: Vec<OrgMembership>,
}

/// The caller and the orgs they belong to, with their role in each.
#[utoipa::path(get, path = "/v1/me", tag = "me", security(("bearer" = [])),
    responses((status = 200, body = Me)))]
pub async fn me(UserTx { user, mut tx, .. }: UserTx) -> ApiResult<Json<Me>> {
    let orgs = db::orgs::memberships(&mut tx, user.id).await?;
    tx.commit().await?;
    Ok(Json(Me {
        user_id: user.id.0,
        email: user.email,
        orgs,
    }))
}
