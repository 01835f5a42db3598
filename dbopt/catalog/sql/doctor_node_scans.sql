-- doctor: index scans on this node since its statistics were last reset (on a standby: the
-- scans of the queries it served), by OID (a physical standby has the primary's OIDs), so no
-- name is ever split or compared as text.
SELECT s.indexrelid::bigint AS oid, s.idx_scan AS scans
  FROM pg_stat_user_indexes s
 WHERE s.indexrelid = ANY (%(oids)s::oid[])
 ORDER BY s.indexrelid
