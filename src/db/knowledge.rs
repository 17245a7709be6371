//! Queries on the knowledge base: assets and their bytes, chunks, search, and the graph.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::page::Page;
use crate::domain::{AgentId, AssetFormat, AssetId, AssetStatus, OrgId, UserId};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Asset {
    pub id: Uuid,
    pub org_id: Uuid,
    /// The agent it is for; org-wide when absent.
    pub agent_id: Option<Uuid>,
    pub filename: String,
    pub format: AssetFormat,
    pub content_type: String,
    pub size_bytes: i64,
    /// Hex SHA-256 of the bytes; the same bytes twice in an org are one asset.
    pub sha256: String,
    pub status: AssetStatus,
    /// Why processing failed, readable.
    pub error: Option<String>,
    /// `{stage, done, total}`: stage is one of queued, extracting, chunking, embedding,
    /// writing, indexed, failed; done/total count chunks.
    #[schema(value_type = Object)]
    pub progress: Value,
    pub chunks_count: i32,
    /// Whether its chunks carry embeddings (vector search), or only full text.
    pub embedded: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `query_as!(Asset, …)` with an asset's columns between `$head` and `$tail`.
macro_rules! asset_query {
    ($head:tt, $tail:tt, $($arg:expr),* $(,)?) => {
        sqlx::query_as!(
            Asset,
            $head + r#" id, org_id, agent_id, filename, format AS "format: AssetFormat",
                content_type, size_bytes, encode(sha256, 'hex') AS "sha256!",
                status AS "status: AssetStatus", error, progress, chunks_count, embedded,
                created_at, updated_at "# + $tail,
            $($arg),*
        )
    };
}

pub struct NewAsset<'a> {
    pub id: AssetId,
    pub agent_id: Option<AgentId>,
    pub filename: &'a str,
    pub format: AssetFormat,
    pub content_type: &'a str,
    pub size_bytes: i64,
    pub sha256: &'a [u8],
    /// Where its bytes are: `postgres` or the object's key (`knowledge::store`).
    pub storage: &'a str,
    pub created_by: Option<UserId>,
}

pub async fn insert_asset(
    conn: &mut PgConnection,
    org_id: OrgId,
    asset: &NewAsset<'_>,
) -> sqlx::Result<Asset> {
    asset_query!(
        "INSERT INTO knowledge_assets (id, org_id, agent_id, filename, format, content_type,
             size_bytes, sha256, storage, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING",
        "",
        asset.id.0,
        org_id.0,
        asset.agent_id.map(|a| a.0),
        asset.filename,
        asset.format as AssetFormat,
        asset.content_type,
        asset.size_bytes,
        asset.sha256,
        asset.storage,
        asset.created_by.map(|u| u.0),
    )
    .fetch_one(conn)
    .await
}

pub async fn insert_file(
    conn: &mut PgConnection,
    org_id: OrgId,
    asset_id: AssetId,
    bytes: &[u8],
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO knowledge_asset_files (asset_id, org_id, bytes) VALUES ($1, $2, $3)",
        asset_id.0,
        org_id.0,
        bytes
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The asset's `storage`, and its bytes when they are in `knowledge_asset_files`.
pub async fn asset_file(
    conn: &mut PgConnection,
    org_id: OrgId,
    asset_id: AssetId,
) -> sqlx::Result<Option<(String, Option<Vec<u8>>)>> {
    let row = sqlx::query!(
        r#"SELECT a.storage, f.bytes AS "bytes?"
           FROM knowledge_assets a
                LEFT JOIN knowledge_asset_files f ON f.asset_id = a.id AND f.org_id = a.org_id
           WHERE a.org_id = $1 AND a.id = $2"#,
        org_id.0,
        asset_id.0
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|row| (row.storage, row.bytes)))
}

pub async fn find_by_sha256(
    conn: &mut PgConnection,
    org_id: OrgId,
    sha256: &[u8],
) -> sqlx::Result<Option<Asset>> {
    asset_query!(
        "SELECT",
        " FROM knowledge_assets WHERE org_id = $1 AND sha256 = $2",
        org_id.0,
        sha256
    )
    .fetch_optional(conn)
    .await
}

