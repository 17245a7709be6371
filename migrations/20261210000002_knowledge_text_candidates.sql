-- Full-text candidates with what ranking needs. The search statement used to take ids
-- from auth.knowledge_text_matches and read each candidate's chunk and asset again under
-- the caller's policies: every reference to those tables costs the statement one more
-- evaluation of the caller's org list (a definer function, ~0.1 ms each, six of them),
-- and a key lookup per candidate. This function returns the candidates of the asset's
-- searchable generation with their tsvector, checked once; the statement reads only its
-- answer's chunks and assets under the caller's policies.
--
-- auth.knowledge_text_matches stays for replicas still running the previous release
-- during a rolling upgrade; nothing in this release calls it.
CREATE FUNCTION auth.knowledge_text_candidates(org uuid, agent uuid, words tsquery, n bigint)
RETURNS TABLE (id uuid, asset_id uuid, search tsvector)
ROWS 100
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF org IS DISTINCT FROM auth.worker_org_id() AND NOT org = ANY (auth.org_ids('member')) THEN
        RETURN;
    END IF;
    -- EXECUTE plans with the words known, so the GIN index's cost is weighed for them.
    RETURN QUERY EXECUTE
        'SELECT c.id, c.asset_id, c.search
         FROM public.knowledge_chunks c
              JOIN public.knowledge_assets a
                ON a.id = c.asset_id AND a.generation = c.generation AND a.org_id = $1
         WHERE c.org_id = $1
           AND (c.search || public.knowledge_org_lexeme(c.org_id)) @@ public.knowledge_in_org($3, $1)
           AND ($2 IS NULL OR c.agent_id IS NULL OR c.agent_id = $2)
         LIMIT $4'
        USING org, agent, words, n;
END
$$;
REVOKE ALL ON FUNCTION auth.knowledge_text_candidates(uuid, uuid, tsquery, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION auth.knowledge_text_candidates(uuid, uuid, tsquery, bigint)
    TO authenticated, api_worker;
-- The owner reads the assets in it (the table's policies apply to the owner too).
DO $$
BEGIN
    EXECUTE format('CREATE POLICY knowledge_assets_definer ON knowledge_assets FOR SELECT TO %I
                    USING (true)', current_user);
END
$$;
