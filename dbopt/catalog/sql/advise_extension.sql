-- dbopt advise: the schema an extension is installed in (no row: not installed here).
SELECT n.nspname
  FROM pg_catalog.pg_extension e
  JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
 WHERE e.extname = %(name)s
