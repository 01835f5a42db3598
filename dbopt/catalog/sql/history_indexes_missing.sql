-- Which of the history's read indexes (the names given: history.READ_INDEXES, made by
-- history_indexes.sql) schema {schema_name} lacks, in that order.
SELECT i.name
  FROM unnest({names}::text[]) WITH ORDINALITY AS i(name, n)
 WHERE to_regclass(format('%I.%I', {schema_name}, i.name)) IS NULL
 ORDER BY i.n
