"""A throwaway server's handle (:class:`Server`), what every provider shares (connecting,
the server's settings, a provider's shape) and loading SQL files into its databases."""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import SplitResult, quote, urlsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from dbopt.dsn import mask_dsn
from dbopt.errors import InputError, SandboxError

DSN_ENV = "DBOPT_TEST_DSN"
SHARED_DB_PREFIX = "dbopt_test_"

# A throwaway cluster holds nothing worth a disk flush; these make start and every test faster.
FAST_SETTINGS: dict[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}

# Preloaded whenever the server has it: query statistics for verify and the tests.
DEFAULT_OPTIONAL_PRELOAD: tuple[str, ...] = ("pg_stat_statements",)
# Optional libraries the official postgres images ship (contrib), so Docker preloads them.
IMAGE_LIBRARIES = frozenset({"pg_stat_statements", "auto_explain"})

MAX_IDENTIFIER_BYTES = 63  # NAMEDATALEN - 1: longer names are silently truncated by the server
_CONNECT_TIMEOUT = 3  # seconds; a probe of DBOPT_TEST_DSN must not hang the test header
_DROP_WAIT = 10  # seconds for ended sessions to go before DROP DATABASE gives up (PG 12)


# --- DSNs ------------------------------------------------------------------------------------


def _with_dbname(dsn: str, dbname: str) -> str:
    """Return the same DSN pointing at another database, keeping URIs as URIs."""
    if dsn.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(dsn)
        query = "&".join(
            f"dbname={quote(dbname, safe='')}" if item.startswith("dbname=") else item
            for item in parts.query.split("&")
            if item
        )
        return SplitResult(
            parts.scheme, parts.netloc, "/" + quote(dbname, safe=""), query, parts.fragment
        ).geturl()
    return make_conninfo(dsn, dbname=dbname)


def connect(dsn: str) -> psycopg.Connection[tuple[object, ...]]:
    """Open an autocommit connection; DDL such as CREATE DATABASE refuses transactions."""
    from dbopt.db import Connection  # Ctrl-C never leaves it busy: the clean-up can run

    return Connection.connect(dsn, autocommit=True, connect_timeout=_CONNECT_TIMEOUT)


def version_label(conn: psycopg.Connection[tuple[object, ...]]) -> str:
    """Return e.g. ``PostgreSQL 15.18`` for the server behind the connection."""
    row = conn.execute("SHOW server_version").fetchone()
    version = str(row[0]).split()[0] if row else "?"
    return f"PostgreSQL {version}"


def short(err: BaseException, limit: int = 200) -> str:
    """Return the first line of an error, cut to a length that fits a one-line reason."""
    lines = str(err).strip().splitlines()
    text = lines[0] if lines else type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- Server ----------------------------------------------------------------------------------


class Backend:
    """How a server was obtained and how it is given back; this base one owns nothing."""

    shared = False  # True: a server others use, where only our own databases may be touched

    def stop(self) -> None:
        """Release the server; called at most once per Server with signals deferred."""


@dataclass(frozen=True, slots=True, repr=False)
class Server:
    """A PostgreSQL server for tests or the sandbox, reached as a superuser (or CREATEDB role).

    ``dsn`` points at the maintenance database; ``provider`` says where the server came from.
    ``bin_dir`` holds the client programs (psql) when they are known, and ``data_dir`` is the
    cluster's directory when this process created the cluster (it is deleted on stop).
    """

    dsn: str
    provider: str
    bin_dir: Path | None = None
    data_dir: Path | None = None
    _backend: Backend = field(default_factory=Backend, repr=False, compare=False)
    # Databases this Server created: the name callers use -> the name on the server.
    _owned: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    _state: dict[str, bool] = field(default_factory=dict, repr=False, compare=False)

    def __repr__(self) -> str:
        """Show the server without its password (reprs end up in logs and test reports)."""
        return (
            f"Server(dsn={mask_dsn(self.dsn)!r}, provider={self.provider!r}, "
            f"bin_dir={self.bin_dir!r}, data_dir={self.data_dir!r})"
        )

    def dsn_for(self, dbname: str) -> str:
        """Return the DSN of another database on the same server."""
        return _with_dbname(self.dsn, self._owned.get(dbname, dbname))

    def create_database(
        self, name: str, template: str | None = None, owner: str | None = None
    ) -> str:
        """Create a database (on a shared server, under a unique name) and return its DSN.

        With ``owner`` the database belongs to that role (who may then create tables in its
        ``public`` schema on PostgreSQL 15+, as an application's owner role does).
        """
        if name in self._owned:
            raise SandboxError(f"database {name!r} was already created by this sandbox")
        physical = _shared_name(name) if self._backend.shared else name
        if len(physical.encode()) > MAX_IDENTIFIER_BYTES:
            raise SandboxError(f"database name {name!r} is longer than 63 bytes")
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(physical))
        if template is not None:
            source = self._owned.get(template, template)
            query = sql.SQL("{} TEMPLATE {}").format(query, sql.Identifier(source))
        if owner is not None:
            query = sql.SQL("{} OWNER {}").format(query, sql.Identifier(owner))
        with connect(self.dsn) as conn:
            conn.execute(query)
        self._owned[name] = physical
        return _with_dbname(self.dsn, physical)

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting its sessions first (as WITH (FORCE) does on 13+)."""
        physical = self._owned.get(name)
        if physical is None:
            if self._backend.shared:
                raise SandboxError(
                    f"refusing to drop database {name!r}: this sandbox did not create it "
                    f"on the {DSN_ENV} server"
                )
            physical = name
        with connect(self.dsn) as conn:
            query = sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(physical))
            if conn.info.server_version >= 130000:
                conn.execute(sql.SQL("{} WITH (FORCE)").format(query))
            else:
                _drop_disconnecting(conn, physical, query)
        self._owned.pop(name, None)

    def load_sql(self, dbname: str, path: Path) -> None:
        """Run a SQL file (e.g. ``pg_dump --schema-only`` output) in one of the databases.

        psql runs it when available, since dumps may hold psql meta-commands; otherwise the
        file goes through psycopg in one simple-protocol round trip. Raises InputError naming
        the file and line of the first error.
        """
        dsn = self.dsn_for(dbname)
        psql = _find_psql(self.bin_dir)
        if psql is not None:
            _load_with_psql(psql, dsn, path)
        else:
            _load_with_psycopg(dsn, path)

    def stop(self) -> None:
        """Give the server back; safe to call twice, and at exit.

        On a ``DBOPT_TEST_DSN`` server only the databases this Server created are dropped;
        a server this process started is stopped and its directory deleted.
        """
        if self._state.get("stopped"):
            return
        self._state["stopped"] = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        leftovers: list[str] = []
        with _signals_deferred():
            if self._backend.shared:
                for name in list(self._owned):
                    try:
                        self.drop_database(name)
                    except psycopg.Error as err:
                        leftovers.append(f"{self._owned[name]} ({short(err)})")
            self._backend.stop()
        if leftovers:
            raise SandboxError(
                f"could not drop sandbox databases on the {DSN_ENV} server: " + ", ".join(leftovers)
            )


def _drop_disconnecting(
    conn: psycopg.Connection[tuple[object, ...]], dbname: str, drop: sql.Composed
) -> None:
    """DROP DATABASE on PostgreSQL 12, which has no WITH (FORCE): refuse new sessions,
    end those connected, and drop once they are gone (ending a session is asynchronous)."""
    exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
    if exists is None:
        return
    conn.execute(
        sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(dbname))
    )
    deadline = time.monotonic() + _DROP_WAIT
    while True:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (dbname,),
        )
        try:
            conn.execute(drop)
            return
        except psycopg.errors.ObjectInUse:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def _shared_name(name: str) -> str:
    """Return a unique database name for a shared server, kept within 63 bytes."""
    prefix = f"{SHARED_DB_PREFIX}{secrets.token_hex(4)}_"
    room = MAX_IDENTIFIER_BYTES - len(prefix)
    return prefix + name.encode()[:room].decode(errors="ignore")


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM during cleanup, so a second Ctrl-C cannot leave a server behind."""
    if (
        not hasattr(signal, "pthread_sigmask")
        or threading.current_thread() is not threading.main_thread()
    ):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


