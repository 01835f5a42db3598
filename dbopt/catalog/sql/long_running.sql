-- Transactions older than a bound (lock_timeout): concurrent builds and drops would wait for
-- them, so apply and rollback refuse to start while they run (unless told to wait).
SELECT a.pid,
       round(extract(epoch FROM now() - a.xact_start))::int AS age_s,
       a.state,
       a.usename,
       left(regexp_replace(a.query, '\s+', ' ', 'g'), 160) AS query
  FROM pg_stat_activity a
 WHERE a.pid <> pg_backend_pid()
   AND a.datname = current_database()
   AND a.backend_type = 'client backend'
   AND a.xact_start < now() - make_interval(secs => %(ms)s / 1000.0)
 ORDER BY a.xact_start
