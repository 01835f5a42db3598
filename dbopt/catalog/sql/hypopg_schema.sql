-- The schema HypoPG's functions were installed in (no row: HypoPG is not installed).
SELECT n.nspname AS schema
  FROM pg_catalog.pg_extension e
  JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
 WHERE e.extname = 'hypopg'
