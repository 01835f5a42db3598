-- The primary's current WAL insert position: everything committed so far, including commits
-- of synchronous_commit = off sessions that are not written yet (pg_current_wal_lsn(), the
-- write position, would call a standby caught up that has not received them).
SELECT pg_current_wal_insert_lsn()::text
