-- The query of each materialized view `dbopt import` writes a spec for (parameter oids),
-- exactly as the server prints it: what `dbopt plan` compares a spec's query with.
-- pg_get_viewdef takes an ACCESS SHARE lock on the view and on what it reads.
SELECT c.oid::bigint                                AS oid,
       pg_get_viewdef(c.oid)                       AS definition
  FROM pg_class c
 WHERE c.oid = ANY (%(oids)s::oid[]) AND c.relkind = 'm'
 ORDER BY c.oid
