"""Helpers every test file shares: files, the CLI, catalog reads, waits, the environment.

Plain functions (fixtures live in conftest.py). Waits poll what the server, a file or a process
shows, with a deadline, and say what they were waiting for when it passes; never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click
import psycopg
import pytest
import yaml
from click.testing import CliRunner, Result
from psycopg import sql

from dbopt.cli import main

T = TypeVar("T")

# --- files -----------------------------------------------------------------------------------


def write_file(root: Path, relative: str, text: str) -> Path:
    """Write ``text`` (dedented, UTF-8) to ``root/relative``, making its directories."""
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def write_files(root: Path, files: Mapping[str, str]) -> None:
    """Write each ``relative path -> text`` of ``files`` under ``root`` (see `write_file`)."""
    for relative, text in files.items():
        write_file(root, relative, text)


#: The `write` fixture (conftest.py): ``write(**{"indexes/users.yaml": text})``.
Write = Callable[..., None]


def write_specs(root: Path, files: Mapping[str, str], folder: str = "indexes") -> Path:
    """Write spec files (``name.yaml -> text``) into ``root/folder``; return that folder."""
    write_files(root, {f"{folder}/{name}": text for name, text in files.items()})
    return root / folder


def environments(**envs: Mapping[str, Any]) -> str:
    """A dbopt.yaml with these environments (``test={"dsn": ..., "lock_timeout": "1s"}``)."""
    return yaml.safe_dump({"environments": {k: dict(v) for k, v in envs.items()}}, sort_keys=False)


# --- the environment -------------------------------------------------------------------------

#: What chooses a database when a command names none (besides libpq's own variables).
TARGET_VARIABLES = ("DBOPT_DSN", "DATABASE_URL")

#: The libpq variables that can change where a connection goes or what a label says.
LIBPQ_VARIABLES = (
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    "PGPASSWORD",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGPASSFILE",
    "PGCONNECT_TIMEOUT",
)


def clean_env(monkeypatch: pytest.MonkeyPatch, *, libpq: bool = False) -> None:
    """Forget DBOPT_DSN and DATABASE_URL (a DSN in the caller's environment would pick the
    database, or turn `validate` into `validate --dsn`); with ``libpq``, every PG* variable too
    (for tests of connection errors and labels, which must not depend on the host)."""
    for name in TARGET_VARIABLES + (LIBPQ_VARIABLES if libpq else ()):
        monkeypatch.delenv(name, raising=False)


def project(
    root: Path, monkeypatch: pytest.MonkeyPatch, files: Mapping[str, str] | None = None
) -> Path:
    """``root`` as the working directory of a dbopt project holding ``files``; no DSN from
    the caller's environment."""
    write_files(root, files or {})
    monkeypatch.chdir(root)
    clean_env(monkeypatch)
    return root


