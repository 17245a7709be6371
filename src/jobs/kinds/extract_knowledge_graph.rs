//! `extract-knowledge-graph`: entities and relationships from an asset's chunks, an
//! agent's, or chunks named by id (the union when several are given).
//!
//! The chunks go to the chat model in batches (at most `BATCH_CHUNKS` chunks or about
//! `BATCH_TOKENS` tokens), each chunk tagged `[chunk N]` so that the answer says which
//! chunk each fact came from; that is the fact's evidence, and an entity page shows the
//! chunks that actually mention it rather than every neighbour of its batch. An answer
//! is validated whole (`knowledge::graph::parse`); a refused one is asked again, saying
//! why, up to `INVALID_ANSWER_RETRIES` times, then the batch is skipped and counted in
//! `warnings`. Each batch's facts are written in one transaction, together with the
//! job's progress (its `result`), so a batch is in or out, never half-written, and a
//! later attempt (after a provider outage) goes on after the last batch done instead of
//! paying for it again. Reruns are upserts: they merge, never duplicate. The model is
//! never called with a transaction open.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::ai::{AiError, ChatRequest, Message, Provider};
use crate::db::graph::{self as graph_db, ChunkRef, NewEntity, NewRelationship, Scope};
use crate::db::jobs::ClaimedJob;
use crate::db::{self, Tx};
use crate::domain::{AgentId, AssetId, EntityType, OrgId};
use crate::jobs::job::{Job, Rejected, invalid};
use crate::jobs::{JobContext, JobError};
use crate::knowledge::graph::{self, Graph};

/// The most chunk ids one job may name.
pub const MAX_CHUNK_IDS: usize = 1000;
/// A batch: this many chunks at most…
const BATCH_CHUNKS: usize = 8;
/// …and about this many tokens (one larger chunk still goes, alone).
const BATCH_TOKENS: i64 = 4000;
/// Times a refused answer is asked for again within the job.
const INVALID_ANSWER_RETRIES: usize = 2;
/// A larger scope is refused: one job of hours of model calls is better split per asset.
const MAX_SCOPE_CHUNKS: i64 = 20_000;
/// Room for ~100 entities and their relationships.
const MAX_ANSWER_TOKENS: u32 = 8192;
/// The kind its calls are counted under in `ai_usage`.
const USAGE_KIND: &str = "graph";
const ARTICLES_UNSUPPORTED: &str = "article_id is not supported: the knowledge base has no \
articles; name an asset_id, agent_id or chunk_ids instead";

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractKnowledgeGraph {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asset_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub article_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunk_ids: Option<Vec<Uuid>>,
}

impl Job for ExtractKnowledgeGraph {
    const TYPE: &'static str = "extract-knowledge-graph";
    const CLIENT: bool = true;

    async fn validate(&self, tx: &mut Tx, org_id: OrgId) -> Result<(), Rejected> {
        if self.asset_id.is_none()
            && self.article_id.is_none()
            && self.agent_id.is_none()
            && self.chunk_ids.as_ref().is_none_or(Vec::is_empty)
        {
            return Err(invalid(
                "asset_id",
                "one of asset_id, article_id, agent_id or chunk_ids is required",
            ));
        }
        if self
            .chunk_ids
            .as_ref()
            .is_some_and(|ids| ids.len() > MAX_CHUNK_IDS)
        {
            return Err(invalid(
                "chunk_ids",
                format!("must hold at most {MAX_CHUNK_IDS} ids"),
            ));
        }
        if let Some(agent_id) = self.agent_id
            && db::agents::get(tx, org_id, AgentId(agent_id))
                .await?
                .is_none()
        {
            return Err(invalid("agent_id", "must be an agent of this organization"));
        }
        Ok(())
    }

    async fn run(&self, ctx: &JobContext, job: &ClaimedJob) -> Result<Value, JobError> {
        let chunk_ids = self.chunk_ids.as_deref().unwrap_or_default();
        if self.asset_id.is_none() && self.agent_id.is_none() && chunk_ids.is_empty() {
            return Err(JobError::Permanent(ARTICLES_UNSUPPORTED.into()));
        }
        let Some(provider) = ctx.ai_provider(job.org_id).await? else {
            return Err(JobError::Permanent(AiError::NotConfigured.to_string()));
        };
        let scope = Scope {
            asset_id: self.asset_id.map(AssetId),
            agent_id: self.agent_id.map(AgentId),
            chunk_ids,
        };
        let run = Run {
            ctx,
            job,
            provider: &provider,
        };
        let progress = run.extract(&scope).await?;
        serde_json::to_value(&progress).map_err(|e| JobError::Permanent(e.to_string()))
    }
}

