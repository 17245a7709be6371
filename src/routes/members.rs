//! Org membership: owners manage every role; admins may only add plain members; the
//! last owner can be neither removed nor demoted.

use crate::http::json::Json;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;
use validator::Validate;

use crate::db;
use crate::db::audit::Change;
use crate::db::members::Member;
use crate::domain::OrgId;
use crate::domain::UserId;
use crate::domain::page::{Page, Paginated};
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{ApiJson, ApiPath, ApiQuery, OrgTx, RequestMeta, Role, Write};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(upsert, remove))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListMembers {
    /// 1..=100, default 25.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutMember {
    pub role: Role,
}

/// The org's members.
#[utoipa::path(get, path = "/v1/orgs/{org_id}/members", tag = "members",
    params(ListMembers),
    responses((status = 200, body = inline(Paginated<Member>))))]
pub async fn list(
    OrgTx { org_id, mut tx, .. }: OrgTx,
    ApiQuery(query): ApiQuery<ListMembers>,
) -> ApiResult<Json<Paginated<Member>>> {
    let page = Page::new(query.limit, query.cursor.as_deref())?;
    let rows = db::members::list(&mut tx, org_id, page).await?;
    tx.commit().await?;
    Ok(Json(Paginated::from_rows(rows, page, |m| m.user_id)))
}

/// Adds a member (201) or changes a member's role (200).
#[utoipa::path(put, path = "/v1/orgs/{org_id}/members/{user_id}", tag = "members",
    params(("user_id" = Uuid, Path)),
    request_body = PutMember,
    responses((status = 200, body = Member), (status = 201, body = Member)))]
pub async fn upsert(
    OrgTx {
        user,
        org_id,
        role: caller,
        mut tx,
        ..
    }: OrgTx<Write>,
    meta: RequestMeta,
    ApiPath((_, user_id)): ApiPath<(Uuid, UserId)>,
    ApiJson(body): ApiJson<PutMember>,
) -> ApiResult<(StatusCode, Json<Member>)> {
    let current = db::members::role_of(&mut tx, org_id, user_id).await?;
    if caller != Role::Owner && (current.is_some() || body.role != Role::Member) {
        return Err(ApiError::forbidden(
            "Admins may only add new members with the member role.",
        ));
    }
    let change = match current {
        None => Change::new("member.add", "member", user_id, json!({"role": body.role})),
        Some(from) => Change::new(
            "member.update",
            "member",
            user_id,
            json!({"role": {"from": from, "to": body.role}}),
        ),
    };
    let (status, member) = match current {
        None => (
            StatusCode::CREATED,
            db::members::insert(&mut tx, org_id, user_id, body.role).await?,
        ),
        Some(current) => {
            if current == Role::Owner && body.role != Role::Owner {
                ensure_other_owner(&mut tx, org_id, user_id).await?;
            }
            let member = db::members::set_role(&mut tx, org_id, user_id, body.role)
                .await?
                .ok_or(ApiError::NotFound)?;
            (StatusCode::OK, member)
        }
    };
    db::audit::record(&mut tx, org_id, Some(user.id), &meta, change).await?;
    tx.commit().await?;
    Ok((status, Json(member)))
}

/// Removes a member: owners remove anyone, and every member may leave (remove
/// themselves). The last owner cannot go (409).
#[utoipa::path(delete, path = "/v1/orgs/{org_id}/members/{user_id}", tag = "members",
    params(("user_id" = Uuid, Path)),
    responses((status = 204)))]
pub async fn remove(
    OrgTx {
        user,
        org_id,
        role: caller,
        mut tx,
        ..
    }: OrgTx,
    meta: RequestMeta,
    ApiPath((_, user_id)): ApiPath<(Uuid, UserId)>,
) -> ApiResult<StatusCode> {
    let leaving = user_id == user.id;
    if !leaving && caller != Role::Owner {
        return Err(ApiError::forbidden(
            "Only owners may remove other members; anyone may leave.",
        ));
    }
    let current = db::members::role_of(&mut tx, org_id, user_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    if current == Role::Owner {
        ensure_other_owner(&mut tx, org_id, user_id).await?;
    }
    let action = if leaving {
        "member.leave"
    } else {
        "member.remove"
    };
    let change = Change::new(action, "member", user_id, json!({"role": current}));
    // The audit row goes first: the policy lets members write it, and one who leaves is
    // no longer a member once the delete has run.
    db::audit::record(&mut tx, org_id, Some(user.id), &meta, change).await?;
    db::members::delete(&mut tx, org_id, user_id).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn ensure_other_owner(tx: &mut db::Tx, org_id: OrgId, leaving: UserId) -> ApiResult<()> {
    let owners = db::members::lock_owners(tx, org_id).await?;
    if owners.iter().all(|owner| *owner == leaving) {
        return Err(ApiError::conflict(
            "An organization needs at least one owner; add another owner first.",
        ));
    }
    Ok(())
}
