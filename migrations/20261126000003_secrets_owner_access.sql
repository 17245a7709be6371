-- `agents-api rotate-keys` re-encrypts the stored secrets (crm_credentials.client_secret_enc,
-- crm_connections.access_token_enc and refresh_token_enc) of every org with the active key.
-- It connects with DATABASE_MIGRATION_URL, the owner of the tables, and FORCE ROW LEVEL
-- SECURITY holds even the owner to no rows unless a policy names it: without these, a
-- rotation run by a non-superuser owner would see nothing and leave every secret under the
-- old key. The runtime roles (authenticated, anon, api_worker) are not affected: they
-- still see only their org's rows, and the server never connects as the owner.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['crm_credentials', 'crm_connections'] LOOP
        EXECUTE format('CREATE POLICY %1$s_definer ON %1$I FOR ALL TO %2$I USING (true) WITH CHECK (true)',
                       t, current_user);
    END LOOP;
END
$$;
