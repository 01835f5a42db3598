-- What an index carries besides its definition, for the indexes a plan replaces or drops: what
-- a replace must carry over to the new index (or refuse on) and what would make a DROP fail.
SELECT c.oid::bigint                                           AS oid,
       obj_description(c.oid, 'pg_class')                      AS comment,
       ts.spcname::text                                        AS tablespace,
       i.indisclustered                                        AS clustered,
       i.indisreplident                                        AS replica_identity,
       i.indexprs IS NOT NULL                                  AS has_expressions,
       COALESCE((SELECT array_agg(a.attname::text ORDER BY a.attnum)
                   FROM pg_attribute a
                  WHERE a.attrelid = i.indrelid AND a.attnum > 0 AND a.attnotnull
                    AND NOT a.attisdropped), '{}')             AS not_null_columns,
       COALESCE((SELECT array_agg(a.attnum::int || ':' || a.attstattarget::int ORDER BY a.attnum)
                   FROM pg_attribute a
                  WHERE a.attrelid = c.oid AND coalesce(a.attstattarget::int, -1) >= 0),
                '{}')                                          AS stat_targets,
       (SELECT e.extname::text
          FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
         WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
                                                               AS extension,
       (SELECT count(*) FROM pg_seclabel l
         WHERE l.classoid = 'pg_class'::regclass AND l.objoid = c.oid)::int AS security_labels,
       (SELECT pn.nspname || '.' || pc.relname
          FROM pg_inherits h
          JOIN pg_class pc ON pc.oid = h.inhparent
          JOIN pg_namespace pn ON pn.oid = pc.relnamespace
         WHERE h.inhrelid = c.oid)                             AS partition_of,
       COALESCE((SELECT array_agg(pg_describe_object(d.classid, d.objid, d.objsubid) ORDER BY 1)
                   FROM pg_depend d
                  WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = c.oid
                    AND d.deptype IN ('n', 'a')),
                '{}')                                          AS dependents
  FROM pg_class c
  JOIN pg_index i ON i.indexrelid = c.oid
  LEFT JOIN pg_tablespace ts ON ts.oid = c.reltablespace
 WHERE c.oid = ANY (%(oids)s::bigint[]::oid[])
 ORDER BY c.oid
