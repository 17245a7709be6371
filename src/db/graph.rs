//! Queries on the knowledge graph: the chunks a graph job reads, the upserts that merge a
//! batch's facts into the org's, their evidence, and the entity pages of the API.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::page::Page;
use crate::domain::{AgentId, AssetId, EntityId, EntityType, OrgId};

/// A chunk a graph job will read: its id and size, to plan batches without loading text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRef {
    pub id: Uuid,
    pub token_count: i32,
}

/// What a graph job covers: the union of an asset's chunks, an agent's assets' chunks and
/// chunks named by id.
#[derive(Debug, Default)]
pub struct Scope<'a> {
    pub asset_id: Option<AssetId>,
    pub agent_id: Option<AgentId>,
    pub chunk_ids: &'a [Uuid],
}

/// The scope's searchable chunks, file by file in order; at most `limit`.
pub async fn scope_chunks(
    conn: &mut PgConnection,
    org_id: OrgId,
    scope: &Scope<'_>,
    limit: i64,
) -> sqlx::Result<Vec<ChunkRef>> {
    sqlx::query_as!(
        ChunkRef,
        "SELECT c.id, c.token_count
         FROM knowledge_chunks c
              JOIN knowledge_assets a ON a.id = c.asset_id AND a.generation = c.generation
         WHERE c.org_id = $1
           AND (c.asset_id = $2::uuid OR c.agent_id = $3::uuid OR c.id = ANY($4::uuid[]))
         ORDER BY c.asset_id, c.position
         LIMIT $5",
        org_id.0,
        scope.asset_id.map(|a| a.0),
        scope.agent_id.map(|a| a.0),
        scope.chunk_ids,
        limit,
    )
    .fetch_all(conn)
    .await
}

/// The text of those of `ids` that are still searchable, in no particular order.
pub async fn chunk_texts(
    conn: &mut PgConnection,
    org_id: OrgId,
    ids: &[Uuid],
) -> sqlx::Result<Vec<(Uuid, String)>> {
    let rows = sqlx::query!(
        "SELECT c.id, c.content
         FROM knowledge_chunks c
              JOIN knowledge_assets a ON a.id = c.asset_id AND a.generation = c.generation
         WHERE c.org_id = $1 AND c.id = ANY($2::uuid[])",
        org_id.0,
        ids,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.content)).collect())
}

/// Those of `ids` that still exist, locked until the transaction ends: a reprocess or a
/// delete waits, so no fact is written for a chunk that is going (and none is left
/// without evidence).
pub async fn lock_live_chunks(
    conn: &mut PgConnection,
    org_id: OrgId,
    ids: &[Uuid],
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        "SELECT c.id
         FROM knowledge_chunks c
              JOIN knowledge_assets a ON a.id = c.asset_id AND a.generation = c.generation
         WHERE c.org_id = $1 AND c.id = ANY($2::uuid[])
         FOR KEY SHARE OF c",
        org_id.0,
        ids,
    )
    .fetch_all(conn)
    .await
}

#[derive(Debug, Clone, Copy)]
pub struct NewEntity<'a> {
    pub name: &'a str,
    pub normalized_name: &'a str,
    pub kind: EntityType,
    pub description: &'a str,
}

/// The id each upserted `(normalized_name, type)` has in the org.
#[derive(Debug)]
pub struct EntityKey {
    pub id: Uuid,
    pub normalized_name: String,
    pub kind: EntityType,
}

