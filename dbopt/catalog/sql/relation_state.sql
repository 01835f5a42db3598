-- The relation a name stands for now: OID, relkind and (an index's) validity. Plain catalog
-- columns only: no lock, whatever another session holds.
SELECT c.oid::bigint                      AS oid,
       c.relkind::text                    AS relkind,
       i.indisvalid AND i.indisready      AS valid
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_index i ON i.indexrelid = c.oid
 WHERE n.nspname = %(schema)s AND c.relname = %(name)s
