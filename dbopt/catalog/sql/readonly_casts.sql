-- User-defined casts through a function, with when the server applies them (context).
SELECT c.castsource::pg_catalog.regtype::text AS source, c.casttarget::int8 AS target,
       c.casttarget::pg_catalog.regtype::text AS target_name, c.castfunc::int8 AS func,
       c.castcontext::text AS context
  FROM pg_catalog.pg_cast c
 WHERE c.oid >= %(first)s AND c.castfunc <> 0
 ORDER BY c.oid
