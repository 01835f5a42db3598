"""Run a Plan against a database without blocking the application.

Every statement runs on an autocommit connection with the environment's lock_timeout and
statement_timeout; a lock wait that times out is retried with backoff and the blocking
sessions are named; every build is checked for validity, and a failed build never leaves an
INVALID index behind. One run at a time per database (an advisory lock); every run and change
is recorded in the history schema.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psycopg
from psycopg import errors as pgerrors
from psycopg import sql
from psycopg.types.json import Jsonb

from dbopt import ddl
from dbopt.config import Settings
from dbopt.db import connect, server_message
from dbopt.errors import CheckFailedError, LockBusyError, UnsafeActionError
from dbopt.history import History
from dbopt.planner import Action, Kind, Plan, Step, StepKind
from dbopt.spec import QualifiedName

#: Advisory lock key space: ('dbop' as int32, hash of the database name).
_LOCK_CLASS = 0x64626F70

_BLOCKERS = sql.SQL(
    """
SELECT DISTINCT a.pid,
       round(extract(epoch FROM now() - coalesce(a.xact_start, a.query_start)))::int AS age_s,
       a.state, a.usename, left(regexp_replace(a.query, '\\s+', ' ', 'g'), 160) AS query
  FROM pg_stat_activity a
  LEFT JOIN pg_locks l ON l.pid = a.pid AND l.granted AND l.relation = to_regclass(%(table)s)
 WHERE a.pid <> ALL (%(own)s::int[])
   AND a.datname = current_database()
   AND a.backend_type = 'client backend'
   AND (l.pid IS NOT NULL OR a.xact_start < %(since)s)
 ORDER BY age_s DESC
 LIMIT 5
"""
)

_LONG_RUNNING = sql.SQL(
    """
SELECT a.pid,
       round(extract(epoch FROM now() - a.xact_start))::int AS age_s,
       a.state, a.usename, left(regexp_replace(a.query, '\\s+', ' ', 'g'), 160) AS query
  FROM pg_stat_activity a
 WHERE a.pid <> pg_backend_pid()
   AND a.datname = current_database()
   AND a.backend_type = 'client backend'
   AND a.xact_start < now() - make_interval(secs => %(ms)s / 1000.0)
 ORDER BY a.xact_start
