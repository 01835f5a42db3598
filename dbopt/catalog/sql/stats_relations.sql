-- The relations `dbopt stats dump` reads the planner statistics of: the tables and
-- materialized views named (schema, name), the tables and materialized views that the plain
-- views among them read (through views, recursively), and the partitions and inheritance
-- children under all of them (recursively). With each, the pg_class figures the planner
-- starts from; relallfrozen exists from PostgreSQL 18 on (NULL before). Catalog reads only.
WITH RECURSIVE reached AS (
    SELECT c.oid
      FROM unnest(%(schemas)s::text[], %(names)s::text[]) AS s(schema, name)
      JOIN pg_namespace n ON n.nspname = s.schema
      JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = s.name
    UNION
    SELECT next.oid
      FROM reached x
      JOIN pg_class xc ON xc.oid = x.oid
     CROSS JOIN LATERAL (
            SELECT d.refobjid AS oid
              FROM pg_rewrite r
              JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass
                              AND d.objid = r.oid
                              AND d.refclassid = 'pg_class'::regclass
                              AND d.refobjid <> r.ev_class
             WHERE r.ev_class = x.oid AND xc.relkind = 'v'
            UNION ALL
            SELECT i.inhrelid FROM pg_inherits i WHERE i.inhparent = x.oid
           ) AS next
)
SELECT DISTINCT n.nspname AS schema, c.relname AS name, c.relkind::text AS relkind,
       c.relpages, c.reltuples, c.relallvisible,
       (to_jsonb(c) ->> 'relallfrozen')::integer AS relallfrozen
  FROM reached x
  JOIN pg_class c ON c.oid = x.oid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'm')
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
 ORDER BY 1, 2
