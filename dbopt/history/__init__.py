"""dbopt's own small schema: every run and every change it made, and so what it manages.

The history is what lets dbopt tell the indexes it created (which it may drop on --prune or
rollback) from everything else (which it never drops).
"""

from __future__ import annotations

import getpass
import socket
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from dbopt import __version__
from dbopt.catalog import catalog_sql
from dbopt.errors import PrivilegeError, UnsafeActionError
from dbopt.history.facts import HISTORY_VERSION, READ_INDEXES, HistoryFacts, HistoryObject
from dbopt.history.records import (
    AdoptedObject,
    ChangeRecord,
    OwnedObject,
    RefreshRecord,
    RunRecord,
    RunSummary,
)
from dbopt.model import QualifiedName

__all__ = [
    "HISTORY_VERSION",
    "READ_INDEXES",
    "AdoptedObject",
    "ChangeRecord",
    "History",
    "HistoryFacts",
    "HistoryObject",
    "OwnedObject",
    "RefreshRecord",
    "RunRecord",
    "RunSummary",
]


def _qualified(text: str) -> QualifiedName:
    schema, _, name = text.partition(".")
    return QualifiedName(schema, name)


#: A change's duration so far, by the server's clock (what finishing a change records).
_DURATION_MS = sql.SQL(
    "round((extract(epoch FROM clock_timestamp() - started_at) * 1000)::numeric, 1)"
)


#: The facts of each history, by the connections that remember them (History.remember).
_REMEMBERED: weakref.WeakKeyDictionary[psycopg.Connection[Any], dict[str, HistoryFacts]] = (
    weakref.WeakKeyDictionary()
)


