-- What reindex_leftovers.sql reads, on every shard placement of a Citus table (parameters:
-- table and index, their quoted qualified names on the coordinator): the shard's INVALID
-- indexes named <...>_ccnew[N] or <...>_ccold[N], which a REINDEX INDEX CONCURRENTLY of
-- <index>_<shardid> stopped part-way leaves on the node holding the placement (Citus sends
-- one to each placement: CreateReindexTaskList, commands/index.c). Read where they live
-- through run_command_on_placements, as citus_shard_indexes.sql reads (pg_index, names
-- through regclass), each with its OID there; and whether a session is building an index of
-- that shard right now (pg_stat_progress_create_index: busy). One row per placement at least
-- (oid NULL: nothing found there). The name Citus gives the shard's copy of the index
-- (shard_name: <index>_<shardid>, hashed when too long) comes along, for the caller to tell
-- which leftovers are that copy's.
WITH placement AS (
    SELECT r.shardid,
           r.nodename,
           r.nodeport,
           r.success,
           r.result
      FROM pg_catalog.run_command_on_placements(
               %(table)s::text::regclass,
               $cmd$SELECT json_build_object(
                           'busy', EXISTS (SELECT FROM pg_stat_progress_create_index p
                                            WHERE p.relid = %%1$L::regclass
                                              AND p.pid <> pg_backend_pid()),
                           'found', (SELECT coalesce(json_agg(json_build_array(
                                                i.indexrelid::bigint,
                                                i.indexrelid::regclass::text)), '[]')
                                       FROM pg_index i
                                      WHERE i.indrelid = %%1$L::regclass AND NOT i.indisvalid
                                        AND i.indexrelid::regclass::text
                                            ~ '_cc(new|old)[0-9]*"?$'))::text$cmd$) AS r
)
SELECT p.shardid                                  AS shard_id,
       p.nodename                                 AS host,
       p.nodeport                                 AS port,
       CASE WHEN NOT p.success THEN p.result END  AS error,
       CASE WHEN p.success THEN (p.result::json ->> 'busy')::boolean END AS busy,
       own.parts[cardinality(own.parts)]          AS shard_index,
       (j.item ->> 0)::bigint                     AS oid,
       found.parts[cardinality(found.parts)]      AS name
  FROM placement p
  CROSS JOIN LATERAL pg_catalog.parse_ident(
      pg_catalog.shard_name(to_regclass(%(index)s::text), p.shardid)) AS own(parts)
  LEFT JOIN LATERAL json_array_elements(CASE WHEN p.success THEN p.result::json -> 'found'
                                             ELSE '[]'::json END) AS j(item) ON true
  LEFT JOIN LATERAL pg_catalog.parse_ident(j.item ->> 1) AS found(parts) ON true
 ORDER BY p.shardid, p.nodename, p.nodeport, name
