//! The knowledge base: files an org uploads, their chunks, and search over them.

use crate::http::json::Json;
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;
use validator::Validate;

use crate::db;
use crate::db::audit::Change;
use crate::db::jobs::Job;
use crate::db::knowledge::{Asset, AssetFilter, Chunk, NewAsset, SearchHit};
use crate::domain::page::{Page, Paginated};
use crate::domain::{AgentId, AssetFormat, AssetId, AssetStatus, JobId, OrgId};
use crate::events::{AssetChange, AssetEvent, Event};
use crate::http::error::{ApiError, ApiResult, OnConstraint};
use crate::http::extract::{
    ApiJson, ApiPath, ApiQuery, MinRole, OrgTx, OrgUser, RequestMeta, Write,
};
use crate::jobs::job;
use crate::jobs::kinds::ProcessAsset;
use crate::knowledge;
use crate::knowledge::extract;
use crate::knowledge::search::{Query, Reader, SearchMode};
use crate::knowledge::store::Location;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        // The body is bounded by ASSET_MAX_BYTES and read before the handler runs (in
        // `http::middleware::buffer_body`); the JSON limit does not apply here.
        .routes(routes!(upload))
        .layer(DefaultBodyLimit::disable())
        .routes(routes!(list))
        .routes(routes!(show, remove))
        .routes(routes!(chunks))
        .routes(routes!(reprocess))
        .routes(routes!(search))
}

/// The unique key that makes the same bytes one asset per org.
const SAME_BYTES: &str = "knowledge_assets_org_sha256_key";

/// The asset and the job that indexes it (`null` when the bytes were already there).
#[derive(Serialize, utoipa::ToSchema)]
pub struct Uploaded {
    pub asset: Asset,
    pub job: Option<Job>,
}

/// What an upload carries: `file` (required) and `agent_id` (optional).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct UploadForm {
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    /// An agent of this org the file is for; org-wide without it.
    agent_id: Option<Uuid>,
}

struct Upload {
    filename: String,
    content_type: Option<String>,
    bytes: Vec<u8>,
    agent_id: Option<Uuid>,
}

/// Uploads a file (text, Markdown, HTML, PDF or DOCX, judged by its content) and queues
/// its indexing: 202. The same bytes again in the org: 200 with the existing asset.
#[utoipa::path(post, path = "/v1/orgs/{org_id}/knowledge/assets", tag = "knowledge",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 202, body = Uploaded, description = "Stored; indexing queued"),
        (status = 200, body = Uploaded, description = "The same bytes are already an asset"),
        (status = 413, description = "Larger than ASSET_MAX_BYTES"),
        (status = 415, description = "Not text, Markdown, HTML, PDF or DOCX")))]
