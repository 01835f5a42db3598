-- The history's read indexes (with every new history; `dbopt init` adds them to one made
-- before them): a run's reads stay short on a long history. What dbopt owns is read through
-- the OIDs a later change replaced or dropped; the changes and runs a stopped run left
-- 'running' are found without reading the others. Their names: history.READ_INDEXES.
CREATE INDEX IF NOT EXISTS changes_replaced ON {schema}.changes (replaced_oid);
CREATE INDEX IF NOT EXISTS changes_running ON {schema}.changes (id) WHERE result = 'running';
CREATE INDEX IF NOT EXISTS runs_running ON {schema}.runs (id) WHERE outcome = 'running';
