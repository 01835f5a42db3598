-- The partitioned indexes above each given index, nearest first (parameters schemas and
-- names: parallel arrays of the indexes a plan scans). A plan of a partitioned table names
-- the partitions' indexes; a spec names the parent's. Plain catalog reads (pg_class,
-- pg_inherits): no lock is taken on any relation.
WITH RECURSIVE given AS (
    SELECT c.oid, n.nspname AS schema, c.relname AS name
      FROM unnest(%(schemas)s::text[], %(names)s::text[]) AS g(schema, name)
      JOIN pg_namespace n ON n.nspname = g.schema
      JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = g.name
     WHERE c.relkind IN ('i', 'I')
), up AS (
    SELECT g.schema, g.name, i.inhparent AS parent, 1 AS depth
      FROM given g
      JOIN pg_inherits i ON i.inhrelid = g.oid
     UNION ALL
    SELECT up.schema, up.name, i.inhparent, up.depth + 1
      FROM up
      JOIN pg_inherits i ON i.inhrelid = up.parent
)
SELECT up.schema, up.name, n.nspname AS ancestor_schema, c.relname AS ancestor_name
  FROM up
  JOIN pg_class c ON c.oid = up.parent
  JOIN pg_namespace n ON n.oid = c.relnamespace
 ORDER BY up.schema, up.name, up.depth