/// Inserts the entities or merges them into the org's existing ones with the same
/// normalised name and type: the first name stays, descriptions merge as
/// `knowledge::graph::merge_descriptions` does. `entities` must hold each key once; give
/// them sorted by key, so that two jobs lock shared rows in the same order.
pub async fn upsert_entities(
    conn: &mut PgConnection,
    org_id: OrgId,
    entities: &[NewEntity<'_>],
) -> sqlx::Result<Vec<EntityKey>> {
    let ids: Vec<Uuid> = entities.iter().map(|_| EntityId::new().0).collect();
    let names: Vec<&str> = entities.iter().map(|e| e.name).collect();
    let normalized: Vec<&str> = entities.iter().map(|e| e.normalized_name).collect();
    let kinds: Vec<&str> = entities.iter().map(|e| e.kind.as_str()).collect();
    let descriptions: Vec<&str> = entities.iter().map(|e| e.description).collect();
    sqlx::query_as!(
        EntityKey,
        r#"INSERT INTO knowledge_entities AS e (id, org_id, name, normalized_name, type, description)
           SELECT id, $1, name, normalized_name, type, description
           FROM UNNEST($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[])
                WITH ORDINALITY AS n (id, name, normalized_name, type, description, ord)
           ORDER BY ord
           ON CONFLICT (org_id, normalized_name, type) DO UPDATE SET
               description = CASE
                   WHEN EXCLUDED.description = '' OR strpos(e.description, EXCLUDED.description) > 0
                       THEN e.description
                   WHEN e.description = '' OR strpos(EXCLUDED.description, e.description) > 0
                       THEN EXCLUDED.description
                   WHEN char_length(e.description) + 1 + char_length(EXCLUDED.description) <= 2000
                       THEN e.description || ' ' || EXCLUDED.description
                   ELSE e.description END,
               updated_at = now()
           RETURNING id, normalized_name, type AS "kind: EntityType""#,
        org_id.0,
        &ids,
        &names as &[&str],
        &normalized as &[&str],
        &kinds as &[&str],
        &descriptions as &[&str],
    )
    .fetch_all(conn)
    .await
}

/// Evidence: `(entity_ids[i], chunk_ids[i])` pairs; those already recorded are skipped.
pub async fn link_entity_chunks(
    conn: &mut PgConnection,
    org_id: OrgId,
    entity_ids: &[Uuid],
    chunk_ids: &[Uuid],
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO knowledge_entity_chunks (org_id, entity_id, chunk_id)
         SELECT $1, entity_id, chunk_id FROM UNNEST($2::uuid[], $3::uuid[]) AS l (entity_id, chunk_id)
         ON CONFLICT DO NOTHING",
        org_id.0,
        entity_ids,
        chunk_ids,
    )
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, Copy)]
pub struct NewRelationship<'a> {
    pub source_id: Uuid,
    pub target_id: Uuid,
    pub kind: &'a str,
    pub description: &'a str,
}

#[derive(Debug)]
pub struct RelationshipKey {
    pub id: Uuid,
    pub source_id: Uuid,
    pub target_id: Uuid,
    pub kind: String,
}

