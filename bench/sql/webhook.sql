-- pgbench mirror of one accepted `POST /v1/kommo/webhooks/{connection_id}/{token}`
-- (src/routes/webhooks.rs accept, src/db/rls.rs begin_system, src/db/webhooks.rs
-- connection (which also scopes the transaction to the org) and insert_delivery (the
-- delivery and its job in one statement, sent with the COMMIT in one round trip)).
-- Every transaction stores a new delivery: the body digest is a random number's sha256.
-- Ids are gen_random_uuid() (v4) where the API sends UUIDv7 from the client.
-- Not mirrored: the Redis push after COMMIT and the rate-limit check (both Redis, not SQL).
\set n random(1, 999999999999)
BEGIN;
SELECT set_config('role', 'api_worker', true),
       set_config('statement_timeout', :stmt_timeout, true);
SELECT org_id, webhook_token_hash, account_id, set_config('app.org_id', org_id::text, true)
  FROM auth.webhook_connection(:connection_id);
-- 'kommo:' || 'webhook' is 'kommo:webhook': pgbench would take ":webhook" for a variable.
WITH delivery AS (
    INSERT INTO webhook_events (id, org_id, connection_id, kind, body_sha256, content_type, raw_body)
    VALUES (gen_random_uuid(), :org_id, :connection_id, 'delivery',
            sha256(convert_to(:client_id::text || '-' || :n::text, 'UTF8')),
            'application/x-www-form-urlencoded', :body)
    ON CONFLICT (connection_id, body_sha256) WHERE kind = 'delivery' DO NOTHING
    RETURNING id)
INSERT INTO jobs (id, org_id, type, payload, max_attempts, created_by, enqueued_at)
SELECT gen_random_uuid(), :org_id, 'kommo:' || 'webhook', jsonb_build_object('delivery_id', delivery.id),
       5, NULL, now()
  FROM delivery
RETURNING id;
COMMIT;
