-- A webhook arrives without a user: its connection, org and token digest are looked up by
-- the connection id from the URL alone. The caller compares the digest itself (in
-- constant time), so this returns the digest, never a verdict an attacker could time.
CREATE OR REPLACE FUNCTION auth.webhook_connection(connection uuid)
RETURNS TABLE (org_id uuid, webhook_token_hash bytea, account_id bigint)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
    SELECT c.org_id, c.webhook_token_hash, c.account_id FROM public.crm_connections c
    WHERE c.id = connection AND c.webhook_token_hash IS NOT NULL
$$;

REVOKE ALL ON FUNCTION auth.webhook_connection(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION auth.webhook_connection(uuid) TO api_worker;

CREATE INDEX webhook_events_delivery_idx ON webhook_events (delivery_id) WHERE delivery_id IS NOT NULL;
