//! Queries on `agent_routes`: which Kommo pipeline stages an agent works (spec §13), the
//! rule that at most one active agent works a stage, and the lookup that routes a lead.

use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{AgentId, ConnectionId, OrgId};

/// Stages of a pipeline: some, or every one (also those added later).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Stages {
    /// `"all"`.
    #[schema(value_type = String, example = "all")]
    All(AllStages),
    Some(Vec<i64>),
}

/// The word `all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AllStages {
    #[serde(rename = "all")]
    All,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub connection_id: Uuid,
    pub pipeline_id: i64,
    pub stage_ids: Stages,
}

/// Takes the org's routing lock until the transaction ends: route changes and agent
/// activations of one org are checked one at a time, so two cannot both pass the
/// one-agent-per-stage check.
async fn lock_org(conn: &mut PgConnection, org_id: OrgId) -> sqlx::Result<()> {
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended('agent_routes:' || $1::text, 0))",
        org_id.0.to_string()
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The agent's routes, grouped by connection and pipeline.
pub async fn routes_of(
    conn: &mut PgConnection,
    org_id: OrgId,
    agent_id: AgentId,
) -> sqlx::Result<Vec<Route>> {
    let rows = sqlx::query!(
        r#"SELECT connection_id, pipeline_id, bool_or(stage_id IS NULL) AS "all!",
                  array_remove(array_agg(stage_id ORDER BY stage_id), NULL) AS "stages!: Vec<i64>"
           FROM agent_routes WHERE org_id = $1 AND agent_id = $2
           GROUP BY connection_id, pipeline_id ORDER BY connection_id, pipeline_id"#,
        org_id.0,
        agent_id.0,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Route {
            connection_id: r.connection_id,
            pipeline_id: r.pipeline_id,
            stage_ids: if r.all {
                Stages::All(AllStages::All)
            } else {
                Stages::Some(r.stages)
            },
        })
        .collect())
}

/// Replaces the agent's routes.
pub async fn replace(
    conn: &mut PgConnection,
    org_id: OrgId,
    agent_id: AgentId,
    routes: &[Route],
) -> sqlx::Result<()> {
    sqlx::query!(
        "DELETE FROM agent_routes WHERE org_id = $1 AND agent_id = $2",
        org_id.0,
        agent_id.0
    )
    .execute(&mut *conn)
    .await?;
    let (mut connections, mut pipelines, mut stages) = (Vec::new(), Vec::new(), Vec::new());
    for route in routes {
        let wanted: Vec<Option<i64>> = match &route.stage_ids {
            Stages::All(_) => vec![None],
            Stages::Some(ids) => ids.iter().map(|id| Some(*id)).collect(),
        };
        for stage in wanted {
            connections.push(route.connection_id);
            pipelines.push(route.pipeline_id);
            stages.push(stage);
        }
    }
    sqlx::query!(
        "INSERT INTO agent_routes (id, org_id, agent_id, connection_id, pipeline_id, stage_id)
         SELECT gen_random_uuid(), $1, $2, c, p, s
         FROM UNNEST($3::uuid[], $4::bigint[], $5::bigint[]) AS r (c, p, s)
         ON CONFLICT DO NOTHING",
        org_id.0,
        agent_id.0,
        &connections,
        &pipelines,
        &stages as &[Option<i64>],
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Another active agent already working a stage that an agent's routes cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub agent_id: Uuid,
    pub name: String,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "The active agent \"{}\" ({}) already works a stage this agent is routed to; \
             at most one active agent may work a stage.",
            self.name, self.agent_id
        )
    }
}

/// Checks, under the org's routing lock (held until the transaction ends), that no other
/// active agent works a stage the agent's routes cover. A route for every stage of a
/// pipeline overlaps any route in that pipeline. Call it after writing the agent's
/// routes or status, in the same transaction.
pub async fn check_free(
    conn: &mut PgConnection,
    org_id: OrgId,
    agent_id: AgentId,
) -> sqlx::Result<Option<Conflict>> {
    lock_org(&mut *conn, org_id).await?;
    let row = sqlx::query!(
        "SELECT a.id, a.name
         FROM agent_routes mine
              JOIN agent_routes theirs
                ON theirs.org_id = mine.org_id AND theirs.connection_id = mine.connection_id
               AND theirs.pipeline_id = mine.pipeline_id AND theirs.agent_id <> mine.agent_id
               AND (mine.stage_id IS NULL OR theirs.stage_id IS NULL
                    OR mine.stage_id = theirs.stage_id)
              JOIN agents a ON a.id = theirs.agent_id AND a.status = 'active'
         WHERE mine.org_id = $1 AND mine.agent_id = $2
         ORDER BY a.id LIMIT 1",
        org_id.0,
        agent_id.0,
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| Conflict {
        agent_id: r.id,
        name: r.name,
    }))
}

/// The active agent routed to the lead's stage: a route naming the stage wins over one
/// for every stage of the pipeline.
pub async fn agent_for_stage(
    conn: &mut PgConnection,
    org_id: OrgId,
    connection_id: ConnectionId,
    pipeline_id: i64,
    stage_id: i64,
) -> sqlx::Result<Option<AgentId>> {
    let id = sqlx::query_scalar!(
        "SELECT r.agent_id FROM agent_routes r JOIN agents a ON a.id = r.agent_id
         WHERE r.org_id = $1 AND r.connection_id = $2 AND r.pipeline_id = $3
           AND (r.stage_id = $4 OR r.stage_id IS NULL) AND a.status = 'active'
         ORDER BY r.stage_id NULLS LAST, r.agent_id LIMIT 1",
        org_id.0,
        connection_id.0,
        pipeline_id,
        stage_id,
    )
    .fetch_optional(conn)
    .await?;
    Ok(id.map(AgentId))
}
