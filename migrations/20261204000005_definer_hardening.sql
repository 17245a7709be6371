-- SECURITY DEFINER functions run with the owner's rights, so what they resolve by name
-- must not be something a caller planted. PostgreSQL searches a session's temporary
-- schema first unless `pg_temp` is named, so every definer function gets
-- `pg_catalog, public, pg_temp`: a temporary table can no longer stand in for
-- `agent_counts` and shift another org's counts.

-- The count writer, its table named in full.
CREATE OR REPLACE FUNCTION auth.add_agent_count(org uuid, agent_status text, delta bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF delta > 0 THEN
        INSERT INTO public.agent_counts (org_id, status, n) VALUES (org, agent_status, delta)
        ON CONFLICT (org_id, status) DO UPDATE SET n = public.agent_counts.n + delta;
    ELSE
        UPDATE public.agent_counts SET n = n + delta WHERE org_id = org AND status = agent_status;
    END IF;
END
$$;

DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure
        FROM pg_catalog.pg_proc p
        JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'auth' AND p.prosecdef
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, public, pg_temp', f);
        -- Nothing needs a definer function through PUBLIC: each grants the roles that
        -- call it by name (the trigger function is called by its trigger, not by them).
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END
$$;

-- A member may leave an org: delete their own membership. The last owner may not, which
-- the API checks under a lock on the owners' rows (409).
CREATE POLICY members_leave ON organization_members FOR DELETE TO authenticated
    USING (user_id = auth.uid());
