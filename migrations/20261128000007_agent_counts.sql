-- The `total` of the agents list, kept by a trigger so that reading it costs one
-- index lookup however many agents an org has: counting the org's rows on every page
-- made the cost of a page grow with the table. Counts are per (org, status), so the
-- status filter reads one row; a name search still counts its matches (it scans the
-- org's agents for the page anyway).
CREATE TABLE agent_counts (
    org_id  uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    status  text NOT NULL,
    n       bigint NOT NULL CHECK (n >= 0),
    PRIMARY KEY (org_id, status)
);

ALTER TABLE agent_counts ENABLE ROW LEVEL SECURITY;
ALTER TABLE agent_counts FORCE ROW LEVEL SECURITY;
CREATE POLICY agent_counts_select ON agent_counts FOR SELECT TO authenticated
    USING (org_id = ANY ((SELECT auth.org_ids('member'))::uuid[]));
CREATE POLICY agent_counts_worker ON agent_counts FOR SELECT TO api_worker
    USING (org_id = auth.worker_org_id());
GRANT SELECT ON agent_counts TO authenticated, api_worker;
-- Only the trigger (running as the owner) writes the counts.
DO $$
BEGIN
    EXECUTE format('CREATE POLICY agent_counts_definer ON agent_counts FOR ALL TO %I
                    USING (true) WITH CHECK (true)', current_user);
END
$$;

-- Adds `delta` to one count. The row of a (org, status) pair is created by its first
-- agent; a decrement only updates, because an org being deleted may already have lost
-- its count rows to the cascade while its agents are still being removed.
CREATE FUNCTION auth.add_agent_count(org uuid, agent_status text, delta bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
BEGIN
    IF delta > 0 THEN
        INSERT INTO agent_counts (org_id, status, n) VALUES (org, agent_status, delta)
        ON CONFLICT (org_id, status) DO UPDATE SET n = agent_counts.n + delta;
    ELSE
        UPDATE agent_counts SET n = n + delta WHERE org_id = org AND status = agent_status;
    END IF;
END
$$;
REVOKE ALL ON FUNCTION auth.add_agent_count(uuid, text, bigint) FROM PUBLIC;

CREATE FUNCTION auth.count_agents() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM auth.add_agent_count(NEW.org_id, NEW.status, 1);
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM auth.add_agent_count(OLD.org_id, OLD.status, -1);
    -- A status change touches two count rows: lock them in one order (by status), so
    -- two agents changing in opposite directions at once cannot deadlock.
    ELSIF (OLD.status, OLD.org_id::text) < (NEW.status, NEW.org_id::text) THEN
        PERFORM auth.add_agent_count(OLD.org_id, OLD.status, -1);
        PERFORM auth.add_agent_count(NEW.org_id, NEW.status, 1);
    ELSE
        PERFORM auth.add_agent_count(NEW.org_id, NEW.status, 1);
        PERFORM auth.add_agent_count(OLD.org_id, OLD.status, -1);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER agents_count AFTER INSERT OR DELETE ON agents
    FOR EACH ROW EXECUTE FUNCTION auth.count_agents();
CREATE TRIGGER agents_count_moves AFTER UPDATE OF status, org_id ON agents
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.org_id IS DISTINCT FROM NEW.org_id)
    EXECUTE FUNCTION auth.count_agents();

-- The counts of the agents that exist already. FORCE holds the owner to no rows of
-- `agents` (it has no policy there), so it is lifted for this one statement.
ALTER TABLE agents NO FORCE ROW LEVEL SECURITY;
INSERT INTO agent_counts (org_id, status, n)
SELECT org_id, status, count(*) FROM agents GROUP BY org_id, status;
ALTER TABLE agents FORCE ROW LEVEL SECURITY;
