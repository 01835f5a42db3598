"""Standbys: knowing when dbopt is connected to one, how far behind each one replays, and
pausing builds while any is further behind than the environment allows.

Lag comes from two places. On the primary, ``pg_stat_replication`` gives the replay lag of
every standby streaming from it (named by its application_name); it needs the privileges of
``pg_read_all_stats`` to show them. The environment's listed ``replicas`` (where reachable)
say themselves how far behind they replay, which also covers cascaded standbys the primary
does not see.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row

from dbopt.catalog import catalog_sql
from dbopt.config import Replica, Settings
from dbopt.errors import (
    EXIT_CHECK_FAILED,
    ConfigError,
    ConnectError,
    DboptError,
    StandbyError,
    UnsafeActionError,
)
from dbopt.progress import Reporter

#: How often lag is read again while paused, and how often the wait is reported.
POLL_S = 1.0
REPORT_EVERY_S = 10.0
#: How long an unreachable listed replica is left alone before dbopt tries it again.
RETRY_UNREACHABLE_S = 60.0


def in_recovery(conn: psycopg.Connection[Any]) -> bool:
    """True when ``conn`` is a hot standby (``pg_is_in_recovery()``)."""
    row = conn.execute(catalog_sql("in_recovery")).fetchone()
    return bool(row and row[0])


def require_primary(conn: psycopg.Connection[Any], command: str) -> None:
    """Refuse at once (exit 2) to run a writing command on a standby."""
    if in_recovery(conn):
        raise StandbyError(
            f"{command}: this is a standby (pg_is_in_recovery() is true); run against the "
            "primary. On a standby only plan, status and verify run."
        )


@dataclass(frozen=True, slots=True)
class StandbyLag:
    """How far one standby replays behind, as one source sees it."""

    name: str
    seconds: float | None  # None: not known (see note)
    source: str  # "primary" (pg_stat_replication) or "replica" (asked itself)
    note: str = ""  # why the lag is unknown, or how it was measured

    def __str__(self) -> str:
        if self.seconds is None:
            return f"{self.name}: lag unknown ({self.note})"
        return f"{self.name} is {self.seconds:.0f} s behind"


def primary_lags(conn: psycopg.Connection[Any]) -> list[StandbyLag]:
    """The replay lag of every standby streaming from the primary ``conn``."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(catalog_sql("replication_lag"))
        rows = cur.fetchall()
    out = []
    for r in rows:
        name = r["application_name"] or r["client_addr"] or f"walsender {r['pid']}"
        if r["state"] is None:
            out.append(
                StandbyLag(
                    name,
                    None,
                    "primary",
                    "the role may not see pg_stat_replication's lag: GRANT pg_read_all_stats",
                )
            )
        else:
            out.append(StandbyLag(name, float(r["replay_lag_s"]), "primary", r["state"]))
    return out


def current_lsn(conn: psycopg.Connection[Any]) -> str:
    """The primary's current WAL position."""
    row = conn.execute(catalog_sql("current_lsn")).fetchone()
    assert row is not None
    return str(row[0])


def replica_lag(conn: psycopg.Connection[Any], name: str, primary_lsn: str) -> StandbyLag:
    """How far the standby ``conn`` replays behind ``primary_lsn``, as it says itself."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(catalog_sql("replica_lag"), {"primary_lsn": primary_lsn})
        row = cur.fetchone()
    assert row is not None
    if not row["standby"]:
        return StandbyLag(name, None, "replica", "it is not a standby (promoted?)")
    notes = []
    if row["paused"]:
        notes.append("replay paused")
    if row["not_streaming"] and row["behind_bytes"]:
        notes.append("not streaming from a primary")
    if row["lag_s"] is None:
        behind = row["behind_bytes"] or 0
        notes.append(f"{behind / 1048576:.1f} MB behind, no replayed transaction to date it")
        return StandbyLag(name, None, "replica", "; ".join(notes))
    return StandbyLag(name, float(row["lag_s"]), "replica", "; ".join(notes))


def index_scans(conn: psycopg.Connection[Any], names: Sequence[str]) -> dict[str, int]:
    """Scans of the named indexes (``schema.name``) on the node ``conn`` is connected to."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(catalog_sql("index_scans"), {"names": list(names)})
        return {r["name"]: int(r["idx_scan"]) for r in cur.fetchall()}


@dataclass
class _Listed:
    replica: Replica
    conn: psycopg.Connection[Any] | None = None
    failed_at: float | None = None
    error: str = ""


