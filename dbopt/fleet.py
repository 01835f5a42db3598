"""Fleets: one spec set, many databases, one report.

An environment of dbopt.yaml may name many databases (``targets:`` or ``targets_query:``)
instead of one ``dsn``. This module resolves them into :class:`Member` targets, selects some
(``--target NAME``, ``--targets GLOB``) and runs one per-target use case of
:mod:`dbopt.usecases` on up to ``parallel`` of them at a time, each in its own thread with
its own connections, advisory lock, history and rollback plan (the use cases open their own
connections; nothing is shared but the specs, loaded and validated once).

The policy (:class:`Policy`): canaries first (stop when one fails), then the rest; after a
failure no new target starts unless ``continue_on_error``; Ctrl-C in the main thread stops
starting targets and cancels the builds of the running ones through their executors. The
result is a :class:`FleetReport`: a row per target and the worst exit code. The work done
on each target (plan, apply, verify...) lives in :mod:`dbopt.fleetwork`.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from dbopt.config import (
    Config,
    Environment,
    Location,
    Target,
    TargetEntry,
    TargetsQuery,
    dsn_or_service,
)
from dbopt.db import (
    connect,
    conninfo_problem,
    format_db_error,
    read_only_transaction,
    server_message,
    unbounded,
)
from dbopt.dsn import expand_env, target_name
from dbopt.errors import (
    EXIT_CHECK_FAILED,
    EXIT_CONNECT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    ConfigError,
    ConnectError,
    DboptError,
    LockBusyError,
    LockWaitError,
    Problem,
)
from dbopt.readonly import CallGraph
from dbopt.words import suggest


@dataclass(frozen=True, slots=True)
class Member:
    """One database of a fleet: its name (for people, reports, --target) and its target."""

    name: str
    target: Target


@dataclass(frozen=True, slots=True)
class Fleet:
    """A fleet environment's databases, in the configured order."""

    env: str
    members: tuple[Member, ...]
    parallel: int

    def select(self, names: Sequence[str] = (), globs: Sequence[str] = ()) -> Fleet:
        """The members named by ``names`` or matching one of ``globs`` (all when both are
        empty), in the configured order; ConfigError for a name that is no target's, or a
        glob that matches none."""
        if not names and not globs:
            return self
        known = [m.name for m in self.members]
        problems = [
            f"--target {n}: no target of environment '{self.env}' is called so"
            + (suggest(n, known) or "")
            for n in names
            if n not in known
        ]
        problems += [
            f"--targets '{g}' matches no target of environment '{self.env}'"
            for g in globs
            if not any(fnmatch.fnmatchcase(k, g) for k in known)
        ]
        if problems:
            raise ConfigError("; ".join(problems) + "; nothing was run")
        chosen = tuple(
            m
            for m in self.members
            if m.name in names or any(fnmatch.fnmatchcase(m.name, g) for g in globs)
        )
        return Fleet(self.env, chosen, self.parallel)

    def with_targets(self, change: Callable[[Target], Target]) -> Fleet:
        """The same fleet with ``change`` applied to every target (flags over settings)."""
        members = tuple(Member(m.name, change(m.target)) for m in self.members)
        return Fleet(self.env, members, self.parallel)


# --- targets -------------------------------------------------------------------------------


def _database(dsn: str, environ: Mapping[str, str]) -> tuple[str, ...]:
    """What tells databases apart in a target's DSN as written: its service, or host (and
    hostaddr), port and database (libpq's defaults, from ``environ``, for those left out),
    and which server of a host list it asks for. Two spellings of one host (localhost and
    127.0.0.1) are not seen as one: that needs a connection."""
    params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    if "service" in params:
        return ("service", params["service"], params.get("dbname", ""))
    user = params.get("user", environ.get("PGUSER", ""))
    return (
        params.get("host", environ.get("PGHOST", "")),
        params.get("hostaddr", environ.get("PGHOSTADDR", "")),
        params.get("port", environ.get("PGPORT", "5432")),
        params.get("dbname", environ.get("PGDATABASE", user)),
        params.get("target_session_attrs", environ.get("PGTARGETSESSIONATTRS", "")),
    )


