-- Each given index and the indexes of its partitions at every level (parameters schemas and
-- names: parallel arrays), as OIDs: what the planner must not see for a plan to do without
-- the index (a plan of a partitioned table scans the partitions' indexes). Plain catalog
-- reads (pg_class, pg_inherits): no lock is taken on any relation.
WITH RECURSIVE given AS (
    SELECT n.nspname AS schema, c.relname AS name, c.oid
      FROM unnest(%(schemas)s::text[], %(names)s::text[]) AS g(schema, name)
      JOIN pg_namespace n ON n.nspname = g.schema
      JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = g.name
     WHERE c.relkind IN ('i', 'I')
), down AS (
    SELECT schema, name, oid FROM given
     UNION ALL
    SELECT d.schema, d.name, i.inhrelid
      FROM down d
      JOIN pg_inherits i ON i.inhparent = d.oid
)
SELECT d.schema, d.name, d.oid::int8 AS oid
  FROM down d
  JOIN pg_class c ON c.oid = d.oid
 WHERE c.relkind = 'i'
 ORDER BY d.schema, d.name, d.oid
