"""dbopt's own small schema: every run and every change it made, and so what it manages.

The history is what lets dbopt tell the indexes it created (which it may drop on --prune or
rollback) from everything else (which it never drops).
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from dbopt import __version__
from dbopt.catalog import catalog_sql
from dbopt.model import QualifiedName


@dataclass(frozen=True, slots=True)
class OwnedObject:
    """An object dbopt made and has not dropped since, as its history records it."""

    object_type: str  # index or view
    name: QualifiedName
    table: QualifiedName
    oid: int | None  # None: recorded by a dbopt that kept only names
    definition: str | None  # as the server printed it when dbopt made it
    change_id: int
    run_id: int
    #: Not made but swapped out by a replace of dbopt's: dbopt's to drop only while it carries
    #: dbopt's temporary name (the swap happened, the final drop did not).
    replaced: bool = False


@dataclass(frozen=True, slots=True)
class ChangeRecord:
    """One recorded change: structured facts only (rollback derives its SQL from them)."""

    id: int
    run_id: int
    run_command: str
    object_type: str
    name: QualifiedName
    table: QualifiedName
    action: str
    existed_before: bool
    result: str
    definition: str | None  # the spec's definition (canonical) when planned
    previous_definition: str | None  # the replaced or dropped object, as the server printed it
    object_oid: int | None  # what the change made
    built_definition: str | None  # what it made, as the server printed it
    replaced_oid: int | None  # what the change replaced, repaired or dropped
    previous_state: Mapping[str, Any]
    undone_by: int | None  # the change of a later rollback that undid this one
    undone_by_run: int | None  # and its run
    undoes_change: int | None = None  # for a rollback's change: the change it undid


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One recorded run."""

    id: int
    command: str
    environment: str | None
    outcome: str
    started_at: datetime
    finished_at: datetime | None
    undoes_run: int | None
    db_role: str | None = None
    client_host: str | None = None
    dbopt_version: str | None = None


@dataclass(frozen=True, slots=True)
class RefreshRecord:
    """One recorded refresh of a materialized view."""

    view: QualifiedName
    started_at: datetime
    duration_ms: float | None
    rows: int | None
    mode: str


