-- The relations a command touches, as OIDs: the tables and materialized views it names (an
-- index named stands for its table: dbopt may drop or rebuild it there), the partitions under
-- them (recursively), and the views and materialized views that read a named materialized
-- view, directly or through one another (a replace rebuilds or re-binds them), and those
-- readers apart, with the materialized views named apart (what an interrupted replace may
-- have left under dbopt's temporary names: copies that may read any table). Plain catalog
-- reads only: finding them takes no lock on any relation.
WITH RECURSIVE named AS (
    SELECT c.oid, c.relkind
      FROM unnest(%(schemas)s::text[], %(names)s::text[]) AS s(schema, name)
      JOIN pg_namespace n ON n.nspname = s.schema
      JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = s.name
), apart AS (
    SELECT c.oid
      FROM unnest(%(apart_schemas)s::text[], %(apart_names)s::text[]) AS s(schema, name)
      JOIN pg_namespace n ON n.nspname = s.schema
      JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = s.name
     WHERE c.relkind = 'm'
), tables AS (
    SELECT oid, relkind FROM named WHERE relkind NOT IN ('i', 'I')
    UNION
    SELECT t.oid, t.relkind
      FROM named x
      JOIN pg_index i ON i.indexrelid = x.oid
      JOIN pg_class t ON t.oid = i.indrelid
), tree AS (
    SELECT oid, relkind FROM tables
    UNION
    SELECT c.oid, c.relkind
      FROM tree t
      JOIN pg_inherits i ON i.inhparent = t.oid
      JOIN pg_class c ON c.oid = i.inhrelid
     WHERE t.relkind = 'p'
), readers AS (
    SELECT r.ev_class AS oid
      FROM tables m
      JOIN pg_depend d ON d.refobjid = m.oid
                      AND d.refclassid = 'pg_class'::regclass
                      AND d.classid = 'pg_rewrite'::regclass
      JOIN pg_rewrite r ON r.oid = d.objid
     WHERE m.relkind = 'm'
       AND r.ev_class <> m.oid
    UNION
    -- and what reads those, in turn (a replace re-binds a plain view over a reader it
    -- rebuilds, and must know what reads what to refuse what it cannot keep whole)
    SELECT r.ev_class
      FROM readers x
      JOIN pg_depend d ON d.refobjid = x.oid
                      AND d.refclassid = 'pg_class'::regclass
                      AND d.classid = 'pg_rewrite'::regclass
      JOIN pg_rewrite r ON r.oid = d.objid
     WHERE r.ev_class <> x.oid
)
SELECT COALESCE(array_agg(DISTINCT oid ORDER BY oid), '{}') AS oids,
       -- the readers no command named: their definitions are read apart (see inspect)
       COALESCE((SELECT array_agg(DISTINCT r.oid ORDER BY r.oid)
                   FROM (SELECT oid FROM readers UNION SELECT oid FROM apart) r
                  WHERE r.oid NOT IN (SELECT oid FROM tree)), '{}') AS readers
  FROM (SELECT oid FROM tree UNION SELECT oid FROM readers UNION SELECT oid FROM apart) AS touched
