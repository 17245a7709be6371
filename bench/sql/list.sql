-- pgbench mirror of one `GET /v1/orgs/{org_id}/agents?limit=20` (see src/db/rls.rs
-- read_as_member, src/db/agents.rs list: page and total in one statement). The API
-- sends the whole transaction as one simple query (one round trip): the set_config calls,
-- the membership check and the page statement, each an EXECUTE of a statement prepared
-- once per connection, as one implicit transaction; pgbench sends the same statements one
-- by one, as below.
-- Run with -M prepared: every :variable is sent as a bind parameter, as a prepared
-- statement's arguments are.
-- The filters the request does not use (status, search, cursor) are NULL in the API;
-- pgbench variables cannot be SQL NULL, so they are written as typed NULL literals.
BEGIN;
SELECT set_config('role', 'authenticated', true),
       set_config('request.jwt.claims', :claims, true),
       set_config('statement_timeout', :stmt_timeout, true);
SELECT role FROM organization_members WHERE org_id = :org_id AND user_id = :user_id;
SELECT id, org_id, connection_id, name, status, model, instructions,
       array_to_json(channels) AS channels, schedule, temperature, max_tokens, settings,
       working_hours, response_delay_secs, off_hours_reply,
       array_to_json(handoff_keywords) AS handoff_keywords, max_turns, created_at,
       updated_at,
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