def _qualified(text: str) -> QualifiedName:
    schema, _, name = text.partition(".")
    return QualifiedName(schema, name)


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

    def current(self, conn: psycopg.Connection[Any]) -> bool:
        """True when the history tables exist with every column this dbopt records."""
        row = conn.execute(
            "SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s "
            "AND c.relname = 'changes' AND a.attname = 'undoes_change' AND NOT a.attisdropped",
            (self.schema,),
        ).fetchone()
        return bool(row and row[0])

    def ensure(self, conn: psycopg.Connection[Any]) -> None:
        """Create (or upgrade) the schema and tables when needed; no DDL when they are current."""
        if self.current(conn):
            return
        ident = sql.Identifier(self.schema)
        with conn.transaction():
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
            conn.execute(catalog_sql("history_schema").format(schema=ident))

    def _query(self, name: str, **parts: sql.Composable) -> sql.Composed:
        """A query of ``catalog/sql/<name>.sql`` on this history's schema."""
        credible = catalog_sql("history_credible").format(schema_name=sql.Literal(self.schema))
        return catalog_sql(name).format(
            schema=sql.Identifier(self.schema), credible=credible, **parts
        )

    def owned(self, conn: psycopg.Connection[Any]) -> list[OwnedObject]:
        """Objects dbopt made (by OID, or by name for history written before OIDs were kept)
        and has not dropped since: the only objects prune and rollback may ever drop."""
        if not self.exists(conn) or not self.current(conn):
            return self._owned_by_name(conn) if self.exists(conn) else []
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(self._query("history_owned"))
            rows = cur.fetchall()
        owned = [
            OwnedObject(
                object_type=r["object_kind"],
                name=QualifiedName(r["object_schema"], r["object_name"]),
                table=_qualified(r["table_name"]),
                oid=int(r["oid"]),
                definition=r["definition"],
                change_id=int(r["id"]),
                run_id=int(r["run_id"]),
                replaced=bool(r["replaced"]),
            )
            for r in rows
        ]
        return owned + self._owned_by_name(conn, legacy_only=True)

    def _owned_by_name(
        self, conn: psycopg.Connection[Any], *, legacy_only: bool = False
    ) -> list[OwnedObject]:
        """What history rows without an OID say dbopt created (dbopt 0.1 kept only names)."""
        where = sql.SQL("AND object_oid IS NULL" if legacy_only else "")
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(self._query("history_owned_by_name", where=where))
            rows = cur.fetchall()
        return [
            OwnedObject(
                object_type=r["object_kind"],
                name=QualifiedName(r["object_schema"], r["object_name"]),
                table=_qualified(r["table_name"]),
                oid=None,
                definition=r["definition"],
                change_id=int(r["id"]),
                run_id=int(r["run_id"]),
            )
            for r in rows
        ]

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
                "round((extract(epoch FROM clock_timestamp() - started_at) * 1000)::numeric, 1) "
                "WHERE id = %s"
            ).format(sql.Identifier(self.schema)),
            (result, error, change_id),
        )

    def record_object(
        self, conn: psycopg.Connection[Any], change_id: int, oid: int, definition: str | None
    ) -> None:
        """The OID (and the server's definition) of what a change made, as soon as it exists."""
        conn.execute(
            sql.SQL(
                "UPDATE {}.changes SET object_oid = %s, built_definition = %s WHERE id = %s"
            ).format(sql.Identifier(self.schema)),
            (oid, definition, change_id),
        )

    def changes(
        self,
        conn: psycopg.Connection[Any],
        *,
        run_id: int | None = None,
        names: Sequence[QualifiedName] = (),
    ) -> list[ChangeRecord]:
        """Changes of one run, or every change of some objects; newest first."""
        where: list[sql.Composable] = []
        params: list[Any] = []
        if run_id is not None:
            where.append(sql.SQL("c.run_id = %s"))
            params.append(run_id)
        if names:
            where.append(
                sql.SQL("(c.object_schema, c.object_name) IN ({})").format(
                    sql.SQL(", ").join(sql.SQL("(%s, %s)") for _ in names)
                )
            )
            params.extend(part for n in names for part in (n.schema, n.name))
        schema = sql.Identifier(self.schema)
        query = catalog_sql("history_changes").format(
            schema=schema, where=sql.SQL(" AND ").join(where) if where else sql.SQL("true")
        )
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query, params)
            rows = cur.fetchall()
        return [
            ChangeRecord(
                id=int(r["id"]),
                run_id=int(r["run_id"]),
                run_command=r["command"],
                object_type=r["object_kind"],
                name=QualifiedName(r["object_schema"], r["object_name"]),
                table=_qualified(r["table_name"]),
                action=r["action"],
                existed_before=bool(r["existed_before"]),
                result=r["result"],
                definition=r["definition"],
                previous_definition=r["previous_definition"],
                object_oid=None if r["object_oid"] is None else int(r["object_oid"]),
                built_definition=r["built_definition"],
                replaced_oid=None if r["replaced_oid"] is None else int(r["replaced_oid"]),
                previous_state=r["previous_state"] or {},
                undone_by=None if r["undone_by"] is None else int(r["undone_by"]),
                undone_by_run=None if r["undone_by_run"] is None else int(r["undone_by_run"]),
                undoes_change=None if r["undoes_change"] is None else int(r["undoes_change"]),
            )
            for r in rows
        ]

    def run(self, conn: psycopg.Connection[Any], run_id: int) -> RunRecord | None:
        """One run, or None when there is no such run."""
        found = self._runs(conn, sql.SQL("id = %s"), (run_id,), 1)
        return found[0] if found else None

    def apply_runs(self, conn: psycopg.Connection[Any]) -> list[RunRecord]:
        """Finished apply runs, newest first (what `rollback --last` chooses from)."""
        return self._runs(conn, sql.SQL("command = 'apply' AND outcome <> 'running'"), (), 1000)

    def _runs(
        self, conn: psycopg.Connection[Any], where: sql.Composable, params: Any, limit: int
    ) -> list[RunRecord]:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                sql.SQL(
                    "SELECT id, command, environment, outcome, started_at, finished_at, "
                    "undoes_run, db_role, client_host, dbopt_version FROM {}.runs WHERE {} "
                    "ORDER BY id DESC LIMIT %s"
                ).format(sql.Identifier(self.schema), where),
                (*params, limit),
            )
            return [RunRecord(**r) for r in cur.fetchall()]

    def runs(self, conn: psycopg.Connection[Any], limit: int = 20) -> list[RunRecord]:
        """The latest runs, newest first."""
        if not self.exists(conn):
            return []
        return self._runs(conn, sql.SQL("true"), (), limit)

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

    def last_refreshes(self, conn: psycopg.Connection[Any]) -> dict[QualifiedName, RefreshRecord]:
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
            return {
                QualifiedName(r["view_schema"], r["view_name"]): RefreshRecord(
                    view=QualifiedName(r["view_schema"], r["view_name"]),
                    started_at=r["started_at"],
                    duration_ms=None if r["duration_ms"] is None else float(r["duration_ms"]),
                    rows=r["rows"],
                    mode=r["mode"],
                )
                for r in cur.fetchall()
            }
