-- How far this standby replays behind, by its own clock: nothing when it has replayed all it
-- received; else the age of the last transaction it replayed (the classic measure; it
-- over-states the lag of a standby whose primary was idle before the WAL now in flight).
SELECT pg_is_in_recovery() AS standby,
       pg_is_in_recovery() AND pg_is_wal_replay_paused() AS paused,
       CASE WHEN NOT pg_is_in_recovery() THEN 0
            WHEN pg_last_wal_receive_lsn() IS NOT NULL
             AND pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0
            ELSE COALESCE(extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()), 0)
       END::float8 AS lag_s
