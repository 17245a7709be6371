-- The whole schema of agents-api: roles, the auth helpers, twelve tables, row-level
-- security on every one of them, and the grants of the runtime roles.
--
-- Roles are cluster-wide while migrations are per database, so every role statement
-- tolerates the role already existing (another database of the same cluster, or a
-- replica migrating at the same moment).

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['authenticated', 'anon', 'api_worker', 'api_runtime'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN NOBYPASSRLS', r);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;
            END;
        END IF;
    END LOOP;
END
$$;

-- The login role of the server is created by the operator IN ROLE api_runtime; through
-- this group it may switch to each of the three request roles.
DO $$
BEGIN
    IF NOT pg_has_role('api_runtime', 'authenticated', 'MEMBER')
       OR NOT pg_has_role('api_runtime', 'anon', 'MEMBER')
       OR NOT pg_has_role('api_runtime', 'api_worker', 'MEMBER') THEN
        GRANT authenticated, anon, api_worker TO api_runtime;
    END IF;
EXCEPTION WHEN unique_violation OR duplicate_object THEN
    NULL;
END
$$;

CREATE SCHEMA IF NOT EXISTS auth;
GRANT USAGE ON SCHEMA auth TO authenticated, anon, api_worker;
GRANT USAGE ON SCHEMA public TO authenticated, anon, api_worker;

-- Supabase-compatible readers of the request's verified JWT claims. The claims are set
-- transaction-locally by the server; outside such a transaction they are NULL.
CREATE OR REPLACE FUNCTION auth.jwt() RETURNS jsonb
LANGUAGE sql STABLE
AS $$
    SELECT coalesce(nullif(current_setting('request.jwt.claims', true), ''), 'null')::jsonb
$$;

CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid
LANGUAGE sql STABLE
AS $$
    SELECT nullif(auth.jwt() ->> 'sub', '')::uuid
$$;

-- The org a job or webhook transaction of api_worker is scoped to.
CREATE OR REPLACE FUNCTION auth.worker_org_id() RETURNS uuid
LANGUAGE sql STABLE
AS $$
    SELECT nullif(current_setting('app.org_id', true), '')::uuid
$$;

CREATE OR REPLACE FUNCTION auth.role_rank(role text) RETURNS int
LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE role WHEN 'owner' THEN 3 WHEN 'admin' THEN 2 WHEN 'member' THEN 1 ELSE 0 END
$$;

CREATE TABLE organizations (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL CHECK (char_length(name) BETWEEN 2 AND 100),
    slug        text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    created_by  uuid NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE organization_members (
    org_id      uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id     uuid NOT NULL,
    role        text NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX organization_members_user_idx ON organization_members (user_id, org_id);

-- The orgs in which the current user holds at least `min_role`. SECURITY DEFINER so that
-- policies on organization_members can use it without recursing into themselves; it
-- reads only the caller's own memberships (auth.uid()). Policies call it as
-- `(SELECT auth.org_ids(...))` so it runs once per statement, not once per row.
CREATE OR REPLACE FUNCTION auth.org_ids(min_role text) RETURNS uuid[]
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
    SELECT coalesce(array_agg(m.org_id), '{}')
    FROM public.organization_members m
    WHERE m.user_id = auth.uid()
      AND auth.role_rank(m.role) >= auth.role_rank(min_role)
$$;

-- Whether an org has any member yet: lets the creator of a new org add themselves as
-- its first owner, and nobody else.
CREATE OR REPLACE FUNCTION auth.org_has_members(org uuid) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
    SELECT EXISTS (SELECT 1 FROM public.organization_members m WHERE m.org_id = org)
$$;

REVOKE ALL ON FUNCTION auth.org_ids(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION auth.org_has_members(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION auth.org_ids(text), auth.org_has_members(uuid) TO authenticated, api_worker;

CREATE TABLE crm_credentials (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id              uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    provider            text NOT NULL CHECK (provider IN ('kommo')),
    client_id           text NOT NULL,
    client_secret_enc   bytea NOT NULL,
    redirect_uri        text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, provider)
);

CREATE TABLE crm_connections (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id              uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    provider            text NOT NULL CHECK (provider IN ('kommo')),
    base_domain         text NOT NULL
                        CHECK (base_domain ~ '^[a-z0-9][a-z0-9-]{0,62}\.(kommo\.com|amocrm\.ru)$'),
    account_id          bigint,
    scope               text,
    status              text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'connected', 'error', 'disconnected')),
    access_token_enc    bytea,
    refresh_token_enc   bytea,
    token_expires_at    timestamptz,
    webhook_token_hash  bytea,
    sync                jsonb NOT NULL DEFAULT '{}'::jsonb,
    last_error          text,
    created_by          uuid,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, provider, base_domain),
    -- Target of the composite foreign keys that keep children in their connection's org.
    UNIQUE (id, org_id)
);
CREATE INDEX crm_connections_token_expiry_idx ON crm_connections (token_expires_at)
    WHERE status = 'connected';

CREATE TABLE agents (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id          uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    connection_id   uuid,
    name            text NOT NULL CHECK (char_length(name) BETWEEN 2 AND 100),
    status          text NOT NULL DEFAULT 'draft' CHECK (status IN ('active', 'inactive', 'draft')),
    model           text NOT NULL CHECK (model ~ '^[A-Za-z0-9._:/-]{1,100}$'),
    instructions    text NOT NULL DEFAULT '' CHECK (char_length(instructions) <= 20000),
    channels        text[] NOT NULL CHECK (cardinality(channels) > 0),
    schedule        text CHECK (char_length(schedule) <= 200),
    temperature     double precision NOT NULL DEFAULT 0.7 CHECK (temperature BETWEEN 0 AND 2),
    max_tokens      integer NOT NULL DEFAULT 2048 CHECK (max_tokens BETWEEN 1 AND 32000),
    settings        jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(settings) = 'object'),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- An agent can only point at a connection of its own org.
    FOREIGN KEY (connection_id, org_id) REFERENCES crm_connections (id, org_id)
        ON DELETE SET NULL (connection_id)
);
-- Keyset pagination walks ids (UUIDv7, so newest first) within one org.
CREATE INDEX agents_org_id_idx ON agents (org_id, id DESC);
CREATE INDEX agents_org_status_id_idx ON agents (org_id, status, id DESC);

