-- Every index of the given Citus tables (parameter tables: their OIDs on the coordinator) on
-- every shard placement, read on the node that holds it: found or not, valid or not, its
-- size and its scans there. Run on the coordinator, only where the citus extension is.
--
-- run_command_on_placements (Citus, src/backend/distributed/sql/citus--8.0-1.sql) runs the
-- command on each placement of the table with %%L replaced by the shard's name (format());
-- the command reads pg_index, never pg_class (a worker hides shards from pg_class for most
-- application names). A shard's index is named as Citus names it, AppendShardIdToName
-- (<index>_<shardid>, hashed when that is too long): shard_name() computes the same name here,
-- so each row of a placement is matched to its coordinator index by that name.
WITH placement AS (
    SELECT t.oid                                  AS table_oid,
           r.shardid,
           r.nodename,
           r.nodeport,
           r.success,
           r.result
      FROM unnest(%(tables)s::oid[]) AS t(oid),
           LATERAL pg_catalog.run_command_on_placements(
               t.oid::regclass,
               $cmd$SELECT coalesce(json_agg(json_build_array(
                           i.indexrelid::regclass::text, i.indisvalid,
                           pg_relation_size(i.indexrelid), pg_stat_get_numscans(i.indexrelid)
                       ))::text, '[]')
                      FROM pg_index i WHERE i.indrelid = %%L::regclass$cmd$) AS r
), expected AS (
    SELECT p.*,
           x.indexrelid,
           n.nspname                              AS schema,
           c.relname                              AS name,
           pg_catalog.parse_ident(pg_catalog.shard_name(x.indexrelid, p.shardid)) AS shard_index
      FROM placement p
      JOIN pg_catalog.pg_index x ON x.indrelid = p.table_oid
      JOIN pg_catalog.pg_class c ON c.oid = x.indexrelid
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
)
SELECT e.schema,
       e.name,
       e.shardid                                  AS shard_id,
       e.nodename || ':' || e.nodeport            AS node,
       CASE WHEN NOT e.success THEN e.result END  AS error,
       f.valid,
       f.size_bytes,
       f.scans
  FROM expected e
  LEFT JOIN LATERAL (
      SELECT (j.item ->> 1)::boolean              AS valid,
             (j.item ->> 2)::bigint               AS size_bytes,
             (j.item ->> 3)::bigint               AS scans
        FROM json_array_elements(CASE WHEN e.success THEN e.result::json
                                      ELSE '[]'::json END) AS j(item),
             pg_catalog.parse_ident(j.item ->> 0) AS found(parts)
       WHERE found.parts[cardinality(found.parts)] = e.shard_index[cardinality(e.shard_index)]
  ) f ON true
 ORDER BY e.schema, e.name, e.shardid, node
