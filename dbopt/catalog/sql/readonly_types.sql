-- Domains (their CHECKs run on a cast to them) and the targets of user-defined casts.
SELECT t.oid::int8 AS oid, n.nspname AS schema, t.typname AS name,
       t.typtype = 'd' AS is_domain, t.typbasetype::int8 AS base
  FROM pg_catalog.pg_type t
  JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
 WHERE (t.oid >= %(first)s AND t.typtype = 'd')
    OR t.oid IN (SELECT casttarget FROM pg_catalog.pg_cast
                  WHERE oid >= %(first)s AND castfunc <> 0)
 ORDER BY t.oid
