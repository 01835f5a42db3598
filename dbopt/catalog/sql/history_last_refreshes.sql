-- The last time each view's data was computed: its last successful refresh, or the apply that
-- created or replaced it (CREATE MATERIALIZED VIEW ... WITH DATA fills it), or rebuilt it
-- bound to the view it reads (its copy filled during that run, whoever made the view: the
-- run's start is the time its data is at least as new as), whichever is later.
SELECT DISTINCT ON (view_schema, view_name)
       view_schema, view_name, started_at, duration_ms, rows, mode
  FROM (SELECT view_schema, view_name, started_at, duration_ms, rows, mode
          FROM {schema}.refreshes
         WHERE outcome = 'ok'
        UNION ALL
        SELECT object_schema, object_name, started_at, duration_ms, NULL, action
          FROM {schema}.changes
         WHERE object_kind = 'view' AND result = 'ok'
           AND action IN ('create', 'replace', 'restore')
        UNION ALL
        SELECT c.object_schema, c.object_name, r.started_at, NULL, NULL, c.action
          FROM {schema}.changes c
          JOIN {schema}.runs r ON r.id = c.run_id
         WHERE c.object_kind = 'view' AND c.result = 'ok' AND c.action = 'rebuild'
           -- A reader without data is rebuilt without data: filled by nothing then.
           AND EXISTS (SELECT FROM pg_class v
                         JOIN pg_namespace vn ON vn.oid = v.relnamespace
                        WHERE vn.nspname = c.object_schema AND v.relname = c.object_name
                          AND v.relkind = 'm' AND v.relispopulated)) AS filled
 ORDER BY view_schema, view_name, started_at DESC
