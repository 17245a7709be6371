-- Where a new org's knowledge chunks go. The chunks are hash-partitioned by org
-- (20261210000001), and a search reads its org's partition, which it shares with the
-- other orgs whose ids hash there: its vector search walks their embeddings too (the
-- HNSW graph is the partition's) and skips them, and its full-text lookups read their
-- postings. With 100 orgs over 64 partitions by hash alone, one partition held six
-- orgs and seventeen none, and a search in the crowded one took 4× as long in its
-- vector statement (bench/README.md). So a new org's id is picked, among candidates
-- the server generates, to hash into the partition holding the fewest chunks (as of
-- its statistics, which autovacuum keeps), ties broken at random.
CREATE FUNCTION knowledge_quiet_org_id(candidates uuid[]) RETURNS uuid
    LANGUAGE sql VOLATILE PARALLEL RESTRICTED
    SET search_path = pg_catalog, public
RETURN (
    WITH parts AS (
        SELECT greatest(c.reltuples, 0) AS chunks,
               regexp_match(pg_get_expr(c.relpartbound, c.oid),
                            'modulus (\d+), remainder (\d+)', 'i') AS bound
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'public.knowledge_chunks'::regclass
    ),
    quietest AS (
        SELECT bound[1]::int AS modulus, bound[2]::int AS remainder
        FROM parts WHERE bound IS NOT NULL
        ORDER BY chunks, random()
        LIMIT 1
    )
    SELECT coalesce(
        (SELECT u.id
         FROM unnest(candidates) WITH ORDINALITY AS u (id, n), quietest q
         WHERE satisfies_hash_partition('public.knowledge_chunks'::regclass, q.modulus,
                                        q.remainder, u.id)
         ORDER BY u.n
         LIMIT 1),
        candidates[1])
);
REVOKE ALL ON FUNCTION knowledge_quiet_org_id(uuid[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION knowledge_quiet_org_id(uuid[]) TO authenticated;
