-- A change that did not end ok but whose swap landed: a replace's (or a rollback's restore's)
-- new object is in place, usable (an index valid, a materialized view populated), under the
-- name the change gave it. Stopped by Ctrl-C, or failed, in its last step (the drop of what
-- it swapped out), it had swapped the new object in: it is done for what it made and what it
-- replaced. A create or a repair that failed left, at most, an INVALID index: not done.
-- Credible only (as every fact of the history: history_credible.sql).
-- Once a later change of dbopt's replaced (or restored, or dropped) what it made, that later
-- change is the proof: it was planned against the object in place, under its name.
({change}.result <> 'ok' AND {change}.action IN ('replace', 'restore') AND (EXISTS (
  SELECT FROM pg_catalog.pg_class lc
    JOIN pg_catalog.pg_namespace ln ON ln.oid = lc.relnamespace
    LEFT JOIN pg_catalog.pg_index lx ON lx.indexrelid = lc.oid
    JOIN pg_catalog.pg_class t ON t.oid = coalesce(lx.indrelid, lc.oid)
   WHERE lc.oid = {change}.object_oid::oid
     AND ln.nspname = {change}.object_schema AND lc.relname = {change}.object_name
     AND coalesce(lx.indisvalid, lc.relispopulated)
     AND {credible})
 OR EXISTS (SELECT FROM {schema}.changes later
             WHERE later.replaced_oid = {change}.object_oid AND later.id > {change}.id)))
