-- Every watched build or drop: its phase and progress (a drop has none: only its lock waits),
-- the OID of the index it builds, and the sessions it waits for, with their age and query.
SELECT a.pid,
       p.phase,
       coalesce(p.blocks_done, 0), coalesce(p.blocks_total, 0),
       coalesce(p.tuples_done, 0), coalesce(p.tuples_total, 0),
       coalesce(p.index_relid::bigint, 0),
       a.wait_event_type,
       (SELECT coalesce(json_agg(json_build_object(
                   'pid', b.pid,
                   'age_s', round(extract(epoch FROM now() - coalesce(b.xact_start,
                                                                      b.query_start)))::int,
                   'state', b.state,
                   'user', b.usename,
                   'query', left(regexp_replace(b.query, '\s+', ' ', 'g'), 160))
                 ORDER BY b.pid), '[]')
          FROM pg_stat_activity b
         WHERE b.pid = ANY (pg_blocking_pids(a.pid)))
  FROM pg_stat_activity a
  LEFT JOIN pg_stat_progress_create_index p ON p.pid = a.pid
 WHERE a.pid = ANY (%(pids)s::int[])
