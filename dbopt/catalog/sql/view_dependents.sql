-- Views and materialized views built on each materialized view and each view (through their
-- rewrite rules): replacing or dropping a materialized view must not break them, and one that
-- reads it through a view is found through that view.
-- With the columns of it each one reads (pg_depend records a view's rule depending on each
-- column it uses): a replace whose new query drops one of them would break the reader.
SELECT src_ns.nspname AS schema,
       src.relname             AS name,
       dep_ns.nspname          AS dependent_schema,
       dep.relname             AS dependent_name,
       min(dep.relkind::text)  AS dependent_kind,
       COALESCE(array_agg(DISTINCT a.attname::text) FILTER (WHERE a.attname IS NOT NULL), '{}')
                               AS columns
  FROM pg_depend d
  JOIN pg_rewrite r       ON r.oid = d.objid
  JOIN pg_class dep       ON dep.oid = r.ev_class
  JOIN pg_namespace dep_ns ON dep_ns.oid = dep.relnamespace
  JOIN pg_class src       ON src.oid = d.refobjid
  JOIN pg_namespace src_ns ON src_ns.oid = src.relnamespace
  LEFT JOIN pg_attribute a ON a.attrelid = src.oid AND a.attnum = d.refobjsubid
                          AND d.refobjsubid > 0
 WHERE d.classid = 'pg_rewrite'::regclass
   AND d.refclassid = 'pg_class'::regclass
   AND src.relkind IN ('m', 'v')
   AND dep.oid <> src.oid
 GROUP BY 1, 2, 3, 4
 ORDER BY 1, 2, 3, 4
