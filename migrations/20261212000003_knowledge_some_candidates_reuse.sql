-- auth.knowledge_text_some_candidates through auth.knowledge_text_candidates: the
-- previous version carried its own copy of that function's membership check and lookup
-- (with an exclusion added), two copies to keep in step. The fallback's exclusion now
-- filters the shared lookup's answer: every chunk with a rare word also has one of
-- `words`, and all of them (`found`, fewer than `n`) came back already, so at most
-- `found` of the first `n` with any word are set aside and `n - found` remain. The
-- membership check is the shared lookup's.
CREATE OR REPLACE FUNCTION auth.knowledge_text_some_candidates(org uuid, agent uuid, words tsquery, n bigint)
RETURNS TABLE (id uuid, asset_id uuid, search tsvector)
ROWS 100
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    rare tsquery := auth.knowledge_rare_words(org, words, n);
    found bigint;
BEGIN
    IF rare IS NULL THEN
        RETURN QUERY SELECT * FROM auth.knowledge_text_candidates(org, agent, words, n);
        RETURN;
    END IF;
    RETURN QUERY SELECT * FROM auth.knowledge_text_candidates(org, agent, rare, n);
    GET DIAGNOSTICS found = ROW_COUNT;
    IF found < n THEN
        RETURN QUERY
            SELECT c.* FROM auth.knowledge_text_candidates(org, agent, words, n) AS c
            WHERE NOT c.search @@ rare
            LIMIT n - found;
    END IF;
END
$$;
