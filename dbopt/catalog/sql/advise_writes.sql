-- dbopt advise: each table's writes since its statistics began (pg_stat_user_tables), and
-- since when: the database's last statistics reset, else the server's start.
SELECT s.schemaname AS schema, s.relname AS name,
       s.n_tup_ins, s.n_tup_upd, s.n_tup_hot_upd, s.n_tup_del,
       COALESCE(d.stats_reset, pg_catalog.pg_postmaster_start_time()) AS since,
       d.stats_reset IS NOT NULL AS reset,
       EXTRACT(epoch FROM pg_catalog.now()
               - COALESCE(d.stats_reset, pg_catalog.pg_postmaster_start_time()))::float8 AS age_s
  FROM pg_catalog.pg_stat_user_tables s
  JOIN pg_catalog.pg_stat_database d ON d.datname = pg_catalog.current_database()
 ORDER BY s.schemaname, s.relname