pub async fn upload(
    State(state): State<AppState>,
    OrgTx {
        user,
        org_id,
        mut tx,
        ..
    }: OrgTx<Write>,
    meta: RequestMeta,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> ApiResult<(StatusCode, Json<Uploaded>)> {
    let multipart = multipart.map_err(|_| {
        ApiError::UnsupportedMediaType("Send the file as multipart/form-data.".into())
    })?;
    let mut upload = read_form(multipart, state.config.asset_max_bytes).await?;
    let Some(format) = extract::sniff(&upload.bytes, Some(&upload.filename)) else {
        return Err(ApiError::UnsupportedMediaType(
            "The file is not text, Markdown, HTML, PDF or DOCX.".into(),
        ));
    };
    let sha256 = Sha256::digest(&upload.bytes);
    let agent_id = upload.agent_id.map(AgentId);
    if let Some(asset) = existing(&mut tx, org_id, &sha256, agent_id).await? {
        tx.commit().await?;
        return Ok(already_there(asset));
    }
    let format: AssetFormat = format.into();
    let content_type = upload
        .content_type
        .take()
        .filter(|t| t.len() <= 200 && !t.is_empty())
        .unwrap_or_else(|| extract::Format::from(format).mime().to_string());
    let id = AssetId::new();
    let location = state.assets.new_location(org_id, id);
    let new = NewAsset {
        id,
        agent_id,
        filename: &upload.filename,
        format,
        content_type: &content_type,
        size_bytes: upload.bytes.len() as i64,
        sha256: &sha256,
        storage: location.as_storage(),
        created_by: Some(user.id),
    };
    let (tx, asset, job) = match &location {
        Location::Postgres => {
            let (asset, job) = record(&mut tx, org_id, &new, &user, &meta).await?;
            state
                .assets
                .put_row(&mut tx, org_id, id, &location, &upload.bytes)
                .await?;
            (tx, asset, job)
        }
        Location::Object(_) => {
            // The object is written before the row that names it, and with no pooled
            // connection held (a large file may take the store seconds): the checks'
            // transaction ends here and a second one records the asset.
            tx.commit().await?;
            let bytes = std::mem::take(&mut upload.bytes);
            state.assets.put_object(&location, bytes).await?;
            let recorded = async {
                let mut tx = begin_writer(&state, &user, org_id).await?;
                if let Some(asset) = existing(&mut tx, org_id, &sha256, agent_id).await? {
                    return Ok(Err(asset));
                }
                let (asset, job) = record(&mut tx, org_id, &new, &user, &meta).await?;
                Ok::<_, ApiError>(Ok((tx, asset, job)))
            };
            match recorded.await {
                Ok(Ok(recorded)) => recorded,
                // The same bytes were recorded meanwhile: ours are a redundant copy.
                Ok(Err(asset)) => {
                    state.assets.delete_object_later(location);
                    return Ok(already_there(asset));
                }
                Err(e) => {
                    state.assets.delete_object_later(location);
                    return Err(e);
                }
            }
        }
    };
    // A commit that reports failure may still have landed, so the object stays then: a
    // leftover object is harmless, a row without its file is not.
    tx.commit().await?;
    announce_queued(&state, org_id, asset.id);
    state
        .jobs
        .enqueue_committed(JobId(job.id), org_id, &job.job_type)
        .await;
    Ok((
        StatusCode::ACCEPTED,
        Json(Uploaded {
            asset,
            job: Some(job),
        }),
    ))
}

fn already_there(asset: Asset) -> (StatusCode, Json<Uploaded>) {
    (StatusCode::OK, Json(Uploaded { asset, job: None }))
}

/// What every upload is checked for: the same bytes already an asset of the org (that
/// asset), or an agent that is not the org's (422).
async fn existing(
    tx: &mut db::Tx,
    org_id: OrgId,
    sha256: &[u8],
    agent_id: Option<AgentId>,
) -> ApiResult<Option<Asset>> {
    if let Some(asset) = db::knowledge::find_by_sha256(tx, org_id, sha256).await? {
        return Ok(Some(asset));
    }
    if let Some(agent) = agent_id
        && db::agents::get(tx, org_id, agent).await?.is_none()
    {
        return Err(ApiError::validation(
            "agent_id",
            "must be an agent of this organization",
        ));
    }
    Ok(None)
}

/// The new asset's row, its indexing job and the audit entry, in `tx`.
async fn record(
    tx: &mut db::Tx,
    org_id: OrgId,
    new: &NewAsset<'_>,
    user: &crate::domain::AuthUser,
    meta: &RequestMeta,
) -> ApiResult<(Asset, Job)> {
    let asset = db::knowledge::insert_asset(tx, org_id, new)
        .await
        .on_constraint(SAME_BYTES, || {
            ApiError::conflict("The same file is being uploaded right now; try again.")
        })?;
    let job = queue_processing(tx, org_id, new.id, user, meta, "knowledge.asset.upload").await?;
    Ok((asset, job))
}

/// Another transaction for the caller after the first was closed, checked as `OrgTx<Write>`
/// checks (their membership may have changed meanwhile).
async fn begin_writer(
    state: &AppState,
    user: &crate::domain::AuthUser,
    org_id: OrgId,
) -> ApiResult<db::Tx> {
    match state.db.begin_member(user, org_id).await? {
        (_, None) => Err(ApiError::NotFound),
        (_, Some(role)) if role < Write::ROLE => Err(ApiError::forbidden(format!(
            "This needs the {} role or higher in this organization.",
            Write::ROLE.as_str()
        ))),
        (tx, Some(_)) => Ok(tx),
    }
}

async fn queue_processing(
    tx: &mut db::Tx,
    org_id: OrgId,
    asset_id: AssetId,
    user: &crate::domain::AuthUser,
    meta: &RequestMeta,
    action: &'static str,
) -> ApiResult<Job> {
    let job = job::insert(
        tx,
        org_id,
        &ProcessAsset {
            asset_id: asset_id.0,
        },
        Some(user.id),
    )
    .await?;
    let change = Change::new(
        action,
        "knowledge_asset",
        asset_id.0,
        json!({"job_id": job.id}),
    );
    db::audit::record(tx, org_id, Some(user.id), meta, change).await?;
    Ok(job)
}

/// Reads the form: exactly one `file` within `max_bytes`, an optional `agent_id`, and
/// nothing else.
async fn read_form(mut multipart: Multipart, max_bytes: usize) -> ApiResult<Upload> {
    let unreadable = |_| ApiError::BadRequest("The multipart body could not be read.".into());
    let mut file: Option<(String, Option<String>, Vec<u8>)> = None;
    let mut agent_id = None;
    while let Some(field) = multipart.next_field().await.map_err(unreadable)? {
        match field.name() {
            Some("file") => {
                if file.is_some() {
                    return Err(ApiError::validation("file", "send one file per upload"));
                }
                let filename = clean_filename(field.file_name());
                let content_type = field.content_type().map(str::to_owned);
                let bytes = field.bytes().await.map_err(unreadable)?;
                if bytes.len() > max_bytes {
                    return Err(ApiError::PayloadTooLarge);
                }
                file = Some((filename, content_type, bytes.to_vec()));
            }
            Some("agent_id") => {
                let text = field.text().await.map_err(unreadable)?;
                let id = text
                    .trim()
                    .parse::<Uuid>()
                    .map_err(|_| ApiError::validation("agent_id", "must be a UUID"))?;
                agent_id = Some(id);
            }
            other => {
                let name: String = other.unwrap_or("").chars().take(100).collect();
                return Err(ApiError::validation(
                    name,
                    "unknown field: send `file` and optionally `agent_id`",
                ));
            }
        }
    }
    let Some((filename, content_type, bytes)) = file else {
        return Err(ApiError::validation("file", "is required"));
    };
    if bytes.is_empty() {
        return Err(ApiError::validation("file", "is empty"));
    }
    Ok(Upload {
        filename,
        content_type,
        bytes,
        agent_id,
    })
}

/// The name a file is shown under: its last path segment, without control characters,
/// at most 255 characters.
fn clean_filename(name: Option<&str>) -> String {
    let name = name
        .unwrap_or("")
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(255)
        .collect::<String>();
    let name = name.trim();
    if name.is_empty() {
        "upload".into()
    } else {
        name.into()
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListAssets {
    pub agent_id: Option<Uuid>,
    pub status: Option<AssetStatus>,
    /// 1..=100, default 25.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// The org's files, newest first, with their indexing progress.
#[utoipa::path(get, path = "/v1/orgs/{org_id}/knowledge/assets", tag = "knowledge",
    params(ListAssets),
    responses((status = 200, body = inline(Paginated<Asset>))))]
pub async fn list(
    OrgTx { org_id, mut tx, .. }: OrgTx,
    ApiQuery(query): ApiQuery<ListAssets>,
) -> ApiResult<Json<Paginated<Asset>>> {
    let page = Page::new(query.limit, query.cursor.as_deref())?;
    let filter = AssetFilter {
        agent_id: query.agent_id.map(AgentId),
        status: query.status,
    };
    let rows = db::knowledge::list_assets(&mut tx, org_id, &filter, page).await?;
    tx.commit().await?;
    Ok(Json(Paginated::from_rows(rows, page, |a| a.id)))
}

/// One file, with `progress`.
#[utoipa::path(get, path = "/v1/orgs/{org_id}/knowledge/assets/{asset_id}", tag = "knowledge",
    params(("asset_id" = Uuid, Path)),
    responses((status = 200, body = Asset)))]