"""
)


@dataclass(frozen=True, slots=True)
class Blocker:
    """A session that holds up a lock or a concurrent build."""

    pid: int
    age_s: int
    state: str | None
    user: str | None
    query: str

    def __str__(self) -> str:
        return f"pid {self.pid} ({self.user}, {self.state}, {self.age_s}s): {self.query}"


class Reporter(Protocol):
    """What the executor tells the person watching (the CLI renders it)."""

    def event(self, message: str) -> None:
        """A line worth a timestamp: a step started, a retry, a cleanup."""

    def progress(self, index: QualifiedName, phase: str, done: int, total: int) -> None:
        """Progress of a build from pg_stat_progress_create_index."""

    def finished(self, index: QualifiedName) -> None:
        """A build is over (whatever its outcome)."""


class SilentReporter:
    """A reporter that says nothing (library use, tests)."""

    def event(self, message: str) -> None:
        """Ignore."""

    def progress(self, index: QualifiedName, phase: str, done: int, total: int) -> None:
        """Ignore."""

    def finished(self, index: QualifiedName) -> None:
        """Ignore."""


@dataclass(slots=True)
class ChangeResult:
    """How one action went."""

    action: Action
    result: str  # ok, failed, aborted
    seconds: float
    size_bytes: int | None = None
    error: str | None = None


@dataclass(slots=True)
class RunResult:
    """How a whole apply (or rollback) went."""

    run_id: int | None
    outcome: str
    changes: list[ChangeResult] = field(default_factory=list)


class StepFailed(Exception):
    """A step failed after retries; the message says why and what was cleaned up."""


def _set(conn: psycopg.Connection[Any], name: str, value: str | int) -> None:
    conn.execute(
        sql.SQL("SELECT set_config({}, {}, false)").format(
            sql.Literal(name), sql.Literal(str(value))
        )
    )


def apply_settings(conn: psycopg.Connection[Any], settings: Settings) -> None:
    _set(conn, "lock_timeout", settings.lock_timeout_ms)
    _set(conn, "statement_timeout", settings.statement_timeout_ms)
    if settings.maintenance_work_mem:
        _set(conn, "maintenance_work_mem", settings.maintenance_work_mem)


def session_sql(settings: Settings) -> str:
    """The SET statements apply runs before its steps (also printed with plan --sql)."""
    lines = [
        f"SET lock_timeout = {settings.lock_timeout_ms};",
        f"SET statement_timeout = {settings.statement_timeout_ms};",
    ]
    if settings.maintenance_work_mem:
        lines.append(
            sql.SQL("SET maintenance_work_mem = {};")
            .format(sql.Literal(settings.maintenance_work_mem))
            .as_string()
        )
    return "\n".join(lines) + "\n"


def _lock_key(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    row = conn.execute("SELECT hashtext(current_database())").fetchone()
    assert row is not None
    return _LOCK_CLASS, int(row[0])


def take_run_lock(conn: psycopg.Connection[Any], *, wait: bool) -> None:
    """One dbopt run per database: a session advisory lock; LockBusyError names the holder."""
    key = _lock_key(conn)
    if wait:
        conn.execute("SELECT pg_advisory_lock(%s, %s)", key)
        return
    row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", key).fetchone()
    if row and row[0]:
        return
    holder = conn.execute(
        "SELECT a.pid, a.usename, a.client_addr::text, a.application_name, "
        "round(extract(epoch FROM now() - a.backend_start))::int "
        "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.classid = %s::oid AND l.objid = %s::oid "
        "AND l.granted",
        (key[0], key[1] & 0xFFFFFFFF),
    ).fetchone()
    who = (
        f"pid {holder[0]} ({holder[1]}@{holder[2] or 'local'}, {holder[3]}, {holder[4]}s)"
        if holder
        else "another session"
    )
    raise LockBusyError(
        f"another dbopt run holds this database's lock: {who}; wait for it, or use --wait"
    )


def long_running(conn: psycopg.Connection[Any], older_than_ms: int) -> list[Blocker]:
    """Sessions whose transaction is older than ``older_than_ms`` (they hold up builds)."""
    rows = conn.execute(_LONG_RUNNING, {"ms": older_than_ms}).fetchall()
    return [Blocker(r[0], r[1], r[2], r[3], r[4]) for r in rows]


def check_privileges(plan: Plan, owned: Callable[[QualifiedName], bool]) -> None:
    """Refuse before the first build when the role does not own a table it must index."""
    missing = sorted({str(a.table) for a in plan.runnable if not owned(a.table)})
    if missing:
        raise UnsafeActionError(
            "the current role does not own "
            + ", ".join(missing)
            + ": CREATE INDEX needs ownership of the table (or membership in the owning "
            "role); GRANT the owner role to this user or run as the owner"
        )


class Executor:
    """Runs the steps of a plan; one connection per worker, one for history and watching."""

    def __init__(
        self,
        dsn: str | None,
        settings: Settings,
        history: History,
        reporter: Reporter,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.dsn = dsn
        self.settings = settings
        self.history = history
        self.reporter = reporter
        self.sleep = sleep
        self.control = connect(
            dsn, application_name="dbopt-control", lock_timeout_ms=settings.lock_timeout_ms
        )
        self._control_lock = threading.Lock()
        self._workers: dict[int, psycopg.Connection[Any]] = {}
        self._cancelled = threading.Event()
        self._progress = _ProgressPoller(self)

    # --- the control connection (history, lookups) is shared: serialise its use --------

    def _control(self, fn: Callable[[psycopg.Connection[Any]], Any]) -> Any:
        with self._control_lock:
            return fn(self.control)

    def own_pids(self) -> list[int]:
        """Backend pids of dbopt's own connections (never reported as blockers)."""
        pids = [self.control.info.backend_pid]
        pids.extend(c.info.backend_pid for c in list(self._workers.values()) if not c.closed)
        return pids

    def blockers(self, table: QualifiedName, since: float) -> list[Blocker]:
        """Sessions holding locks on ``table`` or transactions older than ``since``."""

        def query(conn: psycopg.Connection[Any]) -> list[Blocker]:
            rows = conn.execute(
                _BLOCKERS,
                {
                    "table": str(table.ident().as_string()),
                    "own": self.own_pids(),
                    "since": _timestamp(since),
                },
            ).fetchall()
            return [Blocker(r[0], r[1], r[2], r[3], r[4]) for r in rows]

        result: list[Blocker] = self._control(query)
        return result

    def cancel(self) -> None:
        """Ctrl-C: cancel every running statement on the server."""
        self._cancelled.set()
        for conn in list(self._workers.values()):
            with contextlib.suppress(Exception):
                conn.cancel_safe()

    def close(self) -> None:
        """Close every connection."""
        self._progress.stop()
        for conn in list(self._workers.values()):
            conn.close()
        self.control.close()

    # --- steps -------------------------------------------------------------------------

    def _worker(self) -> psycopg.Connection[Any]:
        ident = threading.get_ident()
        conn = self._workers.get(ident)
        if conn is None or conn.closed or conn.broken:
            conn = connect(self.dsn, application_name="dbopt-apply")
            apply_settings(conn, self.settings)
            self._workers[ident] = conn
        return conn

    def _index_valid(self, name: QualifiedName) -> bool | None:
        def query(conn: psycopg.Connection[Any]) -> bool | None:
            row = conn.execute(
                "SELECT i.indisvalid AND i.indisready FROM pg_index i "
                "WHERE i.indexrelid = to_regclass(%s)",
                (name.ident().as_string(),),
            ).fetchone()
            return None if row is None else bool(row[0])

        result: bool | None = self._control(query)
        return result

    def _is_partitioned_index(self, name: QualifiedName) -> bool:
        def query(conn: psycopg.Connection[Any]) -> bool:
            row = conn.execute(
                "SELECT relkind = 'I' FROM pg_class WHERE oid = to_regclass(%s)",
                (name.ident().as_string(),),
            ).fetchone()
            return bool(row and row[0])

        result: bool = self._control(query)
        return result

    def _index_size(self, name: QualifiedName) -> int | None:
        def query(conn: psycopg.Connection[Any]) -> int | None:
            row = conn.execute(
                "SELECT pg_relation_size(to_regclass(%s))", (name.ident().as_string(),)
            ).fetchone()
            return None if row is None or row[0] is None else int(row[0])

        result: int | None = self._control(query)
        return result

    def _cleanup_invalid(self, name: QualifiedName) -> str:
        """Drop the INVALID index a failed build left behind; returns what was done.

        DROP INDEX CONCURRENTLY waits for the same old transactions that stopped the build,
        so it keeps trying (each wait bounded by lock_timeout) for up to cleanup_wait_ms.
        """
        if self._index_valid(name) is not False:
            return ""
        # Partitioned indexes cannot be dropped concurrently (a catalog-only drop anyway).
        statement = ddl.drop_index(name, concurrently=not self._is_partitioned_index(name))
        deadline = time.monotonic() + self.settings.cleanup_wait_ms / 1000.0
        attempt = 0
        while True:
            started = time.time()
            try:
                self._worker().execute(statement)
                self.reporter.event(f"dropped the INVALID index {name} the failed build left")
                return f"; the INVALID index {name} it left was dropped"
            except pgerrors.LockNotAvailable:
                if time.monotonic() >= deadline:
                    break
                if attempt == 0:
                    named = "; ".join(str(b) for b in self.blockers(name, started))
                    self.reporter.event(
                        f"waiting to drop the INVALID index {name}; blocked by: "
                        f"{named or 'no blocker still visible'}"
                    )
                self.sleep(min(5.0, self._backoff(attempt)))
                attempt += 1
            except psycopg.OperationalError:
                # A lost connection (or a statement_timeout): back off, then try again
                # on a fresh connection, until cleanup_wait runs out.
                if time.monotonic() >= deadline:
                    break
                self.sleep(min(5.0, self._backoff(attempt)))
                attempt += 1
        return (
            f"; the INVALID index {name} could NOT be dropped within "
            f"{self.settings.cleanup_wait_ms} ms: the next apply repairs it"
        )

    def _backoff(self, attempt: int) -> float:
        return min(60.0, self.settings.retry_backoff_ms / 1000.0 * float(2**attempt))

    def run_step(self, step: Step) -> None:
        """Run one step with retries on lock timeouts; raise StepFailed when it cannot."""
        attempts = self.settings.retries + 1
        for attempt in range(attempts):
            if self._cancelled.is_set():
                raise KeyboardInterrupt
            started = time.time()
            conn = self._worker()
            try:
                self._execute(conn, step)
            except KeyboardInterrupt:
                # psycopg cancelled the statement on the server; leave nothing INVALID behind.
                self._cancelled.set()
                self._after_failure(step)
                raise
            except pgerrors.LockNotAvailable:
                blockers = self.blockers(step.table, started)
                if step.kind == StepKind.BUILD:
                    self._cleanup_invalid(step.index)
                named = "; ".join(str(b) for b in blockers) or "no blocker still visible"
                if attempt + 1 >= attempts:
                    raise StepFailed(
                        f"gave up on {step.index} after {attempts} lock waits of "
                        f"{self.settings.lock_timeout_ms} ms; blocked by: {named}"
                    ) from None
                delay = self._backoff(attempt)
                self.reporter.event(
                    f"lock_timeout on {step.table} (attempt {attempt + 1}/{attempts}), "
                    f"retrying in {delay:g}s; blocked by: {named}"
                )
                self.sleep(delay)
                continue
            except pgerrors.QueryCanceled as exc:
                if self._cancelled.is_set():
                    self._after_failure(step)
                    raise KeyboardInterrupt from None
                cleaned = self._after_failure(step)
                raise StepFailed(
                    f"{step.index}: statement_timeout ({self.settings.statement_timeout_ms} ms) "
                    f"stopped the statement: {server_message(exc)}{cleaned}"
                ) from None
            except pgerrors.DuplicateTable as exc:
                # The name is taken by an index this step did not make: leave it alone.
                raise StepFailed(f"{step.index}: {server_message(exc)}") from None
            except psycopg.Error as exc:
                cleaned = self._after_failure(step)
                raise StepFailed(f"{step.index}: {server_message(exc)}{cleaned}") from None
            if step.kind == StepKind.BUILD and self._index_valid(step.index) is not True:
                cleaned = self._after_failure(step)
                raise StepFailed(
                    f"{step.index}: the build finished but the index is not valid{cleaned}"
                )
            return

    def _after_failure(self, step: Step) -> str:
        if step.kind == StepKind.BUILD:
            return self._cleanup_invalid(step.index)
        return ""

    def _execute(self, conn: psycopg.Connection[Any], step: Step) -> None:
        if step.kind in (StepKind.SWAP, StepKind.DDL):
            with conn.transaction():
                for statement in step.statements:
                    conn.execute(statement)
            return
        for statement in step.statements:
            if step.kind == StepKind.BUILD:
                pid = conn.info.backend_pid
                self._progress.watch(pid, step.index)
                try:
                    conn.execute(statement)
                finally:
                    self._progress.unwatch(pid)
            else:
                conn.execute(statement)

    # --- whole plans -------------------------------------------------------------------

    def _refuse_repair_during_build(self, action: Action) -> None:
        """An INVALID index may be another session's build still running: never drop that."""

        def query(conn: psycopg.Connection[Any]) -> Any:
            return conn.execute(
                "SELECT pid FROM pg_stat_progress_create_index "
                "WHERE relid = to_regclass(%s) AND pid <> ALL (%s::int[])",
                (action.table.ident().as_string(), self.own_pids()),
            ).fetchone()

        row = self._control(query)
        if row is not None:
            raise StepFailed(
                f"{action.name}: an index build is running on {action.table} (pid {row[0]}); "
                "its INVALID index may be that build: not repairing now, run apply again later"
            )

    def _record_built_with(
        self,
        conn: psycopg.Connection[Any],
        run_id: int,
        index: QualifiedName,
        view: QualifiedName,
    ) -> None:
        """An index built with its view (and dropped with it): dbopt made it."""
        change = self.history.start_change(
            conn,
            run_id,
            {
                "object_schema": index.schema,
                "object_name": index.name,
                "table_name": str(view),
                "object_kind": "index",
                "action": "create",
                "existed_before": False,
            },
        )
        self.history.finish_change(conn, change, "ok")

    def run_action(self, run_id: int | None, action: Action) -> ChangeResult:
        """Run one action's steps and record it in the history."""
        steps = action.forward
        change_id = None
        if run_id is not None:
            change_id = self._control(
                lambda c: self.history.start_change(
                    c,
                    run_id,
                    {
                        "object_schema": action.name.schema,
                        "object_name": action.name.name,
                        "table_name": str(action.table),
                        "object_kind": action.object_kind,
                        "action": action.kind.value,
                        "definition": action.desired,
                        "previous_definition": action.current,
                        "existed_before": action.existed_before,
                        "forward_sql": "\n".join(s.text() for s in steps),
                        "rollback_sql": "\n".join(s.text() for s in action.rollback),
                        "rollback_steps": Jsonb([s.to_json() for s in action.rollback]),
                    },
                )
            )
        started = time.monotonic()
        self.reporter.event(f"{action.kind.value} {action.name} ...")
        try:
            if action.kind == Kind.REPAIR:
                self._refuse_repair_during_build(action)
            for step in steps:
                self.run_step(step)
        except StepFailed as exc:
            # A failed partition build leaves the ON ONLY parent INVALID too: clean every
            # index this action builds, not only the step that failed.
            cleaned = "".join(
                self._cleanup_invalid(i)
                for i in dict.fromkeys(st.index for st in steps if st.kind != StepKind.DROP)
            )
            result = ChangeResult(
                action, "failed", time.monotonic() - started, error=str(exc) + cleaned
            )
        except KeyboardInterrupt:
            for index in dict.fromkeys(st.index for st in steps if st.kind != StepKind.DROP):
                self._cleanup_invalid(index)
            result = ChangeResult(action, "aborted", time.monotonic() - started, error="Ctrl-C")
        else:
            size = None if action.kind == Kind.DROP else self._index_size(action.name)
            result = ChangeResult(action, "ok", time.monotonic() - started, size_bytes=size)
        finally:
            self.reporter.finished(action.name)
        if change_id is not None:
            self._control(
                lambda c: self.history.finish_change(c, change_id, result.result, result.error)
            )
            if result.result == "ok" and run_id is not None:
                with self._control_lock:
                    for index in action.also_creates:
                        self._record_built_with(self.control, run_id, index, action.name)
        self.reporter.event(
            f"{action.name}: {result.result} in {result.seconds:.1f}s"
            + (f" — {result.error}" if result.error else "")
        )
        return result

    def run_plan(
        self,
        plan: Plan,
        *,
        command: str,
        environment: str | None,
        jobs: int = 1,
        undoes_run: int | None = None,
        plans_dir: Path | None = None,
        rollback_text: str = "",
    ) -> RunResult:
        """Run every runnable action; tables in parallel with ``jobs`` > 1, never one twice."""
        self._control(lambda c: self.history.ensure(c))
        orphans = self._control(lambda c: self.history.close_orphans(c))
        if orphans:
            self.reporter.event(
                f"{orphans} earlier run(s) had stopped without finishing: recorded as aborted"
            )
        run_id: int = self._control(
            lambda c: self.history.start_run(c, command, environment, undoes_run)
        )
        # The way back is written down before the first build.
        self._control(lambda c: self.history.set_rollback_sql(c, run_id, rollback_text))
        if plans_dir is not None:
            plans_dir.mkdir(parents=True, exist_ok=True)
            (plans_dir / f"run-{run_id}-rollback.sql").write_text(rollback_text, "utf-8")
        groups: dict[QualifiedName, list[Action]] = {}
        views: list[Action] = []
        for action in plan.runnable:
            if action.object_kind == "view":
                views.append(action)  # in dependency order, one at a time
            else:
                groups.setdefault(action.table, []).append(action)
        results: list[ChangeResult] = []
        failed = threading.Event()

        def run_group(group: Sequence[Action]) -> list[ChangeResult]:
            out = []
            for action in group:
                if failed.is_set() or self._cancelled.is_set():
                    break
                res = self.run_action(run_id, action)
                out.append(res)
                if res.result != "ok":
                    failed.set()
            return out

        interrupted = False
        try:
            first = [g for g in groups.values() if g[0].phase == 0]
            last = [g for g in groups.values() if g[0].phase != 0]
            if jobs <= 1:
                for group in first:
                    results.extend(run_group(group))
            else:
                with ThreadPoolExecutor(max_workers=jobs) as pool:
                    futures = [pool.submit(run_group, g) for g in first]
                    try:
                        for future in futures:
                            results.extend(future.result())
                    except KeyboardInterrupt:
                        # Cancel the running builds on the server now: leaving the pool
                        # waits for the workers, which then stop at once and clean up.
                        self.cancel()
                        for future in futures:
                            if not future.cancelled() and future.exception() is None:
                                results.extend(future.result())
                        raise
            # Views after table indexes (their queries may use them), then views' own indexes.
            results.extend(run_group(views))
            for group in last:
                results.extend(run_group(group))
        except KeyboardInterrupt:
            interrupted = True
            self.cancel()
        if any(r.result == "aborted" for r in results) or self._cancelled.is_set():
            interrupted = True
        outcome = (
            "aborted"
            if interrupted
            else "failed"
            if any(r.result == "failed" for r in results)
            else "succeeded"
        )
        self._control(lambda c: self.history.finish_run(c, run_id, outcome))
        return RunResult(run_id, outcome, results)