pub async fn get_asset(
    conn: &mut PgConnection,
    org_id: OrgId,
    id: AssetId,
) -> sqlx::Result<Option<Asset>> {
    asset_query!(
        "SELECT",
        " FROM knowledge_assets WHERE org_id = $1 AND id = $2",
        org_id.0,
        id.0
    )
    .fetch_optional(conn)
    .await
}

/// The asset, locked: one processing run (or delete) at a time.
pub async fn lock_asset(
    conn: &mut PgConnection,
    org_id: OrgId,
    id: AssetId,
) -> sqlx::Result<Option<Asset>> {
    asset_query!(
        "SELECT",
        " FROM knowledge_assets WHERE org_id = $1 AND id = $2 FOR UPDATE",
        org_id.0,
        id.0
    )
    .fetch_optional(conn)
    .await
}

#[derive(Debug, Default)]
pub struct AssetFilter {
    pub agent_id: Option<AgentId>,
    pub status: Option<AssetStatus>,
}

/// Newest first; `page.fetch_limit()` rows.
pub async fn list_assets(
    conn: &mut PgConnection,
    org_id: OrgId,
    filter: &AssetFilter,
    page: Page,
) -> sqlx::Result<Vec<Asset>> {
    asset_query!(
        "SELECT",
        " FROM knowledge_assets
         WHERE org_id = $1
           AND ($2::uuid IS NULL OR agent_id = $2)
           AND ($3::text IS NULL OR status = $3)
           AND ($4::uuid IS NULL OR id < $4)
         ORDER BY id DESC LIMIT $5",
        org_id.0,
        filter.agent_id.map(|a| a.0),
        filter.status as Option<AssetStatus>,
        page.after,
        page.fetch_limit(),
    )
    .fetch_all(conn)
    .await
}

