-- Whether one table is a Citus table (run only where the citus extension is installed): its
-- OID on the coordinator and how Citus holds it (see citus_tables.sql), or no row.
SELECT p.logicalrelid::bigint                      AS oid,
       p.partmethod::text                          AS method
  FROM pg_catalog.pg_dist_partition p
 WHERE p.logicalrelid = to_regclass(format('%%I.%%I', %(schema)s::text, %(name)s::text))
