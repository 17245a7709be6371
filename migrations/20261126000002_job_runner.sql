-- What the job runner needs beyond the jobs table of the first migration: a lease so that
-- a job never runs twice at the same time (and a crashed worker's job is taken over once
-- the lease lapses), the time of the next attempt, and when the job reached the queue.

ALTER TABLE jobs
    ADD COLUMN run_after        timestamptz,
    ADD COLUMN lease_expires_at timestamptz,
    ADD COLUMN worker           text,
    ADD COLUMN enqueued_at      timestamptz;

CREATE INDEX jobs_org_status_idx ON jobs (org_id, status, id DESC);
CREATE INDEX jobs_org_type_idx ON jobs (org_id, type, id DESC);
-- The scheduler's scan for jobs the queue may have lost (see below).
CREATE INDEX jobs_pending_idx ON jobs (created_at) WHERE status IN ('queued', 'running');

-- The SECURITY DEFINER helpers below work across orgs for the scheduler. They run as the
-- owner, which FORCE ROW LEVEL SECURITY would otherwise hold to no rows at all.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['jobs', 'oauth_states', 'webhook_events'] LOOP
        EXECUTE format('CREATE POLICY %1$s_definer ON %1$I FOR ALL TO %2$I USING (true) WITH CHECK (true)',
                       t, current_user);
    END LOOP;
END
$$;

-- Housekeeping of one scheduler tick: expired OAuth states go, and webhook deliveries older
-- than 24 h stop counting as duplicates (the delivery itself is kept).
CREATE OR REPLACE FUNCTION auth.housekeeping(OUT expired_oauth_states bigint, OUT released_webhook_digests bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
BEGIN
    DELETE FROM public.oauth_states WHERE expires_at < now();
    GET DIAGNOSTICS expired_oauth_states = ROW_COUNT;
    UPDATE public.webhook_events SET body_sha256 = NULL
    WHERE kind = 'delivery' AND body_sha256 IS NOT NULL AND received_at < now() - interval '24 hours';
    GET DIAGNOSTICS released_webhook_digests = ROW_COUNT;
END
$$;

-- Jobs the queue may have lost, in every org: committed but never pushed (the process
-- died in between), pushed long ago without being taken (Redis lost it), or running under
-- a lease that lapsed (the worker died). The database is the truth; pushing such a job
-- again is harmless because a worker must claim its row before running it.
CREATE OR REPLACE FUNCTION auth.jobs_needing_enqueue(grace interval, stale interval)
RETURNS TABLE (id uuid, org_id uuid)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
    SELECT j.id, j.org_id FROM public.jobs j
    WHERE (j.status = 'queued' AND j.enqueued_at IS NULL AND j.created_at < now() - grace)
       OR (j.status = 'queued' AND j.enqueued_at < now() - stale
           AND coalesce(j.run_after, '-infinity') < now() - grace)
       OR (j.status = 'running' AND j.lease_expires_at < now() - grace
           AND coalesce(j.enqueued_at, '-infinity') < now() - grace)
    ORDER BY j.created_at
    LIMIT 500
$$;

REVOKE ALL ON FUNCTION auth.housekeeping() FROM PUBLIC;
REVOKE ALL ON FUNCTION auth.jobs_needing_enqueue(interval, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION auth.housekeeping(), auth.jobs_needing_enqueue(interval, interval) TO api_worker;
