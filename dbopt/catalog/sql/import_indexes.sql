-- The indexes of the relations `dbopt import` writes specs for (parameter oids): the
-- server's definition, validity, whether it is a partition of a partitioned index, the
-- constraint it backs (dbopt never manages those), the extension it belongs to, its
-- tablespace and comment; the key columns and the predicate as the server prints them on
-- their own (what a spec's expr and where say). pg_get_indexdef takes an ACCESS SHARE lock on the index's table:
-- only the chosen tables are read.
SELECT c.oid::bigint                                AS oid,
       n.nspname                                   AS schema,
       c.relname                                   AS name,
       tn.nspname                                  AS table_schema,
       t.relname                                   AS table_name,
       pg_get_indexdef(c.oid)                      AS definition,
       ARRAY(SELECT pg_get_indexdef(c.oid, k, true)
               FROM generate_series(1, i.indnkeyatts) AS k
              ORDER BY k)                          AS key_texts,
       pg_get_expr(i.indpred, i.indrelid, true)    AS predicate,
       i.indisvalid AND i.indisready               AS is_valid,
       c.relispartition                            AS is_partition,
       con.conname                                 AS constraint_name,
       (SELECT e.extname
          FROM pg_depend d
          JOIN pg_extension e ON e.oid = d.refobjid
         WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
           AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
         ORDER BY e.extname
         LIMIT 1)                                  AS extension,
       ts.spcname                                  AS tablespace,
       obj_description(c.oid, 'pg_class')          AS comment
  FROM pg_index i
  JOIN pg_class c ON c.oid = i.indexrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_class t ON t.oid = i.indrelid
  JOIN pg_namespace tn ON tn.oid = t.relnamespace
  LEFT JOIN pg_constraint con ON con.conindid = c.oid AND con.contype IN ('p', 'u', 'x')
  LEFT JOIN pg_tablespace ts ON ts.oid = c.reltablespace
 WHERE i.indrelid = ANY (%(oids)s::oid[])
 ORDER BY tn.nspname, t.relname, c.relname
