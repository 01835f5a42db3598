-- The (schema, name) relations that exist here, for `dbopt stats restore` to check a file
-- against before it restores anything: kind, whether the current role holds MAINTAIN on it
-- (what pg_restore_relation_stats and pg_restore_attribute_stats need: the owner has it),
-- whether autovacuum may analyze it (and so overwrite restored statistics), and its columns
-- with their types.
SELECT n.nspname AS schema, c.relname AS name, c.relkind::text AS relkind,
       has_table_privilege(c.oid, 'MAINTAIN') AS can_maintain,
       current_setting('autovacuum')::boolean
         AND COALESCE((SELECT option_value::boolean
                         FROM pg_options_to_table(c.reloptions)
                        WHERE option_name = 'autovacuum_enabled'), true) AS autovacuum,
       COALESCE((SELECT jsonb_object_agg(a.attname, format_type(a.atttypid, a.atttypmod))
                   FROM pg_attribute a
                  WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
                '{}'::jsonb) AS columns
  FROM unnest(%(schemas)s::text[], %(names)s::text[]) AS w(schema, name)
  JOIN pg_namespace n ON n.nspname = w.schema
  JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = w.name
 ORDER BY 1, 2
