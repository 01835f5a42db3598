-- INVALID indexes on one table named as PostgreSQL names what REINDEX INDEX CONCURRENTLY makes
-- on the way: <index>_ccnew[N] (the new copy, index_concurrently_create_copy) and
-- <index>_ccold[N] (the old one once swapped out), both from ChooseRelationName in
-- ReindexRelationConcurrently (src/backend/commands/indexcmds.c). A REINDEX stopped part-way
-- (an error, a timeout, a cancel) leaves them INVALID. Which ones belong to which index (the
-- name is clipped to 63 bytes) is for the caller to decide. Plain catalog columns: no lock.
SELECT c.oid::bigint AS oid,
       c.relname     AS name
  FROM pg_catalog.pg_index i
  JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
  JOIN pg_catalog.pg_class t ON t.oid = i.indrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
 WHERE n.nspname = %(schema)s
   AND t.relname = %(table)s
   AND NOT i.indisvalid
   AND c.relname ~ '_cc(new|old)[0-9]*$'
 ORDER BY c.relname
