-- Set a relation's pg_class statistics (PostgreSQL 18+; needs MAINTAIN on it). A NULL value
-- leaves that figure as it is. Each value has the exact type the function expects: another
-- type is a WARNING and the value is skipped.
SELECT pg_catalog.pg_restore_relation_stats(
           'schemaname', %(schema)s::text,
           'relname', %(name)s::text,
           'version', %(version)s::integer,
           'relpages', %(relpages)s::integer,
           'reltuples', %(reltuples)s::real,
           'relallvisible', %(relallvisible)s::integer,
           'relallfrozen', %(relallfrozen)s::integer)
