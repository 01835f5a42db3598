-- An index's or materialized view's definition as the server prints it (reading it takes an
-- ACCESS SHARE lock on the table the index is on, or on the view and what it reads).
SELECT CASE WHEN c.relkind IN ('i', 'I') THEN pg_get_indexdef(c.oid)
            WHEN c.relkind = 'm' THEN pg_get_viewdef(c.oid) END AS definition
  FROM pg_class c
 WHERE c.oid = %(oid)s::bigint::oid
