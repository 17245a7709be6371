-- pgbench mirror of one `GET /v1/orgs/{org_id}/agents?limit=20` (see src/db/rls.rs
-- begin_member, src/http/extract.rs OrgTx, src/db/agents.rs list: page and total in one
-- query). The API sends BEGIN, the set_config calls and the membership check as one
-- simple query (one round trip); pgbench sends them one by one, as below.
-- Run with -M prepared: every :variable is sent as a bind parameter, as sqlx does.
-- The filters the request does not use (status, search, cursor) are NULL in the API;
-- pgbench variables cannot be SQL NULL, so they are written as typed NULL literals —
-- the plan is the one PostgreSQL builds for the API's custom plan with NULL parameters.
BEGIN;
SELECT set_config('role', 'authenticated', true),
       set_config('request.jwt.claims', :claims, true),
       set_config('statement_timeout', :stmt_timeout, true);
SELECT role FROM organization_members WHERE org_id = :org_id AND user_id = :user_id;
SELECT id, org_id, connection_id, name, status, model, instructions, channels,
       schedule, temperature, max_tokens, settings, created_at, updated_at,
       CASE WHEN NULL::text IS NULL THEN (
           SELECT coalesce(sum(n), 0)::bigint FROM agent_counts
            WHERE org_id = :org_id AND (NULL::text IS NULL OR status = NULL::text))
       ELSE (
           SELECT count(*) FROM agents
            WHERE org_id = :org_id AND (NULL::text IS NULL OR status = NULL::text)
              AND name ILIKE NULL::text)
       END AS total
  FROM agents
 WHERE org_id = :org_id
   AND (NULL::text IS NULL OR status = NULL::text)
   AND (NULL::text IS NULL OR name ILIKE NULL::text)
   AND (NULL::uuid IS NULL OR id < NULL::uuid)
 ORDER BY id DESC LIMIT 21;
COMMIT;