@dataclass(frozen=True, slots=True)
class History:
    """Where the history lives (schema name from dbopt.yaml, default ``dbopt``)."""

    schema: str = "dbopt"

    def remember(self, conn: psycopg.Connection[Any]) -> None:
        """Read the facts once on ``conn`` for the checks that follow (a run's control
        session, its run lock held): its grant check, ownership read and pre-flight share
        one read. :meth:`ensure` reads them again (the last check before a run records
        itself, after a prompt that may wait: a GRANT, or another dbopt creating or upgrading
        the history meanwhile, is seen), as does anything after :meth:`install`."""
        _REMEMBERED.setdefault(conn, {})

    def facts(self, conn: psycopg.Connection[Any], *, fresh: bool = False) -> HistoryFacts:
        """What is there of the history and what the current role may do with it (catalog
        only: no grant needed), with the layout version when the role may read it; read
        again with ``fresh`` even where remembered."""
        remembered = _REMEMBERED.get(conn)
        if remembered is not None and self.schema in remembered and not fresh:
            return remembered[self.schema]
        found = self._read_facts(conn)
        if remembered is not None:
            remembered[self.schema] = found
        return found

    def _read_facts(self, conn: psycopg.Connection[Any]) -> HistoryFacts:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(catalog_sql("history_facts"), {"schema": self.schema})
            rows = cur.fetchall()
        first = rows[0]
        objects = tuple(
            HistoryObject(
                kind=r["kind"],
                name=r["name"],
                present=bool(r["present"]),
                owned=bool(r["owned"]),
                owner=r["owner_name"],
                missing_read=tuple(r["missing_read"]),
                missing_write=tuple(r["missing_write"]),
            )
            for r in rows
        )
        facts = HistoryFacts(
            schema=self.schema,
            role=first["role"],
            database=first["dbname"],
            may_create_schema=bool(first["may_create_schema"]),
            objects=objects,
            version=None,
        )
        if not facts.exists:
            return facts
        version: int | None = 2 if any(r["has_facts"] for r in rows) else 1
        stamp = facts.object("schema_version")
        if stamp.present and facts.missing("read"):
            version = None  # stamped, but the role may not read the stamp
        elif stamp.present:
            row = conn.execute(
                sql.SQL("SELECT max(version) FROM {}.schema_version").format(
                    sql.Identifier(self.schema)
                )
            ).fetchone()
            version = int(row[0]) if row and row[0] is not None else version
        return replace(facts, version=version)

    def exists(self, conn: psycopg.Connection[Any]) -> bool:
        """True when the history tables were created (by ``dbopt init`` or a first apply)."""
        return self.facts(conn).exists

    def readable(self, conn: psycopg.Connection[Any]) -> HistoryFacts:
        """The facts, once sure the role may read the history (PrivilegeError if not)."""
        facts = self.facts(conn)
        if facts.exists and facts.missing("read"):
            raise PrivilegeError(facts.access_problem("read"))
        if facts.version is not None and facts.version > HISTORY_VERSION:
            raise UnsafeActionError(
                f"dbopt's history in schema {self.schema} has layout {facts.version}, written "
                f"by a newer dbopt; this one knows layout {HISTORY_VERSION} and will not guess "
                "at it: upgrade dbopt"
            )
        return facts

    def require_grants(self, conn: psycopg.Connection[Any], mode: str) -> None:
        """When the history exists: PrivilegeError naming every grant the role lacks to
        ``mode`` (read, or write: record runs) it."""
        facts = self.facts(conn)
        if facts.exists and facts.missing(mode):
            raise PrivilegeError(facts.access_problem(mode))

    def writable(self, conn: psycopg.Connection[Any], *, fresh: bool = False) -> HistoryFacts:
        """The facts, once sure a run can record itself: the role may write the history, or
        may create (or upgrade) it; PrivilegeError naming the grant or `dbopt init`."""
        facts = self.facts(conn, fresh=fresh)
        if facts.exists and facts.missing("write"):
            raise PrivilegeError(facts.access_problem("write"))
        if facts.exists and facts.version == HISTORY_VERSION:
            return facts
        problem = facts.setup_problem()
        if problem:
            raise PrivilegeError(problem)
        return facts

    def ensure(
        self, conn: psycopg.Connection[Any], *, created: Callable[[str], None] | None = None
    ) -> None:
        """Make sure a run can write its history: no DDL at all when the history is current
        (then the run needs only USAGE and SELECT/INSERT/UPDATE on it); created or upgraded
        when the role may do so (``created`` is told what happened); else PrivilegeError
        naming what to run (``dbopt init``) or grant."""
        facts = self.writable(conn, fresh=True)
        if facts.exists and facts.version == HISTORY_VERSION:
            return
        self.install(conn, facts)
        if created is not None:
            created(facts.install_words())

    def install(self, conn: psycopg.Connection[Any], facts: HistoryFacts) -> None:
        """Create the history, or bring it up to this dbopt's layout (stamping the version)."""
        _REMEMBERED.get(conn, {}).pop(self.schema, None)
        ident = sql.Identifier(self.schema)
        with conn.transaction():
            if not facts.object(None).present:
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident))
            conn.execute(
                catalog_sql("history_schema").format(
                    schema=ident,
                    version=sql.Literal(HISTORY_VERSION),
                    dbopt_version=sql.Literal(__version__),
                )
            )
            conn.execute(self._read_indexes())

    def missing_indexes(self, conn: psycopg.Connection[Any]) -> list[str]:
        """The read indexes (``history_indexes.sql``) a history made before them lacks: it
        works without them, but what a run reads of it grows with its length."""
        cur = conn.execute(
            catalog_sql("history_indexes_missing").format(
                schema_name=sql.Literal(self.schema), names=sql.Literal(list(READ_INDEXES))
            )
        )
        return [str(r[0]) for r in cur.fetchall()]

    def add_indexes(self, conn: psycopg.Connection[Any]) -> None:
        """Add the read indexes to a history of the current layout (its owner only)."""
        with conn.transaction():
            conn.execute(self._read_indexes())

    def _read_indexes(self) -> sql.Composed:
        return catalog_sql("history_indexes").format(schema=sql.Identifier(self.schema))

    def _query(self, name: str, **parts: sql.Composable) -> sql.Composed:
        """A query of ``catalog/sql/<name>.sql`` on this history's schema; ``{landed_x}`` and
        ``{left_invalid_x}`` in it are history_landed.sql's and history_left_invalid.sql's
        rules for the change aliased ``x``."""
        credible = catalog_sql("history_credible").format(schema_name=sql.Literal(self.schema))
        landed = {
            f"{rule}_{alias}": catalog_sql(f"history_{rule}").format(
                change=sql.Identifier(alias), credible=credible, schema=sql.Identifier(self.schema)
            )
            for rule in ("landed", "left_invalid")
            for alias in ("c", "d", "u")
        }
        return catalog_sql(name).format(
            schema=sql.Identifier(self.schema), credible=credible, **landed, **parts
        )

    def owned(self, conn: psycopg.Connection[Any]) -> list[OwnedObject]:
        """Objects dbopt made (by OID, or by name for history written before OIDs were kept)
        and has not dropped since: the only objects prune and rollback may ever drop."""
        facts = self.readable(conn)
        if not facts.exists:
            return []
        if (facts.version or 0) < 2:
            return self._owned_by_name(conn)
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
                adopted=bool(r["adopted"]),
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
                "UPDATE {}.changes SET result = %s, error = %s, duration_ms = {} WHERE id = %s"
            ).format(sql.Identifier(self.schema), _DURATION_MS),
            (result, error, change_id),
        )

    def land_change(
        self,
        conn: psycopg.Connection[Any],
        change_id: int,
        name: QualifiedName,
        result: str,
        error: str | None,
        *,
        oid: int | None = None,
        definition: str | None = None,
    ) -> None:
        """Close a change written under a temporary name (a reader's copy made aside) under
        the name it stands for, with its result and the OID and definition of what it left
        there (None: nothing of dbopt's)."""
        conn.execute(
            sql.SQL(
                "UPDATE {}.changes SET object_schema = %s, object_name = %s, result = %s, "
                "error = %s, duration_ms = {}, object_oid = %s, built_definition = %s "
                "WHERE id = %s"
            ).format(sql.Identifier(self.schema), _DURATION_MS),
            (name.schema, name.name, result, error, oid, definition, change_id),
        )

    def record_object(
        self,
        conn: psycopg.Connection[Any],
        change_id: int,
        oid: int,
        definition: str | None,
        *,
        result: str | None = None,
    ) -> None:
        """The OID (and the server's definition) of what a change made, as soon as it exists;
        with ``result``, the change's result too (as :meth:`finish_change`, no error), in the
        same statement: for a change whose last statement made the object it records."""
        if result is None:
            conn.execute(
                sql.SQL(
                    "UPDATE {}.changes SET object_oid = %s, built_definition = %s WHERE id = %s"
                ).format(sql.Identifier(self.schema)),
                (oid, definition, change_id),
            )
            return
        conn.execute(
            sql.SQL(
                "UPDATE {}.changes SET object_oid = %s, built_definition = %s, result = %s, "
                "error = NULL, duration_ms = {} WHERE id = %s"
            ).format(sql.Identifier(self.schema), _DURATION_MS),
            (oid, definition, result, change_id),
        )

    def record_built(
        self, conn: psycopg.Connection[Any], change_id: int, name: QualifiedName, *, finish: bool
    ) -> dict[str, Any] | None:
        """What a step left under ``name``, read right after it (as ``relation_built``: OID,
        relkind, validity, definition, size) and recorded as the change's object in the same
        statement, as :meth:`record_object` would (with ``finish``: its result ok too, unless
        it is an INVALID index). None when nothing is under the name: nothing recorded."""
        query = catalog_sql("history_record_built").format(
            schema=sql.Identifier(self.schema),
            built=catalog_sql("relation_built"),
            duration_ms=_DURATION_MS,
        )
        params = {"schema": name.schema, "name": name.name, "change": change_id, "finish": finish}
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query, params)
            row: dict[str, Any] | None = cur.fetchone()
        return row

    def record_oid(self, conn: psycopg.Connection[Any], change_id: int, oid: int) -> None:
        """The OID of the index a change's build makes, as the server shows it mid-build (the
        watcher's): that alone, never overwriting the definition recorded after the build."""
        conn.execute(
            sql.SQL("UPDATE {}.changes SET object_oid = %s WHERE id = %s").format(
                sql.Identifier(self.schema)
            ),
            (oid, change_id),
        )

    def record_adoption(
        self,
        conn: psycopg.Connection[Any],
        objects: Sequence[AdoptedObject],
        environment: str | None,
    ) -> int:
        """Record an ``import`` run that adopts ``objects`` (one transaction): each a change
        ``adopt`` that existed before dbopt, with its OID and definitions, result ok. Nothing
        is executed; from then on prune may drop them, as what dbopt made. Returns the run."""
        with conn.transaction():
            run_id = self.start_run(conn, "import", environment)
            for obj in objects:
                change = self.start_change(
                    conn,
                    run_id,
                    {
                        "object_schema": obj.name.schema,
                        "object_name": obj.name.name,
                        "table_name": str(obj.table),
                        "object_kind": obj.object_type,
                        "action": "adopt",
                        "definition": obj.definition,
                        "existed_before": True,
                        "object_oid": obj.oid,
                        "built_definition": obj.built_definition,
                    },
                )
                self.finish_change(conn, change, "ok")
            self.finish_run(conn, run_id, "succeeded")
        return run_id

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
        query = self._query(
            "history_changes", where=sql.SQL(" AND ").join(where) if where else sql.SQL("true")
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
                started_at=r["started_at"],
                duration_ms=None if r["duration_ms"] is None else float(r["duration_ms"]),
                error=r["error"],
                landed=bool(r["landed"]),
                left_invalid=bool(r["left_invalid"]),
            )
            for r in rows
        ]

    def run(self, conn: psycopg.Connection[Any], run_id: int) -> RunRecord | None:
        """One run, or None when there is no such run."""
        found = self._runs(conn, sql.SQL("id = %s"), (run_id,), 1)
        return found[0] if found else None

    def rolled_back_since(self, conn: psycopg.Connection[Any], run_id: int) -> bool:
        """Whether a rollback ran after run ``run_id``."""
        later = self._runs(conn, sql.SQL("command = 'rollback' AND id > %s"), (run_id,), 1)
        return bool(later)

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
        if not self.readable(conn).exists:
            return []
        return self._runs(conn, sql.SQL("true"), (), limit)

    def summaries(
        self, conn: psycopg.Connection[Any], *, limit: int = 20, run_id: int | None = None
    ) -> list[RunSummary]:
        """The latest runs (or the one ``run_id``) with their changes counted, newest first."""
        if not self.readable(conn).exists:
            return []
        where = sql.SQL("r.id = %(run_id)s" if run_id is not None else "true")
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                catalog_sql("history_runs").format(schema=sql.Identifier(self.schema), where=where),
                {"limit": limit, "run_id": run_id},
            )
            rows = cur.fetchall()
        counts = ("ok", "failed", "aborted", "skipped", "undone_by_run")
        return [
            RunSummary(
                RunRecord(**{k: v for k, v in r.items() if k not in counts}),
                ok=int(r["ok"]),
                failed=int(r["failed"]),
                aborted=int(r["aborted"]),
                skipped=int(r["skipped"]),
                undone_by_run=r["undone_by_run"],
            )
            for r in rows
        ]

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
        """When each view's data was last computed: its last successful refresh, or the apply
        that created (or replaced) it with data, whichever is later (``mode`` says which)."""
        if not self.readable(conn).exists:
            return {}
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                catalog_sql("history_last_refreshes").format(schema=sql.Identifier(self.schema))
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
