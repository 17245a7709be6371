-- An OAuth state is only honoured while its user is still an owner or admin of its org:
-- a user removed or demoted after starting the flow cannot finish it. The row is consumed
-- either way.
DROP FUNCTION auth.consume_oauth_state(bytea);

CREATE FUNCTION auth.consume_oauth_state(hash bytea)
RETURNS TABLE (org_id uuid, user_id uuid, redirect_uri text, expired boolean, allowed boolean)
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
    DELETE FROM public.oauth_states s WHERE s.state_hash = hash
    RETURNING s.org_id, s.user_id, s.redirect_uri, s.expires_at < now(),
              EXISTS (SELECT 1 FROM public.organization_members m
                      WHERE m.org_id = s.org_id AND m.user_id = s.user_id
                        AND m.role IN ('owner', 'admin'))
$$;

REVOKE ALL ON FUNCTION auth.consume_oauth_state(bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION auth.consume_oauth_state(bytea) TO api_worker, authenticated;
