-- The size of one index, once built (an ACCESS SHARE lock on the index itself).
SELECT pg_relation_size(c.oid) AS size_bytes
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = %(schema)s AND c.relname = %(name)s
