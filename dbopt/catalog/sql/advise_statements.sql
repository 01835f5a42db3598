-- dbopt advise: the top statements of this database by total execution time (PostgreSQL 13+
-- names: total_exec_time, mean_exec_time). The FROM placeholder is pg_stat_statements, schema-qualified.
-- Another role's statement shows as NULL query text without pg_read_all_stats.
SELECT s.queryid, s.query, s.calls, s.total_exec_time AS total_ms, s.mean_exec_time AS mean_ms
  FROM {} AS s
 WHERE s.dbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())
   AND s.calls >= %(min_calls)s
   -- Queries only (what --top counts): no EXPLAIN, DDL, writes or SET of any tool; after
   -- any leading comments (an ORM's /* controller */, -- tags) and parentheses.
   AND s.query ~* '^([[:space:](]|/[*]([^*]|[*]+[^*/])*[*]+/|--[^\n]*\n)*(select|with|values|table)[[:>:]]'
 ORDER BY s.total_exec_time DESC, s.queryid
 LIMIT %(top)s