def closed_port() -> int:
    """A loopback TCP port nothing listens on (bound to find it free, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the command line ------------------------------------------------------------------------


def cli(*args: str, input: str | None = None, command: click.Command = main) -> Result:
    """Run a dbopt command (or ``command``) in-process, as CliRunner does."""
    return CliRunner().invoke(command, list(args), input=input)


def start_dbopt(cwd: Path, *args: str, stdin: bool = False) -> subprocess.Popen[str]:
    """``python -m dbopt ARGS`` in its own process (signals, kills, prompts): stdout and
    stderr together, unbuffered, as text.

    SIGINT is reset to its default in the child: a test suite started in the background of a
    non-interactive shell (`./.ci/run &`) inherits SIGINT ignored, and Python then ignores
    Ctrl-C too, which the tests that press it would take for dbopt's fault."""
    return subprocess.Popen(
        [sys.executable, "-m", "dbopt", *args],
        cwd=cwd,
        stdin=subprocess.PIPE if stdin else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=_default_sigint,
    )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def read_until(proc: subprocess.Popen[str], marker: str, timeout: float = 60) -> str:
    """What ``proc`` printed up to and including ``marker`` (it is still running)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    out = b""
    deadline = time.monotonic() + timeout
    while marker.encode() not in out:
        left = deadline - time.monotonic()
        assert left > 0, f"never printed {marker!r}; printed:\n{out.decode(errors='replace')}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 4096)
            assert chunk, f"exited before printing {marker!r}:\n{out.decode(errors='replace')}"
            out += chunk
    return out.decode()


# --- the catalog -----------------------------------------------------------------------------

#: Schemas no test object lives in: the system's, and dbopt's history.
_NOT_THE_USERS = "n.nspname NOT IN ('information_schema', 'dbopt') AND n.nspname NOT LIKE 'pg\\_%'"


def oid(conn: psycopg.Connection[Any], name: str) -> int | None:
    """The OID of relation ``name``, or None when there is none."""
    row = conn.execute("SELECT to_regclass(%s)::oid::bigint", (name,)).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def indexdef(conn: psycopg.Connection[Any], name: str) -> str | None:
    """``pg_get_indexdef`` of index ``name`` (None when there is none)."""
    row = conn.execute("SELECT pg_get_indexdef(to_regclass(%s))", (name,)).fetchone()
    return None if row is None else row[0]


def view_def(conn: psycopg.Connection[Any], name: str) -> str:
    """``pg_get_viewdef`` of (materialized) view ``name``."""
    row = conn.execute("SELECT pg_get_viewdef(%s::regclass)", (name,)).fetchone()
    assert row is not None
    return str(row[0])


def index_defs(conn: psycopg.Connection[Any]) -> dict[str, tuple[str, bool]]:
    """Every index outside the system schemas and dbopt's: name -> (definition, valid)."""
    rows = conn.execute(
        "SELECT c.relname, pg_get_indexdef(c.oid), i.indisvalid FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE {_NOT_THE_USERS} ORDER BY 1"
    ).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def catalog_snapshot(conn: psycopg.Connection[Any]) -> set[tuple[str, str, str, bool]]:
    """Every table, index and (materialized) view outside the system schemas and dbopt's:
    (relkind, schema.name, definition, valid) — what a rollback must restore exactly."""
    rows = conn.execute(
        "SELECT c.relkind::text, format('%I.%I', n.nspname, c.relname), "
        "CASE WHEN c.relkind IN ('i', 'I') THEN pg_get_indexdef(c.oid) "
        "     WHEN c.relkind IN ('m', 'v') THEN pg_get_viewdef(c.oid) ELSE '' END, "
        "coalesce(i.indisvalid, true) "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_index i ON i.indexrelid = c.oid "
        f"WHERE c.relkind IN ('r', 'p', 'i', 'I', 'm', 'v') AND {_NOT_THE_USERS}"
    ).fetchall()
    return {(r[0], r[1], r[2], r[3]) for r in rows}


def invalid_indexes(conn: psycopg.Connection[Any]) -> list[str]:
    """Names of the INVALID indexes (a failed or running concurrent build)."""
    rows = conn.execute("SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid")
    return [r[0] for r in rows.fetchall()]


def temporary_names(conn: psycopg.Connection[Any]) -> list[str]:
    """Relations under dbopt's temporary names (``*_dbopt_new``, ``*_dbopt_old``)."""
    rows = conn.execute(
        "SELECT relname FROM pg_class WHERE relname LIKE '%dbopt\\_new' "
        "OR relname LIKE '%dbopt\\_old'"
    ).fetchall()
    return [r[0] for r in rows]


# --- what the server has ------------------------------------------------------------------


def server_label(conn: psycopg.Connection[Any]) -> str:
    """``PostgreSQL 12.22``: the server behind ``conn``, for messages."""
    row = conn.execute("SHOW server_version").fetchone()
    return f"PostgreSQL {str(row[0]).split()[0] if row else '?'}"


def has_extension(conn: psycopg.Connection[Any], name: str) -> bool:
    """Whether extension ``name`` can be created on this server (it is installed there)."""
    row = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = %s", (name,))
    return row.fetchone() is not None


def skip_without_extension(conn: psycopg.Connection[Any], name: str, package: str) -> None:
    """Skip the test, naming the extension this server lacks and the package that adds it.

    The one kind of skip the version matrix allows (tests/harness/matrix.py): builds of some
    majors carry no HypoPG or pg_cron; every other test runs on every major.
    """
    pytest.skip(f"needs the {name} extension, which {server_label(conn)} here lacks ({package})")


def server_major(conn: psycopg.Connection[Any]) -> int:
    """The server's major version (``server_version_num // 10000``)."""
    return conn.info.server_version // 10000


def skip_before_major(conn: psycopg.Connection[Any], major: int, feature: str) -> None:
    """Skip the test when the server is older than ``major``, naming the ``feature`` it lacks.

    The version matrix allows this skip on the majors before ``major`` only
    (tests/harness/matrix.py `skip_allowed`): on ``major`` and later the test must run.
    """
    if server_major(conn) < major:
        pytest.skip(f"needs PostgreSQL {major} or later ({feature}); this is {server_label(conn)}")


# --- waiting on what is observed -------------------------------------------------------------


