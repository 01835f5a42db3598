-- What a pg_cron job runs after its REFRESH, in the same implicit transaction (pg_cron sends
-- the command as one query): the refresh recorded in dbopt's history, so that status and
-- refresh-views --stale-only know when the view was last refreshed. now() is the start of the
-- transaction, that is of the refresh.
INSERT INTO {schema}.refreshes (view_schema, view_name, environment, mode, started_at,
                                duration_ms, outcome, message)
VALUES ({view_schema}, {view_name}, 'pg_cron', {mode}, now(),
        round((extract(epoch FROM clock_timestamp() - now()) * 1000)::numeric, 1), 'ok',
        'refreshed by pg_cron')
