//! `process-asset`: an uploaded file becomes searchable chunks. Extract its text (on a
//! blocking thread: parsing is CPU work and parsers of hostile files must not stall the
//! runtime), split it into ~500-token chunks, and write them in batches, each chunk once
//! with its embedding, under a new generation of the asset; then make that generation
//! the searchable one in one short transaction (one asset row, and the previous
//! generation's chunks deleted). The provider embeds batch n + 1 while batch n is
//! written. A rerun starts over and replaces; a file that cannot be read fails the asset
//! with a readable error.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::ai::{AiError, Provider};
use crate::db::jobs::ClaimedJob;
use crate::db::knowledge::{self, Asset, ChunkColumns, NewChunk};
use crate::db::{self, Tx};
use crate::domain::{AssetId, JobId, OrgId};
use crate::events::{AssetChange, AssetEvent, Event};
use crate::jobs::job::{self, Job, Rejected, invalid};
use crate::jobs::kinds::ExtractKnowledgeGraph;
use crate::jobs::{JobContext, JobError};
use crate::knowledge::extract::{self, Format, Section};

/// Chunks written per transaction; progress moves per batch.
const WRITE_BATCH: usize = 64;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessAsset {
    pub asset_id: Uuid,
}

impl Job for ProcessAsset {
    const TYPE: &'static str = "process-asset";
    const CLIENT: bool = true;

    async fn validate(&self, tx: &mut Tx, org_id: OrgId) -> Result<(), Rejected> {
        if knowledge::get_asset(tx, org_id, AssetId(self.asset_id))
            .await?
            .is_none()
        {
            return Err(invalid("asset_id", "must be an asset of this organization"));
        }
        Ok(())
    }

    async fn run(&self, ctx: &JobContext, job: &ClaimedJob) -> Result<Value, JobError> {
        let asset_id = AssetId(self.asset_id);
        match process(ctx, job.org_id, asset_id).await {
            Ok(chunks) => Ok(json!({ "chunks": chunks })),
            Err(e) => {
                // The asset says why when no attempt is left (or none would help); a
                // retry leaves it `processing`, which is what it is.
                let last = matches!(e, JobError::Permanent(_)) || job.attempts >= job.max_attempts;
                if last {
                    let reason = match &e {
                        JobError::Permanent(m) | JobError::Retry { message: m, .. } => m.clone(),
                    };
                    let marked = async {
                        let mut tx = ctx.db.begin_worker(job.org_id).await?;
                        knowledge::mark_failed(&mut tx, job.org_id, asset_id, &reason).await?;
                        tx.commit().await?;
                        Ok::<_, db::Error>(())
                    };
                    match marked.await {
                        Ok(()) => announce(
                            ctx,
                            job.org_id,
                            asset_id,
                            AssetChange::Failed,
                            "failed",
                            0,
                            0,
                        ),
                        Err(db_error) => {
                            tracing::warn!(error = %db_error, %asset_id, "could not mark an asset failed")
                        }
                    }
                }
                Err(e)
            }
        }
    }
}

