-- The indexes of the relevant relations (parameter relevant; every index outside the system
-- schemas with everything): definition, validity, size, use, and whether it backs a
-- constraint (dbopt never touches those), and whether it is being built right now.
--
-- pg_get_indexdef and pg_get_expr lock the index's table (ACCESS SHARE; PostgreSQL 15.18 does)
-- and pg_relation_size the index itself, so the WHERE clause keeps every other index out
-- before they are computed: an index on a table no spec names is known by name only
-- (names.sql). Sizes only when asked for (parameter sizes: status): pg_relation_size reads
-- the file system for every index, most of the query's time on ten thousand indexes.
--
-- plain: the definition of a plain-column index written out from the catalog, as
-- pg_get_indexdef prints it (the same quote_ident, the table always schema-qualified), for
-- the indexes with nothing else to print: not unique (NULLS NOT DISTINCT, 15+), not
-- partitioned (ON ONLY), no expression, predicate or storage parameter, every key column
-- ascending with its column's collation and its type's default operator class (no options).
-- pg_get_indexdef costs ~20 us an index (most of a 10,000-index plan's server time); this,
-- set-based, a third of that. Every other index is deparsed by the server; tests compare both
-- on every major (tests/test_catalog_locks.py).
WITH keys AS (
    -- One row per column of each candidate index: its own attribute (attnum = position, for
    -- opclass options) and its table's; int2vector and oidvector subscripts start at 0.
    SELECT i.indexrelid, i.indnkeyatts, ia.attnum AS pos, ia.attoptions,
           a.attname, a.atttypid, a.attcollation, i.indclass[ia.attnum - 1] AS cls,
           i.indcollation[ia.attnum - 1] AS coll, i.indoption[ia.attnum - 1] AS opt
      FROM pg_index i
      JOIN pg_class c ON c.oid = i.indexrelid
      JOIN pg_attribute ia ON ia.attrelid = i.indexrelid
      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[ia.attnum - 1]
     WHERE (%(everything)s OR i.indrelid = ANY (%(relevant)s::oid[]))
       AND c.relkind = 'i' AND NOT i.indisunique AND c.reloptions IS NULL
       AND i.indexprs IS NULL AND i.indpred IS NULL
), plain AS (
    SELECT k.indexrelid,
           string_agg(quote_ident(k.attname), ', ' ORDER BY k.pos)
               FILTER (WHERE k.pos <= k.indnkeyatts)        AS key_columns,
           string_agg(quote_ident(k.attname), ', ' ORDER BY k.pos)
               FILTER (WHERE k.pos > k.indnkeyatts)         AS included
      FROM keys k
      LEFT JOIN pg_opclass oc ON oc.oid = k.cls
     GROUP BY k.indexrelid
    HAVING bool_and(k.attoptions IS NULL
                    AND (k.pos > k.indnkeyatts
                         OR (k.opt = 0 AND k.coll = k.attcollation
                             AND oc.opcdefault AND oc.opcintype = k.atttypid)))
)
SELECT c.oid::bigint                                AS oid,
       i.indrelid::bigint                          AS table_oid,
       n.nspname                                   AS schema,
       t.relname                                   AS table_name,
       c.relname                                   AS name,
       am.amname                                   AS method,
       COALESCE('CREATE INDEX ' || quote_ident(c.relname) || ' ON ' || quote_ident(n.nspname)
                || '.' || quote_ident(t.relname) || ' USING ' || quote_ident(am.amname)
                || ' (' || plain.key_columns || ')'
                || COALESCE(' INCLUDE (' || plain.included || ')', ''),
                pg_get_indexdef(c.oid))            AS definition,
       plain.indexrelid IS NOT NULL                AS written_from_catalog,
       pg_get_expr(i.indpred, i.indrelid)          AS predicate,
       i.indisunique                               AS is_unique,
       i.indexprs IS NOT NULL                      AS has_expressions,
       i.indisprimary                              AS is_primary,
       i.indisvalid                                AS is_valid,
       i.indisready                                AS is_ready,
       c.relkind::text                             AS relkind,
       con.conname                                 AS constraint_name,
       con.contype::text                           AS constraint_type,
       CASE WHEN %(sizes)s THEN pg_relation_size(c.oid) END AS size_bytes,
       pg_stat_get_numscans(c.oid)                 AS scans,
       -- An INVALID index a session is building right now (not a failed build).
       NOT i.indisvalid AND EXISTS (SELECT 1 FROM pg_stat_progress_create_index p
                                     WHERE p.index_relid = c.oid
                                        OR p.relid = i.indrelid)
                                                   AS building
  FROM pg_index i
  JOIN pg_class c ON c.oid = i.indexrelid
  JOIN pg_class t ON t.oid = i.indrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_am am ON am.oid = c.relam
  LEFT JOIN pg_constraint con ON con.conindid = c.oid AND con.contype IN ('p', 'u', 'x')
  LEFT JOIN plain ON plain.indexrelid = c.oid
 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg\_toast%%'
   AND n.nspname NOT LIKE 'pg\_temp%%'
   AND (%(everything)s OR i.indrelid = ANY (%(relevant)s::oid[]))
 ORDER BY n.nspname, t.relname, c.relname
