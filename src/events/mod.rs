//! Live events: what changed in an org, as it happens, for `GET /v1/orgs/{org_id}/events`
//! (server-sent events). The contract, described here once:
//!
//! - **What.** Small notifications — ids, statuses, progress, never whole documents —
//!   of the kinds in [`Kind`]; a client that wants more reads the resource.
//! - **Where.** Each org has a Redis stream `<prefix>events:<org>`; publishing appends to
//!   it (`XADD … MINID ~ now−retention`, so at least `EVENTS_RETENTION_SECS` are kept) and
//!   `PUBLISH`es the same events on the channel of the same name, in one script per batch
//!   (`publish`). The stream id (`<ms>-<seq>`, Redis's clock) is the SSE `id:`.
//! - **Best effort.** Events are published after the change committed, through a queue
//!   that never blocks the caller; a Redis failure is logged and counted
//!   (`events_published_total{outcome}`), never fails the operation or a job.
//! - **Fan-out.** One pattern subscription per process (`hub`) feeds a broadcast channel
//!   per org with open streams; a stream subscribes to it before it reads what it must
//!   replay, and drops live events at or below the last id it sent, so a reconnecting
//!   client with `Last-Event-ID` gets every event once, in order (`stream`).
//! - **Limits.** Open streams per user are counted in Redis (`limit`) across replicas.

pub mod hub;
pub mod limit;
pub mod publish;
pub mod stream;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use uuid::Uuid;

use crate::config::Config;
use crate::db::conversations::ConversationStatus;
use crate::domain::{AssetStatus, ConnectionStatus, JobStatus, OrgId};
use crate::redis_conn::RedisConn;

pub use hub::Hub;
pub use publish::Publisher;

/// An id of an org's Redis stream, `<ms>-<seq>`: the order of events within the org.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EventId {
    pub ms: u64,
    pub seq: u64,
}

impl EventId {
    /// Before every event: "from the beginning of what is kept".
    pub const ZERO: EventId = EventId { ms: 0, seq: 0 };
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for EventId {
    type Err = ();
    fn from_str(s: &str) -> Result<EventId, ()> {
        let (ms, seq) = s.trim().split_once('-').ok_or(())?;
        let digits =
            |t: &str| !t.is_empty() && t.len() <= 20 && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return Err(());
        }
        Ok(EventId {
            ms: ms.parse().map_err(|_| ())?,
            seq: seq.parse().map_err(|_| ())?,
        })
    }
}

/// What changed. The SSE `event:` field is [`Kind::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Job,
    Asset,
    ConversationMessage,
    ConversationHandoff,
    Connection,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Job => "job",
            Kind::Asset => "asset",
            Kind::ConversationMessage => "conversation.message",
            Kind::ConversationHandoff => "conversation.handoff",
            Kind::Connection => "connection",
        }
    }
}

/// One event to publish: its org, its kind and its data as JSON text.
#[derive(Debug, Clone)]
pub struct Event {
    pub org_id: OrgId,
    pub kind: Kind,
    pub data: String,
}

impl Event {
    pub fn new(org_id: OrgId, kind: Kind, data: &impl Serialize) -> Event {
        // These types are plain structs of ids, words and numbers: they always serialize.
        let data = serde_json::to_string(data).unwrap_or_else(|_| "{}".into());
        Event { org_id, kind, data }
    }

    pub fn job(
        org_id: OrgId,
        job_id: Uuid,
        job_type: &str,
        status: JobStatus,
        attempts: Option<i32>,
    ) -> Event {
        let data = JobEvent {
            job_id,
            job_type: job_type.to_owned(),
            status,
            attempts,
        };
        Event::new(org_id, Kind::Job, &data)
    }

    pub fn asset(org_id: OrgId, asset: AssetEvent) -> Event {
        Event::new(org_id, Kind::Asset, &asset)
    }

    pub fn message(org_id: OrgId, conversation_id: Uuid, message_id: Uuid, kind: &str) -> Event {
        let data = ConversationMessageEvent {
            conversation_id,
            message_id,
            direction: if kind == "inbound" { "in" } else { "out" }.into(),
            kind: kind.to_owned(),
        };
        Event::new(org_id, Kind::ConversationMessage, &data)
    }

    pub fn handoff(org_id: OrgId, conversation_id: Uuid, status: ConversationStatus) -> Event {
        let data = ConversationHandoffEvent {
            conversation_id,
            status,
        };
        Event::new(org_id, Kind::ConversationHandoff, &data)
    }

    pub fn connection(org_id: OrgId, connection_id: Uuid, status: ConnectionStatus) -> Event {
        let data = ConnectionEvent {
            connection_id,
            status,
        };
        Event::new(org_id, Kind::Connection, &data)
    }
}

/// `event: job` — a job changed status (queued, running, succeeded, failed, cancelled).
/// A retry is `queued` again with the attempts made so far.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobEvent {
    pub job_id: Uuid,
    #[serde(rename = "type")]
    pub job_type: String,
    pub status: JobStatus,
    /// Attempts made so far (when known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i32>,
}

/// What happened to a knowledge asset: its status, or `deleted`.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AssetChange {
    Queued,
    Processing,
    Indexed,
    Failed,
    Deleted,
}

