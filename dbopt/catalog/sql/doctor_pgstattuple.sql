-- doctor --exact: where pgstattuple's pgstatindex is, and whether this role may run it
-- (pgstattuple grants it to pg_stat_scan_tables, not to PUBLIC). No row: not installed.
SELECT n.nspname AS schema,
       has_function_privilege(p.oid, 'EXECUTE') AS allowed
  FROM pg_extension e
  JOIN pg_depend d ON d.refclassid = 'pg_extension'::regclass AND d.refobjid = e.oid
                  AND d.classid = 'pg_proc'::regclass AND d.deptype = 'e'
  JOIN pg_proc p ON p.oid = d.objid
  JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE e.extname = 'pgstattuple' AND p.proname = 'pgstatindex'
   AND p.proargtypes::text = 'regclass'::regtype::oid::text
