-- doctor: every foreign key of the user's schemas (a partition's copy of its parent's key
-- left out), with what ranks a missing index: the referenced table's updates and deletes
-- (each one looks up the referencing rows) and the referencing table's size (relpages).
SELECT con.conname                                               AS name,
       n.nspname                                                 AS schema,
       t.relname                                                 AS table_name,
       con.conrelid::bigint                                      AS table_oid,
       con.conkey::int[]                                         AS attnums,
       array(SELECT a.attname::text
               FROM unnest(con.conkey) WITH ORDINALITY k(attnum, pos)
               JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
              ORDER BY k.pos)                                    AS columns,
       rn.nspname                                                AS ref_schema,
       r.relname                                                 AS ref_table,
       coalesce(rs.n_tup_upd + rs.n_tup_del, 0)                  AS ref_writes,
       t.relpages::bigint * current_setting('block_size')::bigint AS table_bytes,
       greatest(t.reltuples, 0)::bigint                          AS table_rows
  FROM pg_constraint con
  JOIN pg_class t ON t.oid = con.conrelid
  JOIN pg_namespace n ON n.oid = t.relnamespace
  JOIN pg_class r ON r.oid = con.confrelid
  JOIN pg_namespace rn ON rn.oid = r.relnamespace
  LEFT JOIN pg_stat_user_tables rs ON rs.relid = r.oid
 WHERE con.contype = 'f'
   AND con.conparentid = 0
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname !~ '^pg_(toast|temp_)'
   AND n.nspname <> %(history_schema)s
 ORDER BY n.nspname, t.relname, con.conname
