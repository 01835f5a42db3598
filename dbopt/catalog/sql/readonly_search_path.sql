-- The schemas the session searches, pg_catalog and pg_temp included when they are.
SELECT pg_catalog.current_schemas(true) AS schemas
