-- Recorded changes with what undid them (the change of a later rollback that succeeded or
-- landed: history_landed.sql), whether each landed itself, and whether a create that did not
-- end ok left its INVALID index behind (history_left_invalid.sql). What
-- undid what is read in one pass over the history and joined, not looked up once per change
-- (undoes_change has no index: per change, that was a scan of the whole history each).
WITH undone AS (
  SELECT DISTINCT ON (u.undoes_change) u.undoes_change, u.id, u.run_id
    FROM {schema}.changes u
   WHERE u.undoes_change IS NOT NULL AND (u.result = 'ok' OR {landed_u})
   ORDER BY u.undoes_change, u.id DESC
)
SELECT c.*, r.command, u.id AS undone_by, u.run_id AS undone_by_run, {landed_c} AS landed,
       {left_invalid_c} AS left_invalid
  FROM {schema}.changes c
  JOIN {schema}.runs r ON r.id = c.run_id
  LEFT JOIN undone u ON u.undoes_change = c.id
 WHERE {where}
 ORDER BY c.id DESC
