-- Which of the given tables (schema, name) the current role may not SELECT from: a trial
-- build copies a table's columns (CREATE TEMP TABLE ... (LIKE t)), which needs it. A plain
-- privilege check: no lock on any table.
SELECT u.schema, u.name
  FROM unnest(%(schemas)s::text[], %(names)s::text[]) AS u(schema, name)
  JOIN pg_catalog.pg_namespace n ON n.nspname = u.schema
  JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = u.name
 WHERE NOT has_table_privilege(c.oid, 'SELECT')
