//! The knowledge graph an org's files became (`extract-knowledge-graph`): its entities,
//! and one entity with its relationships and the chunks it was found in.

use crate::http::json::Json;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::db;
use crate::db::graph::{Entity, EntityChunk, EntityFilter, EntityRelationship};
use crate::domain::page::{Page, Paginated};
use crate::domain::{EntityId, EntityType};
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{ApiPath, ApiQuery, OrgTx};
use crate::knowledge::graph::normalize_name;
use crate::state::AppState;

/// Relationships and chunks shown on one entity's page.
const DETAIL_LIMIT: i64 = 100;
const Q_MAX_CHARS: usize = 200;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListEntities {
    /// A part of the name, in any case, spacing or punctuation (at most 200 characters).
    pub q: Option<String>,
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub kind: Option<EntityType>,
    /// 1..=100, default 25.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// The org's entities, newest first.
#[utoipa::path(get, path = "/v1/orgs/{org_id}/knowledge/entities", tag = "knowledge",
    params(ListEntities),
    responses((status = 200, body = inline(Paginated<Entity>))))]
pub async fn list(
    OrgTx { org_id, mut tx, .. }: OrgTx,
    ApiQuery(query): ApiQuery<ListEntities>,
) -> ApiResult<Json<Paginated<Entity>>> {
    let page = Page::new(query.limit, query.cursor.as_deref())?;
    let q = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    if q.is_some_and(|q| q.chars().count() > Q_MAX_CHARS) {
        return Err(ApiError::validation(
            "q",
            format!("must be at most {Q_MAX_CHARS} characters"),
        ));
    }
    let normalized = q.map(normalize_name);
    let filter = EntityFilter {
        q,
        q_normalized: normalized.as_deref(),
        kind: query.kind,
    };
    let rows = db::graph::list_entities(&mut tx, org_id, &filter, page).await?;
    tx.commit().await?;
    Ok(Json(Paginated::from_rows(rows, page, |e| e.id)))
}

/// An entity with its relationships (both directions) and the chunks it was found in,
/// the first 100 of each.
#[derive(Serialize, utoipa::ToSchema)]
pub struct EntityDetail {
    #[serde(flatten)]
    pub entity: Entity,
    pub relationships: Vec<EntityRelationship>,
    /// Whether it has more relationships than listed.
    pub more_relationships: bool,
    pub chunks: Vec<EntityChunk>,
    /// Whether it was found in more chunks than listed.
    pub more_chunks: bool,
}

/// One entity, with its relationships and source chunks.
#[utoipa::path(get, path = "/v1/orgs/{org_id}/knowledge/entities/{entity_id}",
    tag = "knowledge",
    params(("entity_id" = Uuid, Path)),
    responses((status = 200, body = EntityDetail)))]
pub async fn show(
    OrgTx { org_id, mut tx, .. }: OrgTx,
    ApiPath((_, id)): ApiPath<(Uuid, EntityId)>,
) -> ApiResult<Json<EntityDetail>> {
    let entity = db::graph::get_entity(&mut tx, org_id, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let mut relationships =
        db::graph::entity_relationships(&mut tx, org_id, id, DETAIL_LIMIT + 1).await?;
    let mut chunks = db::graph::entity_chunks(&mut tx, org_id, id, DETAIL_LIMIT + 1).await?;
    tx.commit().await?;
    let more_relationships = truncate(&mut relationships);
    let more_chunks = truncate(&mut chunks);
    Ok(Json(EntityDetail {
        entity,
        relationships,
        more_relationships,
        chunks,
        more_chunks,
    }))
}

/// Cuts a list fetched with one row extra to `DETAIL_LIMIT`; whether there was more.
fn truncate<T>(rows: &mut Vec<T>) -> bool {
    let more = rows.len() as i64 > DETAIL_LIMIT;
    rows.truncate(DETAIL_LIMIT as usize);
    more
}