/// As `upsert_entities`, for edges keyed by (source, target, type).
pub async fn upsert_relationships(
    conn: &mut PgConnection,
    org_id: OrgId,
    relationships: &[NewRelationship<'_>],
) -> sqlx::Result<Vec<RelationshipKey>> {
    let ids: Vec<Uuid> = relationships.iter().map(|_| Uuid::now_v7()).collect();
    let sources: Vec<Uuid> = relationships.iter().map(|r| r.source_id).collect();
    let targets: Vec<Uuid> = relationships.iter().map(|r| r.target_id).collect();
    let kinds: Vec<&str> = relationships.iter().map(|r| r.kind).collect();
    let descriptions: Vec<&str> = relationships.iter().map(|r| r.description).collect();
    sqlx::query_as!(
        RelationshipKey,
        r#"INSERT INTO knowledge_relationships AS r (id, org_id, source_id, target_id, type, description)
           SELECT id, $1, source_id, target_id, type, description
           FROM UNNEST($2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[])
                WITH ORDINALITY AS n (id, source_id, target_id, type, description, ord)
           ORDER BY ord
           ON CONFLICT (org_id, source_id, target_id, type) DO UPDATE SET
               description = CASE
                   WHEN EXCLUDED.description = '' OR strpos(r.description, EXCLUDED.description) > 0
                       THEN r.description
                   WHEN r.description = '' OR strpos(EXCLUDED.description, r.description) > 0
                       THEN EXCLUDED.description
                   WHEN char_length(r.description) + 1 + char_length(EXCLUDED.description) <= 2000
                       THEN r.description || ' ' || EXCLUDED.description
                   ELSE r.description END
           RETURNING id, source_id, target_id, type AS kind"#,
        org_id.0,
        &ids,
        &sources,
        &targets,
        &kinds as &[&str],
        &descriptions as &[&str],
    )
    .fetch_all(conn)
    .await
}

pub async fn link_relationship_chunks(
    conn: &mut PgConnection,
    org_id: OrgId,
    relationship_ids: &[Uuid],
    chunk_ids: &[Uuid],
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO knowledge_relationship_chunks (org_id, relationship_id, chunk_id)
         SELECT $1, relationship_id, chunk_id
         FROM UNNEST($2::uuid[], $3::uuid[]) AS l (relationship_id, chunk_id)
         ON CONFLICT DO NOTHING",
        org_id.0,
        relationship_ids,
        chunk_ids,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// How many distinct entities and relationships have evidence among `chunk_ids`.
pub async fn facts_of_chunks(
    conn: &mut PgConnection,
    org_id: OrgId,
    chunk_ids: &[Uuid],
) -> sqlx::Result<(i64, i64)> {
    let row = sqlx::query!(
        r#"SELECT
             (SELECT count(DISTINCT entity_id) FROM knowledge_entity_chunks
              WHERE org_id = $1 AND chunk_id = ANY($2::uuid[])) AS "entities!",
             (SELECT count(DISTINCT relationship_id) FROM knowledge_relationship_chunks
              WHERE org_id = $1 AND chunk_id = ANY($2::uuid[])) AS "relationships!""#,
        org_id.0,
        chunk_ids,
    )
    .fetch_one(conn)
    .await?;
    Ok((row.entities, row.relationships))
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Entity {
    pub id: Uuid,
    /// As first written in the org's files.
    pub name: String,
    /// What mentions are merged by: lower case, whitespace collapsed, punctuation trimmed.
    pub normalized_name: String,
    #[serde(rename = "type")]
    pub kind: EntityType,
    pub description: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Default)]
pub struct EntityFilter<'a> {
    /// A substring of the name as written (case-insensitive)…
    pub q: Option<&'a str>,
    /// …or of the normalised name (`q` normalised, so spacing and punctuation do not matter).
    pub q_normalized: Option<&'a str>,
    pub kind: Option<EntityType>,
}

/// `%text%` for LIKE, with the pattern characters of `text` taken literally.
fn contains_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// The org's entities, newest first; `page.fetch_limit()` rows.
pub async fn list_entities(
    conn: &mut PgConnection,
    org_id: OrgId,
    filter: &EntityFilter<'_>,
    page: Page,
) -> sqlx::Result<Vec<Entity>> {
    let name_pattern = filter.q.map(contains_pattern);
    let normalized_pattern = filter
        .q_normalized
        .filter(|q| !q.is_empty())
        .map(contains_pattern);
    sqlx::query_as!(
        Entity,
        r#"SELECT id, name, normalized_name, type AS "kind: EntityType", description,
                  created_at, updated_at
           FROM knowledge_entities
           WHERE org_id = $1
             AND ($2::text IS NULL OR name ILIKE $2 ESCAPE '\'
                  OR ($3::text IS NOT NULL AND normalized_name LIKE $3 ESCAPE '\'))
             AND ($4::text IS NULL OR type = $4)
             AND ($5::uuid IS NULL OR id < $5)
           ORDER BY id DESC LIMIT $6"#,
        org_id.0,
        name_pattern,
        normalized_pattern,
        filter.kind.map(EntityType::as_str),
        page.after,
        page.fetch_limit(),
    )
    .fetch_all(conn)
    .await
}

pub async fn get_entity(
    conn: &mut PgConnection,
    org_id: OrgId,
    id: EntityId,
) -> sqlx::Result<Option<Entity>> {
    sqlx::query_as!(
        Entity,
        r#"SELECT id, name, normalized_name, type AS "kind: EntityType", description,
                  created_at, updated_at
           FROM knowledge_entities WHERE org_id = $1 AND id = $2"#,
        org_id.0,
        id.0,
    )
    .fetch_optional(conn)
    .await
}

/// Which way an edge points from the entity being shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The entity is the source.
    Outgoing,
    /// The entity is the target.
    Incoming,
}

/// The entity at the other end of an edge.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RelatedEntity {
    pub id: Uuid,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: EntityType,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EntityRelationship {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub kind: String,
    pub description: String,
    pub direction: Direction,
    pub entity: RelatedEntity,
    /// The chunks it was found in (the first 20).
    pub chunk_ids: Vec<Uuid>,
}

/// Chunk ids listed per relationship on an entity page.
const CHUNKS_PER_RELATIONSHIP: i64 = 20;

/// The entity's edges in both directions, oldest first; at most `limit`.
pub async fn entity_relationships(
    conn: &mut PgConnection,
    org_id: OrgId,
    id: EntityId,
    limit: i64,
) -> sqlx::Result<Vec<EntityRelationship>> {
    let rows = sqlx::query!(
        r#"SELECT r.id, r.type AS kind, r.description, r.source_id = $2 AS "outgoing!",
                  o.id AS other_id, o.name AS other_name, o.type AS "other_kind: EntityType",
                  ARRAY(SELECT rc.chunk_id FROM knowledge_relationship_chunks rc
                        WHERE rc.relationship_id = r.id ORDER BY rc.chunk_id LIMIT $4)
                      AS "chunk_ids!"
           FROM knowledge_relationships r
                JOIN knowledge_entities o
                  ON o.id = CASE WHEN r.source_id = $2 THEN r.target_id ELSE r.source_id END
           WHERE r.org_id = $1 AND (r.source_id = $2 OR r.target_id = $2)
           ORDER BY r.id LIMIT $3"#,
        org_id.0,
        id.0,
        limit,
        CHUNKS_PER_RELATIONSHIP,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| EntityRelationship {
            id: r.id,
            kind: r.kind,
            description: r.description,
            direction: if r.outgoing {
                Direction::Outgoing
            } else {
                Direction::Incoming
            },
            entity: RelatedEntity {
                id: r.other_id,
                name: r.other_name,
                kind: r.other_kind,
            },
            chunk_ids: r.chunk_ids,
        })
        .collect())
}

/// A chunk an entity was found in.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EntityChunk {
    pub chunk_id: Uuid,
    pub asset_id: Uuid,
    pub filename: String,
    pub position: i32,
    /// The chunk's first 300 characters.
    pub excerpt: String,
}

/// The chunks the entity was found in, file by file in order; at most `limit`.
pub async fn entity_chunks(
    conn: &mut PgConnection,
    org_id: OrgId,
    id: EntityId,
    limit: i64,
) -> sqlx::Result<Vec<EntityChunk>> {
    sqlx::query_as!(
        EntityChunk,
        r#"SELECT c.id AS chunk_id, c.asset_id, a.filename, c.position,
                  left(c.content, 300) AS "excerpt!"
           FROM knowledge_entity_chunks ec
                JOIN knowledge_chunks c ON c.id = ec.chunk_id AND c.org_id = $1
                JOIN knowledge_assets a ON a.id = c.asset_id AND a.generation = c.generation
           WHERE ec.org_id = $1 AND ec.entity_id = $2
           ORDER BY c.asset_id, c.position LIMIT $3"#,
        org_id.0,
        id.0,
        limit,
    )
    .fetch_all(conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_take_metacharacters_literally() {
        assert_eq!(contains_pattern("acme"), "%acme%");
        assert_eq!(contains_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
    }
}
