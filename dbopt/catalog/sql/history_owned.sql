-- Objects dbopt made, by OID: a build that succeeded (or that the server showed dbopt
-- building, and that failed leaving an INVALID index), not dropped or replaced by a later
-- change of dbopt's (that ended ok, or landed: history_landed.sql); and objects a replace
-- swapped out, or a cascade rebuilt (what read the view it replaced): dbopt's to drop only
-- while they carry its temporary name; and the copy of a reader a cascade made aside, whose
-- rebuild did not end ok (dbopt stopped, or its clean-up did not drop it): dbopt's only under
-- the very name it was made under. Credible facts only, and only objects that exist:
-- the history is read only for the indexes and materialized views there are now (by its OID
-- indexes), so the read does not grow with the history's length.
WITH live AS (
  SELECT o.oid::bigint AS oid
    FROM pg_class o
   WHERE o.relkind IN ('i', 'I', 'm')
), made AS (
  SELECT DISTINCT ON (m.object_oid)
         m.id, m.run_id, m.object_kind, m.object_schema, m.object_name, m.table_name,
         m.object_oid AS oid, m.built_definition AS definition, false AS replaced,
         m.action = 'adopt' AS adopted,
         m.action = 'rebuild' AND m.result <> 'ok' AS aside
    FROM {schema}.changes m
   WHERE m.object_oid IN (SELECT oid FROM live)
     AND (m.result = 'ok' OR m.action IN ('create', 'repair', 'replace', 'restore')
          OR (m.action = 'rebuild' AND m.object_kind = 'view'))
     AND NOT EXISTS (SELECT 1 FROM {schema}.changes d
                      WHERE d.replaced_oid = m.object_oid AND d.id > m.id
                        AND (d.result = 'ok' OR {landed_d})
                        AND d.action IN ('drop', 'replace', 'restore', 'repair', 'rebuild'))
   ORDER BY m.object_oid, m.id DESC
), swapped_out AS (
  SELECT DISTINCT ON (r.replaced_oid)
         r.id, r.run_id, r.object_kind, r.object_schema, r.object_name, r.table_name,
         r.replaced_oid AS oid, r.previous_definition AS definition, true AS replaced,
         false AS adopted, false AS aside
    FROM {schema}.changes r
   WHERE r.replaced_oid IN (SELECT oid FROM live)
     AND r.action IN ('replace', 'restore', 'rebuild')
     -- a reader's rebuild swapped what it replaces out only once it is in place
     AND (r.action <> 'rebuild' OR r.result = 'ok')
   ORDER BY r.replaced_oid, r.id DESC
)
SELECT f.*
  FROM (SELECT * FROM made UNION ALL SELECT * FROM swapped_out) f
  JOIN pg_class o ON o.oid = f.oid::oid
  LEFT JOIN pg_index x ON x.indexrelid = o.oid
  JOIN pg_class t ON t.oid = coalesce(x.indrelid, o.oid)
 WHERE {credible}
   AND (NOT f.aside OR (o.relname = f.object_name
                        AND o.relnamespace = (SELECT oid FROM pg_namespace
                                               WHERE nspname = f.object_schema)))
 ORDER BY f.id