pub async fn show(
    OrgTx { org_id, mut tx, .. }: OrgTx,
    ApiPath((_, id)): ApiPath<(Uuid, AssetId)>,
) -> ApiResult<Json<Asset>> {
    let asset = db::knowledge::get_asset(&mut tx, org_id, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    tx.commit().await?;
    Ok(Json(asset))
}

/// Deletes a file with its bytes, chunks and the graph facts only it supported.
#[utoipa::path(delete, path = "/v1/orgs/{org_id}/knowledge/assets/{asset_id}", tag = "knowledge",
    params(("asset_id" = Uuid, Path)),
    responses((status = 204, description = "Deleted")))]
pub async fn remove(
    State(state): State<AppState>,
    OrgTx {
        user,
        org_id,
        mut tx,
        ..
    }: OrgTx<Write>,
    meta: RequestMeta,
    ApiPath((_, id)): ApiPath<(Uuid, AssetId)>,
) -> ApiResult<StatusCode> {
    let Some(asset) = db::knowledge::lock_asset(&mut tx, org_id, id).await? else {
        return Err(ApiError::NotFound);
    };
    let storage = db::knowledge::delete_asset(&mut tx, org_id, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let change = Change::new(
        "knowledge.asset.delete",
        "knowledge_asset",
        id.0,
        json!({"filename": asset.filename, "sha256": asset.sha256}),
    );
    db::audit::record(&mut tx, org_id, Some(user.id), &meta, change).await?;
    tx.commit().await?;
    let deleted = AssetEvent::new(id.0, AssetChange::Deleted, "deleted", 0, 0);
    state.events.publish(Event::asset(org_id, deleted));
    // Only once no row names it; the client does not wait for the store.
    state
        .assets
        .delete_object_later(Location::from_storage(&storage));
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListChunks {
    /// 1..=100, default 25.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// The file's chunks in order (the chunk preview).
#[utoipa::path(get, path = "/v1/orgs/{org_id}/knowledge/assets/{asset_id}/chunks",
    tag = "knowledge",
    params(("asset_id" = Uuid, Path), ListChunks),
    responses((status = 200, body = inline(Paginated<Chunk>))))]
pub async fn chunks(
    OrgTx { org_id, mut tx, .. }: OrgTx,
    ApiPath((_, id)): ApiPath<(Uuid, AssetId)>,
    ApiQuery(query): ApiQuery<ListChunks>,
) -> ApiResult<Json<Paginated<Chunk>>> {
    let page = Page::new(query.limit, query.cursor.as_deref())?;
    if db::knowledge::get_asset(&mut tx, org_id, id)
        .await?
        .is_none()
    {
        return Err(ApiError::NotFound);
    }
    let rows = db::knowledge::list_chunks(&mut tx, org_id, id, page).await?;
    tx.commit().await?;
    Ok(Json(Paginated::from_rows(rows, page, |c| c.id)))
}

/// Indexes the file again (202); its current chunks stay searchable until the new ones
/// replace them. 409 while it is queued or processing.
#[utoipa::path(post, path = "/v1/orgs/{org_id}/knowledge/assets/{asset_id}/reprocess",
    tag = "knowledge",
    params(("asset_id" = Uuid, Path)),
    responses((status = 202, body = Job)))]
