-- doctor: every index of the user's schemas (not the system's, not dbopt's history, not an
-- extension's), from plain catalog columns and the statistics views only: no function that
-- locks a relation (pg_relation_size, pg_get_indexdef, pg_get_expr, pg_partition_tree), so
-- doctor never queues behind DDL. Sizes are relpages (as of the last VACUUM, ANALYZE or
-- CREATE INDEX). Definitions are compared by their parts: key columns, operator classes,
-- collations, the per-column options (DESC, NULLS FIRST), and expressions and predicates as
-- the server's node trees with their text positions removed (the same expression typed twice
-- is the same tree). Columns read through to_jsonb() exist on some majors only
-- (last_idx_scan: 16+, indnullsnotdistinct: 15+): absent, they are NULL.
-- A partitioned index (relkind I) has no storage and no scans of its own: its size, scans,
-- last scan and table writes are summed over its leaf partition indexes (pg_inherits walked
-- down), and the partitions without an index attached to it are listed (why it is INVALID).
WITH RECURSIVE tree AS (
  SELECT c.oid AS root, c.oid AS oid
    FROM pg_class c
   WHERE c.relkind = 'I'
  UNION ALL
  SELECT tree.root, h.inhrelid
    FROM tree
    JOIN pg_inherits h ON h.inhparent = tree.oid
), leaves AS (
  SELECT tree.root,
         array_agg(tree.oid ORDER BY tree.oid)                     AS oids,
         sum(lc.relpages::bigint)                                  AS pages,
         sum(coalesce(ls.idx_scan, 0))                             AS scans,
         max((to_jsonb(ls) ->> 'last_idx_scan')::timestamptz)      AS last_scan,
         sum(coalesce(lt.n_tup_ins + lt.n_tup_upd + lt.n_tup_del, 0)) AS table_writes
    FROM tree
    JOIN pg_class lc ON lc.oid = tree.oid AND lc.relkind = 'i'
    JOIN pg_index li ON li.indexrelid = lc.oid
    LEFT JOIN pg_stat_user_indexes ls ON ls.indexrelid = lc.oid
    LEFT JOIN pg_stat_user_tables lt ON lt.relid = li.indrelid
   GROUP BY tree.root
), unseen AS (
  -- Another role's index build in this database: without pg_read_all_stats its progress row
  -- shows no relation (NULL relid), so which index it builds is unknown.
  SELECT EXISTS (SELECT 1 FROM pg_stat_progress_create_index p
                  WHERE p.relid IS NULL
                    AND p.datid = (SELECT d.oid FROM pg_database d
                                    WHERE d.datname = current_database())) AS any
)
SELECT c.oid::bigint                                               AS oid,
       n.nspname                                                   AS schema,
       c.relname                                                   AS name,
       i.indrelid::bigint                                          AS table_oid,
       tn.nspname                                                  AS table_schema,
       t.relname                                                   AS table_name,
       am.amname                                                   AS method,
       c.relkind::text                                             AS relkind,
       i.indnkeyatts::int                                          AS nkey,
       string_to_array(i.indkey::text, ' ')::int[]                 AS attnums,
       array(SELECT coalesce(a.attname::text, '(expression)')
               FROM unnest(string_to_array(i.indkey::text, ' ')::int[]) WITH ORDINALITY k(attnum, pos)
               LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
              ORDER BY k.pos)                                      AS columns,
       string_to_array(i.indclass::text, ' ')::bigint[]            AS opclasses,
       string_to_array(i.indcollation::text, ' ')::bigint[]        AS collations,
       string_to_array(i.indoption::text, ' ')::int[]              AS options,
       regexp_replace(i.indexprs::text, ' :location -?[0-9]+', '', 'g') AS exprs,
       regexp_replace(i.indpred::text, ' :location -?[0-9]+', '', 'g')  AS pred,
       i.indisunique                                               AS is_unique,
       i.indisprimary                                              AS is_primary,
       i.indisvalid                                                AS is_valid,
       i.indisreplident                                            AS is_replident,
       i.indisclustered                                            AS is_clustered,
       coalesce((to_jsonb(i) ->> 'indnullsnotdistinct')::boolean, false) AS nulls_not_distinct,
       c.relispartition                                            AS is_partition,
       coalesce(lv.pages, c.relpages::bigint) * current_setting('block_size')::bigint AS size_bytes,
       coalesce(lv.scans, s.idx_scan, 0)                           AS scans,
       CASE WHEN lv.root IS NOT NULL THEN lv.last_scan
            ELSE (to_jsonb(s) ->> 'last_idx_scan')::timestamptz END AS last_scan,
       coalesce(lv.table_writes, ts.n_tup_ins + ts.n_tup_upd + ts.n_tup_del, 0) AS table_writes,
       lv.oids::bigint[]                                           AS leaves,
       con.conname                                                 AS constraint_name,
       EXISTS (SELECT 1 FROM pg_constraint f
                WHERE f.contype = 'f' AND f.conindid = c.oid)      AS backs_foreign_key,
       -- An INVALID index a session is building right now (not a failed build): its own
       -- progress row; or, on its table, a build that has not named its index yet
       -- (index_relid 0) or a REINDEX CONCURRENTLY, whose new copy (name_ccnew) is not the
       -- index_relid it reports. Any other build on the same table says nothing about it.
       NOT i.indisvalid AND EXISTS (
         SELECT 1 FROM pg_stat_progress_create_index p
          WHERE p.index_relid = c.oid
             OR (p.relid = i.indrelid
                 AND (p.index_relid = 0
                      OR (p.command = 'REINDEX CONCURRENTLY'
                          AND c.relname LIKE '%%\_ccnew%%'))))     AS building,
       NOT i.indisvalid AND (SELECT unseen.any FROM unseen)        AS unseen_build,
       ua.schemas                                                   AS unattached_schemas,
       ua.names                                                     AS unattached_names
  FROM pg_index i
  JOIN pg_class c ON c.oid = i.indexrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_class t ON t.oid = i.indrelid
  JOIN pg_namespace tn ON tn.oid = t.relnamespace
  JOIN pg_am am ON am.oid = c.relam
  LEFT JOIN leaves lv ON lv.root = c.oid
  LEFT JOIN pg_stat_user_indexes s ON s.indexrelid = c.oid
  LEFT JOIN pg_stat_user_tables ts ON ts.relid = t.oid
  LEFT JOIN pg_constraint con ON con.conindid = c.oid AND con.conrelid = i.indrelid
                              AND con.contype IN ('p', 'u', 'x')
  -- An INVALID partitioned index: the partitions of its table with no index attached to it
  -- (schemas and names, in the same order). NULLs for every other index.
  LEFT JOIN LATERAL (
       SELECT array_agg(pn.nspname::text ORDER BY pn.nspname, pc.relname) AS schemas,
              array_agg(pc.relname::text ORDER BY pn.nspname, pc.relname) AS names
         FROM pg_inherits ph
         JOIN pg_class pc ON pc.oid = ph.inhrelid
         JOIN pg_namespace pn ON pn.oid = pc.relnamespace
        WHERE c.relkind = 'I' AND NOT i.indisvalid
          AND ph.inhparent = i.indrelid
          AND NOT EXISTS (SELECT 1 FROM pg_inherits ih
                            JOIN pg_index ci ON ci.indexrelid = ih.inhrelid
                           WHERE ih.inhparent = c.oid AND ci.indrelid = pc.oid)
  ) ua ON true
 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname !~ '^pg_(toast|temp_)'
   AND n.nspname <> %(history_schema)s
   AND NOT EXISTS (SELECT 1 FROM pg_depend d
                    WHERE d.classid = 'pg_class'::regclass AND d.objid IN (c.oid, t.oid)
                      AND d.deptype = 'e')
 ORDER BY n.nspname, c.relname
