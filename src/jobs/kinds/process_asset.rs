//! `process-asset`: an uploaded file becomes searchable chunks. Extract its text (on a
//! blocking thread: parsing is CPU work and parsers of hostile files must not stall the
//! runtime), split it into ~500-token chunks, write them in batches as `pending`, then
//! swap them for the asset's previous chunks in one transaction. A rerun starts over and
//! replaces; a file that cannot be read fails the asset with a readable error.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::db::jobs::ClaimedJob;
use crate::db::knowledge::{self, NewChunk};
use crate::db::{self, Tx};
use crate::domain::{AssetId, JobId, OrgId};
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
                    if let Err(db_error) = marked.await {
                        tracing::warn!(error = %db_error, %asset_id, "could not mark an asset failed");
                    }
                }
                Err(e)
            }
        }
    }
}

async fn process(ctx: &JobContext, org_id: OrgId, asset_id: AssetId) -> Result<usize, JobError> {
    let (asset, stored) = {
        let mut tx = ctx.db.begin_worker(org_id).await?;
        let Some(asset) = knowledge::lock_asset(&mut tx, org_id, asset_id).await? else {
            return Err(JobError::Permanent("the asset no longer exists".into()));
        };
        let Some(stored) = ctx.assets.locate(&mut tx, org_id, asset_id).await? else {
            return Err(JobError::Permanent("the asset's file is missing".into()));
        };
        knowledge::start_processing(&mut tx, org_id, asset_id).await?;
        tx.commit().await?;
        (asset, stored)
    };
    // An object is fetched after the commit: no connection waits on the file store.
    let Some(bytes) = ctx.assets.fetch(stored).await? else {
        return Err(JobError::Permanent("the asset's file is missing".into()));
    };

    let format = Format::from(asset.format);
    let sections = blocking(move || extract::extract(format, &bytes))
        .await?
        .map_err(|e| JobError::Permanent(e.to_string()))?;
    progress(ctx, org_id, asset_id, "chunking", 0, 0).await?;
    let chunks = blocking(move || chunk_all(&sections)).await?;
    if chunks.is_empty() {
        return Err(JobError::Permanent("the file contains no text".into()));
    }

    // Embeddings need a provider and pgvector; without either the chunks are indexed for
    // full-text search only, and the asset says so (`embedded: false`).
    let provider = ctx.ai_provider(org_id).await?;
    let embed_with = match &provider {
        Some(provider) if vectors_available(ctx, org_id).await? => Some(provider),
        _ => None,
    };
    let stage = if embed_with.is_some() {
        "embedding"
    } else {
        "writing"
    };
    let total = chunks.len();
    let mut done = 0;
    for batch in chunks.chunks(WRITE_BATCH) {
        // The provider is called before the transaction opens: no connection waits on it.
        let embeddings = match &embed_with {
            Some(provider) => {
                let inputs: Vec<String> = batch.iter().map(|c| c.content.clone()).collect();
                Some(ctx.ai.embed(&ctx.db, org_id, provider, &inputs).await?)
            }
            None => None,
        };
        let mut tx = ctx.db.begin_worker(org_id).await?;
        knowledge::insert_chunks(&mut tx, org_id, &asset, batch).await?;
        if let Some(embeddings) = embeddings {
            let ids: Vec<Uuid> = batch.iter().map(|c| c.id).collect();
            db::vectors::set_embeddings(&mut tx, org_id, &ids, &embeddings.vectors).await?;
        }
        done += batch.len();
        knowledge::set_progress(&mut tx, org_id, asset_id, stage, done as i64, total as i64)
            .await?;
        tx.commit().await?;
    }

    let mut tx = ctx.db.begin_worker(org_id).await?;
    // Deleted while it was being processed: nothing to swap (the cascade took the chunks).
    if knowledge::lock_asset(&mut tx, org_id, asset_id)
        .await?
        .is_none()
    {
        return Err(JobError::Permanent("the asset no longer exists".into()));
    }
    knowledge::finish_processing(
        &mut tx,
        org_id,
        asset_id,
        total as i32,
        embed_with.is_some(),
    )
    .await?;
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
    if let Some(graph_job) = graph_job {
        ctx.queue
            .enqueue_committed(JobId(graph_job.id), org_id, &graph_job.job_type)
            .await;
    }
    tracing::info!(%asset_id, chunks = total, "asset indexed");
    Ok(total)
}

async fn vectors_available(ctx: &JobContext, org_id: OrgId) -> Result<bool, JobError> {
    let mut tx = ctx.db.begin_worker(org_id).await?;
    let available = db::vectors::available(&mut tx).await?;
    tx.commit().await?;
    Ok(available)
}

fn chunk_all(sections: &[Section]) -> Vec<NewChunk> {
    crate::knowledge::chunker()
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
        .collect()
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
    Ok(())
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
