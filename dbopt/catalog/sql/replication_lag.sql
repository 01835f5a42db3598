-- The standbys streaming from this primary and how far behind each replays. Without the
-- privileges of pg_read_all_stats, every column but pid is NULL (state tells).
-- replay_lag is NULL when a standby has replayed everything (idle): no lag. While replay is
-- stuck, the primary estimates a growing lag from the WAL the standby has not replayed.
SELECT pid,
       application_name,
       client_addr::text AS client_addr,
       state,
       COALESCE(extract(epoch FROM replay_lag), 0)::float8 AS replay_lag_s
  FROM pg_stat_replication
 ORDER BY application_name, pid
