-- doctor: since when this database's statistics count (NULL: never reset), and the server.
SELECT d.stats_reset, now() AS now, current_database() AS database,
       current_setting('server_version') AS server_version
  FROM pg_stat_database d
 WHERE d.datname = current_database()
