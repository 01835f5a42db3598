-- Whether the citus extension is installed in this database (a catalog fact: dbopt never
-- guesses Citus from error texts).
SELECT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'citus') AS installed