CREATE TABLE crm_pipelines (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id          uuid NOT NULL,
    connection_id   uuid NOT NULL,
    external_id     bigint NOT NULL,
    name            text NOT NULL,
    sort            integer NOT NULL DEFAULT 0,
    is_main         boolean NOT NULL DEFAULT false,
    is_archive      boolean NOT NULL DEFAULT false,
    synced_at       timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (connection_id, org_id) REFERENCES crm_connections (id, org_id) ON DELETE CASCADE,
    UNIQUE (connection_id, external_id),
    UNIQUE (id, org_id)
);

CREATE TABLE crm_pipeline_stages (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id          uuid NOT NULL,
    pipeline_id     uuid NOT NULL,
    external_id     bigint NOT NULL,
    name            text NOT NULL,
    sort            integer NOT NULL DEFAULT 0,
    color           text,
    type            integer,
    FOREIGN KEY (pipeline_id, org_id) REFERENCES crm_pipelines (id, org_id) ON DELETE CASCADE,
    UNIQUE (pipeline_id, external_id)
);

CREATE TABLE crm_contacts (
    id                      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id                  uuid NOT NULL,
    connection_id           uuid NOT NULL,
    external_id             bigint NOT NULL,
    name                    text,
    first_name              text,
    last_name               text,
    responsible_user_id     bigint,
    custom_fields           jsonb NOT NULL DEFAULT '[]'::jsonb,
    external_created_at     timestamptz,
    external_updated_at     timestamptz,
    synced_at               timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (connection_id, org_id) REFERENCES crm_connections (id, org_id) ON DELETE CASCADE,
    UNIQUE (connection_id, external_id)
);
CREATE INDEX crm_contacts_connection_id_idx ON crm_contacts (connection_id, id DESC);

