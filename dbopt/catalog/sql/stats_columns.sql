-- Every column of the (schema, name) relations with its type and, where pg_stats shows them
-- to this role, its statistics (one row per `inherited`; none for a column never analyzed).
-- pg_stats hides a column the role may not SELECT, and every column of a table whose
-- row-level security applies to the role: `visible` says which. The ranges slot takes the
-- three range columns pg_stats has from PostgreSQL 17 on (stats_ranges.sql), or NULLs before.
SELECT n.nspname AS schema, c.relname AS name, a.attname AS column,
       format_type(a.atttypid, a.atttypmod) AS type,
       has_column_privilege(c.oid, a.attnum, 'SELECT')
         AND (NOT c.relrowsecurity OR NOT row_security_active(c.oid)) AS visible,
       s.inherited, s.null_frac, s.avg_width, s.n_distinct,
       s.most_common_vals::text AS most_common_vals, s.most_common_freqs,
       s.histogram_bounds::text AS histogram_bounds, s.correlation,
       s.most_common_elems::text AS most_common_elems, s.most_common_elem_freqs,
       s.elem_count_histogram,
       {ranges}
  FROM unnest(%(schemas)s::text[], %(names)s::text[]) AS w(schema, name)
  JOIN pg_namespace n ON n.nspname = w.schema
  JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = w.name
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  LEFT JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = c.relname
                      AND s.attname = a.attname
 ORDER BY n.nspname, c.relname, a.attnum, s.inherited
