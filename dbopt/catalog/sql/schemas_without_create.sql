-- Which of the named schemas the current role may not create objects in.
SELECT nspname
  FROM pg_namespace
 WHERE nspname = ANY (%s)
   AND NOT has_schema_privilege(oid, 'CREATE')
 ORDER BY nspname
