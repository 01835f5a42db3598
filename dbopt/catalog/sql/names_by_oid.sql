-- The name each of the given relations (by OID) carries now, and whether it is usable (an
-- index valid, a materialized view populated): which of the objects dbopt made are in place
-- under the name their change gave them. A plain catalog read: no lock on any relation.
SELECT c.oid::bigint AS oid, n.nspname AS schema, c.relname AS name,
       coalesce(x.indisvalid, c.relispopulated) AS usable
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_index x ON x.indexrelid = c.oid
 WHERE c.oid = ANY(%(oids)s::oid[])
