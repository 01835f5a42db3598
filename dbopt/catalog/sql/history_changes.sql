-- Recorded changes with what undid them (the change of a later, successful rollback).
SELECT c.*, r.command,
       (SELECT u.id FROM {schema}.changes u
         WHERE u.undoes_change = c.id AND u.result = 'ok' ORDER BY u.id DESC LIMIT 1) AS undone_by,
       (SELECT u.run_id FROM {schema}.changes u
         WHERE u.undoes_change = c.id AND u.result = 'ok' ORDER BY u.id DESC LIMIT 1)
                                                                              AS undone_by_run
  FROM {schema}.changes c
  JOIN {schema}.runs r ON r.id = c.run_id
 WHERE {where}
 ORDER BY c.id DESC