CREATE TABLE oauth_states (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id          uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id         uuid NOT NULL,
    provider        text NOT NULL DEFAULT 'kommo',
    state_hash      bytea NOT NULL UNIQUE,
    redirect_uri    text NOT NULL,
    expires_at      timestamptz NOT NULL,
    consumed_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX oauth_states_expires_at_idx ON oauth_states (expires_at);

-- One row per received webhook delivery (kind 'delivery', the raw body kept so that
-- nothing is lost) and one per event parsed out of it (kind 'event').
CREATE TABLE webhook_events (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id          uuid NOT NULL,
    connection_id   uuid NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('delivery', 'event')),
    delivery_id     uuid REFERENCES webhook_events (id) ON DELETE CASCADE,
    body_sha256     bytea,
    content_type    text,
    raw_body        text,
    type            text,
    subtype         text,
    entity_id       bigint,
    payload         jsonb NOT NULL DEFAULT '{}'::jsonb,
    status          text NOT NULL DEFAULT 'received'
                    CHECK (status IN ('received', 'processed', 'failed')),
    error           text,
    received_at     timestamptz NOT NULL DEFAULT now(),
    processed_at    timestamptz,
    FOREIGN KEY (connection_id, org_id) REFERENCES crm_connections (id, org_id) ON DELETE CASCADE
);
CREATE INDEX webhook_events_org_id_idx ON webhook_events (org_id, id DESC);
CREATE UNIQUE INDEX webhook_events_dedup_idx ON webhook_events (connection_id, body_sha256)
    WHERE kind = 'delivery';

