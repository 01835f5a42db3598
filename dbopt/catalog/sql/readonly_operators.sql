-- Every operator and the function it runs.
SELECT o.oid::int8 AS oid, n.nspname AS schema, o.oprname AS name, o.oprcode::oid::int8 AS code
  FROM pg_catalog.pg_operator o
  JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace
 WHERE o.oprcode <> 0
 ORDER BY o.oid
