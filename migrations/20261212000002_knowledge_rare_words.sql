-- Full-text candidates with some of the words, looked up by the query's rarer words.
--
-- The lookup of chunks with any of the words built the GIN bitmap of every posting of
-- every word before it took the first `n`: a query with a few common words (each in ~5 %
-- of the org's chunks) put ~17,000 postings in it, 4–5 ms of a search's ~13 ms in the
-- database, to keep 100 chunks in table order — a sample dominated by the common words.
-- This function looks up only the rarest words, as many as the index's statistics say
-- will give `n` candidates three times over; a chunk with a rare word of the query is the
-- likelier answer anyway. When those give fewer than `n`, the rest come from the other
-- words, as before. The query's meaning for ranking is unchanged: the statement ranks the
-- candidates against all the words.
--
-- Frequencies are those ANALYZE keeps for the index's expression on the org's partition
-- (the most common lexemes and their shares of the partition's rows); a word not among
-- them is rarer than all of those. Without statistics (a new partition, a query with
-- phrases or exclusions) every word is looked up, as before.

-- The words of `words` (a plain OR of lexemes) worth looking up in `org`'s partition to
-- find about `n` chunks: the rarest first, until their estimated postings reach 3 × `n`.
-- NULL: look every word up (no statistics, or not a plain OR of lexemes).
CREATE FUNCTION auth.knowledge_rare_words(org uuid, words tsquery, n bigint) RETURNS tsquery
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    index_name name;
    chunks real;
    elems text[];
    freqs real[];
    chosen text[];
    total integer;
BEGIN
    IF numnode(words) < 3 OR words::text ~ '[&!<]' THEN
        RETURN NULL;
    END IF;
    -- The org's partition's part of the search index, and what ANALYZE saw in it. One
    -- step at a time: pg_stats is a view over every column's statistics, read through
    -- its index only for a known name.
    SELECT ic.relname, p.reltuples INTO index_name, chunks
    FROM pg_class p
         JOIN pg_index i ON i.indrelid = p.oid
         JOIN pg_inherits x ON x.inhrelid = i.indexrelid
                           AND x.inhparent = 'public.knowledge_chunks_search_idx'::regclass
         JOIN pg_class ic ON ic.oid = i.indexrelid
    WHERE p.oid = (SELECT c.tableoid FROM public.knowledge_chunks c WHERE c.org_id = org LIMIT 1);
    IF index_name IS NULL OR chunks <= 0 THEN
        RETURN NULL;
    END IF;
    SELECT s.most_common_elems::text::text[], s.most_common_elem_freqs INTO elems, freqs
    FROM pg_stats s WHERE s.schemaname = 'public' AND s.tablename = index_name;
    IF elems IS NULL THEN
        RETURN NULL;
    END IF;
    WITH lexemes AS (
        -- Each lexeme as the query prints it ('…', quotes doubled, backslashes escaped)
        -- and as the statistics hold it.
        SELECT DISTINCT m[1] AS quoted,
               replace(replace(substr(m[1], 2, length(m[1]) - 2), '''''', ''''), '\\', '\')
                   AS lexeme
        FROM regexp_matches(words::text, '(''(?:[^''\\]|''''|\\.)*'')', 'g') AS m
    ),
    estimates AS (
        SELECT l.quoted,
               -- Not among the most common: rarer than the rarest of them (the share
               -- after the lexemes' own).
               chunks * coalesce(c.freq, freqs[cardinality(elems) + 1] / 2) AS postings
        FROM lexemes l
             LEFT JOIN unnest(elems, freqs[1:cardinality(elems)]) AS c(lexeme, freq)
                    ON c.lexeme = l.lexeme
    ),
    running AS (
        SELECT quoted, coalesce(sum(postings) OVER (ORDER BY postings, quoted
                                                   ROWS BETWEEN UNBOUNDED PRECEDING
                                                        AND 1 PRECEDING), 0) AS before
        FROM estimates
    )
    SELECT array_agg(quoted ORDER BY quoted) FILTER (WHERE before < 3 * n), count(*)
    INTO chosen, total
    FROM running;
    IF chosen IS NULL OR cardinality(chosen) >= total THEN
        RETURN NULL;
    END IF;
    RETURN array_to_string(chosen, ' | ')::tsquery;
END
$$;
REVOKE ALL ON FUNCTION auth.knowledge_rare_words(uuid, tsquery, bigint) FROM PUBLIC;

-- Candidates with some of `words` (the OR of a query's words): those with its rarer words
-- first, then, when they are fewer than `n`, those with the others.
CREATE FUNCTION auth.knowledge_text_some_candidates(org uuid, agent uuid, words tsquery, n bigint)
RETURNS TABLE (id uuid, asset_id uuid, search tsvector)
ROWS 100
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    rare tsquery;
    found bigint;
    lookup constant text :=
        'SELECT c.id, c.asset_id, c.search
         FROM public.knowledge_chunks c
              JOIN public.knowledge_assets a
                ON a.id = c.asset_id AND a.generation = c.generation AND a.org_id = $1
         WHERE c.org_id = $1
           AND (c.search || public.knowledge_org_lexeme(c.org_id)) @@ public.knowledge_in_org($3, $1)
           AND ($2 IS NULL OR c.agent_id IS NULL OR c.agent_id = $2)
           AND ($5 IS NULL OR NOT c.search @@ $5)
         LIMIT $4';
BEGIN
    IF org IS DISTINCT FROM auth.worker_org_id() AND NOT org = ANY (auth.org_ids('member')) THEN
        RETURN;
    END IF;
    rare := auth.knowledge_rare_words(org, words, n);
    IF rare IS NULL THEN
        RETURN QUERY EXECUTE lookup USING org, agent, words, n, NULL::tsquery;
        RETURN;
    END IF;
    RETURN QUERY EXECUTE lookup USING org, agent, rare, n, NULL::tsquery;
    GET DIAGNOSTICS found = ROW_COUNT;
    IF found < n THEN
        RETURN QUERY EXECUTE lookup USING org, agent, words, n - found, rare;
    END IF;
END
$$;
REVOKE ALL ON FUNCTION auth.knowledge_text_some_candidates(uuid, uuid, tsquery, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION auth.knowledge_text_some_candidates(uuid, uuid, tsquery, bigint)
    TO authenticated, api_worker;