/// The job's `result`: written after every batch, final when the job ends.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Progress {
    chunks: usize,
    batches: usize,
    batches_done: usize,
    /// Batches whose facts were written (some may have had none).
    batches_written: usize,
    /// Batches skipped because every answer for them was refused: nothing of them was
    /// written.
    warnings: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_warning: Option<String>,
    /// The last chunk of the last batch done: a later attempt goes on after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resume_after: Option<Uuid>,
    /// When done: distinct entities and relationships with evidence in the scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    entities: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    relationships: Option<i64>,
}

/// Consecutive chunks, at most `BATCH_CHUNKS` or about `BATCH_TOKENS` tokens each.
fn plan_batches(chunks: &[ChunkRef]) -> Vec<&[ChunkRef]> {
    let mut batches = Vec::new();
    let mut start = 0;
    let mut tokens = 0i64;
    for (i, chunk) in chunks.iter().enumerate() {
        let size = i64::from(chunk.token_count.max(0));
        let full = i - start >= BATCH_CHUNKS || (i > start && tokens + size > BATCH_TOKENS);
        if full {
            batches.push(&chunks[start..i]);
            start = i;
            tokens = 0;
        }
        tokens += size;
    }
    if start < chunks.len() {
        batches.push(&chunks[start..]);
    }
    batches
}

/// Where a previous attempt of this job stopped: the batch after the one that ended
/// with its `resume_after` chunk, and its counts; from the start when the chunks changed.
fn resume(previous: Option<Progress>, batches: &[&[ChunkRef]]) -> (usize, Progress) {
    let Some(previous) = previous else {
        return (0, Progress::default());
    };
    let done = previous.resume_after.and_then(|last| {
        batches
            .iter()
            .position(|b| b.last().map(|c| c.id) == Some(last))
    });
    match done {
        Some(i) => (i + 1, previous),
        None => (0, Progress::default()),
    }
}

struct Run<'a> {
    ctx: &'a JobContext,
    job: &'a ClaimedJob,
    provider: &'a Provider,
}

