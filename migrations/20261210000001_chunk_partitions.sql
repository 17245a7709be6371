-- Chunks live in 64 hash partitions of the org. One table held every org's chunks, so
-- an org's search walked indexes built over all of them: the GIN index's postings of a
-- common word and the HNSW graph (whose walk passes other orgs' vectors before it finds
-- enough of the org's) grow with the other orgs. With 1,000,000 chunks of 100 other orgs
-- beside an org's 100,000, its hybrid search took 2.6× as long as alone. Now each
-- partition has indexes of its own and a statement that names the org reads one
-- partition, shared on average with 1/64 of the other orgs.
--
-- A table cannot be partitioned in place: the chunks are copied into a new one. The
-- primary key must hold the partition key, so it is (id, org_id), the key the evidence
-- tables already reference; ids are random UUIDs made by the API.
-- The HNSW index is created again by `agents-api migrate` after the migrations (as
-- for any change of AI_EMBEDDING_DIMENSIONS), on every partition.

CREATE TABLE knowledge_chunks_partitioned (
    id           uuid NOT NULL,
    org_id       uuid NOT NULL,
    asset_id     uuid NOT NULL,
    agent_id     uuid,
    position     integer NOT NULL CONSTRAINT knowledge_chunks_position_check CHECK (position >= 0),
    content      text NOT NULL,
    token_count  integer NOT NULL
                 CONSTRAINT knowledge_chunks_token_count_check CHECK (token_count >= 0),
    metadata     jsonb NOT NULL DEFAULT '{}'::jsonb,
    search       tsvector GENERATED ALWAYS AS (to_tsvector('russian', content)) STORED,
    generation   integer NOT NULL
) PARTITION BY HASH (org_id);

DO $$
DECLARE
    embedded boolean := EXISTS (SELECT 1 FROM pg_attribute
                                WHERE attrelid = 'knowledge_chunks'::regclass
                                  AND attname = 'embedding' AND NOT attisdropped);
BEGIN
    IF embedded THEN
        ALTER TABLE knowledge_chunks_partitioned ADD COLUMN embedding vector;
    END IF;
    -- Read through the parent, a partition is checked by the parent's policies. Named
    -- directly (no role is granted it) it has row-level security with no policy: no rows.
    FOR i IN 0..63 LOOP
        EXECUTE format('CREATE TABLE knowledge_chunks_p%1$s PARTITION OF knowledge_chunks_partitioned
                            FOR VALUES WITH (MODULUS 64, REMAINDER %2$s);
                        ALTER TABLE knowledge_chunks_p%1$s ENABLE ROW LEVEL SECURITY;
                        ALTER TABLE knowledge_chunks_p%1$s FORCE ROW LEVEL SECURITY',
                       lpad(i::text, 2, '0'), i);
    END LOOP;
    IF embedded THEN
        INSERT INTO knowledge_chunks_partitioned (id, org_id, asset_id, agent_id, position,
            content, token_count, metadata, generation, embedding)
        SELECT id, org_id, asset_id, agent_id, position, content, token_count, metadata,
               generation, embedding
        FROM knowledge_chunks;
    ELSE
        INSERT INTO knowledge_chunks_partitioned (id, org_id, asset_id, agent_id, position,
            content, token_count, metadata, generation)
        SELECT id, org_id, asset_id, agent_id, position, content, token_count, metadata,
               generation
        FROM knowledge_chunks;
    END IF;
END
$$;

-- Takes the evidence tables' foreign keys along; they are made again below.
DROP TABLE knowledge_chunks CASCADE;
ALTER TABLE knowledge_chunks_partitioned RENAME TO knowledge_chunks;

ALTER TABLE knowledge_chunks
    ADD CONSTRAINT knowledge_chunks_pkey PRIMARY KEY (id, org_id),
    ADD CONSTRAINT knowledge_chunks_asset_generation_position_key
        UNIQUE (org_id, asset_id, generation, position),
    ADD CONSTRAINT knowledge_chunks_asset_id_org_id_fkey FOREIGN KEY (asset_id, org_id)
        REFERENCES knowledge_assets (id, org_id) ON DELETE CASCADE,
    ADD CONSTRAINT knowledge_chunks_agent_id_org_id_fkey FOREIGN KEY (agent_id, org_id)
        REFERENCES agents (id, org_id) ON DELETE SET NULL (agent_id);
CREATE INDEX knowledge_chunks_search_idx ON knowledge_chunks
    USING gin ((search || knowledge_org_lexeme(org_id)));

ALTER TABLE knowledge_entity_chunks
    ADD CONSTRAINT knowledge_entity_chunks_chunk_id_org_id_fkey FOREIGN KEY (chunk_id, org_id)
        REFERENCES knowledge_chunks (id, org_id) ON DELETE CASCADE;
ALTER TABLE knowledge_relationship_chunks
    ADD CONSTRAINT knowledge_relationship_chunks_chunk_id_org_id_fkey
        FOREIGN KEY (chunk_id, org_id) REFERENCES knowledge_chunks (id, org_id) ON DELETE CASCADE;

-- The policies and grants of 20261206000001 and 20261208000001, on the new table (a
-- query through it is checked by its policies; the partitions are never named).
ALTER TABLE knowledge_chunks ENABLE ROW LEVEL SECURITY;
ALTER TABLE knowledge_chunks FORCE ROW LEVEL SECURITY;
CREATE POLICY knowledge_chunks_select ON knowledge_chunks FOR SELECT TO authenticated
    USING (org_id = ANY ((SELECT auth.org_ids('member'))::uuid[]));
CREATE POLICY knowledge_chunks_insert ON knowledge_chunks FOR INSERT TO authenticated
    WITH CHECK (org_id = ANY ((SELECT auth.org_ids('admin'))::uuid[]));
CREATE POLICY knowledge_chunks_update ON knowledge_chunks FOR UPDATE TO authenticated
    USING (org_id = ANY ((SELECT auth.org_ids('admin'))::uuid[]))
    WITH CHECK (org_id = ANY ((SELECT auth.org_ids('admin'))::uuid[]));
CREATE POLICY knowledge_chunks_delete ON knowledge_chunks FOR DELETE TO authenticated
    USING (org_id = ANY ((SELECT auth.org_ids('admin'))::uuid[]));
CREATE POLICY knowledge_chunks_worker ON knowledge_chunks FOR ALL TO api_worker
    USING (org_id = auth.worker_org_id())
    WITH CHECK (org_id = auth.worker_org_id());
DO $$
BEGIN
    EXECUTE format('CREATE POLICY knowledge_chunks_definer ON knowledge_chunks FOR SELECT TO %I
                    USING (true)', current_user);
END
$$;
GRANT SELECT, INSERT, UPDATE, DELETE ON knowledge_chunks TO authenticated, api_worker;
