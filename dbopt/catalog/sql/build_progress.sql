-- Every watched build or drop: its phase and progress (a drop has none: only its lock waits),
-- the OID of the index it builds, whether the session runs a statement at all (state), and,
-- while it waits for a lock, the sessions it waits for, with their age and query.
-- pg_blocking_pids needs the lock manager to itself for a moment: it is called once per
-- watched session, and only while that session waits for a lock (it finds no one otherwise),
-- never once per row of pg_stat_activity. (It lists a session once per parallel worker of it
-- that holds the lock: each is shown once.)
SELECT a.pid,
       p.phase,
       coalesce(p.blocks_done, 0), coalesce(p.blocks_total, 0),
       coalesce(p.tuples_done, 0), coalesce(p.tuples_total, 0),
       coalesce(p.index_relid::bigint, 0),
       a.wait_event_type,
       a.state,
       coalesce(w.blockers, '[]')
  FROM pg_stat_activity a
  LEFT JOIN pg_stat_progress_create_index p ON p.pid = a.pid
  LEFT JOIN LATERAL (
         SELECT json_agg(json_build_object(
                   'pid', b.pid,
                   'age_s', round(extract(epoch FROM now() - coalesce(b.xact_start,
                                                                      b.query_start)))::int,
                   'state', b.state,
                   'user', b.usename,
                   'query', left(regexp_replace(b.query, '\s+', ' ', 'g'), 160))
                 ORDER BY b.pid) AS blockers
           FROM (SELECT DISTINCT unnest(pg_blocking_pids(a.pid)) AS pid) AS blocking
           JOIN pg_stat_activity b ON b.pid = blocking.pid
          WHERE a.wait_event_type = 'Lock') w ON true
 WHERE a.pid = ANY (%(pids)s::int[])
