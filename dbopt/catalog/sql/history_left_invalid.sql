-- A create that did not end ok but left its index behind, INVALID, under the name it gave
-- it: a build stopped (a second Ctrl-C stopped its clean-up too) or a crash. Something was
-- made: rollback drops it (the next apply repairs it otherwise). Credible only.
({change}.result <> 'ok' AND {change}.action = 'create' AND {change}.object_kind = 'index'
 AND EXISTS (
  SELECT FROM pg_catalog.pg_class lc
    JOIN pg_catalog.pg_namespace ln ON ln.oid = lc.relnamespace
    JOIN pg_catalog.pg_index lx ON lx.indexrelid = lc.oid
    JOIN pg_catalog.pg_class t ON t.oid = lx.indrelid
   WHERE lc.oid = {change}.object_oid::oid
     AND ln.nspname = {change}.object_schema AND lc.relname = {change}.object_name
     AND NOT lx.indisvalid
     AND {credible}))