pub async fn reprocess(
    State(state): State<AppState>,
    OrgTx {
        user,
        org_id,
        mut tx,
        ..
    }: OrgTx<Write>,
    meta: RequestMeta,
    ApiPath((_, id)): ApiPath<(Uuid, AssetId)>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    let Some(asset) = db::knowledge::lock_asset(&mut tx, org_id, id).await? else {
        return Err(ApiError::NotFound);
    };
    if matches!(asset.status, AssetStatus::Queued | AssetStatus::Processing) {
        return Err(ApiError::conflict(
            "The asset is already being indexed; wait for it to finish.",
        ));
    }
    db::knowledge::mark_queued(&mut tx, org_id, id).await?;
    let job = queue_processing(
        &mut tx,
        org_id,
        id,
        &user,
        &meta,
        "knowledge.asset.reprocess",
    )
    .await?;
    tx.commit().await?;
    announce_queued(&state, org_id, id.0);
    state
        .jobs
        .enqueue_committed(JobId(job.id), org_id, &job.job_type)
        .await;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// The asset waits for its indexing job (after the commit).
fn announce_queued(state: &AppState, org_id: OrgId, asset_id: Uuid) {
    let queued = AssetEvent::new(asset_id, AssetChange::Queued, "queued", 0, 0);
    state.events.publish(Event::asset(org_id, queued));
}

#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// Words, "phrases", -excluded, or: web-search syntax, Russian or English.
    #[validate(length(min = 1, max = 1000, message = "must be 1 to 1000 characters"))]
    #[schema(min_length = 1, max_length = 1000)]
    pub query: String,
    /// Search this agent's files and the org-wide ones.
    pub agent_id: Option<Uuid>,
    /// 1..=50, default 8.
    #[validate(range(min = 1, max = 50, message = "must be between 1 and 50"))]
    #[schema(minimum = 1, maximum = 50)]
    pub limit: Option<i64>,
    /// Default `hybrid`.
    pub mode: Option<SearchMode>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SearchResults {
    pub data: Vec<SearchHit>,
    /// What ran: `hybrid` falls back to `fulltext` where there are no embeddings.
    pub mode: SearchMode,
    /// Why a hybrid search ran as full-text only (no pgvector, no model provider, no
    /// embedded chunks, or the provider failed just now).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notice: Option<&'static str>,
}

/// Searches the org's indexed chunks, best first.
#[utoipa::path(post, path = "/v1/orgs/{org_id}/knowledge/search", tag = "knowledge",
    request_body = SearchRequest,
    responses(
        (status = 200, body = SearchResults),
        (status = 409, description = "Vector search asked for where there are no embeddings, pgvector or provider")))]
