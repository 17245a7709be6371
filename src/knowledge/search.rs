//! Search over an org's indexed chunks (spec §12): full-text, vector, or hybrid
//! (reciprocal-rank fusion of both), with the fallbacks a hybrid search takes when vectors
//! cannot take part. One implementation for the search route (as the member asking) and
//! the agent runtime (as the worker role, for one org).
//!
//! The provider is called with no transaction open: the checks run in one short
//! transaction, the query is embedded, and the searches run in another.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ai::{Ai, AiError};
use crate::db::knowledge::SearchHit;
use crate::db::{self, Db, Tx};
use crate::domain::{AgentId, AuthUser, OrgId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    Hybrid,
    Fulltext,
    Vector,
}

/// Reciprocal-rank fusion's constant: ranks deep in one list still count, and a chunk
/// high in both lists wins over one first in only one.
const RRF_K: f64 = 60.0;

pub const NO_PGVECTOR: &str = "This database has no pgvector: search is full-text only.";
pub const NO_EMBEDDINGS: &str =
    "No indexed file of this scope has embeddings yet: search is full-text only.";
pub const PROVIDER_FAILED: &str =
    "The model provider could not embed the query just now: these are full-text results.";

/// Who searches: a member (their RLS) or the worker role of the org.
#[derive(Clone, Copy)]
pub enum Reader<'a> {
    Member(&'a AuthUser),
    Worker,
}

pub struct Query<'a> {
    pub text: &'a str,
    pub agent: Option<AgentId>,
    pub limit: i64,
    pub mode: SearchMode,
}

#[derive(Debug)]
pub struct Found {
    pub hits: Vec<SearchHit>,
    /// What ran.
    pub mode: SearchMode,
    /// Why a hybrid search ran as full-text only.
    pub notice: Option<&'static str>,
}

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error(transparent)]
    Db(#[from] db::Error),
    /// Vector search was asked for where it cannot run (the reason).
    #[error("{0}")]
    VectorsUnavailable(String),
    /// The member is no longer a member (between the two transactions).
    #[error("not a member of the organization")]
    NotMember,
    #[error(transparent)]
    Ai(#[from] AiError),
    #[error(transparent)]
    Lookup(#[from] crate::ai::LookupError),
}

impl From<sqlx::Error> for SearchError {
    fn from(e: sqlx::Error) -> SearchError {
        SearchError::Db(e.into())
    }
}

async fn begin(db: &Db, reader: Reader<'_>, org_id: OrgId) -> Result<Tx, SearchError> {
    let settings = db::knowledge::SEARCH_SETTINGS;
    match reader {
        Reader::Worker => Ok(db.begin_worker_with(org_id, settings).await?),
        Reader::Member(user) => match db.begin_member_with(user, org_id, settings).await? {
            (tx, Some(_)) => Ok(tx),
            (_, None) => Err(SearchError::NotMember),
        },
    }
}

/// Runs `query` over the org's chunks, best first.
pub async fn search(
    db: &Db,
    ai: &Ai,
    reader: Reader<'_>,
    org_id: OrgId,
    query: &Query<'_>,
) -> Result<Found, SearchError> {
    let fulltext = |hits, notice| Found {
        hits,
        mode: SearchMode::Fulltext,
        notice,
    };
    let mut tx = begin(db, reader, org_id).await?;
    if query.mode == SearchMode::Fulltext {
        let hits = by_words(&mut tx, org_id, query, query.limit).await?;
        tx.commit().await?;
        return Ok(fulltext(hits, None));
    }
    // Why vectors cannot take part, if they cannot.
    let unavailable = if !db::vectors::available(&mut tx).await? {
        Some(NO_PGVECTOR)
    } else if !db::vectors::any_embedded(&mut tx, org_id, query.agent).await? {
        Some(NO_EMBEDDINGS)
    } else {
        None
    };
    if let Some(why) = unavailable {
        if query.mode == SearchMode::Vector {
            return Err(SearchError::VectorsUnavailable(
                why.replace("full-text only", "vector search is not available"),
            ));
        }
        let hits = by_words(&mut tx, org_id, query, query.limit).await?;
        tx.commit().await?;
        return Ok(fulltext(hits, Some(why)));
    }
    tx.commit().await?;
    let embedded = match ai.provider_for(db, org_id).await? {
        Some(provider) => ai
            .embed(db, org_id, &provider, &[query.text.to_owned()])
            .await
            .map(|e| e.vectors.into_iter().next()),
        None => Err(AiError::NotConfigured),
    };
    let mut tx = begin(db, reader, org_id).await?;
    let vector = match embedded {
        Ok(Some(vector)) => vector,
        Ok(None) | Err(_) if query.mode == SearchMode::Hybrid => {
            let hits = by_words(&mut tx, org_id, query, query.limit).await?;
            tx.commit().await?;
            return Ok(fulltext(hits, Some(PROVIDER_FAILED)));
        }
        Ok(None) => {
            return Err(SearchError::Ai(AiError::Decode(
                "the provider returned no embedding".into(),
            )));
        }
        Err(e) => return Err(e.into()),
    };
    if query.mode == SearchMode::Vector {
        let hits = db::vectors::search(&mut tx, org_id, &vector, query.agent, query.limit).await?;
        tx.commit().await?;
        return Ok(Found {
            hits,
            mode: SearchMode::Vector,
            notice: None,
        });
    }
    // Each list is deeper than the answer, so a chunk ranked modestly by both can rise.
    let depth = (query.limit * 4).clamp(40, 200);
    let words = by_words(&mut tx, org_id, query, depth).await?;
    let meaning = db::vectors::search(&mut tx, org_id, &vector, query.agent, depth).await?;
    tx.commit().await?;
    Ok(Found {
        hits: reciprocal_rank_fusion([words, meaning], query.limit),
        mode: SearchMode::Hybrid,
        notice: None,
    })
}

async fn by_words(
    tx: &mut Tx,
    org_id: OrgId,
    query: &Query<'_>,
    limit: i64,
) -> sqlx::Result<Vec<SearchHit>> {
    db::knowledge::search_fulltext(tx, org_id, query.text, query.agent, limit).await
}

/// Fuses ranked lists: each hit scores Σ 1/(k + rank) over the lists it is in.
pub fn reciprocal_rank_fusion<const N: usize>(
    lists: [Vec<SearchHit>; N],
    limit: i64,
) -> Vec<SearchHit> {
    let mut fused: Vec<SearchHit> = Vec::new();
    let mut index: HashMap<Uuid, usize> = HashMap::new();
    for list in lists {
        for (rank, mut hit) in list.into_iter().enumerate() {
            let score = 1.0 / (RRF_K + rank as f64 + 1.0);
            match index.get(&hit.chunk_id) {
                Some(&i) => fused[i].score += score,
                None => {
                    index.insert(hit.chunk_id, fused.len());
                    hit.score = score;
                    fused.push(hit);
                }
            }
        }
    }
    fused.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(a.chunk_id.cmp(&b.chunk_id))
    });
    fused.truncate(usize::try_from(limit).unwrap_or(0));
    fused
}
