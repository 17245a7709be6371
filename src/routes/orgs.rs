//! Organizations: create one (the caller becomes its owner) and read one.

use crate::http::json::Json;
use axum::http::StatusCode;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use validator::Validate;

use crate::db;
use crate::db::audit::Change;
use crate::db::orgs::Org;
use crate::domain::OrgId;
use crate::http::error::{ApiError, ApiResult, OnConstraint};
use crate::http::extract::{ApiJson, OrgTx, RequestMeta, Role, UserTx};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(show))
}

#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrg {
    #[validate(custom(function = "validate_org_name"))]
    #[schema(min_length = 2, max_length = 100)]
    pub name: String,
    /// Lower-case letters, digits and dashes; generated from the name when absent.
    #[validate(custom(function = "validate_slug"))]
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{1,62}$")]
    pub slug: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct OrgWithRole {
    #[serde(flatten)]
    pub org: Org,
    /// The caller's role in this org.
    pub role: Role,
}

/// The name is stored trimmed, so it is the trimmed name that must fit.
fn validate_org_name(name: &str) -> Result<(), validator::ValidationError> {
    if (2..=100).contains(&name.trim().chars().count()) {
        Ok(())
    } else {
        Err(validator::ValidationError::new("name")
            .with_message("must be 2 to 100 characters".into()))
    }
}

fn validate_slug(slug: &str) -> Result<(), validator::ValidationError> {
    let bytes = slug.as_bytes();
    let ok = (2..=63).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if ok {
        Ok(())
    } else {
        Err(validator::ValidationError::new("slug").with_message(
            "must be 2 to 63 of a-z, 0-9 and -, starting with a letter or digit".into(),
        ))
    }
}

/// A readable slug from the name plus a random suffix, so that two orgs of the same name
/// do not collide.
fn generate_slug(name: &str) -> String {
    let mut base = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            base.push(c);
        } else if !base.is_empty() && !base.ends_with('-') {
            base.push('-');
        }
    }
    let base: String = base.trim_matches('-').chars().take(40).collect();
    let base = base.trim_end_matches('-');
    let suffix: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(6)
        .map(|c| (c as char).to_ascii_lowercase())
        .collect();
    if base.is_empty() {
        format!("org-{suffix}")
    } else {
        format!("{base}-{suffix}")
    }
}

/// Creates an org; the caller becomes its owner.
#[utoipa::path(post, path = "/v1/orgs", tag = "orgs", security(("bearer" = [])),
    request_body = CreateOrg, responses((status = 201, body = OrgWithRole)))]
pub async fn create(
    UserTx { user, mut tx }: UserTx,
    meta: RequestMeta,
    ApiJson(body): ApiJson<CreateOrg>,
) -> ApiResult<(StatusCode, Json<OrgWithRole>)> {
    let slug = body.slug.unwrap_or_else(|| generate_slug(&body.name));
    let org = db::orgs::insert(&mut tx, body.name.trim(), &slug, user.id)
        .await
        .on_constraint("organizations_slug_key", || {
            ApiError::Conflict("An organization with this slug exists.".into())
        })?;
    db::members::insert(&mut tx, OrgId(org.id), user.id, Role::Owner).await?;
    let change = Change::new(
        "org.create",
        "organization",
        org.id,
        json!({"name": org.name, "slug": org.slug}),
    );
    db::audit::record(&mut tx, OrgId(org.id), Some(user.id), &meta, change).await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(OrgWithRole {
            org,
            role: Role::Owner,
        }),
    ))
}

/// The org and the caller's role in it.
#[utoipa::path(get, path = "/v1/orgs/{org_id}", tag = "orgs", params(("org_id" = uuid::Uuid, Path)), responses((status = 200, body = OrgWithRole)))]
pub async fn show(
    OrgTx {
        org_id,
        role,
        mut tx,
        ..
    }: OrgTx,
) -> ApiResult<Json<OrgWithRole>> {
    let org = db::orgs::get(&mut tx, org_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    tx.commit().await?;
    Ok(Json(OrgWithRole { org, role }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_slugs_are_valid() {
        for name in ["Acme Sales", "  ", "Ünïcode ☃ Co", &"x".repeat(100)] {
            let slug = generate_slug(name);
            assert!(validate_slug(&slug).is_ok(), "{slug}");
        }
        assert!(generate_slug("Acme Sales").starts_with("acme-sales-"));
    }
}
