-- The server's deparse of the spec views created as temporary views (dbopt_vnorm_NNNNNN, in a
-- transaction rolled back after), with their columns; and, for each, the columns whose type
-- or collation differs from the column of that name of the materialized view it stands for
-- (parameters temps, schemas, names: which temporary view stands for which):
-- "name<TAB>old<TAB>new". A view reading such a column may not be re-bound to the new one
-- (CREATE OR REPLACE VIEW keeps its columns' types and collations): livecheck's
-- rebinding_problems tries those views. Plain catalog reads: no lock.
WITH stands_for AS (
  SELECT s.temp, mc.oid
    FROM unnest(%(temps)s::text[], %(schemas)s::text[], %(names)s::text[])
         AS s(temp, schema, name)
    JOIN pg_namespace mn ON mn.nspname = s.schema
    JOIN pg_class mc ON mc.relnamespace = mn.oid AND mc.relname = s.name AND mc.relkind = 'm'
)
SELECT c.relname,
       pg_get_viewdef(c.oid),
       array(SELECT a.attname::text FROM pg_attribute a
              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY a.attnum),
       array(SELECT a.attname::text || E'\t' || format_type(o.atttypid, o.atttypmod)
                    || E'\t' || format_type(a.atttypid, a.atttypmod)
               FROM pg_attribute a
               JOIN stands_for f ON f.temp = c.relname
               JOIN pg_attribute o ON o.attrelid = f.oid AND o.attname = a.attname
                                  AND o.attnum > 0 AND NOT o.attisdropped
              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                AND ((o.atttypid, o.atttypmod) IS DISTINCT FROM (a.atttypid, a.atttypmod)
                     OR o.attcollation <> a.attcollation)
              ORDER BY a.attnum)
  FROM pg_class c
 WHERE c.relnamespace = pg_my_temp_schema() AND c.relkind = 'v'
   AND c.relname LIKE 'dbopt\_vnorm\_%%'
 ORDER BY c.relname
