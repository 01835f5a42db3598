-- How many of these sessions still have a transaction open that started before a time (what
-- a timed-out build waited for: it is built again only once they have ended).
SELECT count(*) AS open
  FROM pg_stat_activity
 WHERE pid = ANY (%(pids)s::int[]) AND xact_start < %(since)s
