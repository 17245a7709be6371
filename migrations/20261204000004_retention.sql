-- Retention: webhook deliveries (their events go with them, by the delivery_id cascade)
-- and finished jobs older than the configured number of days are deleted, a bounded
-- batch per call so that one scheduler tick never holds long locks. Days of 0 keep
-- everything. Expired OAuth states are already deleted by `auth.housekeeping`.
CREATE INDEX webhook_deliveries_received_idx ON webhook_events (received_at)
    WHERE kind = 'delivery';
CREATE INDEX jobs_finished_idx ON jobs (finished_at)
    WHERE status IN ('succeeded', 'failed', 'cancelled');

CREATE FUNCTION auth.retention(webhook_days integer, job_days integer, batch integer,
    OUT deleted_deliveries bigint, OUT deleted_jobs bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    deleted_deliveries := 0;
    deleted_jobs := 0;
    IF webhook_days > 0 THEN
        DELETE FROM public.webhook_events w
        WHERE w.id IN (
            SELECT d.id FROM public.webhook_events d
            WHERE d.kind = 'delivery'
              AND d.received_at < now() - make_interval(days => webhook_days)
            ORDER BY d.received_at
            LIMIT batch);
        GET DIAGNOSTICS deleted_deliveries = ROW_COUNT;
    END IF;
    IF job_days > 0 THEN
        DELETE FROM public.jobs j
        WHERE j.id IN (
            SELECT f.id FROM public.jobs f
            WHERE f.status IN ('succeeded', 'failed', 'cancelled')
              AND f.finished_at < now() - make_interval(days => job_days)
            ORDER BY f.finished_at
            LIMIT batch);
        GET DIAGNOSTICS deleted_jobs = ROW_COUNT;
    END IF;
END
$$;

REVOKE ALL ON FUNCTION auth.retention(integer, integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION auth.retention(integer, integer, integer) TO api_worker;
