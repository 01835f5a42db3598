-- Pin the session settings that would change what dbopt builds, compares or measures (see
-- dbopt.db.connect for the list and the reasons), in one round trip: two statements sent as
-- one simple query. The first lifts a statement_timeout the role or DSN may have set, which
-- could otherwise cancel the second; the second pins everything, statement_timeout included.
-- Placeholders (filled by psycopg.sql): names and values, the fixed pins as two text arrays.
-- Settings this server does not have are skipped (they came in later versions); superuser-only
-- ones are pinned only where the role may set them. The planner's method switches (enable_*,
-- plan_cache_mode, force_parallel_mode and its successor debug_parallel_query) go back to their
-- compiled-in defaults, whatever this server version has of them (pinned or not). One pass
-- over pg_settings (each pass builds every setting's row: ~0.7 ms); no value is NULL.
SET statement_timeout = 0;
SELECT v.name, set_config(v.name, v.value, false) AS value
  FROM (SELECT s.name,
               CASE WHEN s.context = 'user'
                         AND (s.name LIKE 'enable\_%'
                              OR s.name IN ('plan_cache_mode', 'force_parallel_mode',
                                            'debug_parallel_query'))
                    THEN s.boot_val  -- a method switch: its default, even if pinned
                    WHEN p.name IS NOT NULL
                         AND (s.context = 'user'
                              OR (s.context = 'superuser'
                                  AND (SELECT r.rolsuper FROM pg_roles r
                                        WHERE r.rolname = current_user)))
                    THEN p.value  -- a pin this role may set
               END AS value
          FROM pg_settings s
          LEFT JOIN unnest({names}::text[], {values}::text[]) AS p(name, value)
                 ON lower(s.name) = lower(p.name)) v
 WHERE v.value IS NOT NULL
