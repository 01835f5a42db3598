-- The valid indexes of the given tables (parameters schemas and names: parallel arrays) other
-- than the given index OIDs (excluded): what the planner could still choose once those are
-- out of its sight. Plain catalog reads (pg_class, pg_index): no lock is taken.
SELECT n.nspname AS schema, ic.relname AS name
  FROM unnest(%(schemas)s::text[], %(names)s::text[]) AS g(schema, name)
  JOIN pg_namespace n ON n.nspname = g.schema
  JOIN pg_class t ON t.relnamespace = n.oid AND t.relname = g.name
  JOIN pg_index x ON x.indrelid = t.oid
  JOIN pg_class ic ON ic.oid = x.indexrelid
 WHERE x.indisvalid
   AND x.indexrelid::int8 <> ALL (%(excluded)s::int8[])
 ORDER BY n.nspname, ic.relname
