-- doctor --exact: one btree index read page by page by pgstattuple (ACCESS SHARE on the
-- index, bounded by lock_timeout); {schema} is where the extension lives.
SELECT s.leaf_pages::bigint AS leaf_pages, s.empty_pages::bigint AS empty_pages,
       s.deleted_pages::bigint AS deleted_pages, s.avg_leaf_density::float8 AS avg_leaf_density,
       s.index_size::bigint AS index_size
  FROM {schema}.pgstatindex(%(oid)s::oid::regclass) s