async fn process(ctx: &JobContext, org_id: OrgId, asset_id: AssetId) -> Result<usize, JobError> {
    let (asset, stored, generation) = {
        let mut tx = ctx.db.begin_worker(org_id).await?;
        let Some(asset) = knowledge::lock_asset(&mut tx, org_id, asset_id).await? else {
            return Err(JobError::Permanent("the asset no longer exists".into()));
        };
        let Some(stored) = ctx.assets.locate(&mut tx, org_id, asset_id).await? else {
            return Err(JobError::Permanent("the asset's file is missing".into()));
        };
        let generation = knowledge::start_processing(&mut tx, org_id, asset_id).await?;
        tx.commit().await?;
        (asset, stored, generation)
    };
    announce(
        ctx,
        org_id,
        asset_id,
        AssetChange::Processing,
        "extracting",
        0,
        0,
    );
    // An object is fetched after the commit: no connection waits on the file store.
    let Some(bytes) = ctx.assets.fetch(stored).await? else {
        return Err(JobError::Permanent("the asset's file is missing".into()));
    };

    let format = Format::from(asset.format);
    let sections = blocking(move || extract::extract(format, &bytes))
        .await?
        .map_err(|e| JobError::Permanent(e.to_string()))?;
    progress(ctx, org_id, asset_id, "chunking", 0, 0).await?;
    let batches = blocking(move || chunk_all(&sections)).await?;
    let total: usize = batches.iter().map(|b| b.ids.len()).sum();
    if total == 0 {
        return Err(JobError::Permanent("the file contains no text".into()));
    }

    // Embeddings need a provider and pgvector; without either the chunks are indexed for
    // full-text search only, and the asset says so (`embedded: false`).
    let provider = ctx.ai_provider(org_id).await?;
    let embed_with = match &provider {
        Some(provider) if vectors_available(ctx, org_id).await? => Some(provider),
        _ => None,
    };
    let run = Run {
        ctx,
        org_id,
        asset: &asset,
        generation,
        total,
        stage: if embed_with.is_some() {
            "embedding"
        } else {
            "writing"
        },
    };
    // The provider is called with no transaction open, and while the previous batch is
    // being written: its latency and the database's work overlap.
    let embed = |batch| embed(ctx, org_id, embed_with, batch);
    let mut vectors = embed(batches.first()).await?;
    let mut done = 0;
    for (i, batch) in batches.iter().enumerate() {
        done += batch.ids.len();
        let (written, next) = tokio::join!(
            run.write(batch, vectors.take(), done),
            embed(batches.get(i + 1))
        );
        written?;
        vectors = next?;
    }

    let mut tx = ctx.db.begin_worker(org_id).await?;
    // Deleted while it was being processed: nothing to swap (the cascade took the chunks).
    if knowledge::lock_asset(&mut tx, org_id, asset_id)
        .await?
        .is_none()
    {
        return Err(JobError::Permanent("the asset no longer exists".into()));
    }
    let swapped = knowledge::finish_processing(
        &mut tx,
        org_id,
        asset_id,
        generation,
        total as i32,
        embed_with.is_some(),
    )
    .await?;
    if !swapped {
        tx.commit().await?;
        tracing::info!(%asset_id, "a newer run of the asset replaces this one");
        return Ok(total);
    }
    let indexed = total as i64;
    // The graph comes from the new chunks, when there is a chat model to read them.
    let graph_job = match provider {
        Some(_) => Some(
            job::insert(
                &mut tx,
                org_id,
                &ExtractKnowledgeGraph {
                    asset_id: Some(asset_id.0),
                    article_id: None,
                    agent_id: None,
                    chunk_ids: None,
                },
                None,
            )
            .await?,
        ),
        None => None,
    };
    tx.commit().await?;
    announce(
        ctx,
        org_id,
        asset_id,
        AssetChange::Indexed,
        "indexed",
        indexed,
        indexed,
    );
    if let Some(graph_job) = graph_job {
        ctx.queue
            .enqueue_committed(JobId(graph_job.id), org_id, &graph_job.job_type)
            .await;
    }
    tracing::info!(%asset_id, chunks = total, "asset indexed");
    Ok(total)
}

/// The batch's vectors, when it is to be embedded.
async fn embed(
    ctx: &JobContext,
    org_id: OrgId,
    provider: Option<&Provider>,
    batch: Option<&ChunkColumns>,
) -> Result<Option<Vec<Vec<f32>>>, AiError> {
    match (provider, batch) {
        (Some(provider), Some(batch)) => ctx
            .ai
            .embed(&ctx.db, org_id, provider, &batch.contents)
            .await
            .map(|e| Some(e.vectors)),
        _ => Ok(None),
    }
}

/// One processing run's writing side.
struct Run<'a> {
    ctx: &'a JobContext,
    org_id: OrgId,
    asset: &'a Asset,
    generation: i32,
    total: usize,
    stage: &'static str,
}