# --- loading SQL files -----------------------------------------------------------------------


def _find_psql(bin_dir: Path | None) -> str | None:
    """Return psql from the server's bin dir, else from PATH, else None."""
    if bin_dir is not None and os.access(bin_dir / "psql", os.X_OK):
        return str(bin_dir / "psql")
    return shutil.which("psql")


def _load_with_psql(psql: str, dsn: str, path: Path) -> None:
    """Run the file with psql, stopping at the first error; the password travels in env."""
    params = conninfo_to_dict(dsn)
    env = dict(os.environ)
    password = params.pop("password", None)
    if password:
        # Not in argv, where every local user could read it in the process list.
        env["PGPASSWORD"] = str(password)
    argv = [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", make_conninfo("", **params)]
    argv += ["-f", str(path)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        detail = done.stderr.strip() or done.stdout.strip() or f"psql exited {done.returncode}"
        raise InputError(f"could not load {path}:\n{detail}")


def _load_with_psycopg(dsn: str, path: Path) -> None:
    """Run the file through psycopg, reporting the file line of the first error."""
    lines = path.read_text(encoding="utf-8").splitlines()
    # pg_dump's \restrict guards protect only psql itself; blank them, keeping line numbers.
    kept = ["" if line.startswith(("\\restrict", "\\unrestrict")) else line for line in lines]
    script = "\n".join(kept)
    try:
        with connect(dsn) as conn:
            # Without parameters psycopg sends the whole file as one simple query.
            conn.execute(script.encode())
    except psycopg.Error as err:
        message = err.diag.message_primary or short(err)
        position = err.diag.statement_position
        if not position or not position.isdigit():
            raise InputError(f"could not load {path}: {message}") from err
        number = script[: int(position) - 1].count("\n") + 1
        if kept[number - 1].startswith("\\"):
            message += " (a psql meta-command: install psql to load this file)"
        raise InputError(f"could not load {path}:{number}: {message}") from err


# --- choosing a provider ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """What the caller asked of a server this module starts (checked by `start_server`)."""

    settings: dict[str, str]
    preload: tuple[str, ...]
    optional_preload: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Provider:
    """A way to get a server that looks usable: what to call it, and how to start one."""

    label: str
    start: Callable[[ServerOptions], Server]


#: Looks for one kind of server without starting anything: a Provider, or why there is none.
Probe = Callable[[], "Provider | str"]


def server_settings(options: ServerOptions, present: set[str]) -> dict[str, str]:
    """Merge the fast settings, the caller's settings and the preload lists.

    ``present`` names the optional libraries the server has; the others are left out. The
    required libraries come first, in the caller's order: some insist on being loaded before
    any other (Citus refuses to start otherwise: "Citus has to be loaded first").
    """
    settings = {**FAST_SETTINGS, **options.settings}
    libraries = list(options.preload)
    libraries += [
        lib.strip() for lib in settings.pop("shared_preload_libraries", "").split(",") if lib
    ]
    libraries += [lib for lib in options.optional_preload if lib in present]
    unique = list(dict.fromkeys(lib for lib in libraries if lib))
    if unique:
        settings["shared_preload_libraries"] = ",".join(unique)
    return settings
