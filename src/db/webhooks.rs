//! Queries on `webhook_events`: raw deliveries and the events parsed out of them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, Row as _};
use uuid::Uuid;

use crate::db::rls::{Execute, Tx};

use crate::domain::page::Page;
use crate::domain::{ConnectionId, EventStatus, JobId, OrgId};

/// The statement that stores a delivery and the job that parses it, prepared on every
/// connection (`rls::prepare`) and executed by `insert_delivery`. Its arguments: delivery
/// id, org, connection, body digest, content type, body, job id, job type, attempts.
pub(super) const PREPARE_INSERT_DELIVERY: &str = "
    PREPARE agents_api_insert_delivery (uuid, uuid, uuid, bytea, text, text, uuid, text, integer) AS
    WITH delivery AS (
        INSERT INTO webhook_events
            (id, org_id, connection_id, kind, body_sha256, content_type, raw_body)
        VALUES ($1, $2, $3, 'delivery', $4, $5, $6)
        ON CONFLICT (connection_id, body_sha256) WHERE kind = 'delivery' DO NOTHING
        RETURNING id)
    INSERT INTO jobs (id, org_id, type, payload, max_attempts, created_by, enqueued_at)
    SELECT $7, $2, $8, jsonb_build_object('delivery_id', delivery.id), $9, NULL, now()
    FROM delivery
    RETURNING id AS delivery_job_id;";

/// Stores a delivery and the job that parses it, unless the same body was accepted for
/// this connection within the last 24 h (the unique digest index decides, also between
/// replicas racing), and commits: the job's id, `None` for a duplicate. One statement for
/// both rows, sent with the `COMMIT` in one round trip (`Tx::commit_with`).
pub async fn insert_delivery(
    tx: Tx,
    delivery: NewDelivery<'_>,
    job_type: &str,
    max_attempts: i32,
) -> crate::db::Result<Option<JobId>> {
    let insert = Execute::new("agents_api_insert_delivery")
        .uuid(Some(Uuid::now_v7()))
        .uuid(Some(delivery.org_id.0))
        .uuid(Some(delivery.connection_id.0))
        .bytes(delivery.digest)
        .text(Some(delivery.content_type))
        .text(Some(delivery.body))
        .uuid(Some(JobId::new().0))
        .text(Some(job_type))
        .int(i64::from(max_attempts));
    let rows = tx.commit_with(insert).await?;
    rows.first()
        .map(|row| row.try_get::<Uuid, _>("delivery_job_id").map(JobId))
        .transpose()
        .map_err(Into::into)
}

/// A webhook delivery as received.
pub struct NewDelivery<'a> {
    pub org_id: OrgId,
    pub connection_id: ConnectionId,
    pub digest: &'a [u8],
    pub content_type: &'a str,
    pub body: &'a str,
}

#[derive(Debug, sqlx::FromRow)]
pub struct Delivery {
    pub id: Uuid,
    pub org_id: OrgId,
    pub connection_id: ConnectionId,
    pub content_type: Option<String>,
    pub raw_body: Option<String>,
}

/// Deliveries by id (those that still exist), in no particular order.
pub async fn deliveries(conn: &mut PgConnection, ids: &[Uuid]) -> sqlx::Result<Vec<Delivery>> {
    sqlx::query_as!(
        Delivery,
        r#"SELECT id, org_id AS "org_id: OrgId", connection_id AS "connection_id: ConnectionId",
                  content_type, raw_body
           FROM webhook_events WHERE id = ANY($1) AND kind = 'delivery'"#,
        ids,
    )
    .fetch_all(conn)
    .await
}

pub struct NewEvent<'a> {
    pub kind: &'a str,
    pub subtype: &'a str,
    pub entity_id: Option<i64>,
    pub payload: &'a Value,
}

