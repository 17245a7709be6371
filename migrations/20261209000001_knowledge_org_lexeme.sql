-- Full text within one org, on every PostgreSQL. The GIN index held the org only where
-- btree_gin was installed; elsewhere (the pgvector build the benchmark and tests use has
-- no contrib modules) a common word was looked up in the postings of every org, and an
-- org's search slowed with the others' chunks (p99 483 ms beside 100,000 of them).
-- Now the indexed text carries one more lexeme, the org's own, and a search asks for it
-- with its words: GIN intersects the org's postings with the words' inside the index,
-- as it did with btree_gin, whatever the extensions.

-- The org as a lexeme no text can produce: `org` and the uuid's 32 hex digits.
CREATE FUNCTION knowledge_org_lexeme(org uuid) RETURNS tsvector
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN array_to_tsvector(ARRAY['org' || replace(org::text, '-', '')]);

-- `words` within `org`. A query without lexemes (only stop words) stays without them, so
-- it still matches nothing rather than the whole org.
CREATE FUNCTION knowledge_in_org(words tsquery, org uuid) RETURNS tsquery
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN CASE WHEN numnode(words) = 0 THEN words
                ELSE words && ('org' || replace(org::text, '-', ''))::tsquery END;

DROP INDEX knowledge_chunks_search_idx;
CREATE INDEX knowledge_chunks_search_idx ON knowledge_chunks
    USING gin ((search || knowledge_org_lexeme(org_id)));

-- As in 20261208000001, with the words asked within the org through the index above.
CREATE OR REPLACE FUNCTION auth.knowledge_text_matches(
    org uuid, agent uuid, words tsquery, but_not tsquery, n bigint)
RETURNS SETOF uuid
ROWS 100
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF org IS DISTINCT FROM auth.worker_org_id() AND NOT org = ANY (auth.org_ids('member')) THEN
        RETURN;
    END IF;
    RETURN QUERY EXECUTE
        'SELECT c.id FROM public.knowledge_chunks c
         WHERE c.org_id = $1
           AND (c.search || public.knowledge_org_lexeme(c.org_id)) @@ public.knowledge_in_org($3, $1)
           AND ($4 IS NULL OR NOT c.search @@ $4)
           AND ($2 IS NULL OR c.agent_id IS NULL OR c.agent_id = $2)
         LIMIT $5'
        USING org, agent, words, but_not, n;
END
$$;