@contextlib.contextmanager
def held(dsn: str, table: str) -> Iterator[None]:
    """Another session holds ``table`` (ACCESS EXCLUSIVE, as open DDL does) while it lasts."""
    with psycopg.connect(dsn) as holder:
        holder.execute(
            sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(table))
        )
        try:
            yield
        finally:
            holder.rollback()


def poll(check: Callable[[], T], what: str, timeout: float = 30, every: float = 0.02) -> T:
    """Call ``check`` until it returns something true; return that. Fails after ``timeout``
    seconds saying ``what`` never happened."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() >= deadline:
            raise AssertionError(f"never happened within {timeout} s: {what}")
        time.sleep(every)


def settled(read: Callable[[], T], what: str, hold: float, timeout: float = 30) -> T:
    """Call ``read`` until its value has stayed the same for ``hold`` seconds; that value.

    For what the server shows only after a delay it does not report, such as the statistics
    of PostgreSQL 12-14 (sent to the collector at most every 500 ms, read from its file up
    to 500 ms old): a value that holds longer than those delays is the settled one.
    """
    deadline = time.monotonic() + timeout
    value = read()
    since = time.monotonic()
    while time.monotonic() - since < hold:
        if time.monotonic() >= deadline:
            raise AssertionError(f"never settled within {timeout} s: {what} (last: {value!r})")
        time.sleep(0.05)
        now = read()
        if now != value:
            value, since = now, time.monotonic()
    return value


def sessions(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """What the other sessions of this database do (for a wait's failure message)."""
    return conn.execute(
        "SELECT pid, application_name, state, wait_event_type, wait_event, left(query, 100) "
        "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    ).fetchall()


def wait_for(
    conn: psycopg.Connection[Any],
    query: str,
    params: Any = None,
    *,
    timeout: float = 60,
) -> Any:
    """Poll ``query`` (pg_stat_activity, pg_locks, pg_stat_progress_create_index...) on an
    autocommit connection until it returns a row; that row. On timeout the failure shows
    what every session was doing."""
    deadline = time.monotonic() + timeout
    while True:
        row = conn.execute(query, params).fetchone()  # type: ignore[call-overload]
        if row:
            return row
        if time.monotonic() >= deadline:
            raise AssertionError(f"never seen: {query}\nsessions: {sessions(conn)}")
        time.sleep(0.02)


#: dbopt's concurrent build of ``%s`` (a LIKE pattern) waiting for a lock; its pid.
WAITING_BUILD = (
    "SELECT pid FROM pg_stat_activity WHERE query LIKE %s AND wait_event_type = 'Lock' "
    "AND pid <> pg_backend_pid()"
)


def waiting_build(
    conn: psycopg.Connection[Any], like: str = "CREATE INDEX CONCURRENTLY%", timeout: float = 30
) -> int:
    """The pid of the session whose statement (LIKE ``like``) waits for a lock."""
    return int(wait_for(conn, WAITING_BUILD, (like,), timeout=timeout)[0])


def take_table_as_build_ends(
    watcher: psycopg.Connection[Any],
    snapshot: psycopg.Connection[Any],
    locker: psycopg.Connection[Any],
    table: str,
) -> None:
    """While a concurrent build on ``table`` waits for ``snapshot`` (an open transaction's
    old snapshot), ``locker`` asks for the table in ACCESS EXCLUSIVE mode (queued behind
    the build); ``snapshot`` ends: the lock is granted the moment the build ends, before
    dbopt's next statement on the table. ``locker`` holds it until the caller rolls it back.
    ``watcher``: an autocommit connection that sees the lock queued."""
    statement = sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(table))
    text = statement.as_string(locker)  # before another thread uses the connection
    failed: list[BaseException] = []

    def take() -> None:
        try:
            locker.execute(statement)
        except BaseException as exc:  # shown by the caller's thread
            failed.append(exc)

    lock = threading.Thread(target=take)
    lock.start()
    wait_for(
        watcher,
        "SELECT 1 FROM pg_stat_activity WHERE query = %s AND wait_event_type = 'Lock'",
        (text,),
    )
    snapshot.rollback()
    lock.join(30)
    assert not lock.is_alive(), "the table's lock was never granted"
    assert not failed, f"taking the table failed: {failed}"


def gone(conn: psycopg.Connection[Any], pid: int, timeout: float = 30) -> None:
    """Wait until backend ``pid`` has ended."""
    wait_for(
        conn,
        "SELECT 1 WHERE NOT EXISTS (SELECT FROM pg_stat_activity WHERE pid = %s)",
        (pid,),
        timeout=timeout,
    )
