-- Chunks are written once. A processing run used to write its chunks `pending` and then
-- flip them all in the swap; `pending` was in every index's predicate and in the unique
-- key, so the flip re-inserted each row into the GIN, HNSW and btree indexes (most of an
-- upload's time, and seconds on a large table). Now each run writes its chunks under a
-- new generation number of the asset, and what search sees is the asset's `generation`:
-- the swap updates one asset row and deletes the previous generation's chunks.

-- A run that crashed left pending chunks behind; nothing can finish them now.
DELETE FROM knowledge_chunks WHERE pending;

-- `generation`: the run whose chunks are searchable (0 before the first completes).
-- `last_generation`: the latest run started; a run that finds a newer one has started
-- leaves the swap to it.
ALTER TABLE knowledge_assets
    ADD COLUMN generation integer NOT NULL DEFAULT 0 CHECK (generation >= 0),
    ADD COLUMN last_generation integer NOT NULL DEFAULT 0 CHECK (last_generation >= 0);

-- The chunks already there are the assets' generation 0. Dropping `pending` drops the
-- indexes and the key that named it; `agents-api migrate` creates the HNSW index again.
ALTER TABLE knowledge_chunks ADD COLUMN generation integer NOT NULL DEFAULT 0;
ALTER TABLE knowledge_chunks ALTER COLUMN generation DROP DEFAULT;
ALTER TABLE knowledge_chunks DROP COLUMN pending;
ALTER TABLE knowledge_chunks
    ADD CONSTRAINT knowledge_chunks_asset_generation_position_key
    UNIQUE (asset_id, generation, position);

-- Full text is searched within one org. With btree_gin the GIN index holds the org too,
-- so an org's matches come from the index alone however many other orgs share the
-- table; without it (not every PostgreSQL ships the contrib modules) the plain index.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'btree_gin') THEN
        CREATE EXTENSION IF NOT EXISTS btree_gin;
        CREATE INDEX knowledge_chunks_search_idx ON knowledge_chunks USING gin (org_id, search);
    ELSE
        CREATE INDEX knowledge_chunks_search_idx ON knowledge_chunks USING gin (search);
    END IF;
END
$$;

-- A web-search query with its words OR-ed (taken as written when it excludes a word).
-- Immutable, so with the query's text known PostgreSQL computes it while planning and
-- can weigh the GIN index for it; computed in the statement (a CTE, an init plan) it is
-- an unknown value, and the planner tests every chunk of the org instead.
CREATE FUNCTION knowledge_some_words(q tsquery) RETURNS tsquery
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN CASE WHEN strpos(q::text, '!') > 0 THEN q
                ELSE replace(q::text, ' & ', ' | ')::tsquery END;

-- Full-text candidates through the GIN index. Under row-level security PostgreSQL
-- tests a statement's own conditions only after the policy's, row by row, unless their
-- functions are leakproof, and `@@` is not: a search as the caller reads every chunk of
-- its orgs to test the words. This function looks the words up as the owner, in one org
-- the caller may read (a member's, or the worker transaction's), and returns at most `n`
-- chunk ids (of the agent's and the org-wide files when `agent` is given) that match
-- `words` and not `but_not`: the statement that reads the chunks runs under the caller's
-- policies. `EXECUTE`
-- plans with the query known, so the index's cost is weighed for these words.
CREATE FUNCTION auth.knowledge_text_matches(
    org uuid, agent uuid, words tsquery, but_not tsquery, n bigint)
RETURNS SETOF uuid
-- Few rows (at most `n`): the planner then looks each one up by its key.
ROWS 100
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF org IS DISTINCT FROM auth.worker_org_id() AND NOT org = ANY (auth.org_ids('member')) THEN
        RETURN;
    END IF;
    RETURN QUERY EXECUTE
        'SELECT c.id FROM public.knowledge_chunks c
         WHERE c.org_id = $1 AND c.search @@ $3 AND ($4 IS NULL OR NOT c.search @@ $4)
           AND ($2 IS NULL OR c.agent_id IS NULL OR c.agent_id = $2)
         LIMIT $5'
        USING org, agent, words, but_not, n;
END
$$;
REVOKE ALL ON FUNCTION auth.knowledge_text_matches(uuid, uuid, tsquery, tsquery, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION auth.knowledge_text_matches(uuid, uuid, tsquery, tsquery, bigint)
    TO authenticated, api_worker;
-- The owner reads the chunks in it (the table's policies apply to the owner too).
DO $$
BEGIN
    EXECUTE format('CREATE POLICY knowledge_chunks_definer ON knowledge_chunks FOR SELECT TO %I
                    USING (true)', current_user);
END
$$;
