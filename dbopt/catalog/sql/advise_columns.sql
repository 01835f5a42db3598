-- dbopt advise: the columns of the tables the workload names, each with its type family and
-- the planner's distinct-value estimate, and each table's estimated rows. pg_stats shows only
-- columns the role may read. (%% is a percent sign: the query takes parameters.)
SELECT n.nspname AS schema, c.relname AS name, c.reltuples::float8 AS rows,
       a.attname AS column,
       CASE WHEN t.typcategory = 'A' THEN 'array'
            WHEN t.typname = 'jsonb' THEN 'jsonb'
            WHEN t.typtype = 'r' OR t.typtype = 'm' THEN 'range'
            WHEN t.typcategory = 'G' THEN 'geometry'
            WHEN t.typcategory = 'S' THEN 'text'
            ELSE 'other' END AS type_class,
       st.n_distinct::float8 AS n_distinct
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
  LEFT JOIN pg_catalog.pg_stats st
         ON st.schemaname = n.nspname AND st.tablename = c.relname AND st.attname = a.attname
        AND NOT st.inherited
 WHERE c.relkind IN ('r', 'p', 'm')
   AND c.relname = ANY(%(names)s)  -- the relations the workload names (any schema)
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg\_%%'
 ORDER BY n.nspname, c.relname, a.attnum
