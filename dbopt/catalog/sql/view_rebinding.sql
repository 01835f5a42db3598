-- The columns a view would have, re-bound to a replaced view's new query (the temporary view
-- parameter temp stands for it so), whose type or collation differ from the view's own
-- (parameter view: its OID), by position: CREATE OR REPLACE VIEW cannot change either.
SELECT o.attname::text                                   AS name,
       format_type(o.atttypid, o.atttypmod)              AS old_type,
       format_type(a.atttypid, a.atttypmod)              AS new_type,
       o.attcollation <> a.attcollation                  AS collation_changes
  FROM pg_attribute a
  JOIN pg_attribute o ON o.attrelid = %(view)s::oid AND o.attnum = a.attnum
                     AND NOT o.attisdropped
 WHERE a.attrelid = %(temp)s::regclass AND a.attnum > 0 AND NOT a.attisdropped
   AND ((o.atttypid, o.atttypmod) IS DISTINCT FROM (a.atttypid, a.atttypmod)
        OR o.attcollation <> a.attcollation)
 ORDER BY a.attnum