/// Replaces the deliveries' events (a retried job does not duplicate them) and marks
/// the deliveries processed: three statements for any number of deliveries.
pub async fn store_events(
    conn: &mut PgConnection,
    parsed: &[(&Delivery, Vec<NewEvent<'_>>)],
) -> sqlx::Result<()> {
    let delivery_ids: Vec<Uuid> = parsed.iter().map(|(d, _)| d.id).collect();
    sqlx::query!(
        "DELETE FROM webhook_events WHERE delivery_id = ANY($1)",
        &delivery_ids
    )
    .execute(&mut *conn)
    .await?;
    let rows = || {
        parsed
            .iter()
            .flat_map(|(d, events)| events.iter().map(move |e| (*d, e)))
    };
    // UUIDv7, so the listing (newest first, by id) keeps Kommo's order.
    let event_ids: Vec<Uuid> = rows().map(|_| Uuid::now_v7()).collect();
    let orgs: Vec<Uuid> = rows().map(|(d, _)| d.org_id.0).collect();
    let connections: Vec<Uuid> = rows().map(|(d, _)| d.connection_id.0).collect();
    let of_delivery: Vec<Uuid> = rows().map(|(d, _)| d.id).collect();
    let kinds: Vec<&str> = rows().map(|(_, e)| e.kind).collect();
    let subtypes: Vec<&str> = rows().map(|(_, e)| e.subtype).collect();
    let entity_ids: Vec<Option<i64>> = rows().map(|(_, e)| e.entity_id).collect();
    let payloads: Vec<&Value> = rows().map(|(_, e)| e.payload).collect();
    sqlx::query!(
        "INSERT INTO webhook_events (id, org_id, connection_id, kind, delivery_id, type, subtype,
                                     entity_id, payload, status, processed_at)
         SELECT e.id, e.org_id, e.connection_id, 'event', e.delivery_id, e.kind, e.subtype,
                e.entity_id, e.payload, 'processed', now()
         FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[],
                     $7::bigint[], $8::jsonb[])
              AS e(id, org_id, connection_id, delivery_id, kind, subtype, entity_id, payload)",
        &event_ids,
        &orgs,
        &connections,
        &of_delivery,
        &kinds as _,
        &subtypes as _,
        &entity_ids as _,
        &payloads as _,
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE webhook_events SET status = 'processed', error = NULL, processed_at = now()
         WHERE id = ANY($1)",
        &delivery_ids,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks a delivery processed, or failed with `error` (its raw body stays).
pub async fn finish_delivery(
    conn: &mut PgConnection,
    id: Uuid,
    error: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE webhook_events
         SET status = CASE WHEN $2::text IS NULL THEN 'processed' ELSE 'failed' END,
             error = $2, processed_at = now()
         WHERE id = $1",
        id,
        error,
    )
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookEvent {
    pub id: Uuid,
    pub connection_id: Uuid,
    /// `delivery` (a body that could not be parsed) or `event`.
    pub kind: String,
    pub delivery_id: Option<Uuid>,
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    pub subtype: Option<String>,
    pub entity_id: Option<i64>,
    /// The entity as Kommo sent it: normally an object, but any JSON value a body held.
    /// `null` when `payload_truncated`.
    #[schema(value_type = serde_json::Value)]
    pub payload: Value,
    /// The stored payload is larger than `LISTED_PAYLOAD_BYTES` (or nested too deep to
    /// return), so the list leaves it out.
    pub payload_truncated: bool,
    pub status: EventStatus,
    pub error: Option<String>,
    pub received_at: DateTime<Utc>,
    pub processed_at: Option<DateTime<Utc>>,
}

/// The most of one event's payload a list returns: a page of 100 stays a few MB at most.
pub const LISTED_PAYLOAD_BYTES: i32 = 32 * 1024;

struct EventRow {
    id: Uuid,
    connection_id: Uuid,
    kind: String,
    delivery_id: Option<Uuid>,
    event_type: Option<String>,
    subtype: Option<String>,
    entity_id: Option<i64>,
    /// Text, not jsonb: a row stored before depth limits existed may nest deeper than
    /// serde_json decodes, and must not make the whole page fail.
    payload: Option<String>,
    status: EventStatus,
    error: Option<String>,
    received_at: DateTime<Utc>,
    processed_at: Option<DateTime<Utc>>,
}

impl From<EventRow> for WebhookEvent {
    fn from(row: EventRow) -> WebhookEvent {
        let (payload, payload_truncated) = match row.payload.as_deref() {
            None => (Value::Null, true),
            Some(text) => match serde_json::from_str(text) {
                Ok(value) => (value, false),
                Err(_) => (Value::Null, true),
            },
        };
        WebhookEvent {
            id: row.id,
            connection_id: row.connection_id,
            kind: row.kind,
            delivery_id: row.delivery_id,
            event_type: row.event_type,
            subtype: row.subtype,
            entity_id: row.entity_id,
            payload,
            payload_truncated,
            status: row.status,
            error: row.error,
            received_at: row.received_at,
            processed_at: row.processed_at,
        }
    }
}

/// Parsed events, and deliveries that failed to parse, newest first.
pub async fn list(
    conn: &mut PgConnection,
    org_id: OrgId,
    event_type: Option<&str>,
    status: Option<&str>,
    page: Page,
) -> sqlx::Result<Vec<WebhookEvent>> {
    let rows = sqlx::query_as!(
        EventRow,
        r#"SELECT id, connection_id, kind, delivery_id, type AS event_type, subtype, entity_id,
                  CASE WHEN octet_length(payload::text) <= $6 THEN payload::text END AS payload,
                  status AS "status: EventStatus", error, received_at, processed_at
           FROM webhook_events
           WHERE org_id = $1 AND (kind = 'event' OR status = 'failed')
             AND ($2::text IS NULL OR type = $2)
             AND ($3::text IS NULL OR status = $3)
             AND ($4::uuid IS NULL OR id < $4)
           ORDER BY id DESC LIMIT $5"#,
        org_id.0,
        event_type,
        status,
        page.after,
        page.fetch_limit(),
        LISTED_PAYLOAD_BYTES,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(WebhookEvent::from).collect())
}
