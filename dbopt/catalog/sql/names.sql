-- Every name a new relation could collide with, outside the system schemas: each relation of
-- pg_class (tables, indexes, sequences, views, foreign tables, composite types...) and each
-- type that is no relation's row type (enums, domains, ranges...; a materialized view creates a
-- row type, so their names are taken for it too). Automatic array types are left out: the
-- server renames them out of the way. Plain catalog reads: no lock on any relation.
SELECT n.nspname           AS schema,
       c.relname           AS name,
       c.relkind::text     AS kind,
       false               AS is_type
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg\_toast%'
   AND n.nspname NOT LIKE 'pg\_temp%'
UNION ALL
SELECT n.nspname,
       t.typname,
       t.typtype::text,
       true
  FROM pg_type t
  JOIN pg_namespace n ON n.oid = t.typnamespace
 WHERE t.typrelid = 0
   AND NOT EXISTS (SELECT 1 FROM pg_type e WHERE e.typarray = t.oid)
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg\_toast%'
   AND n.nspname NOT LIKE 'pg\_temp%'
 ORDER BY 1, 2, 4
