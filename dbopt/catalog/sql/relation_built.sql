-- What a step that made a relation left under its name, read right after the step: as
-- relation_state (OID, relkind, an index's validity), plus the definition the server prints
-- and the size. Those two take ACCESS SHARE locks (the index's table and the index; the view
-- and what it reads): when one is not granted within lock_timeout, relation_state alone is
-- read again and the definition and size stay unknown (not worth a wait).
SELECT c.oid::bigint                      AS oid,
       c.relkind::text                    AS relkind,
       i.indisvalid AND i.indisready      AS valid,
       CASE WHEN c.relkind IN ('i', 'I') THEN pg_get_indexdef(c.oid)
            WHEN c.relkind = 'm' THEN pg_get_viewdef(c.oid) END AS definition,
       pg_relation_size(c.oid)            AS size_bytes
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_index i ON i.indexrelid = c.oid
 WHERE n.nspname = %(schema)s AND c.relname = %(name)s
