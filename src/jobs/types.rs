//! The job types a client may enqueue, their payloads and their validation.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::db::{self, Tx};
use crate::domain::FieldError;

pub const PROCESS_ASSET: &str = "process-asset";
pub const EXTRACT_KNOWLEDGE_GRAPH: &str = "extract-knowledge-graph";
pub const SYNC_PIPELINES: &str = "crm:sync-pipelines";
pub const SYNC_CONTACTS: &str = "crm:sync-contacts";
/// Queued by the service itself (messages endpoint, scheduler), not by `POST …/jobs`.
pub const SEND_MESSAGE: &str = "kommo:send-message";
pub const TOKEN_REFRESH: &str = "kommo:token-refresh";
pub const WEBHOOK: &str = "kommo:webhook";

/// Types that exist only to exercise the runner in tests; compiled in only with the
/// `test-support` feature, so the production binary neither accepts nor runs them.
#[cfg(feature = "test-support")]
pub const TEST_TYPES: &[&str] = &["test:sleep", "test:fail", "test:panic"];
#[cfg(not(feature = "test-support"))]
pub const TEST_TYPES: &[&str] = &[];

/// The most chunk ids one knowledge-graph job may name.
pub const MAX_CHUNK_IDS: usize = 1000;

pub const CLIENT_TYPES: &[&str] = &[
    PROCESS_ASSET,
    EXTRACT_KNOWLEDGE_GRAPH,
    SYNC_PIPELINES,
    SYNC_CONTACTS,
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessAsset {
    pub asset_id: Uuid,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractKnowledgeGraph {
    pub asset_id: Option<Uuid>,
    pub article_id: Option<Uuid>,
    pub agent_id: Option<Uuid>,
    pub chunk_ids: Option<Vec<Uuid>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionSync {
    pub connection_id: Uuid,
}

#[cfg(feature = "test-support")]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestSleep {
    pub millis: u64,
}

#[cfg(feature = "test-support")]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFail {
    /// Fail this many attempts, then succeed (absent: always fail).
    pub failures: Option<i32>,
    #[serde(default)]
    pub permanent: bool,
}

/// A validated request for new work: its type and the payload to store.
pub struct NewJob {
    pub job_type: String,
    pub payload: Value,
}

/// Why a client's job was not accepted: a field that does not fit (422), or the
/// database could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum Rejected {
    #[error("{}: {}", .0.field, .0.message)]
    Invalid(FieldError),
    #[error(transparent)]
    Db(#[from] db::Error),
}

impl From<sqlx::Error> for Rejected {
    fn from(e: sqlx::Error) -> Rejected {
        Rejected::Db(e.into())
    }
}

fn invalid(field: &str, message: impl Into<String>) -> Rejected {
    Rejected::Invalid(FieldError::new(field, message))
}

/// Checks `{type, …}` from a client: a known type, the fields of that type and nothing
/// else, and ids that belong to the caller's org.
pub async fn validate(body: Value, tx: &mut Tx, org_id: Uuid) -> Result<NewJob, Rejected> {
    let Value::Object(mut fields) = body else {
        return Err(invalid("", "the body must be a JSON object"));
    };
    let job_type = match fields.remove("type") {
        Some(Value::String(t)) => t,
        Some(_) => return Err(invalid("type", "must be a string")),
        None => return Err(invalid("type", "is required")),
    };
    let payload = Value::Object(fields.clone());
    match job_type.as_str() {
        PROCESS_ASSET => {
            parse::<ProcessAsset>(fields)?;
        }
        EXTRACT_KNOWLEDGE_GRAPH => {
            let job: ExtractKnowledgeGraph = parse(fields)?;
            if job.asset_id.is_none()
                && job.article_id.is_none()
                && job.agent_id.is_none()
                && job.chunk_ids.as_ref().is_none_or(Vec::is_empty)
            {
                return Err(invalid(
                    "asset_id",
                    "one of asset_id, article_id, agent_id or chunk_ids is required",
                ));
            }
            if job
                .chunk_ids
                .as_ref()
                .is_some_and(|ids| ids.len() > MAX_CHUNK_IDS)
            {
                return Err(invalid(
                    "chunk_ids",
                    format!("must hold at most {MAX_CHUNK_IDS} ids"),
                ));
            }
            if let Some(agent_id) = job.agent_id
                && db::agents::get(tx, org_id, agent_id).await?.is_none()
            {
                return Err(invalid("agent_id", "must be an agent of this organization"));
            }
        }
        SYNC_PIPELINES | SYNC_CONTACTS => {
            let job: ConnectionSync = parse(fields)?;
            if !db::agents::connection_exists(tx, org_id, job.connection_id).await? {
                return Err(invalid(
                    "connection_id",
                    "must be a CRM connection of this organization",
                ));
            }
        }
        #[cfg(feature = "test-support")]
        "test:sleep" => {
            parse::<TestSleep>(fields)?;
        }
        #[cfg(feature = "test-support")]
        "test:fail" => {
            parse::<TestFail>(fields)?;
        }
        #[cfg(feature = "test-support")]
        "test:panic" => {
            parse::<Map<String, Value>>(fields)?;
        }
        _ => {
            return Err(invalid(
                "type",
                format!("must be one of {}", CLIENT_TYPES.join(", ")),
            ));
        }
    }
    Ok(NewJob { job_type, payload })
}

fn parse<T: DeserializeOwned>(fields: Map<String, Value>) -> Result<T, Rejected> {
    crate::domain::fields::from_value(Value::Object(fields)).map_err(Rejected::Invalid)
}
