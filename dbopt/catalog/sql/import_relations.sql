-- What `dbopt import` may write specs for: every table, partitioned table and materialized
-- view outside the system schemas and dbopt's history schema (parameter history_schema),
-- with its owner's membership, the extension it belongs to (an extension's objects are not
-- the application's) and its comment. Plain catalog columns only: listing takes no lock.
SELECT c.oid::bigint                                AS oid,
       n.nspname                                   AS schema,
       c.relname                                   AS name,
       c.relkind::text                             AS relkind,
       c.relispartition                            AS is_partition,
       pg_has_role(c.relowner, 'USAGE')            AS owned,
       (SELECT e.extname
          FROM pg_depend d
          JOIN pg_extension e ON e.oid = d.refobjid
         WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
           AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
         ORDER BY e.extname
         LIMIT 1)                                  AS extension,
       obj_description(c.oid, 'pg_class')          AS comment
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'm')
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg\_toast%%'
   AND n.nspname NOT LIKE 'pg\_temp%%'
   AND n.nspname <> %(history_schema)s
 ORDER BY n.nspname, c.relname