/// Queued again (reprocess): the current chunks stay searchable until the run replaces them.
pub async fn mark_queued(conn: &mut PgConnection, org_id: OrgId, id: AssetId) -> sqlx::Result<()> {
    sqlx::query!(
        r#"UPDATE knowledge_assets
           SET status = 'queued', error = NULL,
               progress = '{"stage": "queued", "done": 0, "total": 0}'::jsonb, updated_at = now()
           WHERE org_id = $1 AND id = $2"#,
        org_id.0,
        id.0
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A processing run starts: it gets the asset's next generation number, under which it
/// writes its chunks, and chunks of runs that never finished are dropped.
pub async fn start_processing(
    conn: &mut PgConnection,
    org_id: OrgId,
    id: AssetId,
) -> sqlx::Result<i32> {
    delete_unfinished_chunks(&mut *conn, org_id, id).await?;
    sqlx::query_scalar!(
        r#"UPDATE knowledge_assets
           SET status = 'processing', error = NULL, last_generation = last_generation + 1,
               progress = '{"stage": "extracting", "done": 0, "total": 0}'::jsonb,
               updated_at = now()
           WHERE org_id = $1 AND id = $2
           RETURNING last_generation"#,
        org_id.0,
        id.0
    )
    .fetch_one(conn)
    .await
}

/// The asset's chunks that are not its searchable generation.
async fn delete_unfinished_chunks(
    conn: &mut PgConnection,
    org_id: OrgId,
    id: AssetId,
) -> sqlx::Result<()> {
    sqlx::query!(
        "DELETE FROM knowledge_chunks c USING knowledge_assets a
         WHERE c.org_id = $1 AND c.asset_id = $2 AND a.id = c.asset_id
           AND c.generation <> a.generation",
        org_id.0,
        id.0
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn set_progress(
    conn: &mut PgConnection,
    org_id: OrgId,
    id: AssetId,
    stage: &str,
    done: i64,
    total: i64,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE knowledge_assets
         SET progress = jsonb_build_object('stage', $3::text, 'done', $4::bigint, 'total', $5::bigint),
             updated_at = now()
         WHERE org_id = $1 AND id = $2",
        org_id.0,
        id.0,
        stage,
        done,
        total
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Processing failed with a reason users read; the previous chunks (if any) stay.
pub async fn mark_failed(
    conn: &mut PgConnection,
    org_id: OrgId,
    id: AssetId,
    error: &str,
) -> sqlx::Result<()> {
    let error: String = error.chars().take(2000).collect();
    delete_unfinished_chunks(&mut *conn, org_id, id).await?;
    sqlx::query!(
        "UPDATE knowledge_assets
         SET status = 'failed', error = $3,
             progress = jsonb_set(progress, '{stage}', '\"failed\"'),
             updated_at = now()
         WHERE org_id = $1 AND id = $2",
        org_id.0,
        id.0,
        error
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// One chunk ready to be written (searchable once its run completes).
pub struct NewChunk {
    pub id: Uuid,
    pub position: i32,
    pub content: String,
    pub token_count: i32,
    pub metadata: Value,
}

/// The columns of a batch of chunks, as arrays for one `UNNEST` insert.
pub struct ChunkColumns {
    pub ids: Vec<Uuid>,
    pub positions: Vec<i32>,
    pub contents: Vec<String>,
    pub tokens: Vec<i32>,
    pub metadata: Vec<Value>,
}

impl ChunkColumns {
    pub fn of(chunks: Vec<NewChunk>) -> ChunkColumns {
        let mut columns = ChunkColumns {
            ids: Vec::with_capacity(chunks.len()),
            positions: Vec::with_capacity(chunks.len()),
            contents: Vec::with_capacity(chunks.len()),
            tokens: Vec::with_capacity(chunks.len()),
            metadata: Vec::with_capacity(chunks.len()),
        };
        for chunk in chunks {
            columns.ids.push(chunk.id);
            columns.positions.push(chunk.position);
            columns.contents.push(chunk.content);
            columns.tokens.push(chunk.token_count);
            columns.metadata.push(chunk.metadata);
        }
        columns
    }
}

/// Writes a batch of the run `generation`'s chunks (without embeddings) in one statement.
pub async fn insert_chunks(
    conn: &mut PgConnection,
    org_id: OrgId,
    asset: &Asset,
    generation: i32,
    chunks: &ChunkColumns,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO knowledge_chunks (id, org_id, asset_id, agent_id, generation, position,
             content, token_count, metadata)
         SELECT id, $1, $2, $3, $4, position, content, token_count, metadata
         FROM UNNEST($5::uuid[], $6::int[], $7::text[], $8::int[], $9::jsonb[])
              AS c (id, position, content, token_count, metadata)",
        org_id.0,
        asset.id,
        asset.agent_id,
        generation,
        &chunks.ids,
        &chunks.positions,
        &chunks.contents,
        &chunks.tokens,
        &chunks.metadata,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The run `generation` is complete: its chunks become the searchable ones (one asset
/// row changes), the previous ones and the facts left without evidence go, and the
/// asset is `indexed`. `false` when a newer run has started meanwhile: this run's
/// chunks go and the newer run will swap its own in.
pub async fn finish_processing(
    conn: &mut PgConnection,
    org_id: OrgId,
    id: AssetId,
    generation: i32,
    chunks: i32,
    embedded: bool,
) -> sqlx::Result<bool> {
    let swapped = sqlx::query_scalar!(
        "UPDATE knowledge_assets
         SET generation = $3, status = 'indexed', error = NULL, chunks_count = $4,
             embedded = $5,
             progress = jsonb_build_object('stage', 'indexed', 'done', $4::int, 'total', $4::int),
             updated_at = now()
         WHERE org_id = $1 AND id = $2 AND last_generation = $3
         RETURNING id",
        org_id.0,
        id.0,
        generation,
        chunks,
        embedded
    )
    .fetch_optional(&mut *conn)
    .await?
    .is_some();
    if !swapped {
        sqlx::query!(
            "DELETE FROM knowledge_chunks WHERE org_id = $1 AND asset_id = $2 AND generation = $3",
            org_id.0,
            id.0,
            generation
        )
        .execute(&mut *conn)
        .await?;
        return Ok(false);
    }
    sqlx::query!(
        "DELETE FROM knowledge_chunks WHERE org_id = $1 AND asset_id = $2 AND generation <> $3",
        org_id.0,
        id.0,
        generation
    )
    .execute(&mut *conn)
    .await?;
    delete_orphaned_facts(conn, org_id).await?;
    Ok(true)
}

/// Entities and relationships whose last source chunk is gone.
async fn delete_orphaned_facts(conn: &mut PgConnection, org_id: OrgId) -> sqlx::Result<()> {
    sqlx::query!(
        "DELETE FROM knowledge_relationships r WHERE r.org_id = $1
           AND NOT EXISTS (SELECT 1 FROM knowledge_relationship_chunks rc
                           WHERE rc.relationship_id = r.id)",
        org_id.0
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "DELETE FROM knowledge_entities e WHERE e.org_id = $1
           AND NOT EXISTS (SELECT 1 FROM knowledge_entity_chunks ec WHERE ec.entity_id = e.id)",
        org_id.0
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes the asset with its chunks, the facts only it supported and, in PostgreSQL,
/// its bytes; returns its `storage` (an object is the caller's to delete, after the
/// commit), `None` when there was no such asset.
pub async fn delete_asset(
    conn: &mut PgConnection,
    org_id: OrgId,
    id: AssetId,
) -> sqlx::Result<Option<String>> {
    let storage = sqlx::query_scalar!(
        "DELETE FROM knowledge_assets WHERE org_id = $1 AND id = $2 RETURNING storage",
        org_id.0,
        id.0
    )
    .fetch_optional(&mut *conn)
    .await?;
    if storage.is_some() {
        delete_orphaned_facts(conn, org_id).await?;
    }
    Ok(storage)
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Chunk {
    pub id: Uuid,
    pub position: i32,
    pub content: String,
    pub token_count: i32,
    /// `page` (PDF), `page_end` when it spans pages, `heading`.
    #[schema(value_type = Object)]
    pub metadata: Value,
}

/// The asset's searchable chunks in order, from after the chunk `page.after`.
pub async fn list_chunks(
    conn: &mut PgConnection,
    org_id: OrgId,
    asset_id: AssetId,
    page: Page,
) -> sqlx::Result<Vec<Chunk>> {
    sqlx::query_as!(
        Chunk,
        "SELECT id, position, content, token_count, metadata
         FROM knowledge_chunks
         WHERE org_id = $1 AND asset_id = $2
           AND generation = (SELECT generation FROM knowledge_assets
                             WHERE org_id = $1 AND id = $2)
           AND position > COALESCE((SELECT position FROM knowledge_chunks
                                    WHERE org_id = $1 AND id = $3 AND asset_id = $2), -1)
         ORDER BY position LIMIT $4",
        org_id.0,
        asset_id.0,
        page.after,
        page.fetch_limit(),
    )
    .fetch_all(conn)
    .await
}

// `FromRow` reads the vector search's rows (checked at run time, `db::vectors`).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct SearchHit {
    pub chunk_id: Uuid,
    pub asset_id: Uuid,
    pub filename: String,
    pub content: String,
    pub score: f64,
    #[schema(value_type = Object)]
    pub metadata: Value,
}

/// How many full-text chunks are ranked per query and kind, at most, for a list of
/// `limit`: 2.5× the list, at least 100 (hybrid search's usual list of 40 ranks 100).
/// Ranking reads each candidate's tsvector (out of line), so this bounds a search's work
/// whatever the words are; a common word can match a tenth of an org's chunks. Ranking
/// 200 took a quarter of a hybrid search's database time over 100,000 chunks.
pub fn fulltext_candidates(limit: i64) -> i64 {
    (limit.saturating_mul(5) / 2).max(100)
}

/// Transaction-local settings of a search's transactions. Its statements are planned
/// once per connection, not at every execution: the full-text statement's plan does not
/// depend on its values (the words are looked up by a definer function, which plans its
/// own lookup with them, and the statement computes its queries once, as init plans), but
/// PostgreSQL kept planning it anew — a millisecond of each search — because a custom
/// plan's estimate looked cheaper.
pub const SEARCH_SETTINGS: &[(&str, &str)] = &[("plan_cache_mode", "force_generic_plan")];

/// Full-text matches of `query`, best first. Scoped to the org, and with `agent` to its
/// assets plus the org-wide ones. The query is web-search syntax ("phrases", -excluded,
/// or); its words need not all match — a question rarely shares every word with its
/// answer — but chunks matching all of them rank above those matching some, then by
/// cover density. With an exclusion the query is taken as written (all words).
///
/// At most `fulltext_candidates(limit)` chunks of each kind are ranked: those with all the
/// words (usually few), and those with some of them when the first are fewer than
/// `limit` (the ones with all the words among them are not ranked twice). The candidates
/// come from the GIN index (`auth.knowledge_text_candidates`, with their tsvector and of
/// their asset's searchable generation) in table order, so a query of
/// common words ranks a sample of its matches, not all. Those with some of the words are
/// looked up by the query's rarer words first (`auth.knowledge_text_some_candidates`,
/// by the index's statistics), the others only when those give too few; they are
/// not tested for all of them in the lookup: that test read every candidate's tsvector
/// there, and ranking reads them again; the few with all the words are set aside by id.
/// The two queries (all the words, some of them) are computed once, in `words`.
pub async fn search_fulltext(
    conn: &mut PgConnection,
    org_id: OrgId,
    query: &str,
    agent: Option<AgentId>,
    limit: i64,
) -> sqlx::Result<Vec<SearchHit>> {
    sqlx::query_as!(
        SearchHit,
        r#"WITH words AS MATERIALIZED (
               SELECT q AS all_of_them, knowledge_some_words(q) AS any_of_them
               FROM websearch_to_tsquery('russian', $2) AS q
           ),
           every_word AS MATERIALIZED (
               SELECT m.id, m.asset_id, m.search
               FROM auth.knowledge_text_candidates($1, $3, (SELECT all_of_them FROM words), $5) AS m
           ),
           some_words AS MATERIALIZED (
               SELECT m.id, m.asset_id, m.search
               FROM auth.knowledge_text_some_candidates($1, $3, (SELECT any_of_them FROM words), $5) AS m
               WHERE (SELECT count(*) FROM every_word) < $4
                 AND (SELECT any_of_them <> all_of_them FROM words)
                 AND NOT EXISTS (SELECT 1 FROM every_word e WHERE e.id = m.id)
           ),
           ranked AS (
               SELECT id, asset_id, 1 + ts_rank_cd(search, (SELECT any_of_them FROM words), 32) AS score
               FROM every_word
               UNION ALL
               SELECT id, asset_id, ts_rank_cd(search, (SELECT any_of_them FROM words), 32)
               FROM some_words
               ORDER BY score DESC, id
               LIMIT $4
           )
           SELECT r.id AS "chunk_id!", r.asset_id AS "asset_id!", a.filename, c.content,
                  c.metadata, r.score::float8 AS "score!"
           FROM ranked r
                JOIN knowledge_chunks c ON c.id = r.id AND c.org_id = $1
                JOIN knowledge_assets a ON a.id = r.asset_id
           ORDER BY r.score DESC, r.id"#,
        org_id.0,
        query,
        agent.map(|a| a.0),
        limit,
        fulltext_candidates(limit),
    )
    .fetch_all(conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::fulltext_candidates;

    #[test]
    fn full_text_ranks_more_candidates_for_longer_lists() {
        assert_eq!(fulltext_candidates(8), 100);
        assert_eq!(fulltext_candidates(40), 100);
        assert_eq!(fulltext_candidates(50), 125);
        assert_eq!(fulltext_candidates(200), 500);
    }
}
