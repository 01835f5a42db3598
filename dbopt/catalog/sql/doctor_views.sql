-- doctor: whether each materialized view holds data (plain catalog columns: no lock).
SELECT n.nspname AS schema, c.relname AS name, c.relispopulated AS populated
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'm'
 ORDER BY n.nspname, c.relname
