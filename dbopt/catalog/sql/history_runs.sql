-- The latest runs (or one), newest first, with how many of their changes ended how.
SELECT r.id, r.command, r.environment, r.outcome, r.started_at, r.finished_at, r.undoes_run,
       r.db_role, r.client_host, r.dbopt_version,
       count(c.id) FILTER (WHERE c.result = 'ok')      AS ok,
       count(c.id) FILTER (WHERE c.result = 'failed')  AS failed,
       count(c.id) FILTER (WHERE c.result = 'aborted') AS aborted,
       count(c.id) FILTER (WHERE c.result = 'skipped') AS skipped,
       (SELECT max(u.id) FROM {schema}.runs u WHERE u.undoes_run = r.id
           AND u.outcome = 'succeeded')                AS undone_by_run
  FROM {schema}.runs r
  LEFT JOIN {schema}.changes c ON c.run_id = r.id
 WHERE {where}
 GROUP BY r.id
 ORDER BY r.id DESC
 LIMIT %(limit)s
