-- Which of the named relations (schema.name) exist but the current role may not read: no
-- USAGE on their schema, or no SELECT on them.
SELECT n.nspname AS schema, c.relname AS name,
       has_schema_privilege(n.oid, 'USAGE') AS schema_usage
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname || '.' || c.relname = ANY (%(names)s::text[])
   AND c.relkind IN ('r', 'p', 'm', 'v', 'f')
   AND NOT (has_schema_privilege(n.oid, 'USAGE') AND has_table_privilege(c.oid, 'SELECT'))
 ORDER BY 1, 2
