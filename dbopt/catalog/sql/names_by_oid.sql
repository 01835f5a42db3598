-- The name each of the given relations (by OID) carries now: which of the objects dbopt made
-- are under the name their change gave them. A plain catalog read: no lock on any relation.
SELECT c.oid::bigint AS oid, n.nspname AS schema, c.relname AS name
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.oid = ANY(%(oids)s::oid[])
