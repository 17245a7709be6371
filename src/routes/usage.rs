//! `GET /v1/orgs/{org_id}/usage`: what the org's model calls used, per day and kind, and
//! where it stands against `AI_DAILY_TOKEN_QUOTA`.

use crate::http::json::Json;
use axum::extract::State;
use chrono::{Days, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::db;
use crate::db::ai::UsageDay;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{ApiQuery, OrgTx};
use crate::state::AppState;

/// The longest range one request may ask for.
const MAX_DAYS: u64 = 366;
/// The range without `from`: the last 30 days, today included.
const DEFAULT_DAYS: u64 = 29;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(show))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// First day (UTC, `YYYY-MM-DD`); default 29 days before `to`.
    pub from: Option<NaiveDate>,
    /// Last day, included; default today (UTC).
    pub to: Option<NaiveDate>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Usage {
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// Per day, kind and model, oldest first.
    pub data: Vec<UsageDay>,
    pub totals: Totals,
    /// `null` without a daily quota.
    pub daily_token_quota: Option<u64>,
    /// Tokens used today (UTC): the number the quota is checked against.
    pub tokens_today: i64,
}

#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct Totals {
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
}

/// Requests and tokens in and out per day and kind (members and up).
#[utoipa::path(get, path = "/v1/orgs/{org_id}/usage", tag = "ai",
    params(("org_id" = uuid::Uuid, Path), UsageQuery),
    responses((status = 200, body = Usage),
        (status = 400, description = "A date is not YYYY-MM-DD"),
        (status = 422, description = "`from` after `to`, or more than 366 days")))]
pub async fn show(
    State(state): State<AppState>,
    OrgTx { org_id, mut tx, .. }: OrgTx,
    ApiQuery(query): ApiQuery<UsageQuery>,
) -> ApiResult<Json<Usage>> {
    let today = Utc::now().date_naive();
    let to = query.to.unwrap_or(today);
    let from = match query.from {
        Some(from) => from,
        None => to
            .checked_sub_days(Days::new(DEFAULT_DAYS))
            .unwrap_or(NaiveDate::MIN),
    };
    if from > to {
        return Err(ApiError::validation("from", "must not be after `to`"));
    }
    if to.signed_duration_since(from).num_days() >= MAX_DAYS as i64 {
        return Err(ApiError::validation(
            "from",
            format!("the range may cover at most {MAX_DAYS} days"),
        ));
    }
    let data = db::ai::usage_between(&mut tx, org_id, from, to).await?;
    let tokens_today = db::ai::tokens_today(&mut tx, org_id).await?;
    tx.commit().await?;
    let totals = data.iter().fold(Totals::default(), |mut t, d| {
        t.requests += d.requests;
        t.prompt_tokens += d.prompt_tokens;
        t.completion_tokens += d.completion_tokens;
        t
    });
    let quota = state.config.ai_daily_token_quota;
    Ok(Json(Usage {
        from,
        to,
        data,
        totals,
        daily_token_quota: (quota > 0).then_some(quota),
        tokens_today,
    }))
}
