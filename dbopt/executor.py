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
from typing import Any

import psycopg
from psycopg import errors as pgerrors
from psycopg import sql
from psycopg.types.json import Jsonb

from dbopt import ddl, guard
from dbopt.config import Settings
from dbopt.db import connect, replay_sql, server_message, unbounded
from dbopt.errors import LockBusyError, UnsafeActionError
from dbopt.guard import Identity, NotOursError
from dbopt.history import History
from dbopt.model import QualifiedName
from dbopt.planner import Action, ActionKind, Plan, Step, StepMode
from dbopt.progress import Blocker, BuildGate, Reporter, SilentReporter, Watch, Watcher

__all__ = ["Blocker", "Executor", "Reporter", "SilentReporter"]

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


@dataclass(slots=True)
class Cost:
    """What the concurrent builds and drops of one action cost, from the watcher's samples."""

    builds: int = 0  # CREATE INDEX CONCURRENTLY statements started
    worked_s: float = 0.0  # building (or dropping)
    waited_s: float = 0.0  # waiting for other transactions
    lost_s: float = 0.0  # work thrown away (a build dropped and made again)

    def add(self, watch: Watch, *, build: bool) -> None:
        """Account one watched statement."""
        self.builds += 1 if build else 0
        self.worked_s += watch.worked_s
        self.waited_s += watch.waited_s


@dataclass(slots=True)
class ChangeResult:
    """How one action went."""

    action: Action
    result: str  # ok, failed, aborted, skipped (not dbopt's object: left alone, says why)
    seconds: float
    size_bytes: int | None = None
    error: str | None = None
    cost: Cost = field(default_factory=Cost)


@dataclass(slots=True)
class RunResult:
    """How a whole apply (or rollback) went."""

    run_id: int | None
    outcome: str
    changes: list[ChangeResult] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Made:
    """A relation as it is now: OID, relkind, validity (an index's)."""

    oid: int
    relkind: str
    valid: bool | None


class Built(dict[QualifiedName, int]):
    """What the running action made, name -> OID; ``unsure`` names are INVALID indexes a
    failed build probably left (the name was free just before it started) without the server
    having shown this backend building them: cleaned up (guarded), never recorded as dbopt's."""

    def __init__(self) -> None:
        super().__init__()
        self.unsure: set[QualifiedName] = set()


class StepFailed(Exception):
    """A step failed after retries; the message says why and what was cleaned up."""


def _set(conn: psycopg.Connection[Any], name: str, value: str | int) -> None:
    conn.execute(
        sql.SQL("SELECT set_config({}, {}, false)").format(
            sql.Literal(name), sql.Literal(str(value))
        )
    )


