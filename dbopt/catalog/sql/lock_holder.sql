-- Who holds one of dbopt's advisory locks (the run lock of a database, a view's refresh lock).
SELECT a.pid,
       a.usename,
       a.client_addr::text AS client,
       a.application_name,
       round(extract(epoch FROM now() - a.backend_start))::int AS connected_s,
       round(extract(epoch FROM now() - a.query_start))::int AS query_s
  FROM pg_locks l
  JOIN pg_stat_activity a ON a.pid = l.pid
 WHERE l.locktype = 'advisory' AND l.granted
   AND l.classid = %(class)s::bigint::oid
   AND l.objid = (%(key)s::bigint & 4294967295)::oid
 LIMIT 1
