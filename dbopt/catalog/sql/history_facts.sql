-- What is there of dbopt's history in schema %(schema)s, and what the current role may do
-- with it: one row per object (the schema itself, each table, each sequence), with the
-- privileges the role lacks for reading and for writing. Catalog only: it needs no grant.
WITH wanted (kind, name, read_privs, write_privs) AS (
    VALUES ('schema',   NULL,                ARRAY['USAGE'],  ARRAY['USAGE']),
           ('table',    'runs',              ARRAY['SELECT'], ARRAY['SELECT', 'INSERT', 'UPDATE']),
           ('table',    'changes',           ARRAY['SELECT'], ARRAY['SELECT', 'INSERT', 'UPDATE']),
           ('table',    'refreshes',         ARRAY['SELECT'], ARRAY['SELECT', 'INSERT', 'UPDATE']),
           ('table',    'schema_version',    ARRAY['SELECT'], ARRAY['SELECT']),
           ('sequence', 'runs_id_seq',       ARRAY[]::text[], ARRAY['USAGE']),
           ('sequence', 'changes_id_seq',    ARRAY[]::text[], ARRAY['USAGE']),
           ('sequence', 'refreshes_id_seq',  ARRAY[]::text[], ARRAY['USAGE'])
), found AS (
    SELECT w.kind, w.name, w.read_privs, w.write_privs,
           CASE WHEN w.kind = 'schema' THEN n.oid ELSE c.oid END AS oid,
           CASE WHEN w.kind = 'schema' THEN n.nspowner ELSE c.relowner END AS owner
      FROM wanted w
      LEFT JOIN pg_namespace n ON n.nspname = %(schema)s
      LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = w.name
                          AND c.relkind = CASE w.kind WHEN 'table' THEN 'r' ELSE 'S' END
)
SELECT f.kind, f.name, f.oid IS NOT NULL AS present,
       f.owner IS NOT NULL AND pg_has_role(current_user, f.owner, 'USAGE') AS owned,
       pg_get_userbyid(f.owner) AS owner_name,
       ARRAY(SELECT p FROM unnest(f.read_privs) p
              WHERE f.oid IS NOT NULL AND NOT CASE f.kind
                    WHEN 'schema' THEN has_schema_privilege(f.oid, p)
                    WHEN 'table' THEN has_table_privilege(f.oid, p)
                    ELSE has_sequence_privilege(f.oid, p) END) AS missing_read,
       ARRAY(SELECT p FROM unnest(f.write_privs) p
              WHERE f.oid IS NOT NULL AND NOT CASE f.kind
                    WHEN 'schema' THEN has_schema_privilege(f.oid, p)
                    WHEN 'table' THEN has_table_privilege(f.oid, p)
                    ELSE has_sequence_privilege(f.oid, p) END) AS missing_write,
       f.kind = 'table' AND f.name = 'changes' AND EXISTS (
           SELECT 1 FROM pg_attribute a WHERE a.attrelid = f.oid
              AND a.attname = 'undoes_change' AND NOT a.attisdropped) AS has_facts,
       current_user AS role,
       has_database_privilege(current_database(), 'CREATE') AS may_create_schema,
       current_database() AS dbname
  FROM found f
