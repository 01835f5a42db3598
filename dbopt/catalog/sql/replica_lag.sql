-- How far this standby replays behind the primary, whose current WAL position was
-- %(primary_lsn)s a moment ago: nothing when it has replayed up to there; else the age of the
-- last transaction it replayed (the classic measure: it over-states the lag of a standby
-- whose primary was idle before the WAL now in flight). A standby that stopped receiving
-- (disconnected, or fed from an archive) is behind all the same. NULL: behind, but it has
-- replayed no transaction yet to date it by.
SELECT pg_is_in_recovery() AS standby,
       pg_is_in_recovery() AND pg_is_wal_replay_paused() AS paused,
       -- No WAL receiver at all, or one that says it is not streaming (its status is NULL to
       -- a role without pg_read_all_stats: then nothing is said).
       NOT EXISTS (SELECT 1 FROM pg_stat_wal_receiver)
         OR EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status <> 'streaming')
                                                                        AS not_streaming,
       CASE WHEN NOT pg_is_in_recovery() THEN 0
            WHEN pg_last_wal_replay_lsn() >= %(primary_lsn)s::pg_lsn THEN 0
            ELSE extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())
       END::float8 AS lag_s,
       CASE WHEN pg_is_in_recovery()
            THEN pg_wal_lsn_diff(%(primary_lsn)s::pg_lsn, pg_last_wal_replay_lsn())
       END::float8 AS behind_bytes
