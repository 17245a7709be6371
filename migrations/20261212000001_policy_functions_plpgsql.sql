-- The definer functions every request's policies call, in PL/pgSQL instead of SQL.
--
-- A SQL function that cannot be inlined (a SECURITY DEFINER one cannot) is parsed,
-- analysed and planned again every time a statement that calls it runs: its plan lives in
-- the caller's expression state, which is rebuilt per execution, so even a prepared
-- statement pays for it. auth.org_ids is called once per table a member's statement
-- reads under its policy (the agents list reads two, a hybrid search's statements six),
-- and each call cost about as much as the rest of a small statement: pgbench, one
-- client, four calls per transaction, 0.29 ms a call as SQL, 0.03 ms as PL/pgSQL, whose
-- plans are kept per session. The answers are the same: the bodies are unchanged.

CREATE OR REPLACE FUNCTION auth.org_ids(min_role text) RETURNS uuid[]
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    RETURN (SELECT coalesce(array_agg(m.org_id), '{}')
            FROM public.organization_members m
            WHERE m.user_id = auth.uid()
              AND auth.role_rank(m.role) >= auth.role_rank(min_role));
END
$$;

CREATE OR REPLACE FUNCTION auth.org_has_members(org uuid) RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM public.organization_members m WHERE m.org_id = org);
END
$$;

-- Every webhook delivery looks its connection up through this one.
CREATE OR REPLACE FUNCTION auth.webhook_connection(connection uuid)
RETURNS TABLE (org_id uuid, webhook_token_hash bytea, account_id bigint)
ROWS 1
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    RETURN QUERY
        SELECT c.org_id, c.webhook_token_hash, c.account_id FROM public.crm_connections c
        WHERE c.id = connection AND c.webhook_token_hash IS NOT NULL;
END
$$;
