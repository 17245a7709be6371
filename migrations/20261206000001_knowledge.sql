-- The knowledge base (spec §12) and the per-org AI provider settings and usage (§11).
-- Every table is org-owned with RLS like the rest: members read, admins write, api_worker
-- sees one org per transaction. Children carry org_id and reach their parent through a
-- composite foreign key, so a row can never point into another org.

-- An asset may name the agent it is for; the agent's (id, org_id) is the key for that.
ALTER TABLE agents ADD CONSTRAINT agents_id_org_id_key UNIQUE (id, org_id);

CREATE TABLE ai_settings (
    org_id          uuid PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
    -- The associated data of the encrypted key (row id + column), as for CRM secrets.
    id              uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    base_url        text CHECK (char_length(base_url) <= 2000),
    api_key_enc     bytea,
    chat_model      text CHECK (chat_model ~ '^[A-Za-z0-9._:/@-]{1,200}$'),
    embedding_model text CHECK (embedding_model ~ '^[A-Za-z0-9._:/@-]{1,200}$'),
    updated_by      uuid,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Tokens and calls per org, day, kind (chat, embedding, …) and model.
CREATE TABLE ai_usage (
    org_id            uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    day               date NOT NULL,
    kind              text NOT NULL CHECK (char_length(kind) <= 50),
    model             text NOT NULL CHECK (char_length(model) <= 200),
    requests          bigint NOT NULL DEFAULT 0,
    prompt_tokens     bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (org_id, day, kind, model)
);

CREATE TABLE knowledge_assets (
    id            uuid PRIMARY KEY,
    org_id        uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    agent_id      uuid,
    filename      text NOT NULL CHECK (char_length(filename) BETWEEN 1 AND 255),
    format        text NOT NULL CHECK (format IN ('text', 'markdown', 'html', 'pdf', 'docx')),
    content_type  text NOT NULL CHECK (char_length(content_type) <= 200),
    size_bytes    bigint NOT NULL CHECK (size_bytes > 0),
    sha256        bytea NOT NULL CHECK (octet_length(sha256) = 32),
    -- Where the bytes are: `postgres` (knowledge_asset_files) or an object-store key.
    storage       text NOT NULL DEFAULT 'postgres' CHECK (char_length(storage) <= 1000),
    status        text NOT NULL DEFAULT 'queued'
                  CHECK (status IN ('queued', 'processing', 'indexed', 'failed')),
    error         text CHECK (char_length(error) <= 2000),
    progress      jsonb NOT NULL DEFAULT '{"stage": "queued", "done": 0, "total": 0}'::jsonb,
    chunks_count  integer NOT NULL DEFAULT 0,
    embedded      boolean NOT NULL DEFAULT false,
    created_by    uuid,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    -- The same bytes twice in one org are one asset.
    CONSTRAINT knowledge_assets_org_sha256_key UNIQUE (org_id, sha256),
    UNIQUE (id, org_id),
    FOREIGN KEY (agent_id, org_id) REFERENCES agents (id, org_id) ON DELETE SET NULL (agent_id)
);
CREATE INDEX knowledge_assets_org_id_idx ON knowledge_assets (org_id, id DESC);
CREATE INDEX knowledge_assets_agent_idx ON knowledge_assets (org_id, agent_id, id DESC);

-- The uploaded bytes when they live in PostgreSQL (the default).
CREATE TABLE knowledge_asset_files (
    asset_id  uuid PRIMARY KEY,
    org_id    uuid NOT NULL,
    bytes     bytea NOT NULL,
    FOREIGN KEY (asset_id, org_id) REFERENCES knowledge_assets (id, org_id) ON DELETE CASCADE
);
-- Files are compressed already (PDF, DOCX) or small; out of line, uncompressed.
ALTER TABLE knowledge_asset_files ALTER COLUMN bytes SET STORAGE EXTERNAL;

-- A chunk is `pending` while its asset is being (re)processed: search sees only the
-- asset's previous chunks until the new set is complete, then one transaction swaps them.
-- `agent_id` is the asset's, copied so that an agent-scoped search needs no join.
CREATE TABLE knowledge_chunks (
    id           uuid PRIMARY KEY,
    org_id       uuid NOT NULL,
    asset_id     uuid NOT NULL,
    agent_id     uuid,
    pending      boolean NOT NULL DEFAULT true,
    position     integer NOT NULL CHECK (position >= 0),
    content      text NOT NULL,
    token_count  integer NOT NULL CHECK (token_count >= 0),
    metadata     jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- The `russian` configuration stems Cyrillic words with the Russian stemmer and ASCII
    -- words with the English one (stop words of both), so one vector serves both languages.
    search       tsvector GENERATED ALWAYS AS (to_tsvector('russian', content)) STORED,
    UNIQUE (asset_id, pending, position),
    UNIQUE (id, org_id),
    FOREIGN KEY (asset_id, org_id) REFERENCES knowledge_assets (id, org_id) ON DELETE CASCADE,
    FOREIGN KEY (agent_id, org_id) REFERENCES agents (id, org_id) ON DELETE SET NULL (agent_id)
);
CREATE INDEX knowledge_chunks_search_idx ON knowledge_chunks USING gin (search)
    WHERE NOT pending;
CREATE INDEX knowledge_chunks_org_idx ON knowledge_chunks (org_id, asset_id, position);

-- The vector column exists only where pgvector does; without it search is full-text only.
-- Its size is not fixed here: `agents-api migrate` creates the HNSW index for the
-- configured AI_EMBEDDING_DIMENSIONS (an expression index per size).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector') THEN
        CREATE EXTENSION IF NOT EXISTS vector;
        ALTER TABLE knowledge_chunks ADD COLUMN embedding vector;
    END IF;
END
$$;

CREATE TABLE knowledge_entities (
    id               uuid PRIMARY KEY,
    org_id           uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name             text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    -- Lower case, whitespace collapsed, punctuation trimmed: what merges two mentions.
    normalized_name  text NOT NULL CHECK (char_length(normalized_name) BETWEEN 1 AND 200),
    type             text NOT NULL CHECK (type IN ('person', 'organization', 'product', 'service',
                         'location', 'event', 'concept', 'price', 'policy', 'other')),
    description      text NOT NULL DEFAULT '' CHECK (char_length(description) <= 2000),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT knowledge_entities_org_name_type_key UNIQUE (org_id, normalized_name, type),
    UNIQUE (id, org_id)
);
CREATE INDEX knowledge_entities_org_idx ON knowledge_entities (org_id, id DESC);

CREATE TABLE knowledge_relationships (
    id          uuid PRIMARY KEY,
    org_id      uuid NOT NULL,
    source_id   uuid NOT NULL,
    target_id   uuid NOT NULL,
    type        text NOT NULL CHECK (char_length(type) BETWEEN 1 AND 100),
    description text NOT NULL DEFAULT '' CHECK (char_length(description) <= 2000),
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT knowledge_relationships_edge_key UNIQUE (org_id, source_id, target_id, type),
    UNIQUE (id, org_id),
    FOREIGN KEY (source_id, org_id) REFERENCES knowledge_entities (id, org_id) ON DELETE CASCADE,
    FOREIGN KEY (target_id, org_id) REFERENCES knowledge_entities (id, org_id) ON DELETE CASCADE
);
CREATE INDEX knowledge_relationships_target_idx ON knowledge_relationships (target_id);

-- Evidence: which chunks a fact came from. A fact whose last chunk is gone goes too
-- (deleting an asset removes its chunks, then its orphaned facts).
CREATE TABLE knowledge_entity_chunks (
    org_id     uuid NOT NULL,
    entity_id  uuid NOT NULL,
    chunk_id   uuid NOT NULL,
    PRIMARY KEY (entity_id, chunk_id),
    FOREIGN KEY (entity_id, org_id) REFERENCES knowledge_entities (id, org_id) ON DELETE CASCADE,
    FOREIGN KEY (chunk_id, org_id) REFERENCES knowledge_chunks (id, org_id) ON DELETE CASCADE
);
CREATE INDEX knowledge_entity_chunks_chunk_idx ON knowledge_entity_chunks (chunk_id);

CREATE TABLE knowledge_relationship_chunks (
    org_id           uuid NOT NULL,
    relationship_id  uuid NOT NULL,
    chunk_id         uuid NOT NULL,
    PRIMARY KEY (relationship_id, chunk_id),
    FOREIGN KEY (relationship_id, org_id) REFERENCES knowledge_relationships (id, org_id)
        ON DELETE CASCADE,
    FOREIGN KEY (chunk_id, org_id) REFERENCES knowledge_chunks (id, org_id) ON DELETE CASCADE
);
CREATE INDEX knowledge_relationship_chunks_chunk_idx ON knowledge_relationship_chunks (chunk_id);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['ai_usage', 'knowledge_assets', 'knowledge_asset_files',
                             'knowledge_chunks', 'knowledge_entities', 'knowledge_relationships',
                             'knowledge_entity_chunks', 'knowledge_relationship_chunks'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format($p$CREATE POLICY %1$s_select ON %1$I FOR SELECT TO authenticated
                          USING (org_id = ANY ((SELECT auth.org_ids('member'))::uuid[]))$p$, t);
        EXECUTE format($p$CREATE POLICY %1$s_insert ON %1$I FOR INSERT TO authenticated
                          WITH CHECK (org_id = ANY ((SELECT auth.org_ids('admin'))::uuid[]))$p$, t);
        EXECUTE format($p$CREATE POLICY %1$s_update ON %1$I FOR UPDATE TO authenticated
                          USING (org_id = ANY ((SELECT auth.org_ids('admin'))::uuid[]))
                          WITH CHECK (org_id = ANY ((SELECT auth.org_ids('admin'))::uuid[]))$p$, t);
        EXECUTE format($p$CREATE POLICY %1$s_delete ON %1$I FOR DELETE TO authenticated
                          USING (org_id = ANY ((SELECT auth.org_ids('admin'))::uuid[]))$p$, t);
        EXECUTE format($p$CREATE POLICY %1$s_worker ON %1$I FOR ALL TO api_worker
                          USING (org_id = auth.worker_org_id())
                          WITH CHECK (org_id = auth.worker_org_id())$p$, t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO authenticated, api_worker', t);
    END LOOP;
END
$$;

-- ai_settings: admins read and write (members never see even the base URL); the owner
-- role reads and rewrites the encrypted key for `rotate-keys`, as for the CRM secrets.
ALTER TABLE ai_settings ENABLE ROW LEVEL SECURITY;
ALTER TABLE ai_settings FORCE ROW LEVEL SECURITY;
CREATE POLICY ai_settings_admin ON ai_settings FOR ALL TO authenticated
    USING (org_id = ANY ((SELECT auth.org_ids('admin'))::uuid[]))
    WITH CHECK (org_id = ANY ((SELECT auth.org_ids('admin'))::uuid[]));
CREATE POLICY ai_settings_worker ON ai_settings FOR ALL TO api_worker
    USING (org_id = auth.worker_org_id()) WITH CHECK (org_id = auth.worker_org_id());
GRANT SELECT, INSERT, UPDATE, DELETE ON ai_settings TO authenticated, api_worker;
DO $$
BEGIN
    EXECUTE format('CREATE POLICY ai_settings_definer ON ai_settings FOR ALL TO %I
                    USING (true) WITH CHECK (true)', current_user);
END
$$;
