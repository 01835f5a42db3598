-- Index scans on this node since its statistics were last reset (on a standby: the scans of
-- the queries it served), for the indexes named in %(names)s (schema.name).
SELECT s.schemaname || '.' || s.indexrelname AS name, s.idx_scan
  FROM pg_stat_user_indexes s
 WHERE s.schemaname || '.' || s.indexrelname = ANY (%(names)s::text[])
