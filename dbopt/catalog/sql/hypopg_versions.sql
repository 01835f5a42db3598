-- HypoPG: the version installed in this database, and the version the server could install.
SELECT (SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'hypopg') AS installed,
       (SELECT default_version FROM pg_catalog.pg_available_extensions
         WHERE name = 'hypopg') AS available
