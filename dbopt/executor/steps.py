"""Running one step without blocking the application (what a step left is cleaned up by
:mod:`dbopt.executor.cleanup`).

Each step waits the way its locks allow (lock_timeout for what can block the application,
build_wait_timeout for concurrent builds and drops), is retried when that is cheap, and its
destructive statements are checked by :mod:`dbopt.guard` right before they run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any, Self

import psycopg
from psycopg import errors as pgerrors
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row

from dbopt import citus, guard, locks
from dbopt.catalog import catalog_sql
from dbopt.citus import ShardedIndex
from dbopt.config import Replica, Settings
from dbopt.db import connect, server_message, unbounded
from dbopt.ddl import HELD_WAIT_MS
from dbopt.deparse import canonical
from dbopt.executor.cleanup import Cleanup
from dbopt.executor.results import Built, Cost, StepFailed, _Made, by_hand_if_unsure, forget, prove
from dbopt.guard import Identity, NotOursError
from dbopt.history import History
from dbopt.model import QualifiedName
from dbopt.planner import Step, StepMode
from dbopt.progress import Blocker, BuildGate, Reporter, Watch, Watcher
from dbopt.replicas import LagGate, Standbys

#: A change's history row (id) and whether the step finishes it (its last statement).
Record = tuple[int, bool]


def _opening(open_: Callable[[], psycopg.Connection[Any]]) -> Future[psycopg.Connection[Any]]:
    """``open_()`` in a thread of its own: its connection (or its error) when it is done."""
    future: Future[psycopg.Connection[Any]] = Future()

    def run() -> None:
        try:
            future.set_result(open_())
        except BaseException as exc:  # handed over to whoever takes the connection
            future.set_exception(exc)

    threading.Thread(target=run, name="dbopt-connect", daemon=True).start()
    return future


def _close_unused(future: Future[psycopg.Connection[Any]]) -> None:
    if future.exception() is None:
        future.result().close()


def _set(conn: psycopg.Connection[Any], name: str, value: str | int) -> None:
    conn.execute(
        sql.SQL("SELECT set_config({}, {}, false)").format(
            sql.Literal(name), sql.Literal(str(value))
        )
    )


class StepRunner(Cleanup):
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
        replicas: Sequence[Replica] = (),
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
        #: Each worker session's lock_timeout as last set (ms), by thread.
        self._lock_timeouts: dict[int, int] = {}
        #: A worker connection opened ahead (open_worker), for the first thread that needs one.
        self._spare: Future[psycopg.Connection[Any]] | None = None
        self._spare_lock = threading.Lock()
        #: close() ran: a connection lent (lend_worker) and given back now is closed.
        self._closed = False
        self._cancelled = threading.Event()
        self._hurry = threading.Event()
        #: What puts SIGINT's handler back, once Ctrl-C's clean-up took it over (_ctrl_c).
        self._sigint: Callable[[bool], None] | None = None
        self._watcher = Watcher(dsn, settings, reporter, self.own_pids)
        self._gate = BuildGate()
        # PostgreSQL 14+ lets concurrent builds ignore builds without expressions or WHERE.
        self._safe_builds_overlap = self.control.info.server_version >= 140000
        #: The change each worker thread is running (its history row).
        self._changes: dict[int, int] = {}
        #: Standbys: their lag is read before each build (max_replica_lag).
        self.standbys = Standbys(self._control, replicas, settings)
        self.lag_gate = LagGate(self.standbys, settings, reporter, cancelled=self._cancelled)
        #: The citus extension is installed (None: not asked yet; asked once, at a build).
        self._citus: bool | None = None
        #: What a step stopped by Ctrl-C cleaned up, per worker thread (for the report).
        self._notes: dict[int, str] = {}

    def __enter__(self) -> Self:
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
        found: list[Blocker] = self._control(
            lambda c: locks.blockers(c, table, since, self.own_pids())
        )
        return found

    def check(self, identity: Identity, built: dict[QualifiedName, int]) -> None:
        """The guard, on the control connection: NotOursError when it is not dbopt's object."""
        resolved = identity.resolved(built)
        self._control(lambda c: guard.check(c, resolved, self.own_pids()))

    def cancelled(self) -> bool:
        """Whether Ctrl-C reached this run (a wait for the run lock then stops)."""
        return self._cancelled.is_set()

    def _ctrl_c(self) -> None:
        """Ctrl-C reached this thread: the run stops (cancelled). In the main thread, Ctrl-C
        again from now on hurries the clean-ups (:meth:`hurry`, through
        :func:`dbopt.ctrlc.relay`) instead of interrupting them, or the history's writes,
        half-way; close() puts the handler back, once the run is recorded."""
        self._cancelled.set()
        if self._sigint is not None or threading.current_thread() is not threading.main_thread():
            return
        from dbopt import ctrlc  # only once interrupted

        with contextlib.suppress(ValueError):  # not settable here: Ctrl-C interrupts as ever
            self._sigint = ctrlc.relay(self.hurry, "dbopt-ctrl-c")

    def _restore_sigint(self) -> None:
        """SIGINT's handler as it was before :meth:`_ctrl_c` took it over."""
        restore, self._sigint = self._sigint, None
        if restore is not None:
            restore(True)  # taken over because Ctrl-C stopped the run

    def interrupt(self) -> None:
        """Ctrl-C reaching the run through its caller (a fleet: Ctrl-C never reaches the
        run's own thread): the first cancels what runs, each next one hurries."""
        if self._cancelled.is_set():
            self.hurry()
        else:
            self.cancel()

    def hurry(self) -> None:
        """Ctrl-C again: clean-ups stop waiting and trying, and what runs now is cancelled."""
        self._hurry.set()
        self.cancel()

    def cancel(self) -> None:
        """Ctrl-C: cancel every running statement on the server."""
        self._cancelled.set()
        for conn in list(self._workers.values()):
            with contextlib.suppress(Exception):
                conn.cancel_safe()

    def open_worker(self) -> None:
        """Start opening the first worker's connection now, while the checks before the first
        build run (closed unused, once open, if no step runs)."""
        with self._spare_lock:
            if self._spare is None and not self._workers:
                self._spare = _opening(self._connect_worker)

    @contextlib.contextmanager
    def lend_worker(self) -> Iterator[psycopg.Connection[Any]]:
        """The first build's connection (opened now, unless :meth:`open_worker` began to),
        lent to a check that runs beside the control connection's work before the first
        build (:mod:`dbopt.beside`); kept for that build afterwards, or closed when it is not
        idle or the runner closed meanwhile."""
        with self._spare_lock:
            spare, self._spare = self._spare, None
        conn = spare.result() if spare is not None else self._connect_worker()
        try:
            yield conn
        finally:
            idle = not conn.broken and conn.info.transaction_status == TransactionStatus.IDLE
            with self._spare_lock:
                kept = idle and not self._closed and self._spare is None and not self._workers
                if kept:
                    self._spare = Future()
                    self._spare.set_result(conn)
            if not kept:
                conn.close()

    def _connect_worker(self) -> psycopg.Connection[Any]:
        return connect(self.dsn, application_name="dbopt-apply", settings=self.settings)

    def close(self) -> None:
        """Close every connection, releasing the run lock before the control session's: a
        closed session's backend may hold its locks a moment longer, and the next run must not
        find it taken. The workers' sessions close first (no step of this run uses them after
        the release); the watcher's and the standbys' (which change nothing) after it, so
        the next run does not wait for the watcher's thread to end. SIGINT's handler comes
        back last: until then, Ctrl-C again only hurries (the run's report is not lost)."""
        with self._spare_lock:
            spare, self._spare = self._spare, None
            self._closed = True
        if spare is not None:
            spare.add_done_callback(_close_unused)
        for conn in list(self._workers.values()):
            conn.close()
        if not self.control.closed and not self.control.broken:
            with contextlib.suppress(psycopg.Error):
                self.control.execute("SELECT pg_advisory_unlock_all()")
        self._watcher.stop()
        self.standbys.close()
        self.control.close()
        self._restore_sigint()

    # --- steps -------------------------------------------------------------------------

    def _worker(self, lock_timeout_ms: int | None = None) -> psycopg.Connection[Any]:
        """This thread's connection, its session's lock_timeout ``lock_timeout_ms`` (by default
        the environment's; a concurrent build's or drop's is build_wait_timeout). Set only when
        it changes: a run of builds sets it once, the next other statement sets it back."""
        ident = threading.get_ident()
        want = self.settings.lock_timeout_ms if lock_timeout_ms is None else lock_timeout_ms
        conn = self._workers.get(ident)
        if conn is None or conn.closed or conn.broken:
            self._lock_timeouts.pop(ident, None)  # a new session: pinned to lock_timeout
            with self._spare_lock:
                spare, self._spare = self._spare, None
            try:
                conn = spare.result() if spare is not None else self._connect_worker()
            except KeyboardInterrupt:
                if spare is not None:  # still opening: closed once it is open
                    spare.add_done_callback(_close_unused)
                raise
            self._workers[ident] = conn
            self._lock_timeouts[ident] = self.settings.lock_timeout_ms
        if self._lock_timeouts.get(ident) != want:
            # Unknown until the server has it (an error or Ctrl-C here sets it again next time).
            self._lock_timeouts.pop(ident, None)
            _set(conn, "lock_timeout", want)
            self._lock_timeouts[ident] = want
        return conn

    def _oid_of(self, name: QualifiedName) -> _Made | None:
        """What the relation named ``name`` is now (None: there is none); takes no lock."""

        def query(conn: psycopg.Connection[Any]) -> dict[str, Any] | None:
            with conn.cursor(row_factory=dict_row) as cur:
                cur.execute(
                    catalog_sql("relation_state"), {"schema": name.schema, "name": name.name}
                )
                return cur.fetchone()

        row = self._control(query)
        return None if row is None else _Made(int(row["oid"]), row["relkind"], row["valid"])

    def _made(
        self, step: Step, built: dict[QualifiedName, int], record: Record | None = None
    ) -> _Made | None:
        """:meth:`_oid_of` of what ``step`` made, with its definition and size, read in one
        query right after the step (what a lock stops stays None: not worth a wait). That
        read may wait for a lock, and Ctrl-C there must not make the run forget what the
        step made: its OID is then read without a lock and kept in ``built`` (recorded and
        cleaned up as the action's) first. With ``record`` (change, finish), the same
        statement records it as the change's object (``recorded``; the caller gives none on
        Citus, where the shards are checked before a change is done)."""
        name = step.index

        def query(conn: psycopg.Connection[Any]) -> dict[str, Any] | None:
            if record is not None:
                return self.history.record_built(conn, record[0], name, finish=record[1])
            with conn.cursor(row_factory=dict_row) as cur:
                cur.execute(
                    catalog_sql("relation_built"), {"schema": name.schema, "name": name.name}
                )
                return cur.fetchone()

        try:
            row = self._control(query)
        except pgerrors.LockNotAvailable:
            # The table's lock (the definition) or the index's (the size) was not granted:
            # the state again without a lock, the size by itself (only the index's lock).
            made = self._oid_of(name)
            if made is None:
                return None
            return dataclasses.replace(made, full=True, size=self._index_size(name))
        except KeyboardInterrupt:
            with contextlib.suppress(psycopg.Error):
                now = self._oid_of(name)
                if now is not None:
                    built[name] = now.oid
            raise
        if row is None:
            return None
        size = row["size_bytes"]
        return _Made(
            int(row["oid"]),
            row["relkind"],
            row["valid"],
            full=True,
            definition=row["definition"],
            size=None if size is None else int(size),
            recorded=bool(row.get("recorded")),
        )

    def _definition(self, oid: int) -> str | None:
        """The server's definition of an index or view (None when a lock stops it)."""

        def query(conn: psycopg.Connection[Any]) -> Any:
            return conn.execute(catalog_sql("object_definition"), {"oid": oid}).fetchone()

        try:
            row = self._control(query)
        except pgerrors.LockNotAvailable:
            return None
        return None if row is None else row[0]

    def _index_size(self, name: QualifiedName) -> int | None:
        """An index's size once built (None when a lock stops it: not worth a wait)."""

        def query(conn: psycopg.Connection[Any]) -> Any:
            return conn.execute(
                catalog_sql("index_size"), {"schema": name.schema, "name": name.name}
            ).fetchone()

        try:
            row = self._control(query)
        except pgerrors.LockNotAvailable:
            return None
        return None if row is None or row[0] is None else int(row[0])

    def _backoff(self, attempt: int) -> float:
        return min(60.0, self.settings.retry_backoff_ms / 1000.0 * float(2**attempt))

    def run_step(
        self,
        step: Step,
        built: dict[QualifiedName, int] | None = None,
        cost: Cost | None = None,
        *,
        describe: bool = False,
        record: Record | None = None,
    ) -> _Made | None:
        """Run one step, waiting the way the step allows; raise StepFailed when it cannot.

        A statement that can block the application (a swap, ATTACH, a plain DROP) waits at
        most lock_timeout per attempt and is retried with backoff (``retries`` times, or until
        it succeeds when patient). A concurrent build or drop waits as long as
        build_wait_timeout allows (by default, as long as it takes); a build that timed out
        after it had built is never thrown away while what it waited for still runs.
        ``built`` maps what the running action built to its OID; the step's identities are
        checked against the live catalog right before each attempt (NotOursError). Returns
        what is under the step's index name right after it, when the step made it or built
        (with its definition and size when it made it and ``describe``: a read that may wait
        for locks, so only where they are used), else None. ``record`` (change, finish): that
        read also records what the step made as the change's object (``_Made.recorded``).
        """
        built = {} if built is None else built
        cost = Cost() if cost is None else cost
        attempt = 0
        first = time.monotonic()
        expect = step.expect
        #: What stopped REINDEX attempts left, and what became of it (for the report).
        cleaned = ""
        while True:
            if self._cancelled.is_set():
                raise KeyboardInterrupt
            started = time.time()
            watches: list[Watch] = []
            before = self._reindex_before(step)
            try:
                if step.mode != StepMode.SWAP:
                    for identity in expect:
                        self.check(identity, built)
                # Inside: setting the session's lock_timeout is a statement too (cancelled by
                # Ctrl-C, or failing on a lost connection), handled as the step's own.
                conn = self._worker(self.settings.build_wait_timeout_ms if step.gentle else None)
                try:
                    self._execute(conn, step, built, cost, watches)
                finally:
                    if step.mode == StepMode.REINDEX:
                        expect = self._reindexed(expect)
            except KeyboardInterrupt:
                # psycopg cancelled the statement on the server; the action cleans up.
                self._ctrl_c()
                clean = functools.partial(self._after_interrupted, step, built, watches, before)
                self._note(cleaned + self._cleaning_up(clean))
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
                said, left = self._clean_reindex(step, before)
                cleaned += said
                try:
                    if left:
                        # A retry would start beside what this one left: not tried again.
                        raise StepFailed(
                            f"{step.index}: waited build_wait_timeout "
                            f"({self.settings.build_wait_timeout_ms} ms) and stopped; not tried "
                            "again while what it left is there"
                        )
                    if step.gentle:
                        self._after_build_wait(step, built, cost, watches, blockers, attempt)
                    else:
                        self._after_lock_wait(step, blockers, attempt, first)
                except StepFailed as exc:
                    # A DROP INDEX CONCURRENTLY that timed out waiting for the table's lockers
                    # had marked the index INVALID first: finished, or said what is left.
                    raise StepFailed(f"{exc}{cleaned}{self._finishing_drop(step)}") from None
                continue
            except pgerrors.QueryCanceled as exc:
                self._after_failed_build(step, built, watches)
                cleaned += self._finishing_drop(step)
                cleaned += self._clean_reindex(step, before)[0]
                if self._cancelled.is_set():
                    self._note(cleaned)
                    raise KeyboardInterrupt from None
                raise StepFailed(
                    f"{step.index}: statement_timeout ({self.settings.statement_timeout_ms} ms) "
                    f"stopped the statement: {server_message(exc)}{cleaned}"
                ) from None
            except psycopg.Error as exc:
                self._after_failed_build(step, built, watches)
                cleaned += self._finishing_drop(step)
                rebuilt = step.mode in (StepMode.BUILD, StepMode.REINDEX)
                shards = self._shards(step) if rebuilt else None
                where = (
                    f" (on the shards: {shards.describe_bad()})" if shards and shards.bad else ""
                )
                cleaned += self._clean_reindex(step, before)[0]
                raise StepFailed(f"{step.index}: {server_message(exc)}{where}{cleaned}") from None
            made: _Made | None = None
            if step.makes and describe:
                made = self._made(step, built, record)
            elif step.makes or step.mode in (StepMode.BUILD, StepMode.REINDEX):
                made = self._oid_of(step.index)
            if step.makes and made is not None:
                prove(built, step.index, made.oid)
            if step.mode in (StepMode.BUILD, StepMode.REINDEX):
                if made is None or made.valid is not True:
                    raise StepFailed(f"{step.index}: the build finished but the index is not valid")
                shards = self._shards(step)
                if shards is not None and (shards.bad or not shards.placements):
                    raise StepFailed(
                        f"{step.index}: valid on the Citus coordinator but not on every shard "
                        f"placement: {shards.describe_bad() or 'no placement has it'}"
                    )
            return made

    def _reindexed(self, expect: tuple[Identity, ...]) -> tuple[Identity, ...]:
        """After a REINDEX INDEX CONCURRENTLY (done, or failed part-way): the index under the
        name has a new OID once the coordinator's part was swapped in (PostgreSQL builds a new
        index and swaps it with the old). When it is the same index (table and definition),
        its OID is recorded as dbopt's at once (a failure on a shard must not cost dbopt its
        own index) and is what a retry's guard expects."""
        return tuple(self._reindexed_one(identity) for identity in expect)

    def _reindexed_one(self, identity: Identity) -> Identity:
        try:
            live: guard.LiveObject | None = self._control(
                lambda c: guard.lookup(c, identity.name)[0]
            )
        except psycopg.Error:
            return identity
        if (
            live is None
            or live.oid == identity.oid
            or live.table != identity.table
            or canonical(live.index_definition or "").strip() != (identity.definition or "").strip()
        ):
            return identity
        change_id = self._changes.get(threading.get_ident())
        if change_id is not None:
            oid, definition = live.oid, live.index_definition
            with contextlib.suppress(psycopg.Error):
                self._control(lambda c: self.history.record_object(c, change_id, oid, definition))
        return dataclasses.replace(identity, oid=live.oid)

    def _shards(self, step: Step) -> ShardedIndex | None:
        """On a Citus coordinator, the step's index on every shard placement of its table
        (None: not a Citus table, no Citus, or the shards could not be read)."""
        if not self._citus_installed():
            return None
        try:
            found: ShardedIndex | None = self._control(
                lambda c: citus.placement_check(c, step.table, step.index)
            )
        except psycopg.Error as exc:
            self.reporter.event(
                f"{step.index}: could not read its shard placements: {server_message(exc)}"
            )
            return None
        return found

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
                waits = (
                    f"{attempts} attempts, each waiting up to {self.settings.lock_timeout_ms} "
                    f"ms (lock_timeout) for {step.table}, then at most {HELD_WAIT_MS} ms for "
                    "each other lock it needs while holding it"
                    if step.hurried
                    else f"{attempts} lock waits of {self.settings.lock_timeout_ms} ms"
                )
                raise StepFailed(f"gave up on {step.index} after {waits}; blocked by: {named}")
            of = f"/{attempts}"
        delay = self._backoff(min(attempt - 1, 5))
        what = (
            f"a lock not granted to the swap of {step.table} (lock_timeout for it, "
            f"{HELD_WAIT_MS} ms for each other lock while holding it)"
            if step.hurried
            else f"lock_timeout on {step.table}"
        )
        self.reporter.event(
            f"{what} (attempt {attempt}{of}), retrying in {delay:g}s; blocked by: {named}"
        )
        self._pause(delay)

    def _pause(self, seconds: float) -> None:
        """Wait ``seconds`` before trying again; Ctrl-C (cancel) cuts the wait short."""
        if self.sleep is time.sleep:
            self._cancelled.wait(seconds)
        else:
            self.sleep(seconds)

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
            if self._cancelled.is_set():
                raise KeyboardInterrupt  # the action cleans it up
            # The INVALID index of this attempt goes before the next attempt; still there, it
            # stays the action's (reported here, not dropped again), and no attempt starts
            # beside it.
            oid = built[step.index]
            said = self._drop_own(
                Identity("index", step.index, oid=oid, invalid=True),
                "the INVALID index",
                by_hand=by_hand_if_unsure(built, step.index),
            )
            now = self._oid_of(step.index)
            if now is not None and now.oid == oid:
                if isinstance(built, Built):
                    built.reported.add(step.index)
                raise StepFailed(f"{step.index}: not built again{said}")
            forget(built, step.index)

    def _wait_until_gone(self, pids: list[int], bound_ms: int) -> bool:
        """Wait until the transactions those sessions had open now have ended."""
        since = _timestamp(time.time())
        deadline = time.monotonic() + bound_ms / 1000.0 if bound_ms else None

        def still(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute(catalog_sql("still_open"), {"pids": pids, "since": since}).fetchone()
            return int(row[0]) if row else 0

        while self._control(still):
            if self._cancelled.is_set():
                raise KeyboardInterrupt
            if deadline is not None and time.monotonic() >= deadline:
                return False
            self.sleep(1.0)
        return True

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
        # lock_timeout (run_step gave it a session waiting that long); and never beside a
        # build it would wait for, or that would wait for it.
        exclusive = step.mode == StepMode.DDL or not (step.safe and self._safe_builds_overlap)
        exclusive = exclusive and step.mode != StepMode.DROP
        self._gate.acquire(exclusive)
        try:
            if self._cancelled.is_set():  # Ctrl-C while it waited its turn: nothing starts
                raise KeyboardInterrupt
            free_before = step.mode == StepMode.BUILD and self._oid_of(step.index) is None
            pid = conn.info.backend_pid
            recorder = self._oid_recorder(built) if step.mode == StepMode.BUILD else None
            watch = self._watcher.watch(pid, step.index, recorder)
            watch.free_before = free_before
        except BaseException:
            self._gate.release(exclusive)
            raise
        try:
            for statement in step.statements:
                conn.execute(statement)
        finally:
            try:
                finished = self._watcher.unwatch(pid, watch)
                watches.append(finished)
                cost.add(finished, build=step.mode in (StepMode.BUILD, StepMode.REINDEX))
            finally:
                self._gate.release(exclusive)

    def _oid_recorder(self, built: dict[QualifiedName, int]) -> Callable[[int], None] | None:
        """For the first build of the running action: record its OID as soon as it is seen."""
        change_id = self._changes.get(threading.get_ident())
        if change_id is None or built:
            return None

        def record(oid: int) -> None:
            # The OID only: this may land after the step's own record (definition and all).
            with contextlib.suppress(psycopg.Error):
                self._control(lambda c: self.history.record_oid(c, change_id, oid))

        return record

    # --- whole actions -----------------------------------------------------------------


def _timestamp(epoch: float) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, tz=UTC)
