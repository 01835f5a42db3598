-- The definitions of views that read a spec's materialized view but that no command named
-- (parameter oids): pg_get_viewdef locks every relation such a view reads, which may be any
-- table, so inspect reads them with a lock_timeout that waits for none (a view whose lock
-- is not granted at once is read alone, and left unread).
SELECT c.oid::bigint AS oid, pg_get_viewdef(c.oid) AS definition
  FROM pg_class c
 WHERE c.oid = ANY (%(oids)s::oid[]) AND c.relkind IN ('m', 'v')
