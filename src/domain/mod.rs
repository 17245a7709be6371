//! The vocabulary every layer shares: roles and the closed sets of statuses, who made a
//! request, audit changes, pages, field errors. It depends on nothing of ours, so `db/`,
//! `jobs/`, `kommo/` and `http/` can all use it without pointing at each other.

pub mod fields;
pub mod ids;
pub mod json;
pub mod media;
pub mod page;
pub mod time;

use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use fields::FieldError;
pub use ids::{AgentId, AssetId, ConnectionId, ConversationId, EntityId, JobId, OrgId, UserId};
pub use page::{Page, PageError, Paginated};

/// A member's role in an org, lowest first (the order is the rank).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    sqlx::Type,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum Role {
    Member,
    Admin,
    Owner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum AgentStatus {
    Active,
    Inactive,
    Draft,
}

impl AgentStatus {
    /// The stored and serialized spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Active => "active",
            AgentStatus::Inactive => "inactive",
            AgentStatus::Draft => "draft",
        }
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

/// A CRM connection's state: `pending` until its tokens are stored, `connected`,
/// `error` when Kommo refused its grant (reconnect it), `disconnected`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum ConnectionStatus {
    Pending,
    Connected,
    Error,
    Disconnected,
}

/// A webhook event's state: `received` until its job parsed it, then `processed` or
/// `failed`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum EventStatus {
    Received,
    Processed,
    Failed,
}

/// A knowledge asset's state: `queued` until its job starts, `processing`, then
/// `indexed` (searchable) or `failed` (with a readable `error`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum AssetStatus {
    Queued,
    Processing,
    Indexed,
    Failed,
}

/// The file formats the knowledge base reads, judged by content.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum AssetFormat {
    Text,
    Markdown,
    Html,
    Pdf,
    Docx,
}

/// What a knowledge-graph entity is: the fixed list the model chooses from (spec §12) and
/// the `knowledge_entities.type` CHECK allows.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    sqlx::Type,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum EntityType {
    Person,
    Organization,
    Product,
    Service,
    Location,
    Event,
    Concept,
    Price,
    Policy,
    Other,
}

impl EntityType {
    pub const ALL: [EntityType; 10] = [
        EntityType::Person,
        EntityType::Organization,
        EntityType::Product,
        EntityType::Service,
        EntityType::Location,
        EntityType::Event,
        EntityType::Concept,
        EntityType::Price,
        EntityType::Policy,
        EntityType::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EntityType::Person => "person",
            EntityType::Organization => "organization",
            EntityType::Product => "product",
            EntityType::Service => "service",
            EntityType::Location => "location",
            EntityType::Event => "event",
            EntityType::Concept => "concept",
            EntityType::Price => "price",
            EntityType::Policy => "policy",
            EntityType::Other => "other",
        }
    }
}

/// The CRMs the service connects to.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum Provider {
    Kommo,
}

/// The caller, as proven by a verified access token (`http::auth` verifies it).
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: UserId,
    pub email: Option<String>,
    /// The verified claims as JSON text, handed to PostgreSQL as `request.jwt.claims`.
    pub claims: Arc<str>,
}

impl AuthUser {
    /// The token's `exp` (seconds since the epoch); the verifier requires it.
    pub fn expires_at(&self) -> Option<u64> {
        #[derive(Deserialize)]
        struct Exp {
            exp: Option<u64>,
        }
        serde_json::from_str::<Exp>(&self.claims).ok()?.exp
    }
}

/// Who and where a request came from, for the audit log.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    pub request_id: Option<String>,
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

/// One change: `action` like `agent.update`, the entity and its id, and what changed.
pub struct Change<'a> {
    pub action: &'a str,
    pub entity: &'a str,
    pub entity_id: Option<String>,
    pub changes: Value,
}

impl<'a> Change<'a> {
    pub fn new(
        action: &'a str,
        entity: &'a str,
        entity_id: impl ToString,
        changes: Value,
    ) -> Change<'a> {
        Change {
            action,
            entity,
            entity_id: Some(entity_id.to_string()),
            changes,
        }
    }
}