CREATE TABLE audit_logs (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id          uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    actor_user_id   uuid,
    actor_type      text NOT NULL DEFAULT 'user' CHECK (actor_type IN ('user', 'system', 'kommo')),
    action          text NOT NULL,
    entity          text NOT NULL,
    entity_id       text,
    request_id      text,
    ip              inet,
    user_agent      text,
    changes         jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_logs_org_id_idx ON audit_logs (org_id, id DESC);

CREATE TABLE jobs (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id          uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    type            text NOT NULL,
    status          text NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    payload         jsonb NOT NULL DEFAULT '{}'::jsonb,
    result          jsonb,
    error           text,
    attempts        integer NOT NULL DEFAULT 0,
    max_attempts    integer NOT NULL DEFAULT 5 CHECK (max_attempts BETWEEN 1 AND 100),
    created_by      uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz
);
CREATE INDEX jobs_org_id_idx ON jobs (org_id, id DESC);

-- Row-level security: ENABLE + FORCE on every table, so that not even the owner reads
-- around the policies. Policies name the roles they are for; a role with no policy on a
-- table sees nothing.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['organizations', 'organization_members', 'agents', 'crm_credentials',
                             'crm_connections', 'crm_pipelines', 'crm_pipeline_stages', 'crm_contacts',
                             'oauth_states', 'webhook_events', 'audit_logs', 'jobs'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
    END LOOP;
END
$$;

-- The owner (the role running this migration) reads memberships only through the
-- SECURITY DEFINER helpers above; with FORCE it would otherwise see no rows at all.
DO $$
BEGIN
    EXECUTE format(
        'CREATE POLICY members_definer_read ON organization_members FOR SELECT TO %I USING (true)',
        current_user);
END
$$;

-- organizations
CREATE POLICY orgs_select ON organizations FOR SELECT TO authenticated
    USING (id = ANY ((SELECT auth.org_ids('member'))::uuid[]) OR created_by = auth.uid());
CREATE POLICY orgs_insert ON organizations FOR INSERT TO authenticated
    WITH CHECK (created_by = auth.uid());
CREATE POLICY orgs_update ON organizations FOR UPDATE TO authenticated
    USING (id = ANY ((SELECT auth.org_ids('admin'))::uuid[]))
    WITH CHECK (id = ANY ((SELECT auth.org_ids('admin'))::uuid[]));
CREATE POLICY orgs_delete ON organizations FOR DELETE TO authenticated
    USING (id = ANY ((SELECT auth.org_ids('owner'))::uuid[]));
CREATE POLICY orgs_worker ON organizations FOR SELECT TO api_worker
    USING (id = auth.worker_org_id());

-- organization_members: owners manage roles; admins may only add plain members; the
-- creator of an org with no members yet may make themselves its first owner.
CREATE POLICY members_select ON organization_members FOR SELECT TO authenticated
    USING (user_id = auth.uid() OR org_id = ANY ((SELECT auth.org_ids('member'))::uuid[]));
CREATE POLICY members_insert ON organization_members FOR INSERT TO authenticated
    WITH CHECK (
        org_id = ANY ((SELECT auth.org_ids('owner'))::uuid[])
        OR (role = 'member' AND org_id = ANY ((SELECT auth.org_ids('admin'))::uuid[]))
        OR (user_id = auth.uid() AND role = 'owner' AND NOT auth.org_has_members(org_id)
            AND EXISTS (SELECT 1 FROM organizations o
                        WHERE o.id = org_id AND o.created_by = auth.uid()))
    );
CREATE POLICY members_update ON organization_members FOR UPDATE TO authenticated
    USING (org_id = ANY ((SELECT auth.org_ids('owner'))::uuid[]))
    WITH CHECK (org_id = ANY ((SELECT auth.org_ids('owner'))::uuid[]));
CREATE POLICY members_delete ON organization_members FOR DELETE TO authenticated
    USING (org_id = ANY ((SELECT auth.org_ids('owner'))::uuid[]));
CREATE POLICY members_worker ON organization_members FOR SELECT TO api_worker
    USING (org_id = auth.worker_org_id());

-- audit_logs: append-only; admins read.
CREATE POLICY audit_select ON audit_logs FOR SELECT TO authenticated
    USING (org_id = ANY ((SELECT auth.org_ids('admin'))::uuid[]));
CREATE POLICY audit_insert ON audit_logs FOR INSERT TO authenticated
    WITH CHECK (org_id = ANY ((SELECT auth.org_ids('member'))::uuid[]));
CREATE POLICY audit_worker_insert ON audit_logs FOR INSERT TO api_worker
    WITH CHECK (org_id = auth.worker_org_id());

-- oauth_states belong to the user who started the flow, within an org they administer.
CREATE POLICY oauth_states_user ON oauth_states FOR ALL TO authenticated
    USING (user_id = auth.uid())
    WITH CHECK (user_id = auth.uid() AND org_id = ANY ((SELECT auth.org_ids('admin'))::uuid[]));
CREATE POLICY oauth_states_worker ON oauth_states FOR ALL TO api_worker
    USING (org_id = auth.worker_org_id()) WITH CHECK (org_id = auth.worker_org_id());

-- Org-owned resources: members read, admins write; api_worker sees one org per transaction.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['agents', 'crm_credentials', 'crm_connections', 'crm_pipelines',
                             'crm_pipeline_stages', 'crm_contacts', 'webhook_events', 'jobs'] LOOP
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
    END LOOP;
END
$$;

-- Grants: the runtime roles get only the verbs their policies can use. audit_logs has no
-- UPDATE or DELETE for anyone but the owner.
GRANT SELECT, INSERT, UPDATE, DELETE ON organizations, organization_members, agents,
    crm_credentials, crm_connections, crm_pipelines, crm_pipeline_stages, crm_contacts,
    oauth_states, webhook_events, jobs TO authenticated;
GRANT SELECT, INSERT ON audit_logs TO authenticated;
GRANT SELECT ON organizations, organization_members TO api_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON agents, crm_credentials, crm_connections, crm_pipelines,
    crm_pipeline_stages, crm_contacts, oauth_states, webhook_events, jobs TO api_worker;
GRANT INSERT ON audit_logs TO api_worker;
