-- doctor: what a btree index's entries need, from the planner's statistics (pg_stats: the
-- average width and null fraction of each indexed column, of the index itself for an
-- expression), to estimate its size without bloat; with each entry column's length and
-- alignment (the index's own pg_attribute), in key order, so the estimate can place each
-- column at its aligned offset as the server does. Only valid, non-empty btree indexes of
-- the user's schemas; unknown_columns > 0 when a column has no statistics (no estimate).
WITH idx AS (
  SELECT c.oid, c.relpages, c.reltuples, i.indrelid,
         coalesce((SELECT substring(o FROM '^fillfactor=([0-9]+)$')::int
                     FROM unnest(c.reloptions) o WHERE o LIKE 'fillfactor=%%'), 90) AS fillfactor,
         string_to_array(i.indkey::text, ' ')::int[] AS attnums
    FROM pg_index i
    JOIN pg_class c ON c.oid = i.indexrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_am am ON am.oid = c.relam
   WHERE am.amname = 'btree' AND c.relkind = 'i' AND i.indisvalid
     AND c.relpages > 0 AND c.reltuples >= 0
     AND n.nspname NOT IN ('pg_catalog', 'information_schema')
     AND n.nspname !~ '^pg_(toast|temp_)'
     AND n.nspname <> %(history_schema)s
), cols AS (
  SELECT idx.oid, k.pos, s.avg_width, s.null_frac, ia.attlen, ia.attalign
    FROM idx
   CROSS JOIN LATERAL unnest(idx.attnums) WITH ORDINALITY k(attnum, pos)
    JOIN pg_attribute ia ON ia.attrelid = idx.oid AND ia.attnum = k.pos
    LEFT JOIN pg_attribute a
           ON a.attrelid = CASE WHEN k.attnum = 0 THEN idx.oid ELSE idx.indrelid END
          AND a.attnum = CASE WHEN k.attnum = 0 THEN k.pos::int ELSE k.attnum END
    LEFT JOIN pg_class rc ON rc.oid = a.attrelid
    LEFT JOIN pg_namespace rn ON rn.oid = rc.relnamespace
    LEFT JOIN pg_stats s ON s.schemaname = rn.nspname AND s.tablename = rc.relname
                        AND s.attname = a.attname AND NOT s.inherited
)
SELECT idx.oid::bigint                                         AS oid,
       idx.relpages::bigint                                    AS pages,
       idx.reltuples::float8                                   AS tuples,
       idx.fillfactor                                          AS fillfactor,
       current_setting('block_size')::int                      AS block_size,
       array_agg(coalesce(cols.avg_width, 0)::float8 ORDER BY cols.pos) AS avg_widths,
       array_agg(coalesce(cols.null_frac, 0)::float8 ORDER BY cols.pos) AS null_fracs,
       array_agg(cols.attlen::int ORDER BY cols.pos)           AS typlens,
       array_agg(cols.attalign::text ORDER BY cols.pos)        AS typaligns,
       bool_or(coalesce(cols.null_frac, 0) > 0)                AS has_nulls,
       count(*) FILTER (WHERE cols.avg_width IS NULL)::int     AS unknown_columns
  FROM idx
  JOIN cols ON cols.oid = idx.oid
 GROUP BY idx.oid, idx.relpages, idx.reltuples, idx.fillfactor
 ORDER BY idx.oid