#: Hosts that are this machine, however written: a socket directory, loopback, nothing.
_LOCAL_HOSTS = frozenset({"", "localhost", "127.0.0.1", "::1"})


def server_of(member: Member, environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """What tells a target's server apart in its DSN as written (as :func:`_database`, less
    the database): targets with the same one share the machine's CPU, memory and disks. This
    machine's hosts are one ("local"); a host list is a set; a service is its name (its
    file is not read: verify's ServerTurns tell servers apart once connected)."""
    key = _database(member.target.dsn or "", os.environ if environ is None else environ)
    if key[0] == "service":
        return key[:2]
    host, hostaddr, port = key[:3]
    hosts = host.split(",")
    addrs = hostaddr.split(",")
    count = max(len(hosts), len(addrs))
    # libpq pairs the lists in order (one port serves every host).
    hosts = hosts if len(hosts) == count else [host] * count
    addrs = addrs if len(addrs) == count else [hostaddr] * count
    ports = port.split(",")
    ports = ports if len(ports) == count else [port] * count
    # Each host with its address and port: the set, in any order written.
    servers = sorted(
        {
            ("local" if h in _LOCAL_HOSTS or h.startswith("/") else h, a, p)
            for h, a, p in zip(hosts, addrs, ports, strict=True)
        }
    )
    return tuple(",".join(s[i] for s in servers) for i in range(3))


def _same_database(dsns: Sequence[str], environ: Mapping[str, str]) -> list[tuple[int, int]]:
    """Pairs (first, later) of positions in ``dsns`` naming one database: a fleet would take
    its run lock twice and stop itself ("another dbopt run holds this database's lock")."""
    seen: dict[tuple[str, ...], int] = {}
    pairs = []
    for i, dsn in enumerate(dsns):
        key = _database(dsn, environ)
        if key in seen:
            pairs.append((seen[key], i))
        else:
            seen[key] = i
    return pairs


def _named(
    env: str,
    found: list[tuple[str, str, bool, Location]],
    config_path: str | None,
    environ: Mapping[str, str],
) -> list[tuple[str, str]]:
    """(name, dsn) per target: derived names that clash get their port; a name still used
    twice is a ConfigError at each place it comes from."""
    names = [name for name, _dsn, _given, _at in found]
    out: list[tuple[str, str]] = []
    for name, dsn, given, _at in found:
        if not given and names.count(name) > 1:
            name = target_name(dsn, port=True)
        out.append((name, dsn))
    final = [n for n, _ in out]
    twice = [
        at.problem(f"environment '{env}': target '{n}' is named twice; give each a name")
        for (n, _), (_n, _d, _g, at) in zip(out, found, strict=True)
        if final.count(n) > 1
    ]
    if twice:
        raise ConfigError(
            f"{config_path}: environment '{env}' names a target twice; nothing was run", twice
        )
    same = [
        found[later][3].problem(
            f"environment '{env}': target '{out[later][0]}' is the database of target "
            f"'{out[first][0]}'; list each database once"
        )
        for first, later in _same_database([dsn for _n, dsn in out], environ)
    ]
    if same:
        raise ConfigError(
            f"{config_path}: environment '{env}' lists a database twice; nothing was run", same
        )
    return out


def _from_entries(
    env: str, entries: Sequence[TargetEntry], environ: Mapping[str, str], path: str | None
) -> list[tuple[str, str]]:
    found: list[tuple[str, str, bool, Location]] = []
    problems: list[Problem] = []
    for entry in entries:
        try:
            dsn, service = dsn_or_service(expand_env(entry.dsn, environ))
        except ConfigError as exc:
            problems.append(entry.at.problem(f"environment '{env}': {exc}"))
            continue
        problem = conninfo_problem(dsn)
        if problem is not None:
            # Bad input, told before any target runs (as a name twice is): every one.
            problems.append(
                entry.at.problem(f"environment '{env}': invalid connection string: {problem}")
            )
            continue
        name = entry.name or service or target_name(dsn)
        found.append((name, dsn, bool(entry.name), entry.at))
    if problems:
        raise ConfigError(
            f"{path}: invalid target{'s' if len(problems) > 1 else ''}; nothing was run",
            problems,
        )
    return _named(env, found, path, environ)


def _from_query(
    env: Environment, query: TargetsQuery, environ: Mapping[str, str], path: str | None
) -> list[tuple[str, str]]:
    """Run the registry's query (read-only, rolled back) on its control database: rows of
    (name, DSN or database name), or of one database name."""
    from dbopt.sqltext import check_query

    def bad(message: str) -> ConfigError:
        return ConfigError(
            f"{path}: targets_query of environment '{env.name}': nothing was run",
            [query.at.problem(f"targets_query: {message}")],
        )

    try:
        control, _service = dsn_or_service(expand_env(query.dsn, environ))
    except ConfigError as exc:
        raise bad(str(exc)) from None
    text = check_query(query.sql, with_placeholders=False).text  # checked at load too
    error: str | None = None
    with connect(
        control, application_name="dbopt-fleet", settings=unbounded(env.settings), read_only=True
    ) as conn:
        try:
            # As a budget's query: nothing it can reach on this server may change anything
            # (a function of the registry's own that writes, or takes a lock...).
            refused = CallGraph.read(conn).refusals(query.sql, with_placeholders=False)
            if refused:
                raise bad(f"{refused[0].message}: the registry's query must change nothing")
            with read_only_transaction(conn) as cur:
                cur.execute(sql.SQL(text))  # one SELECT, checked
                width = len(cur.description or ())
                rows = cur.fetchall()
        except psycopg.Error as exc:
            error = f"the query failed: {server_message(exc)}"
    if error is not None:
        raise bad(error)
    if width not in (1, 2):
        raise bad(
            f"it returned {width} columns; return name and dsn (or a database name on the "
            "control server), or one column of database names"
        )
    if not rows:
        raise bad("it returned no rows: no database to work on")
    found: list[tuple[str, str, bool, Location]] = []
    torn: list[str] = []
    for number, row in enumerate(rows, 1):
        if any(not isinstance(v, str) or not v.strip() for v in row):
            raise bad(f"row {number} holds a NULL, an empty or a non-text value")
        if width == 1:
            # One column holds database names: never a DSN (it could carry a password into
            # every line that names the target, or send the control role's to another host).
            if "=" in row[0] or "://" in row[0]:
                raise bad(
                    f"row {number} is not a database name: one column holds database names "
                    "on the control server; return name and dsn for connection strings"
                )
            name, value = row[0], row[0]
        else:
            name, value = row[0], row[1]
        # A DSN, or a database on the control database's server.
        dsn = value if "=" in value or "://" in value else make_conninfo(control, dbname=value)
        problem = conninfo_problem(dsn)
        if problem is not None:
            torn.append(f"row {number} ({name}): invalid connection string: {problem}")
            continue
        found.append((name, dsn, True, query.at))
    if torn:
        raise bad("; ".join(torn))  # every one: a registry is mended in one go
    names = [n for n, _d, _g, _a in found]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise bad(f"it returned these names more than once: {', '.join(twice)}")
    same = _same_database([d for _n, d, _g, _a in found], environ)
    if same:
        first, later = same[0]
        raise bad(
            f"rows {first + 1} and {later + 1} ({found[first][0]}, {found[later][0]}) name "
            "the same database; return each database once"
        )
    return [(n, d) for n, d, _g, _a in found]


def resolve(config: Config, env: str, environ: Mapping[str, str] | None = None) -> Fleet:
    """The databases of fleet environment ``env``, ``${VAR}`` expanded, names given or
    derived (host/database, or the service), in the configured order (the query's order for
    targets_query). ConfigError (with file:line) for a name twice, a malformed entry or a
    query result of the wrong shape; ConnectError when the control database is unreachable.
    """
    environ = os.environ if environ is None else environ
    chosen = config.environments[env]
    if chosen.targets_query is not None:
        pairs = _from_query(chosen, chosen.targets_query, environ, config.path)
    else:
        pairs = _from_entries(env, chosen.targets, environ, config.path)
    members = tuple(
        Member(
            name,
            Target(
                env=env,
                dsn=dsn,
                settings=chosen.settings,
                source=f"target '{name}' of environment '{env}' in {config.path}",
            ),
        )
        for name, dsn in pairs
    )
    return Fleet(env, members, chosen.parallel)


# --- the runner ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Done:
    """What a target's work ended with (the runner adds the name and the time).

    ``failed``: a failure for the policy (stop starting targets): the target could not be
    worked on, or what was done on it failed. A finding of a read-only command (budgets
    missed, changes planned) has a non-zero ``code`` but is not a failure.
    """

    outcome: str
    code: int = EXIT_OK
    changes: int | None = None
    failing: tuple[str, ...] = ()
    detail: str = ""
    failed: bool = False
    value: Any = None


@dataclass(frozen=True, slots=True)
class TargetResult:
    """A row of the fleet's report."""

    name: str
    outcome: str
    code: int
    seconds: float | None
    changes: int | None = None
    failing: tuple[str, ...] = ()
    detail: str = ""
    failed: bool = False
    canary: bool = False
    value: Any = None


#: The worst exit code wins; interrupted above all, then could not connect or lock, bad
#: input or refused, a check failed.
_RANK = {EXIT_OK: 0, EXIT_CHECK_FAILED: 1, 2: 2, EXIT_CONNECT: 3, EXIT_INTERRUPTED: 4}


def worst(codes: Sequence[int]) -> int:
    """The exit code of a fleet: the worst of its targets' (130 > 3 > 2 > 1 > 0)."""
    return max(codes, key=lambda c: _RANK.get(c, 1), default=EXIT_OK)


@dataclass(frozen=True, slots=True)
class FleetReport:
    """How every selected target went, in the configured order."""

    env: str
    results: tuple[TargetResult, ...]
    interrupted: bool = False
    stopped: str | None = None  # why no new target was started, when that happened

    @property
    def exit_code(self) -> int:
        """The worst of the targets' exit codes (130 when interrupted)."""
        codes = [r.code for r in self.results]
        return worst([*codes, EXIT_INTERRUPTED] if self.interrupted else codes)

    @property
    def failed(self) -> list[TargetResult]:
        """The targets whose work failed (the policy's failures)."""
        return [r for r in self.results if r.failed]


@dataclass(frozen=True, slots=True)
class Policy:
    """How many targets at a time, what stops the fleet, which targets go first."""

    parallel: int
    continue_on_error: bool = False
    canary: int = 0
    #: Wait for the running targets after Ctrl-C (their builds are cancelled and cleaned up);
    #: read-only work is abandoned instead (its sessions end with the process).
    wait_on_interrupt: bool = True
    #: Never two targets of one server at a time (verify: timings taken beside another
    #: target's would measure the two of them).
    one_per_server: bool = False
    #: The same for the canaries only (apply --canary: each verifies its budgets, which a
    #: build of another canary on the same server would slow down).
    canaries_one_per_server: bool = False


class Context:
    """What a target's work sees of the fleet: whether it is a canary, whether the fleet is
    stopping, and where to register what cancels its statements on Ctrl-C."""

    def __init__(self, canary: bool, stopping: threading.Event) -> None:
        self.canary = canary
        self._stopping = stopping
        self._cancels: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    @property
    def stopping(self) -> bool:
        """Ctrl-C was pressed: start nothing new."""
        return self._stopping.is_set()

    def on_cancel(self, cancel: Callable[[], None]) -> None:
        """Call ``cancel`` on Ctrl-C (at once when it was pressed already)."""
        with self._lock:
            self._cancels.append(cancel)
        if self._stopping.is_set():
            cancel()

    def cancel(self) -> None:
        """Cancel what this target runs (each callback once per Ctrl-C)."""
        with self._lock:
            cancels = list(self._cancels)
        for cancel in cancels:
            with contextlib.suppress(Exception):
                cancel()


Work = Callable[[Member, Context], Done]


def _failure(exc: BaseException) -> Done:
    """A target whose work raised: the same exit codes as the command line's."""
    if isinstance(exc, KeyboardInterrupt):
        return Done("interrupted", EXIT_INTERRUPTED, detail="Ctrl-C", failed=True)
    if isinstance(exc, LockBusyError | LockWaitError):
        return Done("locked", exc.exit_code, detail=str(exc), failed=True)
    if isinstance(exc, ConnectError):
        return Done("unreachable", exc.exit_code, detail=str(exc), failed=True)
    if isinstance(exc, DboptError):
        return Done("refused", exc.exit_code, detail=str(exc), failed=True)
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        detail = f"gave up waiting for a lock (lock_timeout): {format_db_error(exc)}"
        return Done("locked", EXIT_CONNECT, detail=detail, failed=True)
    if isinstance(exc, psycopg.Error):
        detail = f"database error: {format_db_error(exc)}"
        return Done("failed", EXIT_CHECK_FAILED, detail=detail, failed=True)
    return Done("crashed", EXIT_CHECK_FAILED, detail=f"{type(exc).__name__}: {exc}", failed=True)


@dataclass(slots=True)
class _Running:
    member: Member
    context: Context
    started: float
    thread: threading.Thread


@dataclass(slots=True)
class _Run:
    """The state of one fleet run, kept by the main thread."""

    fleet: Fleet
    work: Work
    policy: Policy
    events: Callable[[str], None]
    stopping: threading.Event = field(default_factory=threading.Event)
    results: dict[str, TargetResult] = field(default_factory=dict)
    halted: str | None = None
    #: A target was not started because of ``halted`` (not only after it: all had started).
    held_back: bool = False
    interrupted: bool = False
    #: Set by the caller's SIGINT handler: Ctrl-C without an exception in the main thread.
    interrupt: threading.Event | None = None
    #: Each target's server (server_of), once read.
    servers: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def count(self) -> str:
        done = len(self.results)
        failed = sum(1 for r in self.results.values() if r.failed)
        # A finding (a missed budget, what status flags) is not a failure: the fleet goes on.
        found = sum(
            1 for r in self.results.values() if not r.failed and r.code == EXIT_CHECK_FAILED
        )
        findings = f", {found} with findings" if found else ""
        return f"{done}/{len(self.fleet.members)} done{findings}, {failed} failed"

    def _prepare(self, member: Member, canary: bool, finished: queue.Queue[Any]) -> _Running:
        """A target's thread, not started yet (it is tracked before it runs)."""
        context = Context(canary, self.stopping)

        def target() -> None:
            try:
                done = self.work(member, context)
            except BaseException as exc:
                done = _failure(exc)
            finished.put((member.name, done))

        thread = threading.Thread(target=target, name=f"dbopt-fleet-{member.name}", daemon=True)
        return _Running(member, context, time.monotonic(), thread)

    def _record(self, running: _Running, done: Done) -> None:
        result = TargetResult(
            running.member.name,
            done.outcome,
            done.code,
            time.monotonic() - running.started,
            done.changes,
            done.failing,
            done.detail,
            done.failed,
            running.context.canary,
            done.value,
        )
        self.results[result.name] = result
        detail = " ".join(line.strip() for line in done.detail.splitlines() if line.strip())
        self.events(
            f"{result.name}: {done.outcome}"
            + (f" ({detail})" if detail else "")
            + f" in {result.seconds:.1f}s; {self.count()}"
        )
        if done.failed and not self.policy.continue_on_error and self.halted is None:
            self.halted = f"{result.name} {done.outcome}"

    def _interrupt(self, running: dict[str, _Running]) -> None:
        """Interrupt each running target once per Ctrl-C: the first cancels what it runs (a
        cancelled build then cleans up: its DROP INDEX CONCURRENTLY); the next ones stop
        those clean-ups too (what they leave, the report says, and the next apply repairs or
        prunes it)."""
        first = not self.interrupted
        if self.interrupt is not None:
            self.interrupt.clear()
        self.interrupted = True
        self.stopping.set()
        for r in running.values():
            r.context.cancel()
        if first and running:
            self.events(f"interrupted: stopping {', '.join(sorted(running))}")

    def _not_started(self, member: Member, canary: bool) -> None:
        why = "interrupted" if self.interrupted else f"stopped after {self.halted}"
        self.held_back = self.held_back or not self.interrupted
        self.results[member.name] = TargetResult(
            member.name, "not started", EXIT_OK, None, detail=why, canary=canary
        )

    def _next(
        self, waiting: Sequence[Member], running: Mapping[str, _Running], canary: bool
    ) -> Member | None:
        """The first waiting target that may start now."""
        alone = self.policy.one_per_server or (canary and self.policy.canaries_one_per_server)
        if not alone:
            return waiting[0]
        busy = {self._server(r.member) for r in running.values()}
        return next((m for m in waiting if self._server(m) not in busy), None)

    def _server(self, member: Member) -> tuple[str, ...]:
        """:func:`server_of`, read once per target (the runner asks on every start)."""
        key = self.servers.get(member.name)
        if key is None:
            key = self.servers[member.name] = server_of(member)
        return key

    def phase(self, members: Sequence[Member], canary: bool) -> None:
        """Work on ``members``, up to ``parallel`` at a time, until done or stopped.

        Ctrl-C arrives as ``interrupt`` being set (the command line's SIGINT handler) or as
        KeyboardInterrupt in this thread; either way the running targets are cancelled."""
        waiting = list(members)
        running: dict[str, _Running] = {}
        finished: queue.Queue[tuple[str, Done]] = queue.Queue()
        while waiting or running:
            try:
                if self.interrupt is not None and self.interrupt.is_set():
                    self._interrupt(running)
                while (
                    waiting
                    and len(running) < self.policy.parallel
                    and self.halted is None
                    and not self.interrupted
                ):
                    member = self._next(waiting, running, canary)
                    if member is None:
                        break  # every one waiting shares a server with a running one
                    prepared = self._prepare(member, canary, finished)
                    running[member.name] = prepared
                    waiting.remove(member)
                    self.events(f"{member.name}: started" + (" (canary)" if canary else ""))
                    prepared.thread.start()
                if self.interrupted:
                    for name, r in list(running.items()):
                        if r.thread.ident is None:  # interrupted before it started
                            del running[name]
                            self._not_started(r.member, canary)
                    if not self.policy.wait_on_interrupt:
                        for r in running.values():
                            done = Done("interrupted", EXIT_INTERRUPTED, detail="Ctrl-C")
                            self._record(r, done)
                        running.clear()
                if not running:
                    break
                try:
                    name, done = finished.get(timeout=0.2)
                except queue.Empty:
                    continue
                if name in running:
                    self._record(running.pop(name), done)
            except KeyboardInterrupt:
                self._interrupt(running)
        for member in waiting:
            self._not_started(member, canary)


def run(
    fleet: Fleet,
    work: Work,
    policy: Policy,
    events: Callable[[str], None] = lambda _line: None,
    interrupt: threading.Event | None = None,
) -> FleetReport:
    """Run ``work`` on every member of ``fleet`` under ``policy``; ``events`` gets one line
    per target event (started, how it ended with the running count). Never raises for a
    target's failure: each is a row. Ctrl-C (KeyboardInterrupt in the calling thread) cancels
    the running targets' statements, waits for them to clean up (``wait_on_interrupt``) and
    returns an interrupted report; so does ``interrupt`` being set (a SIGINT handler's way,
    which never raises in the middle of the runner's bookkeeping)."""
    state = _Run(fleet, work, policy, events, interrupt=interrupt)
    canaries = fleet.members[: policy.canary]
    rest = fleet.members[policy.canary :]
    state.phase(canaries, canary=True)
    bad = [
        r for m in canaries if (r := state.results.get(m.name)) is not None and r.code != EXIT_OK
    ]
    if bad and not state.interrupted:
        state.halted = state.halted or f"canary {bad[0].name} {bad[0].outcome}"
        for member in rest:
            state._not_started(member, canary=False)
    else:
        state.phase(rest, canary=False)
    ordered = tuple(
        state.results.get(m.name)
        or TargetResult(m.name, "not started", EXIT_OK, None, detail="interrupted")
        for m in fleet.members
    )
    stopped = state.halted if state.held_back else None
    return FleetReport(fleet.env, ordered, state.interrupted, stopped)


__all__ = [
    "Context",
    "Done",
    "Fleet",
    "FleetReport",
    "Member",
    "Policy",
    "TargetResult",
    "Work",
    "resolve",
    "run",
    "server_of",
    "worst",
]
