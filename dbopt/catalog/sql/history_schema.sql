-- dbopt's history tables, created or brought up to date by `dbopt init` (or by a first run
-- whose role may): every statement is safe to run again on any earlier layout.
CREATE TABLE IF NOT EXISTS {schema}.runs (
    id             bigserial PRIMARY KEY,
    command        text        NOT NULL,
    environment    text,
    db_role        text        NOT NULL DEFAULT current_user,
    client_host    text,
    client_user    text,
    dbopt_version  text        NOT NULL,
    started_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at    timestamptz,
    outcome        text        NOT NULL DEFAULT 'running'
                   CHECK (outcome IN ('running', 'succeeded', 'failed', 'aborted')),
    undoes_run     bigint REFERENCES {schema}.runs (id),
    rollback_sql   text
);
CREATE TABLE IF NOT EXISTS {schema}.changes (
    id                  bigserial PRIMARY KEY,
    run_id              bigint      NOT NULL REFERENCES {schema}.runs (id),
    object_schema       text        NOT NULL,
    object_name         text        NOT NULL,
    table_name          text        NOT NULL,
    object_kind         text        NOT NULL DEFAULT 'index',
    action              text        NOT NULL,
    definition          text,
    previous_definition text,
    spec_hash           text,
    existed_before      boolean     NOT NULL,
    started_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    duration_ms         numeric,
    result              text        NOT NULL DEFAULT 'running'
                        CHECK (result IN ('running', 'ok', 'failed', 'aborted')),
    error               text,
    forward_sql         text,
    rollback_sql        text,
    rollback_steps      jsonb
);
-- Facts about the objects themselves (dbopt 0.2): what rollback and prune check before any
-- destructive statement. Never SQL: rollback derives its statements from these.
ALTER TABLE {schema}.changes ADD COLUMN IF NOT EXISTS object_oid       bigint;
ALTER TABLE {schema}.changes ADD COLUMN IF NOT EXISTS built_definition text;
ALTER TABLE {schema}.changes ADD COLUMN IF NOT EXISTS replaced_oid     bigint;
ALTER TABLE {schema}.changes ADD COLUMN IF NOT EXISTS previous_state   jsonb;
ALTER TABLE {schema}.changes ADD COLUMN IF NOT EXISTS undoes_change    bigint;
ALTER TABLE {schema}.changes DROP CONSTRAINT IF EXISTS changes_result_check;
ALTER TABLE {schema}.changes ADD CONSTRAINT changes_result_check
    CHECK (result IN ('running', 'ok', 'failed', 'aborted', 'skipped'));
CREATE INDEX IF NOT EXISTS changes_object ON {schema}.changes (object_schema, object_name, id);
CREATE INDEX IF NOT EXISTS changes_oid ON {schema}.changes (object_oid);
CREATE TABLE IF NOT EXISTS {schema}.refreshes (
    id           bigserial PRIMARY KEY,
    view_schema  text        NOT NULL,
    view_name    text        NOT NULL,
    environment  text,
    mode         text        NOT NULL,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    duration_ms  numeric,
    rows         bigint,
    outcome      text        NOT NULL CHECK (outcome IN ('ok', 'failed', 'skipped')),
    message      text
);
CREATE INDEX IF NOT EXISTS refreshes_view ON {schema}.refreshes (view_schema, view_name, id);
-- Layout 3: runs that stop before their end (replica lag over its bound) and the stamp.
ALTER TABLE {schema}.runs DROP CONSTRAINT IF EXISTS runs_outcome_check;
ALTER TABLE {schema}.runs ADD CONSTRAINT runs_outcome_check
    CHECK (outcome IN ('running', 'succeeded', 'failed', 'aborted', 'stopped'));
CREATE TABLE IF NOT EXISTS {schema}.schema_version (
    version       integer     NOT NULL,
    dbopt_version text        NOT NULL,
    upgraded_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    upgraded_by   text        NOT NULL DEFAULT current_user
);
INSERT INTO {schema}.schema_version (version, dbopt_version) VALUES ({version}, {dbopt_version})
