"""Watching concurrent builds and drops: progress, phases, who they wait for, and for how long.

One thread and one connection poll, four times a second, every running ``CREATE INDEX
CONCURRENTLY`` and ``DROP INDEX CONCURRENTLY`` of a run: the phase from
``pg_stat_progress_create_index`` (a drop has no progress view: its lock waits show in
``pg_stat_activity``), and, while it waits, the sessions it waits for (``pg_blocking_pids``)
with their age and query. Each build's time is split into time spent working and time spent
waiting, so the report can say what a build cost and why it took long.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg

from dbopt.catalog import catalog_sql
from dbopt.config import Settings
from dbopt.db import connect, unbounded
from dbopt.model import QualifiedName

#: How often the watcher samples (seconds). Its first sample of a build is the proof that an
#: INVALID index a failed build leaves is dbopt's (recorded, repaired later): a build failing
#: sooner than this is only cleaned up, never taken as dbopt's.
INTERVAL = 0.25
#: A wait is reported once it has lasted this long (every build passes its wait phases).
REPORT_WAITS_AFTER = 1.0


#: A secret in SQL text: ``PASSWORD '...'`` (CREATE/ALTER ROLE, a user mapping's OPTIONS, a
#: comment between them or not), a conninfo's ``password=...`` (dblink, CREATE SUBSCRIPTION), a
#: named argument's ``password := / => ...`` and a JSON ``"password": ...``: the value quoted
#: (maybe cut off by the 160 characters dbopt reads of a query; quoted again inside a
#: literal; E'', U&'' or "..."), dollar-quoted or bare; and a URI's ``user:password@`` (its
#: ``@`` maybe cut off).
_SQL_SECRET = re.compile(
    r"""(?P<key>\bpassword\b"?\s*(?:/\*.*?\*/\s*)*(?:=>|:=|=|:)?\s*)
        (?: ''[^']*(?:''|$)
          | (?:[Ee]|[Uu]&)?'(?:[^'\\]|''|\\.)*(?:'|$)
          | "(?:[^"\\]|\\.)*(?:"|$)
          | \$(?P<tag>\w*)\$.*?(?:\$(?P=tag)\$|$)
          | [^\s',)"]+ )
      | (?P<uri>://[^\s:/@']*:)[^\s@'/]*(?:@|$)""",
    re.IGNORECASE | re.VERBOSE | re.DOTALL,
)


def mask_sql_secrets(text: str) -> str:
    """``text`` (another session's query, as pg_stat_activity shows it) without the secrets
    it may spell out: what dbopt prints or records of a query never holds a password."""
    return _SQL_SECRET.sub(lambda m: f"{m['uri']}***@" if m["uri"] else f"{m['key']}***", text)


@dataclass(frozen=True, slots=True)
class Blocker:
    """A session that holds up a lock or a concurrent build; its query as
    :func:`mask_sql_secrets` leaves it."""

    pid: int
    age_s: int
    state: str | None
    user: str | None
    query: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "query", mask_sql_secrets(self.query))

    def __str__(self) -> str:
        return f"pid {self.pid} ({self.user}, {self.state}, {self.age_s}s): {self.query}"


class Reporter(Protocol):
    """What the executor tells the person watching (the CLI renders it)."""

    def event(self, message: str) -> None:
        """A line worth a timestamp: a step started, a retry, a cleanup."""

    def progress(self, index: QualifiedName, phase: str, done: int, total: int) -> None:
        """Progress of a build from pg_stat_progress_create_index."""

    def waiting(
        self, index: QualifiedName, phase: str, seconds: float, blockers: list[Blocker]
    ) -> None:
        """A build or drop has been waiting ``seconds`` in ``phase`` for ``blockers``."""

    def finished(self, index: QualifiedName) -> None:
        """A build is over (whatever its outcome)."""

    def action_started(self, kind: str, name: QualifiedName) -> None:
        """An action (create, replace, drop...) of the plan starts."""

    def action_ended(
        self, kind: str, name: QualifiedName, result: str, seconds: float, error: str | None
    ) -> None:
        """An action is over: its result (ok, failed, skipped, aborted), duration and error."""


class SilentReporter:
    """A reporter that says nothing (library use, tests)."""

    def event(self, message: str) -> None:
        """Ignore."""

    def progress(self, index: QualifiedName, phase: str, done: int, total: int) -> None:
        """Ignore."""

    def waiting(
        self, index: QualifiedName, phase: str, seconds: float, blockers: list[Blocker]
    ) -> None:
        """Ignore."""

    def finished(self, index: QualifiedName) -> None:
        """Ignore."""

    def action_started(self, kind: str, name: QualifiedName) -> None:
        """Ignore."""

    def action_ended(
        self, kind: str, name: QualifiedName, result: str, seconds: float, error: str | None
    ) -> None:
        """Ignore."""


#: Phases of CREATE INDEX CONCURRENTLY that come after the index was built.
_AFTER_BUILDING = (
    "waiting for writers before validation",
    "index validation",
    "waiting for old snapshots",
    "waiting for readers before marking dead",
)


def is_waiting(phase: str) -> bool:
    """True for a phase in which the statement only waits for other transactions."""
    return phase.startswith("waiting")


@dataclass(slots=True)
class Watch:
    """One running build or drop, as the watcher saw it: time per phase, last blockers."""

    index: QualifiedName
    on_oid: Callable[[int], None] | None = None
    #: The OID of the index this very backend builds, once the server showed it: the only
    #: proof that an index under that name is dbopt's, should the build fail.
    oid: int | None = None
    #: No relation had the build's name just before it started.
    free_before: bool = False
    phase: str = "starting"
    phase_since: float = field(default_factory=time.monotonic)
    seconds: dict[str, float] = field(default_factory=dict)
    blockers: list[Blocker] = field(default_factory=list)
    #: Sessions it waited for at any time, by pid (a failed wait names them).
    waited_for: dict[int, Blocker] = field(default_factory=dict)
    #: dbopt's own connections it was seen waiting for (a scheduling mistake: never expected).
    waited_for_own: set[int] = field(default_factory=set)
    last: float = field(default_factory=time.monotonic)

    @property
    def waited_s(self) -> float:
        """Time spent waiting for other transactions."""
        return sum(s for p, s in self.seconds.items() if is_waiting(p))

    @property
    def worked_s(self) -> float:
        """Time spent building (or dropping)."""
        return sum(s for p, s in self.seconds.items() if not is_waiting(p))

    @property
    def built(self) -> bool:
        """The build has built the index (it was seen in a phase after "building index"):
        throwing it away now would lose that work."""
        seen = {*self.seconds, self.phase}
        return any(p.startswith(_AFTER_BUILDING) for p in seen)

    def sample(self, phase: str, now: float) -> None:
        """Account the time since the last sample to the phase seen then."""
        self.seconds[self.phase] = self.seconds.get(self.phase, 0.0) + (now - self.last)
        self.last = now
        if phase != self.phase:
            self.phase = phase
            self.phase_since = now

    def close(self, now: float) -> None:
        """The statement is over: account the last stretch."""
        self.sample(self.phase, now)


class Watcher:
    """One thread and one connection watching every build and drop of a run.

    Workers register the backend pid of the statement they start and get back its
    :class:`Watch`. Watching is a nicety: a build never fails for it, and a watcher that
    cannot connect simply stays quiet (the accounting then has only the total time).
    """

    def __init__(
        self,
        dsn: str | None,
        settings: Settings,
        reporter: Reporter,
        own: Callable[[], list[int]],
    ) -> None:
        self.dsn = dsn
        self.settings = settings
        self.reporter = reporter
        self.own = own
        self._watches: dict[int, Watch] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(
        self, pid: int, index: QualifiedName, on_oid: Callable[[int], None] | None = None
    ) -> Watch:
        """Watch the statement running on backend ``pid``; ``on_oid`` hears the OID of the
        index a build makes as soon as the server shows it (a concurrent build commits its
        catalog entry first: if dbopt dies mid-build, its history still knows the OID)."""
        watch = Watch(index, on_oid)
        with self._lock:
            self._watches[pid] = watch
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True)
                self._thread.start()
        return watch

    def unwatch(self, pid: int, watch: Watch) -> Watch:
        """That statement is over: its accounting, closed (no sample reaches it after)."""
        with self._lock:
            if self._watches.get(pid) is watch:  # never another statement's watch
                del self._watches[pid]
            watch.close(time.monotonic())
        return watch

    def stop(self) -> None:
        """Stop watching (at the end of the run)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            conn = connect(
                self.dsn, application_name="dbopt-progress", settings=unbounded(self.settings)
            )
        except Exception:
            return
        try:
            while not self._stop.wait(INTERVAL):
                with self._lock:
                    watches = dict(self._watches)
                if watches:
                    self._sample(conn, watches)
        except psycopg.Error:
            return
        finally:
            conn.close()

    def _sample(self, conn: psycopg.Connection[Any], watches: dict[int, Watch]) -> None:
        rows = conn.execute(catalog_sql("build_progress"), {"pids": list(watches)}).fetchall()
        now = time.monotonic()
        own = set(self.own())
        for pid, phase, b_done, b_total, t_done, t_total, oid, wait_type, state, raw in rows:
            watch = watches.get(pid)
            if watch is None or (phase is None and state != "active"):
                continue  # the session runs no statement: nothing of the watched one to see
            blockers = [
                Blocker(b["pid"], b["age_s"] or 0, b["state"], b["user"], b["query"] or "")
                for b in (json.loads(raw) if isinstance(raw, str) else raw)
            ]
            if phase is None:  # a drop: no progress view, only its lock waits
                phase = "waiting for locks" if wait_type == "Lock" else "dropping"
            tell = None
            new_own: list[Blocker] = []
            # Under the lock that unwatch takes: a watch still registered had its statement
            # running throughout the query (the row is its own); one that ended meanwhile may
            # see its session's next statement here (another build, its OID): not applied.
            with self._lock:
                if self._watches.get(pid) is not watch:
                    continue
                if oid and watch.oid is None:
                    watch.oid = int(oid)
                    tell, watch.on_oid = watch.on_oid, None
                watch.sample(phase, now)
                watch.blockers = blockers
                for blocker in blockers:
                    if blocker.pid not in own:
                        watch.waited_for[blocker.pid] = blocker
                    elif blocker.pid not in watch.waited_for_own:
                        watch.waited_for_own.add(blocker.pid)
                        new_own.append(blocker)
                since = watch.phase_since
            if tell is not None:
                tell(int(oid))
            for blocker in new_own:
                self.reporter.event(
                    f"{watch.index}: {phase}: waits for dbopt's own session (pid "
                    f"{blocker.pid}): {blocker.query}"
                )
            if is_waiting(phase):
                if now - since >= REPORT_WAITS_AFTER:
                    self.reporter.waiting(watch.index, phase, now - since, blockers)
            elif b_total or t_total:
                done, total = (b_done, b_total) if b_total else (t_done, t_total)
                self.reporter.progress(watch.index, phase, int(done), int(total))


class BuildGate:
    """Concurrent builds that would wait for each other never run at the same time.

    A concurrent build waits, in its last phases, for every transaction older than it —
    including other concurrent builds, except (PostgreSQL 14+) builds of indexes without
    expressions or predicate, which the others ignore. So a "safe" build may run beside other
    safe builds (shared), anything else runs alone (exclusive). A writer-preferring
    readers-writer lock: an exclusive build waits for the running shared ones, and new shared
    ones wait behind it.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._exclusive = False
        self._waiting_exclusive = 0

    def acquire(self, exclusive: bool) -> None:
        """Wait for a turn."""
        with self._cond:
            if exclusive:
                self._waiting_exclusive += 1
                while self._exclusive or self._shared:
                    self._cond.wait()
                self._waiting_exclusive -= 1
                self._exclusive = True
            else:
                while self._exclusive or self._waiting_exclusive:
                    self._cond.wait()
                self._shared += 1

    def release(self, exclusive: bool) -> None:
        """Give the turn back."""
        with self._cond:
            if exclusive:
                self._exclusive = False
            else:
                self._shared -= 1
            self._cond.notify_all()