impl Run<'_> {
    /// One batch (with its vectors when embedded) and the progress, in one transaction.
    async fn write(
        &self,
        batch: &ChunkColumns,
        vectors: Option<Vec<Vec<f32>>>,
        done: usize,
    ) -> Result<(), JobError> {
        let (org_id, asset) = (self.org_id, self.asset);
        let mut tx = self.ctx.db.begin_worker(org_id).await?;
        match vectors {
            Some(vectors) => {
                db::vectors::insert_chunks(&mut tx, org_id, asset, self.generation, batch, &vectors)
                    .await?
            }
            None => {
                knowledge::insert_chunks(&mut tx, org_id, asset, self.generation, batch).await?
            }
        }
        let asset_id = AssetId(asset.id);
        knowledge::set_progress(
            &mut tx,
            org_id,
            asset_id,
            self.stage,
            done as i64,
            self.total as i64,
        )
        .await?;
        tx.commit().await?;
        let (done, total) = (done as i64, self.total as i64);
        announce(
            self.ctx,
            org_id,
            asset_id,
            AssetChange::Processing,
            self.stage,
            done,
            total,
        );
        Ok(())
    }
}

async fn vectors_available(ctx: &JobContext, org_id: OrgId) -> Result<bool, JobError> {
    let mut tx = ctx.db.begin_worker(org_id).await?;
    let available = db::vectors::available(&mut tx).await?;
    tx.commit().await?;
    Ok(available)
}

/// The chunks, in batches of `WRITE_BATCH`.
fn chunk_all(sections: &[Section]) -> Vec<ChunkColumns> {
    let chunks: Vec<NewChunk> = crate::knowledge::chunker()
        .chunks(sections)
        .map(|chunk| {
            let mut metadata = serde_json::Map::new();
            if let Some(page) = chunk.page {
                metadata.insert("page".into(), page.into());
            }
            if let Some(page_end) = chunk.page_end.filter(|end| Some(*end) != chunk.page) {
                metadata.insert("page_end".into(), page_end.into());
            }
            if let Some(heading) = chunk.heading {
                metadata.insert("heading".into(), heading.into());
            }
            NewChunk {
                id: Uuid::now_v7(),
                position: chunk.position,
                content: chunk.content,
                token_count: chunk.token_count,
                metadata: Value::Object(metadata),
            }
        })
        .collect();
    let mut batches = Vec::with_capacity(chunks.len().div_ceil(WRITE_BATCH));
    let mut chunks = chunks.into_iter().peekable();
    while chunks.peek().is_some() {
        batches.push(ChunkColumns::of(
            chunks.by_ref().take(WRITE_BATCH).collect(),
        ));
    }
    batches
}

async fn progress(
    ctx: &JobContext,
    org_id: OrgId,
    asset_id: AssetId,
    stage: &str,
    done: i64,
    total: i64,
) -> Result<(), JobError> {
    let mut tx = ctx.db.begin_worker(org_id).await?;
    knowledge::set_progress(&mut tx, org_id, asset_id, stage, done, total).await?;
    tx.commit().await?;
    announce(
        ctx,
        org_id,
        asset_id,
        AssetChange::Processing,
        stage,
        done,
        total,
    );
    Ok(())
}

/// The asset's progress as a live event, after the commit that recorded it.
fn announce(
    ctx: &JobContext,
    org_id: OrgId,
    asset_id: AssetId,
    status: AssetChange,
    stage: &str,
    done: i64,
    total: i64,
) {
    let event = AssetEvent::new(asset_id.0, status, stage, done, total);
    ctx.events.publish(Event::asset(org_id, event));
}

/// CPU work off the runtime's threads; a panic in it is a failed file, not a dead worker.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, JobError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        tracing::error!(error = %e, "file processing panicked");
        JobError::Permanent("the file could not be read".into())
    })
}
