-- The primary's current WAL write position.
SELECT pg_current_wal_lsn()::text
