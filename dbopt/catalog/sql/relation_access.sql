-- The relations among the (schema, name) candidates that exist, their owner, and whether the
-- current role may use their schema and SELECT from them (catalog only: no lookup that a
-- missing USAGE would turn into an error).
SELECT n.nspname AS schema, c.relname AS name, pg_get_userbyid(c.relowner) AS owner,
       has_schema_privilege(n.oid, 'USAGE') AS schema_usage,
       has_table_privilege(c.oid, 'SELECT') AS can_select
  FROM unnest(%(schemas)s::text[], %(names)s::text[]) AS w(schema, name)
  JOIN pg_namespace n ON n.nspname = w.schema
  JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = w.name
 WHERE c.relkind IN ('r', 'p', 'm', 'v', 'f')
 ORDER BY 1, 2
