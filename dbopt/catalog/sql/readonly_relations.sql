-- The relations that run or read something else when read: views, foreign tables, tables
-- with row-level security, inheritance and partition parents. Built-in views are trusted.
SELECT c.oid::int8 AS oid, n.nspname AS schema, c.relname AS name, c.relkind::text AS relkind
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.oid >= %(first)s
   AND (c.relkind IN ('v', 'f') OR c.relrowsecurity OR c.relhassubclass)
 ORDER BY c.oid
