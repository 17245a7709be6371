-- What the Kommo integration needs beyond the first schema.

-- When the tokens were last refreshed: concurrent refresh requests that queued behind a
-- refresh use its result instead of calling Kommo again.
ALTER TABLE crm_connections ADD COLUMN token_refreshed_at timestamptz;

-- A browser returning from Kommo carries no access token, so its OAuth state is looked up
-- and consumed by hash alone, atomically: a state works once, and only before it expires.
CREATE OR REPLACE FUNCTION auth.consume_oauth_state(hash bytea)
RETURNS TABLE (org_id uuid, user_id uuid, redirect_uri text, expired boolean)
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
    DELETE FROM public.oauth_states s WHERE s.state_hash = hash
    RETURNING s.org_id, s.user_id, s.redirect_uri, s.expires_at < now()
$$;

-- Connected connections whose access token expires within `within`, in every org: the
-- scheduler refreshes them well before Kommo would refuse them.
CREATE OR REPLACE FUNCTION auth.connections_due_for_refresh(within interval)
RETURNS TABLE (id uuid, org_id uuid)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
    SELECT c.id, c.org_id FROM public.crm_connections c
    WHERE c.status = 'connected' AND c.refresh_token_enc IS NOT NULL
      AND c.token_expires_at < now() + within
      AND NOT EXISTS (SELECT 1 FROM public.jobs j
                      WHERE j.org_id = c.org_id AND j.type = 'kommo:token-refresh'
                        AND j.status IN ('queued', 'running')
                        AND j.payload ->> 'connection_id' = c.id::text)
    LIMIT 500
$$;

REVOKE ALL ON FUNCTION auth.consume_oauth_state(bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION auth.connections_due_for_refresh(interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION auth.consume_oauth_state(bytea), auth.connections_due_for_refresh(interval)
    TO api_worker, authenticated;
