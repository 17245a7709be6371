-- One function consumes OAuth states for both callbacks: the browser's (any user: the
-- state itself is the proof) and the API's (`only_user`: a state of another user is left
-- alone and refused like an unknown one). The owner/admin rule is written here once.
DROP FUNCTION auth.consume_oauth_state(bytea);

CREATE FUNCTION auth.consume_oauth_state(hash bytea, only_user uuid DEFAULT NULL)
RETURNS TABLE (org_id uuid, user_id uuid, redirect_uri text, expired boolean, allowed boolean)
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
    DELETE FROM public.oauth_states s
    WHERE s.state_hash = hash AND (only_user IS NULL OR s.user_id = only_user)
    RETURNING s.org_id, s.user_id, s.redirect_uri, s.expires_at < now(),
              EXISTS (SELECT 1 FROM public.organization_members m
                      WHERE m.org_id = s.org_id AND m.user_id = s.user_id
                        AND m.role IN ('owner', 'admin'))
$$;

REVOKE ALL ON FUNCTION auth.consume_oauth_state(bytea, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION auth.consume_oauth_state(bytea, uuid) TO api_worker, authenticated;
