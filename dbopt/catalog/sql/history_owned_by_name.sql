-- What history rows without an OID (dbopt 0.1 kept only names) say dbopt created and has not
-- dropped since: the last row per object, with the spec's definition it recorded; credible
-- facts only.
SELECT s.id, s.run_id, s.object_kind, s.object_schema, s.object_name, s.table_name,
       s.definition
  FROM (SELECT id, run_id, object_kind, object_schema, object_name, table_name, definition,
               bool_or(NOT existed_before) OVER w AS created_by_dbopt,
               last_value(action) OVER w AS last_action,
               row_number() OVER (PARTITION BY object_kind, object_schema, object_name
                                  ORDER BY id DESC) AS rn
          FROM {schema}.changes
         WHERE result = 'ok' {where}
           -- Only objects with a row that is not a drop (as last_action must be below), found
           -- first: the drops of objects recorded by OID (the rows of a long history that
           -- have none) are never sorted and windowed.
           AND (object_kind, object_schema, object_name) IN (
                 SELECT object_kind, object_schema, object_name
                   FROM {schema}.changes
                  WHERE result = 'ok' AND action <> 'drop' {where})
        WINDOW w AS (PARTITION BY object_kind, object_schema, object_name ORDER BY id
                     ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)) s
  JOIN pg_namespace tn ON tn.nspname = split_part(s.table_name, '.', 1)
  JOIN pg_class t ON t.relnamespace = tn.oid
                 AND t.relname = substr(s.table_name, length(tn.nspname) + 2)
 WHERE rn = 1 AND created_by_dbopt AND last_action <> 'drop'
   AND {credible}
 ORDER BY s.object_schema, s.object_name
