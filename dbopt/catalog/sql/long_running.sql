-- Transactions older than a bound (lock_timeout) that the run's statements would wait for, so
-- apply and rollback refuse to start while they run (unless told to wait). A concurrent build
-- waits for every older transaction of this database (its snapshots); a concurrent drop only
-- for the sessions holding a lock on its table or one of its partitions: %(tables)s, or NULL
-- when the run builds.
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
   AND (%(tables)s::text[] IS NULL
        OR EXISTS (SELECT 1
                     FROM pg_locks l
                    WHERE l.pid = a.pid
                      AND l.locktype = 'relation'
                      AND l.database = (SELECT oid FROM pg_database
                                         WHERE datname = current_database())
                      -- A partitioned table's drop locks every partition too.
                      AND l.relation = ANY (SELECT p.relid::oid
                                              FROM unnest(%(tables)s::text[]) AS t,
                                                   pg_partition_tree(to_regclass(t)) AS p
                                            UNION ALL
                                            SELECT to_regclass(t)::oid
                                              FROM unnest(%(tables)s::text[]) AS t)))
 ORDER BY a.xact_start