class _ProgressPoller:
    """One thread and one connection polling pg_stat_progress_create_index for every build.

    Workers register the backend pid of the build they start; the poller reports progress
    for each registered pid every half second. Progress is a nicety: a build never fails for
    it, and a poller that cannot connect simply stays quiet.
    """

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self._builds: dict[int, QualifiedName] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, pid: int, index: QualifiedName) -> None:
        """Report progress of the build running on backend ``pid``."""
        with self._lock:
            self._builds[pid] = index
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True)
                self._thread.start()

    def unwatch(self, pid: int) -> None:
        """That build is over."""
        with self._lock:
            self._builds.pop(pid, None)

    def stop(self) -> None:
        """Stop polling (at the end of the run)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            conn = connect(self.executor.dsn, application_name="dbopt-progress")
        except Exception:
            return
        try:
            while not self._stop.wait(0.5):
                with self._lock:
                    builds = dict(self._builds)
                if not builds:
                    continue
                rows = conn.execute(
                    "SELECT pid, phase, blocks_done, blocks_total, tuples_done, tuples_total "
                    "FROM pg_stat_progress_create_index WHERE pid = ANY(%s)",
                    (list(builds),),
                ).fetchall()
                for pid, phase, blocks_done, blocks_total, tuples_done, tuples_total in rows:
                    index = builds.get(pid)
                    if index is None:
                        continue
                    if blocks_total:
                        done, total = blocks_done, blocks_total
                    else:
                        done, total = tuples_done, tuples_total
                    self.executor.reporter.progress(index, phase, int(done), int(total))
        except psycopg.Error:
            return
        finally:
            conn.close()


def _timestamp(epoch: float) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, tz=UTC)


def ensure_applied(result: RunResult) -> None:
    """Raise CheckFailedError when a run did not succeed (the CLI maps it to exit 1)."""
    if result.outcome == "failed":
        failures = [c for c in result.changes if c.result == "failed"]
        raise CheckFailedError(
            "apply failed: " + "; ".join(c.error or str(c.action.name) for c in failures)
        )
