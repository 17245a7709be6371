//! The pgvector side of the knowledge base: embeddings of chunks, their HNSW index and
//! nearest-neighbour search. The `embedding` column exists only where the extension does
//! (the migration adds it conditionally), so these statements are checked at run time,
//! not at compile time, and vectors travel as pgvector's text form (`[0.1,0.2,…]`).
//!
//! The column has no fixed size (one deployment may change `AI_EMBEDDING_DIMENSIONS`);
//! the index is an expression index per size, `(embedding::vector(N))` for the rows with
//! N dimensions, and the search is written in exactly that form so the planner uses it.

use std::fmt::Write as _;

use sqlx::{AssertSqlSafe, FromRow as _, PgConnection};

use crate::db::knowledge::{Asset, ChunkColumns, SearchHit};
use crate::domain::{AgentId, OrgId};

/// Whether this database can hold embeddings (pgvector and the column are there).
pub async fn available(conn: &mut PgConnection) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_attribute
                        WHERE attrelid = 'knowledge_chunks'::regclass
                          AND attname = 'embedding' AND NOT attisdropped)",
    )
    .fetch_one(conn)
    .await
}

/// Whether any indexed asset in scope (the org, or the agent's and the org-wide ones) has
/// embeddings: otherwise a hybrid search is a full-text one and says so.
pub async fn any_embedded(
    conn: &mut PgConnection,
    org_id: OrgId,
    agent: Option<AgentId>,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM knowledge_assets
                        WHERE org_id = $1 AND embedded AND chunks_count > 0
                          AND ($2::uuid IS NULL OR agent_id IS NULL OR agent_id = $2))",
    )
    .bind(org_id.0)
    .bind(agent.map(|a| a.0))
    .fetch_one(conn)
    .await
}

fn index_name(dimensions: u32) -> String {
    format!("knowledge_chunks_embedding_{dimensions}_idx")
}

/// Creates the HNSW cosine index for `dimensions` (when pgvector is there; a no-op
/// otherwise). Run by `agents-api migrate` as the owner: building it takes a while on a
/// large table, which is a migration's business, not a request's.
pub async fn ensure_index(conn: &mut PgConnection, dimensions: u32) -> sqlx::Result<bool> {
    if !available(&mut *conn).await? {
        return Ok(false);
    }
    // Without statistics on it, `vector_dims(embedding) = N` (the index's predicate,
    // which the search repeats) is estimated to keep 0.5 % of the rows, not all of them.
    // A search reads one partition, planned with that partition's statistics, so each
    // partition has them (the parent's serve only statements over the whole table).
    sqlx::raw_sql(
        "DO $$
         DECLARE
             part regclass;
         BEGIN
             CREATE STATISTICS IF NOT EXISTS knowledge_chunks_embedding_dims
                 ON (vector_dims(embedding)) FROM knowledge_chunks;
             FOR part IN SELECT inhrelid::regclass FROM pg_inherits
                         WHERE inhparent = 'knowledge_chunks'::regclass LOOP
                 EXECUTE format('CREATE STATISTICS IF NOT EXISTS %I
                                   ON (vector_dims(embedding)) FROM %s',
                                part::text || '_embedding_dims', part);
             END LOOP;
         END
         $$",
    )
    .execute(&mut *conn)
    .await?;
    // `dimensions` is a number from the configuration (2..=16000), never client text.
    let sql = format!(
        "CREATE INDEX IF NOT EXISTS {name} ON knowledge_chunks
           USING hnsw ((embedding::vector({dimensions})) vector_cosine_ops)
           WHERE vector_dims(embedding) = {dimensions}",
        name = index_name(dimensions)
    );
    sqlx::raw_sql(AssertSqlSafe(sql)).execute(conn).await?;
    Ok(true)
}

/// pgvector's text form of `vector`.
fn literal(vector: &[f32]) -> String {
    let mut text = String::with_capacity(vector.len() * 10 + 2);
    text.push('[');
    for (i, x) in vector.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        // NaN or infinity would be refused by pgvector; the provider never means them.
        let x = if x.is_finite() { *x } else { 0.0 };
        let _ = write!(text, "{x}");
    }
    text.push(']');
    text
}

