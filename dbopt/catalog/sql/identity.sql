-- What the guard checks right before a destructive statement: the live object behind a name
-- (or an OID), its table, its definition as the server prints it, its validity, and whether
-- another session is building it right now. Reads only the object in question.
SELECT c.oid::bigint                                 AS oid,
       n.nspname                                     AS schema,
       c.relname                                     AS name,
       c.relkind::text                               AS relkind,
       tn.nspname                                    AS table_schema,
       t.relname                                     AS table_name,
       CASE WHEN c.relkind IN ('i', 'I') THEN pg_get_indexdef(c.oid) END AS index_definition,
       -- (only when asked: it locks all the view reads)
       CASE WHEN c.relkind = 'm' AND %(deparse)s THEN pg_get_viewdef(c.oid) END
                                                     AS view_definition,
       i.indisvalid                                  AS is_valid,
       i.indisready                                  AS is_ready,
       (SELECT min(p.pid)
          FROM pg_stat_progress_create_index p
         WHERE p.pid <> ALL (%(own)s::int[])
           AND (p.index_relid = c.oid
                OR (NOT coalesce(i.indisvalid, true) AND p.relid = i.indrelid)))
                                                     AS building_pid
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_index i ON i.indexrelid = c.oid
  LEFT JOIN pg_class t ON t.oid = i.indrelid
  LEFT JOIN pg_namespace tn ON tn.oid = t.relnamespace
 WHERE (n.nspname = %(schema)s AND c.relname = %(name)s)
    OR c.oid = %(oid)s::bigint::oid
 ORDER BY (c.oid = %(oid)s::bigint::oid) DESC