impl Run<'_> {
    fn org(&self) -> OrgId {
        self.job.org_id
    }

    async fn extract(&self, scope: &Scope<'_>) -> Result<Progress, JobError> {
        let (chunks, previous) = self.load_scope(scope).await?;
        let batches = plan_batches(&chunks);
        let (start, mut progress) = resume(previous, &batches);
        progress.chunks = chunks.len();
        progress.batches = batches.len();
        for batch in batches.iter().skip(start) {
            let mut next = progress.clone();
            next.batches_done += 1;
            next.resume_after = batch.last().map(|c| c.id);
            self.batch(batch, &mut next).await?;
            progress = next;
        }
        if progress.warnings > 0 && progress.batches_written == 0 {
            return Err(JobError::Permanent(format!(
                "the model's answers were refused for every batch ({} of {}): {}",
                progress.warnings,
                progress.batches,
                progress
                    .last_warning
                    .as_deref()
                    .unwrap_or("no reason given")
            )));
        }
        let ids: Vec<Uuid> = chunks.iter().map(|c| c.id).collect();
        let mut tx = self.ctx.db.begin_worker(self.org()).await?;
        let (entities, relationships) =
            graph_db::facts_of_chunks(&mut tx, self.org(), &ids).await?;
        tx.commit().await?;
        progress.entities = Some(entities);
        progress.relationships = Some(relationships);
        Ok(progress)
    }

    /// The scope's chunks and what an earlier attempt of this job recorded.
    async fn load_scope(
        &self,
        scope: &Scope<'_>,
    ) -> Result<(Vec<ChunkRef>, Option<Progress>), JobError> {
        let mut tx = self.ctx.db.begin_worker(self.org()).await?;
        if let Some(asset_id) = scope.asset_id
            && scope.agent_id.is_none()
            && scope.chunk_ids.is_empty()
            && db::knowledge::get_asset(&mut tx, self.org(), asset_id)
                .await?
                .is_none()
        {
            return Err(JobError::Permanent("the asset no longer exists".into()));
        }
        let chunks =
            graph_db::scope_chunks(&mut tx, self.org(), scope, MAX_SCOPE_CHUNKS + 1).await?;
        if chunks.len() as i64 > MAX_SCOPE_CHUNKS {
            return Err(JobError::Permanent(format!(
                "the scope holds more than {MAX_SCOPE_CHUNKS} chunks; extract the graph \
                 of one asset at a time"
            )));
        }
        let previous = db::jobs::get(&mut tx, self.org(), self.job.id)
            .await?
            .and_then(|job| job.result)
            .and_then(|result| serde_json::from_value::<Progress>(result).ok());
        tx.commit().await?;
        Ok((chunks, previous))
    }

    /// One batch: its text, the model's answer, its facts and `next` (the progress once
    /// it is done) written together.
    async fn batch(&self, batch: &[ChunkRef], next: &mut Progress) -> Result<(), JobError> {
        let ids: Vec<Uuid> = batch.iter().map(|c| c.id).collect();
        let (ids, texts) = self.texts(&ids).await?;
        if ids.is_empty() {
            return self.record(next).await;
        }
        let graph = match self.ask(&texts).await? {
            Ok(graph) => graph,
            Err(reason) => {
                tracing::warn!(job_id = %self.job.id, reason = %reason,
                    "a graph batch was skipped: the model's answers were refused");
                next.warnings += 1;
                next.last_warning = Some(reason);
                return self.record(next).await;
            }
        };
        next.batches_written += 1;
        let mut tx = self.ctx.db.begin_worker(self.org()).await?;
        let live: HashSet<Uuid> = graph_db::lock_live_chunks(&mut tx, self.org(), &ids)
            .await?
            .into_iter()
            .collect();
        write_graph(&mut tx, self.org(), &graph, &ids, &live).await?;
        db::jobs::record_progress(&mut tx, self.job.id, &self.ctx.worker, &progress_json(next))
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The batch's chunks that are still there, in the batch's order, with their text.
    async fn texts(&self, ids: &[Uuid]) -> Result<(Vec<Uuid>, Vec<String>), JobError> {
        let mut tx = self.ctx.db.begin_worker(self.org()).await?;
        let mut found: HashMap<Uuid, String> = graph_db::chunk_texts(&mut tx, self.org(), ids)
            .await?
            .into_iter()
            .collect();
        tx.commit().await?;
        Ok(ids
            .iter()
            .filter_map(|id| found.remove(id).map(|text| (*id, text)))
            .unzip())
    }

    /// The model's graph of `texts`, asked again (saying why) while its answer is
    /// refused; `Err(reason)` when every answer was. Provider failures are the job's.
    async fn ask(&self, texts: &[String]) -> Result<Result<Graph, String>, JobError> {
        let mut request = ChatRequest {
            messages: vec![
                Message::system(graph::SYSTEM_PROMPT),
                Message::user(graph::user_prompt(texts)),
            ],
            json_schema: Some((graph::SCHEMA_NAME.into(), graph::schema())),
            temperature: Some(0.0),
            max_tokens: Some(MAX_ANSWER_TOKENS),
            ..ChatRequest::default()
        };
        let mut reason = String::new();
        for _ in 0..=INVALID_ANSWER_RETRIES {
            let answer = self
                .ctx
                .ai
                .chat(
                    &self.ctx.db,
                    self.org(),
                    self.provider,
                    &request,
                    USAGE_KIND,
                )
                .await?;
            let parsed = match answer.content.as_deref() {
                Some(content) => graph::parse(content, texts.len()).map_err(|e| e.0),
                None => Err("the answer had no content".to_owned()),
            };
            match parsed {
                Ok(graph) => return Ok(Ok(graph)),
                Err(why) => reason = why,
            }
            // Only the reason goes back, not the refused answer: it may be long, and
            // the passages are all the model needs to answer again.
            request.messages.truncate(2);
            request.messages.push(Message::user(format!(
                "Your previous answer was refused: {reason}. Answer again with the whole \
                 JSON, following the schema."
            )));
        }
        Ok(Err(format!(
            "answer refused {} times: {reason}",
            INVALID_ANSWER_RETRIES + 1
        )))
    }

    /// Progress alone, for a batch that wrote nothing.
    async fn record(&self, progress: &Progress) -> Result<(), JobError> {
        let mut tx = self.ctx.db.begin_worker(self.org()).await?;
        db::jobs::record_progress(
            &mut tx,
            self.job.id,
            &self.ctx.worker,
            &progress_json(progress),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

fn progress_json(progress: &Progress) -> Value {
    serde_json::to_value(progress).unwrap_or(Value::Null)
}

/// Writes a batch's facts: each keeps the chunks among `live` it was found in (`chunk_ids`
/// are the batch's, by the answer's indexes); a fact left with none is dropped, and so
/// is an edge whose end was.
async fn write_graph(
    tx: &mut Tx,
    org_id: OrgId,
    graph: &Graph,
    chunk_ids: &[Uuid],
    live: &HashSet<Uuid>,
) -> Result<(), db::Error> {
    let evidence = |indexes: &[usize]| -> Vec<Uuid> {
        indexes
            .iter()
            .filter_map(|i| chunk_ids.get(*i))
            .filter(|id| live.contains(id))
            .copied()
            .collect()
    };
    // Sorted by key: concurrent jobs then lock shared rows in one order (no deadlock).
    let mut entities: Vec<(usize, Vec<Uuid>)> = graph
        .entities
        .iter()
        .enumerate()
        .map(|(i, e)| (i, evidence(&e.chunks)))
        .filter(|(_, chunks)| !chunks.is_empty())
        .collect();
    if entities.is_empty() {
        return Ok(());
    }
    let key = |i: usize| {
        let e = &graph.entities[i];
        (e.normalized_name.as_str(), e.kind)
    };
    entities.sort_by(|a, b| key(a.0).cmp(&key(b.0)));
    let rows: Vec<NewEntity<'_>> = entities
        .iter()
        .map(|(i, _)| {
            let e = &graph.entities[*i];
            NewEntity {
                name: &e.name,
                normalized_name: &e.normalized_name,
                kind: e.kind,
                description: &e.description,
            }
        })
        .collect();
    let stored: HashMap<(String, EntityType), Uuid> = graph_db::upsert_entities(tx, org_id, &rows)
        .await?
        .into_iter()
        .map(|k| ((k.normalized_name, k.kind), k.id))
        .collect();
    let mut entity_ids: HashMap<usize, Uuid> = HashMap::new();
    let (mut link_entities, mut link_chunks) = (Vec::new(), Vec::new());
    for (i, chunks) in &entities {
        let (name, kind) = key(*i);
        let Some(id) = stored.get(&(name.to_owned(), kind)) else {
            continue;
        };
        entity_ids.insert(*i, *id);
        for chunk in chunks {
            link_entities.push(*id);
            link_chunks.push(*chunk);
        }
    }
    graph_db::link_entity_chunks(tx, org_id, &link_entities, &link_chunks).await?;

    let mut edges: Vec<(NewRelationship<'_>, Vec<Uuid>)> = graph
        .relationships
        .iter()
        .filter_map(|r| {
            let source_id = *entity_ids.get(&r.source)?;
            let target_id = *entity_ids.get(&r.target)?;
            let chunks = evidence(&r.chunks);
            let edge = NewRelationship {
                source_id,
                target_id,
                kind: &r.kind,
                description: &r.description,
            };
            (!chunks.is_empty()).then_some((edge, chunks))
        })
        .collect();
    if edges.is_empty() {
        return Ok(());
    }
    edges.sort_by(|(a, _), (b, _)| {
        (a.source_id, a.target_id, a.kind).cmp(&(b.source_id, b.target_id, b.kind))
    });
    let rows: Vec<NewRelationship<'_>> = edges.iter().map(|(edge, _)| *edge).collect();
    let stored: HashMap<(Uuid, Uuid, String), Uuid> =
        graph_db::upsert_relationships(tx, org_id, &rows)
            .await?
            .into_iter()
            .map(|k| ((k.source_id, k.target_id, k.kind), k.id))
            .collect();
    let (mut link_edges, mut link_chunks) = (Vec::new(), Vec::new());
    for (edge, chunks) in &edges {
        let Some(id) = stored.get(&(edge.source_id, edge.target_id, edge.kind.to_owned())) else {
            continue;
        };
        for chunk in chunks {
            link_edges.push(*id);
            link_chunks.push(*chunk);
        }
    }
    graph_db::link_relationship_chunks(tx, org_id, &link_edges, &link_chunks).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(tokens: &[i32]) -> Vec<ChunkRef> {
        tokens
            .iter()
            .map(|t| ChunkRef {
                id: Uuid::now_v7(),
                token_count: *t,
            })
            .collect()
    }

    #[test]
    fn batches_hold_eight_chunks_or_about_four_thousand_tokens() {
        let small = chunks(&[100; 20]);
        let sizes: Vec<usize> = plan_batches(&small).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, vec![8, 8, 4]);
        let large = chunks(&[1500, 1500, 1500, 5000, 10]);
        let sizes: Vec<usize> = plan_batches(&large).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, vec![2, 1, 1, 1]);
        assert!(plan_batches(&[]).is_empty());
    }

    #[test]
    fn a_later_attempt_goes_on_after_the_last_batch_done() {
        let all = chunks(&[100; 20]);
        let batches = plan_batches(&all);
        let previous = Progress {
            batches_done: 1,
            batches_written: 1,
            resume_after: batches[0].last().map(|c| c.id),
            ..Progress::default()
        };
        let (start, progress) = resume(Some(previous.clone()), &batches);
        assert_eq!((start, progress), (1, previous));
        // The chunks changed (a reprocess): from the start.
        let stale = Progress {
            resume_after: Some(Uuid::now_v7()),
            ..Progress::default()
        };
        assert_eq!(resume(Some(stale), &batches), (0, Progress::default()));
        assert_eq!(resume(None, &batches).0, 0);
    }
}