/// Writes a batch of the run `generation`'s chunks with their embeddings (one per chunk,
/// in order) in one statement: each row is written once, with the vector every index
/// needs, never updated afterwards.
pub async fn insert_chunks(
    conn: &mut PgConnection,
    org_id: OrgId,
    asset: &Asset,
    generation: i32,
    chunks: &ChunkColumns,
    vectors: &[Vec<f32>],
) -> sqlx::Result<()> {
    let texts: Vec<String> = vectors.iter().map(|v| literal(v)).collect();
    sqlx::query(
        "INSERT INTO knowledge_chunks (id, org_id, asset_id, agent_id, generation, position,
             content, token_count, metadata, embedding)
         SELECT id, $1, $2, $3, $4, position, content, token_count, metadata,
                embedding::vector
         FROM UNNEST($5::uuid[], $6::int[], $7::text[], $8::int[], $9::jsonb[], $10::text[])
              AS c (id, position, content, token_count, metadata, embedding)",
    )
    .bind(org_id.0)
    .bind(asset.id)
    .bind(asset.agent_id)
    .bind(generation)
    .bind(&chunks.ids)
    .bind(&chunks.positions)
    .bind(&chunks.contents)
    .bind(&chunks.tokens)
    .bind(&chunks.metadata)
    .bind(&texts)
    .execute(conn)
    .await?;
    Ok(())
}

/// The chunks nearest to `query` by cosine distance, best first; `score` is the cosine
/// similarity (1 − distance). Scoped like full-text search.
///
/// The chunk's `org_id` picks the org's partition, whose HNSW index is walked in
/// distance order; its rows are kept when they are the org's (a partition holds a few
/// orgs) and their asset's searchable generation, and iterative scans (pgvector 0.8) go
/// on walking until `limit` rows pass.
pub async fn search(
    conn: &mut PgConnection,
    org_id: OrgId,
    query: &[f32],
    agent: Option<AgentId>,
    limit: i64,
) -> sqlx::Result<Vec<SearchHit>> {
    let dimensions = query.len();
    // The candidate list of each step of the walk. Iterative scans continue past it
    // when filters reject rows, so it only needs to hold the answer; without them
    // (pgvector < 0.8) it is all the index returns, so it is wider.
    //
    // Sorting is off for this statement: row-level security's `org_id = ANY(…)`, the
    // chunk's and the asset's org conditions multiply into an estimate of a few hundred
    // chunks for an org that may have 100,000, so "every chunk of the org, exact
    // distances, sorted" looks cheaper than the index, and is 5–10× slower at that size.
    // Turned back on right after.
    sqlx::query(
        "SELECT set_config('enable_sort', 'off', true),
                CASE WHEN (SELECT string_to_array(extversion, '.')::int[] >= '{0,8}'
                           FROM pg_extension WHERE extname = 'vector')
                     THEN set_config('hnsw.iterative_scan', 'relaxed_order', true)
                          || set_config('hnsw.ef_search', $1, true)
                     ELSE set_config('hnsw.ef_search', $2, true) END",
    )
    .bind(limit.clamp(40, 1000).to_string())
    .bind((limit * 10).clamp(100, 1000).to_string())
    .execute(&mut *conn)
    .await?;
    // The query vector is a scalar subquery: parsed once per execution (an init plan),
    // where `$2::vector` in a generic plan is parsed again for every row it meets.
    let sql = format!(
        "WITH nearest AS MATERIALIZED (
           SELECT c.id AS chunk_id, c.asset_id, a.filename, c.content, c.metadata,
                  (c.embedding::vector({dimensions})) <=> (SELECT $2::vector({dimensions}))
                      AS distance
           FROM knowledge_chunks c
                JOIN knowledge_assets a ON a.id = c.asset_id AND a.generation = c.generation
           WHERE c.org_id = $1 AND a.org_id = $1 AND vector_dims(c.embedding) = {dimensions}
             AND ($3::uuid IS NULL OR c.agent_id IS NULL OR c.agent_id = $3)
           ORDER BY distance
           LIMIT $4)
         SELECT chunk_id, asset_id, filename, content, metadata, 1 - distance AS score
         FROM nearest ORDER BY distance, chunk_id"
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(org_id.0)
        .bind(literal(query))
        .bind(agent.map(|a| a.0))
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
    sqlx::query("SELECT set_config('enable_sort', 'on', true)")
        .execute(conn)
        .await?;
    rows.iter().map(SearchHit::from_row).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_print_as_pgvector_text() {
        assert_eq!(literal(&[1.0, -0.5, f32::NAN]), "[1,-0.5,0]");
        assert_eq!(literal(&[]), "[]");
    }
}
