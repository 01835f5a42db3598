"""dbopt's own small schema: every run and every change it made, and so what it manages.

The history is what lets dbopt tell the indexes it created (which it may drop on --prune or
rollback) from everything else (which it never drops).
"""

from __future__ import annotations

import getpass
import socket
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from dbopt import __version__
from dbopt.spec import QualifiedName

_TABLES = """
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
CREATE INDEX IF NOT EXISTS changes_object ON {schema}.changes (object_schema, object_name, id);
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
CREATE INDEX IF NOT EXISTS refreshes_view ON {schema}.refreshes (view_schema, view_name, id)
"""

_MANAGED = """
SELECT object_schema, object_name
  FROM (SELECT object_schema, object_name,
               bool_or(NOT existed_before) OVER w AS created_by_dbopt,
               last_value(action) OVER w AS last_action,
               row_number() OVER (PARTITION BY object_schema, object_name ORDER BY id DESC) AS rn
          FROM {schema}.changes
         WHERE result = 'ok' AND object_kind = {kind}
        WINDOW w AS (PARTITION BY object_schema, object_name ORDER BY id
                     ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)) s
 WHERE rn = 1 AND created_by_dbopt AND last_action <> 'drop'
 ORDER BY 1, 2
"""


@dataclass(frozen=True, slots=True)
class History:
    """Where the history lives (schema name from dbopt.yaml, default ``dbopt``)."""

    schema: str = "dbopt"

    def exists(self, conn: psycopg.Connection[Any]) -> bool:
        """True when the history tables were created (by a first apply)."""
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = 'changes')",
            (self.schema,),
        ).fetchone()
        return bool(row and row[0])

    def ensure(self, conn: psycopg.Connection[Any]) -> None:
        """Create the schema and tables if missing (first apply)."""
        ident = sql.Identifier(self.schema)
        with conn.transaction():
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
            conn.execute(sql.SQL(_TABLES).format(schema=ident))

    def managed(self, conn: psycopg.Connection[Any], kind: str = "index") -> set[QualifiedName]:
        """Objects (indexes or views) dbopt created and has not dropped since."""
        if not self.exists(conn):
            return set()
        query = sql.SQL(_MANAGED).format(schema=sql.Identifier(self.schema), kind=sql.Literal(kind))
        return {QualifiedName(s, n) for s, n in conn.execute(query).fetchall()}

    def attempted(self, conn: psycopg.Connection[Any]) -> set[QualifiedName]:
        """Indexes dbopt tried to create, whatever came of it (a crash leaves them INVALID)."""
        if not self.exists(conn):
            return set()
        rows = conn.execute(
            sql.SQL(
                "SELECT DISTINCT object_schema, object_name FROM {}.changes "
                "WHERE object_kind = 'index' AND action IN ('create', 'repair') "
                "AND NOT existed_before"
            ).format(sql.Identifier(self.schema))
        ).fetchall()
        return {QualifiedName(s, n) for s, n in rows}

    def close_orphans(self, conn: psycopg.Connection[Any]) -> int:
        """Mark runs and changes a crashed dbopt left 'running' as aborted; returns how many.

        Only called while holding the run lock, so no live run can be among them.
        """
        schema = sql.Identifier(self.schema)
        conn.execute(
            sql.SQL(
                "UPDATE {}.changes SET result = 'aborted', error = 'dbopt stopped mid-change' "
                "WHERE result = 'running'"
            ).format(schema)
        )
        cur = conn.execute(
            sql.SQL(
                "UPDATE {}.runs SET outcome = 'aborted', finished_at = clock_timestamp() "
                "WHERE outcome = 'running'"
            ).format(schema)
        )
        return cur.rowcount

    def start_run(
        self,
        conn: psycopg.Connection[Any],
        command: str,
        environment: str | None,
        undoes_run: int | None = None,
    ) -> int:
        """Record a run as running; returns its id."""
        row = conn.execute(
            sql.SQL(
                "INSERT INTO {}.runs (command, environment, client_host, client_user, "
                "dbopt_version, undoes_run) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id"
            ).format(sql.Identifier(self.schema)),
            (
                command,
                environment,
                socket.gethostname(),
                getpass.getuser(),
                __version__,
                undoes_run,
            ),
        ).fetchone()
        assert row is not None
        return int(row[0])

    def set_rollback_sql(self, conn: psycopg.Connection[Any], run_id: int, text: str) -> None:
        """Store the run's rollback plan before its first build."""
        conn.execute(
            sql.SQL("UPDATE {}.runs SET rollback_sql = %s WHERE id = %s").format(
                sql.Identifier(self.schema)
            ),
            (text, run_id),
        )

    def finish_run(self, conn: psycopg.Connection[Any], run_id: int, outcome: str) -> None:
        """Close a run with its outcome."""
        conn.execute(
            sql.SQL(
                "UPDATE {}.runs SET finished_at = clock_timestamp(), outcome = %s WHERE id = %s"
            ).format(sql.Identifier(self.schema)),
            (outcome, run_id),
        )

    def start_change(
        self, conn: psycopg.Connection[Any], run_id: int, values: dict[str, Any]
    ) -> int:
        """Record a change as running; returns its id."""
        cols = sorted(values)
        row = conn.execute(
            sql.SQL("INSERT INTO {}.changes (run_id, {}) VALUES (%s, {}) RETURNING id").format(
                sql.Identifier(self.schema),
                sql.SQL(", ").join(sql.Identifier(c) for c in cols),
                sql.SQL(", ").join(sql.Placeholder() for _ in cols),
            ),
            (run_id, *(values[c] for c in cols)),
        ).fetchone()
        assert row is not None
        return int(row[0])

    def finish_change(
        self, conn: psycopg.Connection[Any], change_id: int, result: str, error: str | None = None
    ) -> None:
        """Close a change with its result and duration."""
        conn.execute(
            sql.SQL(
                "UPDATE {}.changes SET result = %s, error = %s, duration_ms = "
                "round(extract(epoch FROM clock_timestamp() - started_at) * 1000, 1) "
                "WHERE id = %s"
            ).format(sql.Identifier(self.schema)),
            (result, error, change_id),
        )

    def runs(self, conn: psycopg.Connection[Any], limit: int = 20) -> list[dict[str, Any]]:
        """The latest runs, newest first."""
        if not self.exists(conn):
            return []
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                sql.SQL(
                    "SELECT id, command, environment, db_role, client_host, dbopt_version, "
                    "started_at, finished_at, outcome, undoes_run FROM {}.runs "
                    "ORDER BY id DESC LIMIT %s"
                ).format(sql.Identifier(self.schema)),
                (limit,),
            )
            return cur.fetchall()

    def record_refresh(
        self, conn: psycopg.Connection[Any], environment: str | None, result: Any
    ) -> None:
        """Record one refresh (view, mode, duration, rows, outcome)."""
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.refreshes (view_schema, view_name, environment, mode, "
                "started_at, duration_ms, rows, outcome, message) VALUES "
                "(%s, %s, %s, %s, clock_timestamp() - make_interval(secs => %s), "
                "round(%s::numeric * 1000, 1), %s, %s, %s)"
            ).format(sql.Identifier(self.schema)),
            (
                result.view.schema,
                result.view.name,
                environment,
                result.mode,
                result.seconds,
                result.seconds,
                result.rows,
                result.outcome,
                result.message,
            ),
        )

    def last_refreshes(self, conn: psycopg.Connection[Any]) -> dict[QualifiedName, Any]:
        """The last successful refresh of each view: its start time, duration and rows."""
        if not self.exists(conn):
            return {}
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                sql.SQL(
                    "SELECT DISTINCT ON (view_schema, view_name) view_schema, view_name, "
                    "started_at, duration_ms, rows, mode FROM {}.refreshes "
                    "WHERE outcome = 'ok' ORDER BY view_schema, view_name, id DESC"
                ).format(sql.Identifier(self.schema))
            )
            return {QualifiedName(r["view_schema"], r["view_name"]): r for r in cur.fetchall()}
