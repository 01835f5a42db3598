-- The tables Citus knows (run only where the citus extension is installed): how each is
-- distributed, in the words of Citus's own citus_tables view (src/backend/distributed/sql/
-- udfs/citus_tables/latest.sql; its 'schema' tables are single-shard ones here, which needs
-- no pg_dist_schema, new in Citus 12), and its distribution column. pg_dist_partition is a plain
-- catalog table of Citus: reading it takes no lock on the tables.
--   partmethod 'h' hash, 'r' range, 'a' append (with a distribution column), 'n' none:
--   a reference table (repmodel 't'), a Citus local table (no colocation group), or a
--   single-shard distributed table (schema-based sharding or no distribution column).
SELECT p.logicalrelid::bigint                      AS oid,
       p.partmethod::text                          AS method,
       CASE WHEN p.partkey IS NOT NULL THEN 'distributed'
            WHEN p.repmodel = 't' THEN 'reference'
            WHEN p.colocationid = 0 THEN 'Citus local'
            ELSE 'single-shard distributed'
       END                                         AS kind,
       CASE WHEN p.partkey IS NOT NULL
            THEN pg_catalog.column_to_column_name(p.logicalrelid, p.partkey) END
                                                   AS distribution_column
  FROM pg_catalog.pg_dist_partition p
 ORDER BY p.logicalrelid
