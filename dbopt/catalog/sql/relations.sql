-- Tables, partitioned tables, materialized views and views outside the system schemas, with their
-- columns, size and whether the current role may create indexes on them (owns them).
--
-- Only the relevant relations (parameter relevant; all of them with everything) are sized and
-- deparsed: pg_total_relation_size, pg_get_viewdef and pg_get_partkeydef take an ACCESS SHARE
-- lock (pg_get_viewdef on every relation the view reads too), so they would queue behind DDL on a relation no spec
-- names; sizes only when asked for (parameter sizes: status). The readers of a spec view no
-- command named (parameter readers) are deparsed apart, waiting for no lock (they may read
-- any table): view_definitions.sql. Every other column is a plain
-- catalog read that takes no lock; CASE evaluates its branch only for the rows it selects. citus says whether the Citus extension is installed
-- (computed once: then citus_tables.sql says which relations it distributes).
SELECT c.oid::bigint                                AS oid,
       n.nspname                                   AS schema,
       c.relname                                   AS name,
       c.relkind::text                             AS relkind,
       c.relispartition                            AS is_partition,
       pg_get_userbyid(c.relowner)                 AS owner,
       pg_has_role(c.relowner, 'USAGE')            AS owned,
       (%(everything)s OR c.oid = ANY (%(relevant)s::oid[])) AS inspected,
       CASE WHEN %(sizes)s AND (%(everything)s OR c.oid = ANY (%(relevant)s::oid[]))
             AND NOT c.oid = ANY (%(readers)s::oid[])
            THEN pg_total_relation_size(c.oid) END AS total_bytes,
       c.reltuples::bigint                         AS estimated_rows,
       COALESCE(c.reloptions, '{}')                AS options,
       CASE WHEN c.relkind = 'm' THEN c.relispopulated END AS populated,
       CASE WHEN c.relkind = 'p' AND (%(everything)s OR c.oid = ANY (%(relevant)s::oid[]))
            THEN pg_get_partkeydef(c.oid) END     AS partition_key,
       CASE WHEN c.relkind IN ('m', 'v')
             AND (%(everything)s OR c.oid = ANY (%(relevant)s::oid[]))
             AND NOT c.oid = ANY (%(readers)s::oid[])
            THEN pg_get_viewdef(c.oid) END        AS view_definition,
       COALESCE((SELECT array_agg(a.attname::text ORDER BY a.attnum)
                   FROM pg_attribute a
                  WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
                '{}')                              AS columns,
       COALESCE((SELECT array_agg(pn.nspname || '.' || pc.relname ORDER BY pn.nspname, pc.relname)
                   FROM pg_inherits i
                   JOIN pg_class pc ON pc.oid = i.inhrelid
                   JOIN pg_namespace pn ON pn.oid = pc.relnamespace
                  WHERE i.inhparent = c.oid),
                '{}')                              AS partitions,
       EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'citus') AS citus
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'm', 'v')
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg\_toast%%'
   AND n.nspname NOT LIKE 'pg\_temp%%'
 ORDER BY n.nspname, c.relname
