-- The job queue's sweep: every unfinished job Redis should hold, so that the scheduler can
-- push again whatever Redis lost (a restart or flush, a push that failed, a worker that
-- died with its lease). It replaces `auth.jobs_needing_enqueue`, which waited 5 minutes
-- before it trusted that a pushed job was lost; the sweep asks Redis instead.
DROP FUNCTION IF EXISTS auth.jobs_needing_enqueue(interval, interval);

CREATE FUNCTION auth.jobs_unfinished(settle interval, max_rows bigint)
RETURNS TABLE (id uuid, org_id uuid, job_type text, due_in_ms bigint)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT j.id, j.org_id, j.type,
           greatest(0, ceil(extract(epoch FROM j.run_after - now()) * 1000))::bigint
    FROM public.jobs j
    WHERE (j.status = 'queued' AND coalesce(j.enqueued_at, j.created_at) < now() - settle)
       OR (j.status = 'running' AND j.lease_expires_at < now())
    ORDER BY j.created_at
    LIMIT max_rows
$$;

REVOKE ALL ON FUNCTION auth.jobs_unfinished(interval, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION auth.jobs_unfinished(interval, bigint) TO api_worker;