impl From<AssetStatus> for AssetChange {
    fn from(status: AssetStatus) -> AssetChange {
        match status {
            AssetStatus::Queued => AssetChange::Queued,
            AssetStatus::Processing => AssetChange::Processing,
            AssetStatus::Indexed => AssetChange::Indexed,
            AssetStatus::Failed => AssetChange::Failed,
        }
    }
}

/// `event: asset` — a knowledge file's status or indexing progress changed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AssetEvent {
    pub asset_id: Uuid,
    pub status: AssetChange,
    /// `queued`, `extracting`, `chunking`, `embedding`, `writing`, `indexed` or `failed`.
    pub stage: String,
    pub done: i64,
    pub total: i64,
}

impl AssetEvent {
    pub fn new(asset_id: Uuid, status: AssetChange, stage: &str, done: i64, total: i64) -> Self {
        AssetEvent {
            asset_id,
            status,
            stage: stage.to_owned(),
            done,
            total,
        }
    }
}

/// `event: conversation.message` — a message was recorded in a conversation: one from the
/// lead (`in`), or the agent's (`out`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConversationMessageEvent {
    pub conversation_id: Uuid,
    pub message_id: Uuid,
    /// `in` or `out`.
    pub direction: String,
    /// `inbound`, `reply`, `off_hours` or `handoff`.
    pub kind: String,
}

/// `event: conversation.handoff` — a conversation was handed to a person
/// (`handed_off`) or given back to the agent (`active`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConversationHandoffEvent {
    pub conversation_id: Uuid,
    pub status: ConversationStatus,
}

/// `event: connection` — a CRM connection's status changed (connected, error,
/// disconnected).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConnectionEvent {
    pub connection_id: Uuid,
    pub status: ConnectionStatus,
}

/// `event: reset` — the stream could not resume where the client left off (its
/// `Last-Event-ID` is older than what is kept, or unknown): what is kept follows, and the
/// client should refetch what it shows. Its `id` is the client's.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ResetEvent {
    pub reason: String,
}

/// One server-sent event as the client reads it: `event:` names the kind, `data:` is
/// JSON of the kind's schema, `id:` is the event's id (for `Last-Event-ID`). Documented
/// for clients (the OpenAPI document's `LiveEvent`); the stream writes the frames itself.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(tag = "event", content = "data")]
pub enum LiveEvent {
    #[serde(rename = "job")]
    Job(JobEvent),
    #[serde(rename = "asset")]
    Asset(AssetEvent),
    #[serde(rename = "conversation.message")]
    ConversationMessage(ConversationMessageEvent),
    #[serde(rename = "conversation.handoff")]
    ConversationHandoff(ConversationHandoffEvent),
    #[serde(rename = "connection")]
    Connection(ConnectionEvent),
    #[serde(rename = "reset")]
    Reset(ResetEvent),
}

/// The settings of live events.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Events younger than this are always kept for resumption.
    pub retention: Duration,
    /// A comment line this often keeps proxies from closing idle streams.
    pub heartbeat: Duration,
    pub max_streams_per_user: u32,
    /// How often an open stream checks that its user is still a member of the org.
    pub membership_recheck: Duration,
}

impl Settings {
    pub fn from_config(config: &Config) -> Settings {
        Settings {
            retention: config.events_retention,
            heartbeat: config.events_heartbeat,
            max_streams_per_user: config.events_max_streams_per_user,
            membership_recheck: Duration::from_secs(60),
        }
    }

    /// How long a stream's slot in the per-user count lives without a heartbeat: the
    /// streams of a replica that died stop counting after this.
    pub fn slot_ttl(&self) -> Duration {
        (self.heartbeat * 3).max(Duration::from_secs(5))
    }
}

/// What the process shares for live events: the publisher and the subscriber hub.
#[derive(Clone)]
pub struct Events {
    pub publisher: Publisher,
    pub hub: Hub,
    pub settings: Settings,
    redis: RedisConn,
}

impl Events {
    pub fn new(redis: &RedisConn, config: &Config) -> Events {
        let settings = Settings::from_config(config);
        Events {
            publisher: Publisher::new(redis.clone(), settings.retention),
            hub: Hub::new(redis.clone()),
            settings,
            redis: redis.clone(),
        }
    }

    pub fn publish(&self, event: Event) {
        self.publisher.publish(event);
    }

    pub fn redis(&self) -> &RedisConn {
        &self.redis
    }
}

/// The key of an org's stream, which is also the name of its channel.
pub fn stream_key(redis: &RedisConn, org_id: OrgId) -> String {
    redis.key(&format!("events:{org_id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_and_order_numerically() {
        let a: EventId = "999-5".parse().unwrap();
        let b: EventId = "1000-0".parse().unwrap();
        assert!(a < b);
        assert_eq!(b.to_string(), "1000-0");
        for bad in [
            "",
            "1",
            "-1",
            "1-",
            "a-1",
            "1-b",
            "1-2-3",
            "+1-0",
            "99999999999999999999999-0",
        ] {
            assert!(bad.parse::<EventId>().is_err(), "{bad}");
        }
    }
}
