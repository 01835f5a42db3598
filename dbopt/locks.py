"""Who holds what: dbopt's advisory locks, and the sessions that hold a run up.

One run per database (the run lock), one refresh per materialized view (a refresh lock): both
are session advisory locks keyed by a fixed number and a name the server hashes, so a second
run finds them taken and is told by whom.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import errors as pgerrors
from psycopg.rows import dict_row

from dbopt.catalog import catalog_sql
from dbopt.errors import LockBusyError
from dbopt.model import QualifiedName
from dbopt.progress import Blocker

#: The longest a wait for an advisory lock goes without looking whether to stop.
_WAIT_SLICE_MS = 1000

#: Key spaces of dbopt's advisory locks: 'dbop' (a database's run), 'dbrf' (a view's refresh).
RUN_LOCK_SPACE = 0x64626F70
REFRESH_LOCK_SPACE = 0x64627266


@dataclass(frozen=True, slots=True)
class AdvisoryLock:
    """A session advisory lock: a key space and a name the server hashes (hashtext)."""

    space: int
    name: str
    what: str  # for messages: "this database's run lock"

    @classmethod
    def run(cls, conn: psycopg.Connection[Any]) -> AdvisoryLock:
        """The lock that lets one dbopt run at a time on ``conn``'s database."""
        return cls(RUN_LOCK_SPACE, conn.info.dbname, "this database's lock")

    @classmethod
    def refresh(cls, view: QualifiedName) -> AdvisoryLock:
        """The lock that lets one refresh of ``view`` run at a time."""
        return cls(REFRESH_LOCK_SPACE, str(view), f"the refresh of {view}")


def try_lock(conn: psycopg.Connection[Any], lock: AdvisoryLock) -> bool:
    """Take ``lock`` if it is free; True when taken."""
    row = conn.execute(
        "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (lock.space, lock.name)
    ).fetchone()
    return bool(row and row[0])


def wait_lock(
    conn: psycopg.Connection[Any],
    lock: AdvisoryLock,
    timeout_ms: int | None,
    stop: Callable[[], bool] | None = None,
) -> bool:
    """Wait for ``lock``: for ``timeout_ms`` at most (None or 0: as long as it takes),
    whatever the session's lock_timeout; True when taken.

    With ``stop`` (Ctrl-C in a fleet, whose threads never see the KeyboardInterrupt) the wait
    is made of slices of at most a second, so that ``stop`` ends it within a second
    (KeyboardInterrupt); without, it is one wait (Ctrl-C interrupts it in the main thread).
    """
    previous = conn.execute("SELECT current_setting('lock_timeout')").fetchone()
    deadline = time.monotonic() + timeout_ms / 1000 if timeout_ms else None  # 0: no limit
    try:
        while True:
            if stop is not None and stop():
                raise KeyboardInterrupt
            left_ms = _WAIT_SLICE_MS if stop is not None else 0  # 0: no lock_timeout
            if deadline is not None:
                remaining = int((deadline - time.monotonic()) * 1000)
                if remaining <= 0:
                    return False
                left_ms = min(left_ms, remaining) if left_ms else remaining
            conn.execute("SELECT set_config('lock_timeout', %s, false)", (str(left_ms),))
            try:
                conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (lock.space, lock.name))
                return True
            except pgerrors.LockNotAvailable:
                continue
    finally:
        if previous is not None:
            conn.execute("SELECT set_config('lock_timeout', %s, false)", (previous[0],))


def unlock(conn: psycopg.Connection[Any], lock: AdvisoryLock) -> None:
    """Release ``lock`` (held by this session)."""
    conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (lock.space, lock.name))


def holder(conn: psycopg.Connection[Any], lock: AdvisoryLock) -> str:
    """Who holds ``lock``, in words ("pid 123 (app@10.0.0.5, dbopt-control, 40s)")."""
    key = conn.execute("SELECT hashtext(%s)", (lock.name,)).fetchone()
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(catalog_sql("lock_holder"), {"class": lock.space, "key": key[0] if key else 0})
        row = cur.fetchone()
    if row is None:
        return "another session"
    return (
        f"pid {row['pid']} ({row['usename']}@{row['client'] or 'local'}, "
        f"{row['application_name']}, {row['connected_s']}s)"
    )


def take_run_lock(
    conn: psycopg.Connection[Any],
    *,
    wait: bool,
    wait_timeout_ms: int | None = None,
    stop: Callable[[], bool] | None = None,
) -> None:
    """One dbopt run per database; LockBusyError names the holder.

    With ``wait`` it waits for the other run to finish — for ``wait_timeout_ms`` at most
    (None: as long as it takes), whatever the session's lock_timeout; ``stop`` ends the wait
    (KeyboardInterrupt) when it says so.
    """
    lock = AdvisoryLock.run(conn)
    taken = wait_lock(conn, lock, wait_timeout_ms, stop) if wait else try_lock(conn, lock)
    if taken:
        return
    waited = f" (waited {wait_timeout_ms} ms)" if wait else ""
    raise LockBusyError(f"another dbopt run holds {lock.what}{waited}: {holder(conn, lock)}")


def _blockers(rows: list[dict[str, Any]]) -> list[Blocker]:
    return [Blocker(r["pid"], r["age_s"], r["state"], r["usename"], r["query"]) for r in rows]


def long_running(
    conn: psycopg.Connection[Any],
    older_than_ms: int,
    drops_only_on: Sequence[QualifiedName] | None = None,
) -> list[Blocker]:
    """Sessions whose transaction is older than ``older_than_ms`` and would hold up the run:
    any of them when it builds (a concurrent build waits for older snapshots); with
    ``drops_only_on`` (a run that only drops), those holding a lock on one of these tables."""
    tables = None if drops_only_on is None else [t.ident().as_string() for t in drops_only_on]
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(catalog_sql("long_running"), {"ms": older_than_ms, "tables": tables})
        return _blockers(cur.fetchall())


def blockers(
    conn: psycopg.Connection[Any], table: QualifiedName, since: float, own: list[int]
) -> list[Blocker]:
    """Sessions holding a lock on ``table`` or a transaction older than ``since`` (epoch)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            catalog_sql("blockers"),
            {
                "table": table.ident().as_string(),
                "own": own,
                "since": datetime.fromtimestamp(since, tz=UTC),
            },
        )
        return _blockers(cur.fetchall())