def session_sql(settings: Settings) -> str:
    """The SET statements apply runs before its steps (also printed with plan --sql): the
    pins that decide how the printed SQL reads (search_path, DateStyle...), then the waits."""
    lines = [
        replay_sql(settings).rstrip("\n"),
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


def take_run_lock(
    conn: psycopg.Connection[Any], *, wait: bool, wait_timeout_ms: int | None = None
) -> None:
    """One dbopt run per database: a session advisory lock; LockBusyError names the holder.

    With ``wait`` it waits for the other run to finish — for ``wait_timeout_ms`` at most
    (None: as long as it takes), whatever the session's lock_timeout.
    """
    key = _lock_key(conn)
    if wait:
        previous = conn.execute("SELECT current_setting('lock_timeout')").fetchone()
        conn.execute("SELECT set_config('lock_timeout', %s, false)", (str(wait_timeout_ms or 0),))
        try:
            conn.execute("SELECT pg_advisory_lock(%s, %s)", key)
            return
        except pgerrors.LockNotAvailable:
            pass
        finally:
            if previous is not None:
                conn.execute("SELECT set_config('lock_timeout', %s, false)", (previous[0],))
    else:
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
    waited = f" (waited {wait_timeout_ms} ms)" if wait else ""
    raise LockBusyError(f"another dbopt run holds this database's lock{waited}: {who}")


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
    """Runs the steps of a plan; one connection per worker, one for history and watching.

    A context manager: ``with Executor(...) as runner:`` closes every connection it opened.
    Every destructive step is checked by :mod:`dbopt.guard` right before it runs.
    """

    def __init__(
        self,
        dsn: str | None,
        settings: Settings,
        history: History,
        reporter: Reporter,
        *,
        sleep: Callable[[float], None] = time.sleep,
        patient: bool = False,
    ) -> None:
        self.dsn = dsn
        #: --wait-for-blockers: lock waits are retried until they succeed (or until
        #: build_wait_timeout), never given up after ``retries``.
        self.patient = patient
        self.settings = settings
        self.history = history
        self.reporter = reporter
        self.sleep = sleep
        # statement_timeout bounds the run's statements, not its bookkeeping and lookups.
        self.control = connect(dsn, application_name="dbopt-control", settings=unbounded(settings))
        self._control_lock = threading.Lock()
        self._workers: dict[int, psycopg.Connection[Any]] = {}
        self._cancelled = threading.Event()
        self._watcher = Watcher(dsn, settings, reporter, self.own_pids)
        self._gate = BuildGate()
        # PostgreSQL 14+ lets concurrent builds ignore builds without expressions or WHERE.
        self._safe_builds_overlap = self.control.info.server_version >= 140000
        #: The change each worker thread is running (its history row).
        self._changes: dict[int, int] = {}

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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

    def check(self, identity: Identity, built: dict[QualifiedName, int]) -> None:
        """The guard, on the control connection: NotOursError when it is not dbopt's object."""
        resolved = identity.resolved(built)
        self._control(lambda c: guard.check(c, resolved, self.own_pids()))

    def cancel(self) -> None:
        """Ctrl-C: cancel every running statement on the server."""
        self._cancelled.set()
        for conn in list(self._workers.values()):
            with contextlib.suppress(Exception):
                conn.cancel_safe()

    def close(self) -> None:
        """Close every connection, releasing the run lock first: a closed session's backend
        may hold its locks a moment longer, and the next run must not find it taken."""
        self._watcher.stop()
        for conn in list(self._workers.values()):
            conn.close()
        if not self.control.closed and not self.control.broken:
            with contextlib.suppress(psycopg.Error):
                self.control.execute("SELECT pg_advisory_unlock_all()")
        self.control.close()

    # --- steps -------------------------------------------------------------------------

    def _worker(self) -> psycopg.Connection[Any]:
        ident = threading.get_ident()
        conn = self._workers.get(ident)
        if conn is None or conn.closed or conn.broken:
            conn = connect(self.dsn, application_name="dbopt-apply", settings=self.settings)
            self._workers[ident] = conn
        return conn

    def _oid_of(self, name: QualifiedName) -> _Made | None:
        """What the relation named ``name`` is now (None: there is none)."""

        def query(conn: psycopg.Connection[Any]) -> Any:
            # Plain catalog columns only: no lock, whatever another session holds.
            return conn.execute(
                "SELECT c.oid::bigint, c.relkind::text, i.indisvalid AND i.indisready "
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "LEFT JOIN pg_index i ON i.indexrelid = c.oid "
                "WHERE n.nspname = %s AND c.relname = %s",
                (name.schema, name.name),
            ).fetchone()

        row = self._control(query)
        return None if row is None else _Made(int(row[0]), row[1], row[2])

    def _definition(self, oid: int, relkind: str) -> str | None:
        """The server's definition of an index or view (None when a lock stops it)."""

        def query(conn: psycopg.Connection[Any]) -> Any:
            function = "pg_get_viewdef" if relkind == "m" else "pg_get_indexdef"
            return conn.execute(
                sql.SQL("SELECT {}(%s::bigint::oid)").format(sql.Identifier(function)), (oid,)
            ).fetchone()

        try:
            row = self._control(query)
        except pgerrors.LockNotAvailable:
            return None
        return None if row is None else row[0]

    def _index_size(self, name: QualifiedName) -> int | None:
        def query(conn: psycopg.Connection[Any]) -> int | None:
            row = conn.execute(
                "SELECT pg_relation_size(to_regclass(%s))", (name.ident().as_string(),)
            ).fetchone()
            return None if row is None or row[0] is None else int(row[0])

        try:
            result: int | None = self._control(query)
        except pgerrors.LockNotAvailable:
            return None  # a size is not worth a wait
        return result

    def _drop_own(self, identity: Identity, what: str) -> str:
        """Drop an object this run made (a failed build's INVALID index, a build aside that
        could not be swapped in); returns what was done, for the report.

        DROP INDEX CONCURRENTLY waits for the same old transactions that stopped the build,
        so it keeps trying (each wait bounded by lock_timeout) for up to cleanup_wait_ms; the
        guard checks before every attempt that the object is still the one this run made.
        """
        deadline = time.monotonic() + self.settings.cleanup_wait_ms / 1000.0
        attempt = 0
        while True:
            started = time.time()
            try:
                live = self._control(lambda c: guard.check(c, identity, self.own_pids()))
            except pgerrors.LockNotAvailable:
                # The check reads the definition, which waits for the same lock the DROP
                # would: wait for it the same way.
                if time.monotonic() >= deadline:
                    break
                self.sleep(min(5.0, self._backoff(attempt)))
                attempt += 1
                continue
            except NotOursError as exc:
                if exc.gone:
                    return ""
                if time.monotonic() >= deadline or "is building" not in str(exc):
                    return f"; {what} {identity.name} was left alone: {exc}"
                self.sleep(min(5.0, self._backoff(attempt)))
                attempt += 1
                continue
            if identity.object_type == "view":
                statement = ddl.drop_matview(identity.name)
            else:
                statement = ddl.drop_index(identity.name, concurrently=live.relkind != "I")
            try:
                self._worker().execute(statement)
                left = " the failed build left" if identity.invalid else ""
                self.reporter.event(f"dropped {what} {identity.name}{left}")
                return f"; {what} {identity.name} was dropped"
            except pgerrors.LockNotAvailable:
                if time.monotonic() >= deadline:
                    break
                if attempt == 0:
                    named = "; ".join(str(b) for b in self.blockers(identity.name, started))
                    self.reporter.event(
                        f"waiting to drop {what} {identity.name}; blocked by: "
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
            except psycopg.Error as exc:
                return f"; {what} {identity.name} could NOT be dropped: {server_message(exc)}"
        return (
            f"; {what} {identity.name} could NOT be dropped within "
            f"{self.settings.cleanup_wait_ms} ms: the next apply repairs or prunes it"
        )

    def _backoff(self, attempt: int) -> float:
        return min(60.0, self.settings.retry_backoff_ms / 1000.0 * float(2**attempt))

    def run_step(
        self,
        step: Step,
        built: dict[QualifiedName, int] | None = None,
        cost: Cost | None = None,
    ) -> None:
        """Run one step, waiting the way the step allows; raise StepFailed when it cannot.

        A statement that can block the application (a swap, ATTACH, a plain DROP) waits at
        most lock_timeout per attempt and is retried with backoff (``retries`` times, or until
        it succeeds when patient). A concurrent build or drop waits as long as
        build_wait_timeout allows (by default, as long as it takes); a build that timed out
        after it had built is never thrown away while what it waited for still runs.
        ``built`` maps what the running action built to its OID; the step's identities are
        checked against the live catalog right before each attempt (NotOursError).
        """
        built = {} if built is None else built
        cost = Cost() if cost is None else cost
        attempt = 0
        first = time.monotonic()
        while True:
            if self._cancelled.is_set():
                raise KeyboardInterrupt
            started = time.time()
            conn = self._worker()
            watches: list[Watch] = []
            try:
                if step.mode != StepMode.SWAP:
                    for identity in step.expect:
                        self.check(identity, built)
                self._execute(conn, step, built, cost, watches)
            except KeyboardInterrupt:
                # psycopg cancelled the statement on the server; the action cleans up.
                self._cancelled.set()
                self._after_failed_build(step, built, watches)
                raise
            except NotOursError:
                raise
            except pgerrors.DuplicateTable as exc:
                # The name is taken by something this step did not make: leave it alone.
                raise StepFailed(f"{step.index}: {server_message(exc)}") from None
            except pgerrors.LockNotAvailable:
                blockers = self.blockers(step.table, started)
                self._after_failed_build(step, built, watches)
                attempt += 1
                if step.gentle:
                    self._after_build_wait(step, built, cost, watches, blockers, attempt)
                else:
                    self._after_lock_wait(step, blockers, attempt, first)
                continue
            except pgerrors.QueryCanceled as exc:
                self._after_failed_build(step, built, watches)
                if self._cancelled.is_set():
                    raise KeyboardInterrupt from None
                raise StepFailed(
                    f"{step.index}: statement_timeout ({self.settings.statement_timeout_ms} ms) "
                    f"stopped the statement: {server_message(exc)}"
                ) from None
            except psycopg.Error as exc:
                self._after_failed_build(step, built, watches)
                raise StepFailed(f"{step.index}: {server_message(exc)}") from None
            if step.makes:
                made = self._oid_of(step.index)
                if made is not None:
                    built[step.index] = made.oid
            if step.mode == StepMode.BUILD:
                made = self._oid_of(step.index)
                if made is None or made.valid is not True:
                    raise StepFailed(f"{step.index}: the build finished but the index is not valid")
            return

    def _after_lock_wait(
        self, step: Step, blockers: list[Blocker], attempt: int, first: float
    ) -> None:
        """A statement that could block the application waited lock_timeout: back off and
        retry, or give up (StepFailed) after ``retries`` — patient runs retry until
        build_wait_timeout (if any) is spent."""
        named = "; ".join(str(b) for b in blockers) or "no blocker still visible"
        bound = self.settings.build_wait_timeout_ms
        if self.patient:
            spent = (time.monotonic() - first) * 1000
            if bound and spent >= bound:
                raise StepFailed(
                    f"gave up on {step.index} after waiting {spent / 1000:.0f} s "
                    f"(build_wait_timeout {bound} ms); blocked by: {named}"
                )
            of = "" if not bound else f", until {bound} ms"
        else:
            attempts = self.settings.retries + 1
            if attempt >= attempts:
                raise StepFailed(
                    f"gave up on {step.index} after {attempts} lock waits of "
                    f"{self.settings.lock_timeout_ms} ms; blocked by: {named}"
                )
            of = f"/{attempts}"
        delay = self._backoff(min(attempt - 1, 5))
        self.reporter.event(
            f"lock_timeout on {step.table} (attempt {attempt}{of}), retrying in {delay:g}s; "
            f"blocked by: {named}"
        )
        self.sleep(delay)

    def _after_build_wait(
        self,
        step: Step,
        built: dict[QualifiedName, int],
        cost: Cost,
        watches: list[Watch],
        blockers: list[Blocker],
        attempt: int,
    ) -> None:
        """A concurrent build or drop waited build_wait_timeout for other transactions.

        A drop, or a build that had not built anything yet, simply starts again. A build that
        had built is never thrown away while what it waited for still runs: dbopt waits (as
        long as build_wait_timeout again) until those transactions end, then drops the INVALID
        index and builds again, and the report says what the lost build had cost.
        """
        watch = watches[-1] if watches else None
        phase = watch.phase if watch is not None else "waiting"
        waited_for = list(watch.waited_for.values()) if watch is not None else []
        names = "; ".join(str(b) for b in (waited_for or blockers)) or "no session still visible"
        bound = self.settings.build_wait_timeout_ms
        if attempt > self.settings.retries:
            raise StepFailed(
                f"{step.index}: waited build_wait_timeout ({bound} ms) {attempt} times in "
                f"'{phase}'; waiting for: {names}"
            )
        if step.mode == StepMode.BUILD and watch is not None and watch.built:
            pids = [b.pid for b in waited_for] or [b.pid for b in blockers]
            self.reporter.event(
                f"{step.index}: built ({watch.worked_s:.1f} s of work) but timed out in "
                f"'{phase}' waiting for: {names}; not building again while they run"
            )
            if not self._wait_until_gone(pids, bound):
                raise StepFailed(
                    f"{step.index}: built ({watch.worked_s:.1f} s of work) but could not be "
                    f"finished: it waited {bound} ms in '{phase}' for: {names}, which still run"
                    "; not built again while they do"
                )
            cost.lost_s += watch.worked_s
            self.reporter.event(
                f"{step.index}: they ended; building again (the first build's "
                f"{watch.worked_s:.1f} s of work is lost)"
            )
        if step.mode == StepMode.BUILD and step.index in built:
            # The INVALID index of this attempt goes before the next attempt.
            oid = built.pop(step.index)
            self._drop_own(
                Identity("index", step.index, oid=oid, invalid=True), "the INVALID index"
            )

    def _wait_until_gone(self, pids: list[int], bound_ms: int) -> bool:
        """Wait until the transactions those sessions had open now have ended."""
        since = _timestamp(time.time())
        deadline = time.monotonic() + bound_ms / 1000.0 if bound_ms else None

        def still(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s) AND xact_start < %s",
                (pids, since),
            ).fetchone()
            return int(row[0]) if row else 0

        while self._control(still):
            if self._cancelled.is_set():
                raise KeyboardInterrupt
            if deadline is not None and time.monotonic() >= deadline:
                return False
            self.sleep(1.0)
        return True

    def _after_failed_build(
        self, step: Step, built: dict[QualifiedName, int], watches: list[Watch]
    ) -> None:
        """A failed CREATE INDEX CONCURRENTLY may leave an INVALID index: note it as this run's.

        Proof is the OID the server showed for this very backend's build. Without it (the
        build failed before the watcher sampled it), an INVALID index under the name is taken
        for this build's only when the name was free just before the build started — and then
        only to clean it up (guarded: INVALID, not being built), never recorded as dbopt's.
        A build that failed waiting for its table lock never made one: another session's index
        that appeared meanwhile is never taken.
        """
        if step.mode != StepMode.BUILD or step.index in built:
            return
        watch = watches[-1] if watches else None
        if watch is not None and watch.oid is not None:
            built[step.index] = watch.oid
            return
        if watch is None or not watch.free_before:
            return
        made = self._oid_of(step.index)
        if made is not None and made.valid is False:
            built[step.index] = made.oid
            if isinstance(built, Built):
                built.unsure.add(step.index)

    def _execute(
        self,
        conn: psycopg.Connection[Any],
        step: Step,
        built: dict[QualifiedName, int],
        cost: Cost,
        watches: list[Watch],
    ) -> None:
        """Run one step; a concurrent build's or drop's watch is appended to ``watches``."""
        if step.mode in (StepMode.SWAP, StepMode.DDL) and not step.gentle:
            with conn.transaction():
                for statement in step.statements:
                    conn.execute(statement)
                # The renames hold their locks now: what commits is exactly what is checked.
                for identity in step.expect:
                    guard.check(conn, identity.resolved(built), self.own_pids())
                for statement in step.then:
                    conn.execute(statement)
            return
        if not step.gentle:
            for statement in step.statements:
                conn.execute(statement)
            return
        # Its waits never block the application: bounded by build_wait_timeout, not by
        # lock_timeout; and never beside a build it would wait for, or that would wait for it.
        exclusive = step.mode == StepMode.DDL or not (step.safe and self._safe_builds_overlap)
        exclusive = exclusive and step.mode != StepMode.DROP
        self._gate.acquire(exclusive)
        _set(conn, "lock_timeout", self.settings.build_wait_timeout_ms)
        free_before = step.mode == StepMode.BUILD and self._oid_of(step.index) is None
        pid = conn.info.backend_pid
        watch = self._watcher.watch(
            pid, step.index, self._oid_recorder(built) if step.mode == StepMode.BUILD else None
        )
        watch.free_before = free_before
        try:
            for statement in step.statements:
                conn.execute(statement)
        finally:
            finished = self._watcher.unwatch(pid) or watch
            watches.append(finished)
            cost.add(finished, build=step.mode == StepMode.BUILD)
            self._gate.release(exclusive)
            if not conn.closed and not conn.broken:
                with contextlib.suppress(psycopg.Error):
                    _set(conn, "lock_timeout", self.settings.lock_timeout_ms)

    def _oid_recorder(self, built: dict[QualifiedName, int]) -> Callable[[int], None] | None:
        """For the first build of the running action: record its OID as soon as it is seen."""
        change_id = self._changes.get(threading.get_ident())
        if change_id is None or built:
            return None

        def record(oid: int) -> None:
            with contextlib.suppress(psycopg.Error):
                self._control(lambda c: self.history.record_object(c, change_id, oid, None))

        return record

    # --- whole actions -----------------------------------------------------------------

    def _undo_built(self, built: dict[QualifiedName, int]) -> str:
        """Drop what a failed action built (a change is made whole or not at all).

        Only objects this run made (their OIDs), views first (their indexes go with them),
        then indexes, newest first.
        """
        out = ""
        made = [(name, oid, self._oid_of(name)) for name, oid in reversed(list(built.items()))]
        # Views first (their indexes go with them), then partitioned indexes (their attached
        # partitions' indexes go with them), then the rest.
        rank = {"m": 0, "I": 1}
        for name, oid, now in sorted(
            made, key=lambda m: 2 if m[2] is None else rank.get(m[2].relkind, 2)
        ):
            if now is None or now.oid != oid:
                continue
            if now.relkind == "m":
                identity = Identity("view", name, oid=oid)
                what = "the view it built"
            else:
                invalid = now.valid is False
                identity = Identity("index", name, oid=oid, invalid=True if invalid else None)
                what = "the INVALID index" if invalid else "the index it built"
            out += self._drop_own(identity, what)
        return out

    def _record_start(self, run_id: int, action: Action) -> int:
        values = {
            "object_schema": action.name.schema,
            "object_name": action.name.name,
            "table_name": str(action.table),
            "object_kind": action.object_type,
            "action": action.kind.value,
            "definition": action.desired,
            "previous_definition": action.previous_definition,
            "replaced_oid": action.replaced_oid,
            "previous_state": Jsonb(dict(action.previous_state)) if action.previous_state else None,
            "undoes_change": action.undoes_change,
            "existed_before": action.existed_before,
            "forward_sql": "\n".join(s.text() for s in action.forward),
            # For people reading the history; rollback never executes it.
            "rollback_sql": "\n".join(s.text() for s in action.rollback),
        }
        change_id: int = self._control(lambda c: self.history.start_change(c, run_id, values))
        return change_id

    def _record_made(self, change_id: int | None, name: QualifiedName) -> None:
        """Record the OID and definition of the object a change leaves under ``name``."""
        if change_id is None:
            return
        made = self._oid_of(name)
        if made is not None:
            definition = self._definition(made.oid, made.relkind)
            self._control(lambda c: self.history.record_object(c, change_id, made.oid, definition))

    def _record_first(self, change_id: int | None, built: dict[QualifiedName, int]) -> None:
        """A failed build's INVALID index is dbopt's: recorded before the clean-up tries it
        (only when the server showed this run building it)."""
        if change_id is None or len(built) != 1:
            return
        name = next(iter(built))
        if isinstance(built, Built) and name in built.unsure:
            return
        self._control(lambda c: self.history.record_object(c, change_id, built[name], None))

    def _record_built_with(
        self, run_id: int, index: QualifiedName, view: QualifiedName, action: str
    ) -> None:
        """An index built with its view (and dropped with it): dbopt made it. With a new view
        it is a create; with a replaced view a rebuild, undone with the view's change."""
        change = self._control(
            lambda c: self.history.start_change(
                c,
                run_id,
                {
                    "object_schema": index.schema,
                    "object_name": index.name,
                    "table_name": str(view),
                    "object_kind": "index",
                    "action": action,
                    "existed_before": False,
                },
            )
        )
        self._record_made(change, index)
        self._control(lambda c: self.history.finish_change(c, change, "ok"))

    def preflight(self, action: Action) -> None:
        """Check, before its first statement, every identity the action can check now."""
        for step in action.forward:
            for identity in step.expect:
                if identity.upfront and identity.built_as is None and step.mode != StepMode.SWAP:
                    self.check(identity, {})

    def _preflight_patiently(self, action: Action) -> None:
        """:meth:`preflight`, waiting for a lock the way a step does (its check reads the
        object's definition, which needs its table)."""
        attempt = 0
        first = time.monotonic()
        while True:
            started = time.time()
            try:
                self.preflight(action)
                return
            except pgerrors.LockNotAvailable:
                attempt += 1
                blockers = self.blockers(action.table, started)
                step = action.forward[0]
                self._after_lock_wait(step, blockers, attempt, first)

    def run_action(self, run_id: int | None, action: Action) -> ChangeResult:
        """Run one action's steps and record it in the history."""
        change_id = None if run_id is None else self._record_start(run_id, action)
        if change_id is not None:
            self._changes[threading.get_ident()] = change_id
        started = time.monotonic()
        built = Built()
        self.reporter.event(f"{action.kind.value} {action.name} ...")
        try:
            self._preflight_patiently(action)
        except NotOursError as exc:
            result = ChangeResult(action, "skipped", 0.0, error=str(exc))
            self.reporter.finished(action.name)
        except StepFailed as exc:
            result = ChangeResult(action, "failed", time.monotonic() - started, error=str(exc))
            self.reporter.finished(action.name)
        else:
            result = self._run_steps(action, change_id, built, started)
        if change_id is not None:
            if result.result == "ok" and action.kind != ActionKind.DROP:
                self._record_made(change_id, action.name)
            self._control(
                lambda c: self.history.finish_change(c, change_id, result.result, result.error)
            )
            if result.result == "ok" and run_id is not None:
                for index in action.also_creates:
                    self._record_built_with(
                        run_id,
                        index,
                        action.name,
                        "create" if action.kind == ActionKind.CREATE else "rebuild",
                    )
        self.reporter.event(
            f"{action.name}: {result.result} in {result.seconds:.1f}s"
            + (f" — {result.error}" if result.error else "")
        )
        return result

    def _run_steps(
        self,
        action: Action,
        change_id: int | None,
        built: dict[QualifiedName, int],
        started: float,
    ) -> ChangeResult:
        cost = Cost()
        try:
            for step in action.forward:
                self.run_step(step, built, cost)
                if change_id is not None and step.makes and len(built) == 1:
                    # What the action makes first is its object (a replace's build aside):
                    # known as dbopt's from now on, even if dbopt stops before the end.
                    self._record_made(change_id, step.index)
        except (StepFailed, NotOursError) as exc:
            self._record_first(change_id, built)
            cleaned = self._undo_built(built)
            return ChangeResult(
                action, "failed", time.monotonic() - started, error=str(exc) + cleaned, cost=cost
            )
        except KeyboardInterrupt:
            self._cancelled.set()
            self._record_first(change_id, built)
            cleaned = self._undo_built(built)
            return ChangeResult(
                action, "aborted", time.monotonic() - started, error="Ctrl-C" + cleaned, cost=cost
            )
        finally:
            self.reporter.finished(action.name)
        size = None if action.kind == ActionKind.DROP else self._index_size(action.name)
        return ChangeResult(action, "ok", time.monotonic() - started, size_bytes=size, cost=cost)

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
        # The way back is written down before the first build (for people; never executed).
        self._control(lambda c: self.history.set_rollback_sql(c, run_id, rollback_text))
        if plans_dir is not None:
            plans_dir.mkdir(parents=True, exist_ok=True)
            (plans_dir / f"run-{run_id}-rollback.sql").write_text(rollback_text, "utf-8")
        groups: dict[QualifiedName, list[Action]] = {}
        views: list[Action] = []
        for action in plan.runnable:
            if action.object_type == "view":
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
                if res.result in ("failed", "aborted"):
                    failed.set()
            return out

        interrupted = False
        crashed = True
        try:
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
            crashed = False
        finally:
            if crashed:
                # An unexpected error: the run is not left 'running' for the next one to find.
                with contextlib.suppress(psycopg.Error):
                    self._control(lambda c: self.history.finish_run(c, run_id, "failed"))
        self._control(lambda c: self.history.finish_run(c, run_id, outcome))
        return RunResult(run_id, outcome, results)


def _timestamp(epoch: float) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, tz=UTC)
