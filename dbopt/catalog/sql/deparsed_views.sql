-- The server's deparse of the spec views created as temporary views (dbopt_vnorm_NNNNNN, in a
-- transaction rolled back after), with their columns.
SELECT c.relname,
       pg_get_viewdef(c.oid),
       array(SELECT a.attname::text FROM pg_attribute a
              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY a.attnum)
  FROM pg_class c
 WHERE c.relnamespace = pg_my_temp_schema() AND c.relkind = 'v'
   AND c.relname LIKE 'dbopt\_vnorm\_%'
 ORDER BY c.relname
