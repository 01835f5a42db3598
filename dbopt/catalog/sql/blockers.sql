-- Sessions that hold up a lock wait on a table: those holding a lock on it, and those whose
-- transaction is older than the wait (a concurrent build waits for them). dbopt's own
-- sessions are never blockers.
SELECT DISTINCT a.pid,
       round(extract(epoch FROM now() - coalesce(a.xact_start, a.query_start)))::int AS age_s,
       a.state,
       a.usename,
       left(regexp_replace(a.query, '\s+', ' ', 'g'), 160) AS query
  FROM pg_stat_activity a
  LEFT JOIN pg_locks l ON l.pid = a.pid AND l.granted AND l.relation = to_regclass(%(table)s)
 WHERE a.pid <> ALL (%(own)s::int[])
   AND a.datname = current_database()
   AND a.backend_type = 'client backend'
   AND (l.pid IS NOT NULL OR a.xact_start < %(since)s)
 ORDER BY age_s DESC
 LIMIT 5
