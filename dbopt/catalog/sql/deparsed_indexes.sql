-- The server's deparse of the spec indexes built on empty temporary copies of their tables
-- (dbopt_norm_NNNNNN, in this session's temporary schema, in a transaction rolled back after).
SELECT c.relname, pg_get_indexdef(c.oid)
  FROM pg_class c
 WHERE c.relnamespace = pg_my_temp_schema() AND c.relkind = 'i'
   AND c.relname LIKE 'dbopt\_norm\_%'
 ORDER BY c.relname
