-- Which of the history's read indexes (history_indexes.sql) schema {schema_name} lacks.
SELECT i.name
  FROM unnest(ARRAY['changes_replaced', 'changes_running', 'runs_running']) WITH ORDINALITY
       AS i(name, n)
 WHERE to_regclass(format('%I.%I', {schema_name}, i.name)) IS NULL
 ORDER BY i.n