pub async fn search(
    State(state): State<AppState>,
    OrgUser { user, org_id }: OrgUser,
    ApiJson(body): ApiJson<SearchRequest>,
) -> ApiResult<Json<SearchResults>> {
    if body.query.trim().is_empty() {
        return Err(ApiError::validation("query", "must not be blank"));
    }
    // The search opens its own transactions around the provider call; the first one
    // checks the membership (404 to a non-member).
    let query = Query {
        text: &body.query,
        agent: body.agent_id.map(AgentId),
        limit: body.limit.unwrap_or(8),
        mode: body.mode.unwrap_or(SearchMode::Hybrid),
    };
    let found =
        knowledge::search::search(&state.db, &state.ai, Reader::Member(&user), org_id, &query)
            .await?;
    Ok(Json(SearchResults {
        data: found.hits,
        mode: found.mode,
        notice: found.notice,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knowledge::search::reciprocal_rank_fusion;

    fn hit(id: u128) -> SearchHit {
        SearchHit {
            chunk_id: Uuid::from_u128(id),
            asset_id: Uuid::nil(),
            filename: String::new(),
            content: String::new(),
            score: 0.0,
            metadata: serde_json::Value::Null,
        }
    }

    #[test]
    fn fusion_prefers_what_both_lists_rank() {
        let words = vec![hit(1), hit(2), hit(3)];
        let meaning = vec![hit(3), hit(4), hit(2)];
        let fused = reciprocal_rank_fusion([words, meaning], 3);
        let ids: Vec<u128> = fused.iter().map(|h| h.chunk_id.as_u128()).collect();
        // 3: 1/63 + 1/61; 2: 1/62 + 1/63; 1: 1/61.
        assert_eq!(ids, vec![3, 2, 1]);
    }
}
