-- The agent runtime (spec §13): when agents answer (routes to Kommo pipeline stages,
-- working hours, delays, handoff rules), the conversations they hold with leads and the
-- messages of those conversations. Org-owned with RLS like the rest.

ALTER TABLE agents
    -- {timezone, days: {mon: [["09:00","18:00"]], …}}; NULL: always open.
    ADD COLUMN working_hours       jsonb CHECK (working_hours IS NULL OR jsonb_typeof(working_hours) = 'object'),
    ADD COLUMN response_delay_secs integer NOT NULL DEFAULT 0
                                   CHECK (response_delay_secs BETWEEN 0 AND 3600),
    ADD COLUMN off_hours_reply     text CHECK (char_length(off_hours_reply) BETWEEN 1 AND 2000),
    ADD COLUMN handoff_keywords    text[] NOT NULL DEFAULT '{}'
                                   CHECK (cardinality(handoff_keywords) <= 50),
    ADD COLUMN max_turns           integer CHECK (max_turns BETWEEN 1 AND 1000);

-- A Kommo Chats channel (amojo) through which replies go into the chat itself; the
-- secret is sealed by the key ring like the other CRM secrets (row id + column as AAD).
ALTER TABLE crm_connections
    ADD COLUMN chat_channel     jsonb,
    ADD COLUMN chat_secret_enc  bytea;

-- Which pipeline stages of which connection an agent works; stage_id NULL = all stages.
CREATE TABLE agent_routes (
    id             uuid PRIMARY KEY,
    org_id         uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    agent_id       uuid NOT NULL,
    connection_id  uuid NOT NULL,
    pipeline_id    bigint NOT NULL CHECK (pipeline_id > 0),
    stage_id       bigint CHECK (stage_id > 0),
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT agent_routes_stage_key UNIQUE NULLS NOT DISTINCT (agent_id, connection_id, pipeline_id, stage_id),
    FOREIGN KEY (agent_id, org_id) REFERENCES agents (id, org_id) ON DELETE CASCADE,
    FOREIGN KEY (connection_id, org_id) REFERENCES crm_connections (id, org_id) ON DELETE CASCADE
);
CREATE INDEX agent_routes_lookup_idx ON agent_routes (org_id, connection_id, pipeline_id);

-- One per (connection, chat): the thread of a lead's messages and the agent's answers.
CREATE TABLE conversations (
    id              uuid PRIMARY KEY,
    org_id          uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    connection_id   uuid NOT NULL,
    chat_id         text NOT NULL CHECK (char_length(chat_id) BETWEEN 1 AND 200),
    talk_id         text CHECK (char_length(talk_id) <= 200),
    lead_id         bigint,
    contact_id      bigint,
    origin          text CHECK (char_length(origin) <= 100),
    -- The agent that answers here (set by routing; kept for the conversation's life).
    agent_id        uuid,
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'handed_off')),
    handoff_reason  text CHECK (char_length(handoff_reason) <= 1000),
    -- Why the agent is not answering right now (no route, quota, off hours, …).
    notice          text CHECK (char_length(notice) <= 1000),
    -- The lead as last read from Kommo (pipeline, stage, responsible user, fields).
    lead            jsonb,
    -- The one live agent:reply job of this conversation (debounce across replicas).
    reply_job_id    uuid,
    reply_due_at    timestamptz,
    last_message_at timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT conversations_chat_key UNIQUE (org_id, connection_id, chat_id),
    UNIQUE (id, org_id),
    FOREIGN KEY (connection_id, org_id) REFERENCES crm_connections (id, org_id) ON DELETE CASCADE,
    FOREIGN KEY (agent_id, org_id) REFERENCES agents (id, org_id) ON DELETE SET NULL (agent_id)
);
CREATE INDEX conversations_org_idx ON conversations (org_id, id DESC);
CREATE INDEX conversations_lead_idx ON conversations (org_id, lead_id);

CREATE TABLE messages (
    id               uuid PRIMARY KEY,
    org_id           uuid NOT NULL,
    conversation_id  uuid NOT NULL,
    direction        text NOT NULL CHECK (direction IN ('in', 'out')),
    -- Kommo's id of an inbound message: what de-duplicates deliveries.
    kommo_message_id text CHECK (char_length(kommo_message_id) <= 200),
    author           text CHECK (char_length(author) <= 200),
    text             text NOT NULL CHECK (char_length(text) <= 20000),
    sent_at          timestamptz,
    -- Inbound: the outbound message that answered it (NULL: not yet, or never).
    answered_by      uuid,
    -- Outbound: the last inbound message of the set it answers (one answer per set),
    -- or NULL for a message not caused by one.
    reply_to         uuid,
    kind             text NOT NULL DEFAULT 'reply'
                     CHECK (kind IN ('inbound', 'reply', 'off_hours', 'handoff')),
    model            text,
    tokens_in        integer,
    tokens_out       integer,
    latency_ms       integer,
    sources          jsonb NOT NULL DEFAULT '[]'::jsonb,
    tool_calls       jsonb NOT NULL DEFAULT '[]'::jsonb,
    -- Inbound: received (awaiting an answer), answered or ignored (and why, in error).
    -- Outbound: pending, delivered or failed.
    delivery_status  text NOT NULL DEFAULT 'received'
                     CHECK (delivery_status IN ('received', 'answered', 'ignored',
                                                'pending', 'delivered', 'failed')),
    delivery         jsonb NOT NULL DEFAULT '{}'::jsonb,
    error            text CHECK (char_length(error) <= 2000),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT messages_kommo_id_key UNIQUE (conversation_id, kommo_message_id),
    CONSTRAINT messages_reply_key UNIQUE (conversation_id, reply_to),
    FOREIGN KEY (conversation_id, org_id) REFERENCES conversations (id, org_id) ON DELETE CASCADE
);
CREATE INDEX messages_conversation_idx ON messages (conversation_id, id);
CREATE INDEX messages_unanswered_idx ON messages (conversation_id, id)
    WHERE direction = 'in' AND delivery_status = 'received';

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['agent_routes', 'conversations', 'messages'] LOOP
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
