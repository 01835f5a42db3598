-- The named roles that exist, and which are superusers.
SELECT rolname, rolsuper
  FROM pg_roles
 WHERE rolname = ANY (%s)
 ORDER BY rolname
