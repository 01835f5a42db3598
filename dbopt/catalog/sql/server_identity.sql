-- Which server this is, whatever the DSN called it (localhost, 127.0.0.1, a socket directory,
-- a service): its port and when its postmaster started. Readable by any role.
SELECT current_setting('port') AS port, pg_postmaster_start_time()::text AS started