@dataclass
class Standbys:
    """The standbys of one run: the primary's view of them and the listed replicas (each
    connected once, and again a minute after it could not be reached)."""

    primary: Callable[[Callable[[psycopg.Connection[Any]], Any]], Any]  # runs fn on primary
    replicas: Sequence[Replica]
    settings: Settings
    clock: Callable[[], float] = time.monotonic
    _listed: list[_Listed] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._listed = [_Listed(r) for r in self.replicas]

    def _connect(self, item: _Listed) -> psycopg.Connection[Any] | None:
        if item.conn is not None and not item.conn.closed:
            return item.conn
        if item.failed_at is not None and self.clock() - item.failed_at < RETRY_UNREACHABLE_S:
            return None
        from dbopt.db import connect, unbounded

        try:
            item.conn = connect(
                item.replica.dsn,
                application_name="dbopt-lag",
                connect_timeout=5,
                settings=unbounded(self.settings),
                read_only=True,
            )
            item.failed_at, item.error = None, ""
        except (ConnectError, ConfigError) as exc:
            item.failed_at, item.error = self.clock(), str(exc)
        return item.conn

    def lags(self) -> list[StandbyLag]:
        """Every standby's lag that can be read now (unreachable ones say so)."""
        found: list[StandbyLag] = self.primary(primary_lags)
        primary_lsn: str = self.primary(current_lsn) if self._listed else ""
        for item in self._listed:
            conn = self._connect(item)
            if conn is None:
                found.append(
                    StandbyLag(item.replica.name, None, "replica", f"unreachable: {item.error}")
                )
                continue
            try:
                found.append(replica_lag(conn, item.replica.name, primary_lsn))
            except psycopg.Error as exc:
                conn.close()
                item.conn, item.failed_at, item.error = None, self.clock(), type(exc).__name__
                found.append(
                    StandbyLag(item.replica.name, None, "replica", f"unreachable: {item.error}")
                )
        return found

    def close(self) -> None:
        for item in self._listed:
            if item.conn is not None:
                item.conn.close()
                item.conn = None


class ReplicaLagStop(DboptError):
    """Standbys stayed further behind than max_replica_lag for longer than max_replica_wait:
    the run stops before its next build (what it built stays; it is recorded as stopped)."""

    exit_code = EXIT_CHECK_FAILED


def _limit_words(ms: int) -> str:
    return f"{ms / 1000:g} s"


class LagGate:
    """Before each build: pause while any standby replays further behind than the limit.

    One build at a time asks (parallel workers wait their turn); the time paused counts
    against ``max_replica_wait`` over the whole run.
    """

    def __init__(
        self,
        standbys: Standbys,
        settings: Settings,
        reporter: Reporter,
        *,
        cancelled: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.standbys = standbys
        self.limit_ms = settings.max_replica_lag_ms
        self.bound_ms = settings.max_replica_wait_ms
        self.reporter = reporter
        #: Set by Ctrl-C (the run's cancel): a pause ends at once.
        self.cancelled = cancelled or threading.Event()
        self.clock = clock
        self.paused_s = 0.0  # in all, this run
        self._lock = threading.Lock()
        self._told_unknown: set[str] = set()

    @property
    def active(self) -> bool:
        return self.limit_ms > 0

    def check_visible(self) -> None:
        """Before the run: refuse (exit 2) when the limit cannot be honoured because the
        role may not see the standbys' lag on the primary."""
        if not self.active:
            return
        hidden = [
            lag for lag in self.standbys.lags() if lag.source == "primary" and lag.seconds is None
        ]
        if hidden:
            raise UnsafeActionError(
                f"max_replica_lag is set but the role cannot see the lag of "
                f"{len(hidden)} standby(s) in pg_stat_replication: GRANT pg_read_all_stats "
                "TO this role (or pg_monitor), or leave max_replica_lag unset"
            )

    def wait(self, before: str) -> bool:
        """Return True when every standby is within the limit, False when the run was
        cancelled meanwhile; raise ReplicaLagStop at the bound."""
        if not self.active:
            return True
        with self._lock:
            started = self.clock()
            told = None
            while True:
                if self.cancelled.is_set():
                    self.paused_s += self.clock() - started
                    return False
                lags = self.standbys.lags()
                for lag in lags:
                    if lag.seconds is None and lag.name not in self._told_unknown:
                        self._told_unknown.add(lag.name)
                        self.reporter.event(f"{lag} (not waited for)")
                worst: dict[str, StandbyLag] = {}
                for g in lags:  # a standby seen by the primary and by itself: the larger
                    seconds = g.seconds
                    if seconds is None or seconds * 1000 <= self.limit_ms:
                        continue
                    if g.name not in worst or seconds > (worst[g.name].seconds or 0):
                        worst[g.name] = g
                over = list(worst.values())
                now = self.clock()
                if not over:
                    self.paused_s += now - started
                    if told is not None:
                        self.reporter.event(
                            f"standbys within {_limit_words(self.limit_ms)} after "
                            f"{now - started:.0f} s; going on with {before}"
                        )
                    return True
                waited = self.paused_s + (now - started)
                words = ", ".join(str(g) for g in over)
                if self.bound_ms and waited * 1000 >= self.bound_ms:
                    self.paused_s = waited
                    raise ReplicaLagStop(
                        f"stopped before {before}: {words}, limit "
                        f"{_limit_words(self.limit_ms)}; paused {waited:.0f} s in all "
                        f"(max_replica_wait {_limit_words(self.bound_ms)})"
                    )
                if told is None or now - told >= REPORT_EVERY_S:
                    told = now
                    self.reporter.event(
                        f"waiting: {words}, limit {_limit_words(self.limit_ms)} (before {before})"
                    )
                self.cancelled.wait(POLL_S)
