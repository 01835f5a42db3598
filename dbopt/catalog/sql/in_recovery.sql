-- Whether this server is a hot standby.
SELECT pg_is_in_recovery()
