-- The last time each view's data was computed: its last successful refresh, or the apply that
-- created or replaced it (CREATE MATERIALIZED VIEW ... WITH DATA fills it), whichever is later.
SELECT DISTINCT ON (view_schema, view_name)
       view_schema, view_name, started_at, duration_ms, rows, mode
  FROM (SELECT view_schema, view_name, started_at, duration_ms, rows, mode
          FROM {schema}.refreshes
         WHERE outcome = 'ok'
        UNION ALL
        SELECT object_schema, object_name, started_at, duration_ms, NULL, action
          FROM {schema}.changes
         WHERE object_kind = 'view' AND result = 'ok'
           AND action IN ('create', 'replace', 'restore')) AS filled
 ORDER BY view_schema, view_name, started_at DESC
