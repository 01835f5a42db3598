"""Throwaway PostgreSQL servers for the test suite and for ``dbopt sandbox``.

One of three providers is used, the first that works:

1. ``DBOPT_TEST_DSN``: an existing server whose role may CREATE DATABASE. Only databases with
   unique ``dbopt_test_`` names are created there, and ``Server.stop`` drops exactly those.
2. Docker, through testcontainers, when an engine answers a ping within seconds.
3. Local server binaries (``DBOPT_PG_BIN``, ``pg_config --bindir``, the newest
   ``/usr/lib/postgresql/*/bin``, or ``initdb`` on PATH): a new cluster in a temporary
   directory, listening on a free loopback port, deleted when the server stops.

When none works, `SandboxError` says what each option needs and why it was not used.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import SplitResult, quote, urlsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from dbopt.dsn import describe_target, mask_dsn, scrub, secrets_of
from dbopt.errors import InputError, SandboxError

if TYPE_CHECKING:  # testcontainers is imported only when Docker is used
    from testcontainers.core.container import DockerContainer

__all__ = ["PROBES", "Probe", "Provider", "Server", "ServerOptions", "probe_local", "start_server"]

DSN_ENV = "DBOPT_TEST_DSN"
PG_BIN_ENV = "DBOPT_PG_BIN"
IMAGE_ENV = "DBOPT_PG_IMAGE"
DEFAULT_IMAGE = "postgres:16-alpine"
SHARED_DB_PREFIX = "dbopt_test_"
TEMP_PREFIX = "dbopt-sandbox-"

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

_MAX_IDENTIFIER_BYTES = 63  # NAMEDATALEN - 1: longer names are silently truncated by the server
_SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_LIBRARY_NAME = re.compile(r"[A-Za-z0-9_./$-]+")
_UNIX_SOCKET_MAX = 100  # sun_path holds 108 bytes on Linux, 104 on macOS; keep a margin
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


def _connect(dsn: str) -> psycopg.Connection[tuple[object, ...]]:
    """Open an autocommit connection; DDL such as CREATE DATABASE refuses transactions."""
    from dbopt.db import Connection  # Ctrl-C never leaves it busy: the clean-up can run

    return Connection.connect(dsn, autocommit=True, connect_timeout=_CONNECT_TIMEOUT)


def _version_label(conn: psycopg.Connection[tuple[object, ...]]) -> str:
    """Return e.g. ``PostgreSQL 15.18`` for the server behind the connection."""
    row = conn.execute("SHOW server_version").fetchone()
    version = str(row[0]).split()[0] if row else "?"
    return f"PostgreSQL {version}"


def _short(err: BaseException, limit: int = 200) -> str:
    """Return the first line of an error, cut to a length that fits a one-line reason."""
    lines = str(err).strip().splitlines()
    text = lines[0] if lines else type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- Server ----------------------------------------------------------------------------------


class _Backend:
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
    _backend: _Backend = field(default_factory=_Backend, repr=False, compare=False)
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
        if len(physical.encode()) > _MAX_IDENTIFIER_BYTES:
            raise SandboxError(f"database name {name!r} is longer than 63 bytes")
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(physical))
        if template is not None:
            source = self._owned.get(template, template)
            query = sql.SQL("{} TEMPLATE {}").format(query, sql.Identifier(source))
        if owner is not None:
            query = sql.SQL("{} OWNER {}").format(query, sql.Identifier(owner))
        with _connect(self.dsn) as conn:
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
        with _connect(self.dsn) as conn:
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
                        leftovers.append(f"{self._owned[name]} ({_short(err)})")
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
    room = _MAX_IDENTIFIER_BYTES - len(prefix)
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
        with _connect(dsn) as conn:
            # Without parameters psycopg sends the whole file as one simple query.
            conn.execute(script.encode())
    except psycopg.Error as err:
        message = err.diag.message_primary or _short(err)
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


def _probe_dsn() -> Provider | str:
    """Use DBOPT_TEST_DSN when it is set, reachable, and its role may create databases."""
    dsn = os.environ.get(DSN_ENV, "").strip()
    if not dsn:
        return f"{DSN_ENV} not set"
    # Only user, host, port and database: the label goes to logs and test headers.
    shown = describe_target(dsn)
    try:
        with _connect(dsn) as conn:
            row = conn.execute(
                "SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
            version = _version_label(conn)
    except psycopg.Error as err:
        # libpq may quote connection parameters back in its messages.
        return f"{DSN_ENV} ({shown}): cannot connect: {scrub(_short(err), secrets_of(dsn))}"
    if not row or not row[0]:
        return f"{DSN_ENV} ({shown}): its role may not CREATE DATABASE"
    label = f"{DSN_ENV} ({shown}, {version})"

    def start(options: ServerOptions) -> Server:
        return Server(dsn=dsn, provider=label, _backend=_SharedBackend())

    return Provider(label, start)


class _SharedBackend(_Backend):
    """A server someone else runs: nothing to stop, only our databases to drop."""

    shared = True


def _probe_docker() -> Provider | str:
    """Use Docker when testcontainers is installed and an engine answers a ping quickly."""
    try:
        from testcontainers.core.docker_client import DockerClient
    except ImportError:
        return "Docker: the testcontainers package is not installed"
    try:
        # testcontainers' client finds the engine as it will when starting (env, context...).
        DockerClient(timeout=3).client.ping()
    except Exception as err:  # the SDK raises many kinds; any of them means "not usable"
        return f"Docker: no engine reachable ({_short(err, 120)})"
    image = os.environ.get(IMAGE_ENV, DEFAULT_IMAGE)
    return Provider(f"Docker {image}", lambda options: _start_container(image, options))


class _ContainerBackend(_Backend):
    """A testcontainers PostgresContainer, removed on stop."""

    def __init__(self, container: DockerContainer) -> None:
        self._container = container

    def stop(self) -> None:
        """Stop and remove the container."""
        try:
            self._container.stop()
        except Exception as err:  # the Docker SDK's errors have no common base worth naming
            raise SandboxError(f"could not remove the sandbox container: {_short(err)}") from err


def _start_container(image: str, options: ServerOptions) -> Server:
    """Run a postgres container with fast, test-only settings."""
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:  # older testcontainers releases kept it at the top level
        from testcontainers.postgres import PostgresContainer

    command = ["postgres"]
    # Of the optional libraries, the image surely has only those of contrib.
    present = set(options.optional_preload) & IMAGE_LIBRARIES
    for name, value in _server_settings(options, present).items():
        command += ["-c", f"{name}={value}"]
    backend: _ContainerBackend | None = None
    try:
        # The constructor already talks to the engine, so it is inside the try as well.
        container = PostgresContainer(
            image, username="postgres", password=secrets.token_hex(12), dbname="postgres"
        )
        # Trust lets the printed DSN carry no password; the container holds no data and lives
        # only as long as this process.
        container.with_env("POSTGRES_HOST_AUTH_METHOD", "trust")
        container.with_command(command)
        backend = _ContainerBackend(container)
        container.start()
        host = str(container.get_container_host_ip())
        port = int(container.get_exposed_port(5432))
        dsn = f"postgresql://postgres@{_uri_host(host)}:{port}/postgres"
        with _connect(dsn) as conn:
            version = _version_label(conn)
    except BaseException as err:
        if backend is not None:
            with contextlib.suppress(Exception):
                backend.stop()
        if isinstance(err, Exception):
            raise SandboxError(f"Docker: could not start {image}: {_short(err)}") from err
        raise
    return Server(dsn=dsn, provider=f"Docker {image} ({version})", _backend=backend)


def _uri_host(host: str) -> str:
    """Bracket IPv6 literals, as URIs require."""
    return f"[{host}]" if ":" in host else host


# --- local server binaries -------------------------------------------------------------------


def probe_local(bin_dir: Path | None = None) -> Provider | str:
    """Use local server binaries (those in ``bin_dir``, else the first found), when runnable
    by this user."""
    if bin_dir is not None and not _has_server(bin_dir):
        return f"local binaries: no initdb, pg_ctl and postgres in {bin_dir}"
    found = _find_bin_dir() if bin_dir is None else bin_dir
    if isinstance(found, str):
        return f"local binaries: {found}"
    bin_dir = found
    if os.geteuid() == 0:
        # The server refuses to run as root, so it runs as the account packages create.
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "local binaries: running as root and there is no 'postgres' account"
        if _runuser() is None:
            return "local binaries: running as root and runuser (util-linux) is not installed"
    label = f"local binaries {bin_dir}"
    version = _binary_version(bin_dir)
    if version:
        label += f" ({version})"
    return Provider(label, lambda options: _start_local(bin_dir, options))


def _runuser() -> str | None:
    """Return runuser's path; PATH under sudo or cron may lack the sbin directories."""
    for candidate in (shutil.which("runuser"), "/usr/sbin/runuser", "/sbin/runuser"):
        if candidate is not None and os.access(candidate, os.X_OK):
            return candidate
    return None


def _find_bin_dir() -> Path | str:
    """Return the directory of initdb/pg_ctl, or the reason none was found."""
    explicit = os.environ.get(PG_BIN_ENV, "").strip()
    if explicit:
        # Set means "only this directory": a wrong setting is reported, never papered over.
        path = Path(explicit)
        if _has_server(path):
            return path
        return f"no initdb and pg_ctl found in {PG_BIN_ENV}={explicit}"
    tried: list[str] = [f"{PG_BIN_ENV} not set"]
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        bindir = _pg_config(pg_config, "--bindir")
        if bindir is not None and _has_server(Path(bindir)):
            return Path(bindir)
        tried.append(f"no initdb in pg_config --bindir ({bindir})")
    else:
        tried.append("no pg_config on PATH")
    debian = _newest_debian_bin_dir()
    if debian is not None:
        return debian
    tried.append("nothing in /usr/lib/postgresql/*/bin")
    initdb = shutil.which("initdb")
    if initdb is not None and _has_server(Path(initdb).parent):
        return Path(initdb).parent
    tried.append("no initdb on PATH")
    return "no initdb found (" + "; ".join(tried) + ")"


def _has_server(bin_dir: Path) -> bool:
    """Tell whether a directory holds the programs needed to run a cluster."""
    return all(os.access(bin_dir / name, os.X_OK) for name in ("initdb", "pg_ctl", "postgres"))


def _newest_debian_bin_dir() -> Path | None:
    """Return the highest-version /usr/lib/postgresql/<version>/bin holding a server."""
    candidates: list[tuple[tuple[int, ...], Path]] = []
    for bin_dir in Path("/usr/lib/postgresql").glob("*/bin"):
        version = bin_dir.parent.name
        if re.fullmatch(r"\d+(\.\d+)*", version) and _has_server(bin_dir):
            candidates.append((tuple(int(part) for part in version.split(".")), bin_dir))
    return max(candidates)[1] if candidates else None


def _pg_config(pg_config: str, flag: str) -> str | None:
    """Return one value printed by pg_config, or None when it cannot run."""
    try:
        done = subprocess.run(
            [pg_config, flag], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    value = done.stdout.strip()
    return value if done.returncode == 0 and value else None


def _binary_version(bin_dir: Path) -> str | None:
    """Return e.g. ``PostgreSQL 15.18`` from ``postgres --version`` (allowed even as root)."""
    try:
        done = subprocess.run(
            [str(bin_dir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\(PostgreSQL\)\s+(\S+)", done.stdout)
    return f"PostgreSQL {match.group(1)}" if match else None


def _pkglib_dirs(bin_dir: Path) -> list[Path]:
    """Return where the server's loadable modules (pg_stat_statements.so...) may be.

    ``pg_config --pkglibdir`` when a pg_config of this very installation is found; else the
    places a build puts them relative to its programs: ``lib/postgresql`` (a prefix without
    "postgres" in it, as in relocatable builds) and ``lib`` (Debian's own layout).
    """
    candidates = [str(bin_dir / "pg_config")]
    on_path = shutil.which("pg_config")
    if on_path is not None:
        candidates.append(on_path)
    for pg_config in candidates:
        if not os.access(pg_config, os.X_OK):
            continue
        # A pg_config of another installation would name another server's modules.
        bindir = _pg_config(pg_config, "--bindir")
        if bindir is None or Path(bindir).resolve() != bin_dir.resolve():
            continue
        pkglibdir = _pg_config(pg_config, "--pkglibdir")
        if pkglibdir is not None:
            return [Path(pkglibdir)]
    return [bin_dir.parent / "lib" / "postgresql", bin_dir.parent / "lib"]


def _server_settings(options: ServerOptions, present: set[str]) -> dict[str, str]:
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


def _conf_line(name: str, value: str) -> str:
    """Return one postgresql.conf line with the value quoted as the server parses it."""
    escaped = value.replace("\\", "\\\\").replace("'", "''")
    return f"{name} = '{escaped}'\n"


class _LocalBackend(_Backend):
    """A cluster this process created in a temporary directory."""

    def __init__(self, bin_dir: Path, root: Path) -> None:
        self.bin_dir = bin_dir
        self.root = root
        self.data_dir = root / "data"

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a server program, as the postgres account when we are root."""
        runuser = _runuser() if os.geteuid() == 0 else None
        prefix = [runuser, "-u", "postgres", "--"] if runuser is not None else []
        return subprocess.run(
            [*prefix, str(self.bin_dir / argv[0]), *argv[1:]],
            # The caller's working directory may be unreadable by the postgres account.
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def log_tail(self, lines: int = 15) -> str:
        """Return the end of the server log, for error messages."""
        try:
            text = (self.root / "server.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the server (fast, then immediate, then SIGKILL) and delete its directory."""
        try:
            if (self.data_dir / "postmaster.pid").exists():
                for mode in ("fast", "immediate"):
                    argv = ("pg_ctl", "stop", "-D", str(self.data_dir), "-m", mode, "-w")
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        if self.run(*argv, "-t", "20", timeout=30).returncode == 0:
                            break
                _kill_postmaster(self.data_dir)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
        if self.root.exists():
            raise SandboxError(f"could not delete the sandbox directory {self.root}")


def _kill_postmaster(data_dir: Path) -> None:
    """SIGKILL a postmaster that survived pg_ctl, after checking the pid is really it."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return
    # A stale pid file may name a pid reused by an unrelated process.
    if str(data_dir).encode() in cmdline:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _temp_base() -> Path:
    """Return where to create the cluster directory: somewhere the server account can reach."""
    base = Path(tempfile.gettempdir())
    if os.geteuid() != 0:
        return base
    # As root, TMPDIR may sit under /root, which the postgres account cannot traverse.
    for directory in (base, *base.parents):
        if not directory.stat().st_mode & 0o001:
            return Path("/tmp")
    return base


def _reap_stale(base: Path) -> None:
    """Delete clusters left by sandbox processes that were killed without cleaning up."""
    for root in base.glob(f"{TEMP_PREFIX}*"):
        try:
            host, pid = (root / "owner").read_text().split()
            owner = int(pid)
        except (OSError, ValueError):
            continue
        # Another host (a container sharing /tmp) has pids we cannot see: leave its dirs be.
        if host != socket.gethostname() or _pid_alive(owner):
            continue
        with contextlib.suppress(OSError):
            _kill_postmaster(root / "data")
            shutil.rmtree(root, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    """Tell whether a process exists (one owned by another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _free_port() -> int:
    """Return a loopback TCP port that is free now (the server may still lose a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_local(bin_dir: Path, options: ServerOptions) -> Server:
    """initdb a new cluster in a temporary directory and start it on a free loopback port."""
    base = _temp_base()
    _reap_stale(base)
    root = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=base))
    # Lets a later start delete this directory if this process dies without cleaning up.
    (root / "owner").write_text(f"{socket.gethostname()} {os.getpid()}")
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(root, account.pw_uid, account.pw_gid)
    backend = _LocalBackend(bin_dir, root)
    try:
        return _init_and_start(backend, options)
    except BaseException:
        # Also on Ctrl-C during initdb: leave no directory and no server behind.
        with contextlib.suppress(Exception):
            backend.stop()
        raise


def _init_and_start(backend: _LocalBackend, options: ServerOptions) -> Server:
    """Run initdb, write the settings, start the server and connect once."""
    data = str(backend.data_dir)
    initdb = ("initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8")
    done = backend.run(*initdb, "--locale=C", "--no-sync", timeout=120)
    if done.returncode != 0:
        raise SandboxError(f"local binaries: initdb failed: {done.stderr.strip()[-1500:]}")
    pkglibs = _pkglib_dirs(backend.bin_dir)
    present = {
        lib
        for lib in options.optional_preload
        if any(
            (pkglib / f"{lib}{suffix}").exists()
            for pkglib in pkglibs
            for suffix in (".so", ".dylib")
        )
    }
    settings = _server_settings(options, present)
    socket_dir = str(backend.root)
    if len(socket_dir) + len("/.s.PGSQL.65535") > _UNIX_SOCKET_MAX:
        socket_dir = ""  # too long for a socket path: TCP only, which is all we use
    conf = backend.data_dir / "postgresql.conf"
    for attempt in range(3):
        port = _free_port()
        lines = {
            **settings,
            "listen_addresses": "127.0.0.1",
            "port": str(port),
            "unix_socket_directories": socket_dir,
        }
        with conf.open("a", encoding="utf-8") as out:
            # Later lines win, so a retry's port simply overrides the previous one.
            out.write("".join(_conf_line(name, value) for name, value in lines.items()))
        started = time.monotonic()
        log_file = str(backend.root / "server.log")
        start = ("pg_ctl", "start", "-D", data, "-l", log_file, "-w", "-t", "60", "-s")
        done = backend.run(*start, timeout=90)
        if done.returncode == 0:
            break
        log = backend.log_tail()
        if "could not bind" in log and attempt < 2:
            continue  # another process took the port between our check and the bind
        raise SandboxError(
            f"local binaries: the server did not start after {time.monotonic() - started:.1f} s"
            f":\n{log or done.stderr.strip()}"
        )
    dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    with _connect(dsn) as conn:
        version = _version_label(conn)
    return Server(
        dsn=dsn,
        provider=f"local binaries {backend.bin_dir} ({version})",
        bin_dir=backend.bin_dir,
        data_dir=backend.data_dir,
        _backend=backend,
    )


# --- public entry points ---------------------------------------------------------------------

#: Where `start_server` looks for a server, in order: the first that works is used.
PROBES: tuple[Probe, ...] = (_probe_dsn, _probe_docker, probe_local)


def _check_options(
    settings: dict[str, str] | None, preload: list[str] | None, optional: list[str] | None
) -> ServerOptions:
    """Validate the caller's settings before they reach a configuration file."""
    settings = dict(settings or {})
    for name in settings:
        if not _SETTING_NAME.fullmatch(name):
            raise SandboxError(f"invalid server setting name {name!r}")
    libraries = tuple(preload or ())
    optional_libraries = tuple(dict.fromkeys((*DEFAULT_OPTIONAL_PRELOAD, *(optional or ()))))
    for lib in (*libraries, *optional_libraries):
        if not _LIBRARY_NAME.fullmatch(lib):
            raise SandboxError(f"invalid preload library name {lib!r}")
    return ServerOptions(settings, libraries, optional_libraries)


def _no_server_message(reasons: list[str]) -> str:
    """Explain the three ways to get a server, and why each was not used here."""
    dsn_reason, docker_reason, local_reason = reasons
    return (
        "No PostgreSQL server is available for the dbopt sandbox. Any one of these works:\n"
        f"  1. Use an existing server: set {DSN_ENV}=postgresql://user@host/db "
        "(its role must be allowed to CREATE DATABASE).\n"
        f"     Not used: {dsn_reason}.\n"
        "  2. Start Docker, so that a postgres container can run (testcontainers).\n"
        f"     Not used: {docker_reason}.\n"
        "  3. Install the PostgreSQL server binaries, e.g. `apt-get install postgresql`, "
        f"or set {PG_BIN_ENV} to the directory holding initdb and pg_ctl.\n"
        f"     Not used: {local_reason}."
    )


def _fallback_note(reasons: list[str]) -> str:
    """Say why DBOPT_TEST_DSN was passed over when the user did set it."""
    if reasons and os.environ.get(DSN_ENV, "").strip():
        return f"; {reasons[0]}"
    return ""


def start_server(
    settings: dict[str, str] | None = None,
    preload: list[str] | None = None,
    optional_preload: list[str] | None = None,
    *,
    probes: Sequence[Probe] = PROBES,
) -> Server:
    """Start (or borrow) a server from the first provider that works.

    ``settings``, ``preload`` (extra shared_preload_libraries: the server fails to start
    without them) and ``optional_preload`` (preloaded when the server has them, as
    pg_stat_statements always is) apply to servers this module starts; a ``DBOPT_TEST_DSN``
    server keeps its own configuration. ``probes`` says where to look (`PROBES`: a
    ``DBOPT_TEST_DSN`` server, Docker, local binaries). The server is stopped at interpreter
    exit if the caller has not stopped it.
    """
    options = _check_options(settings, preload, optional_preload)
    reasons: list[str] = []
    for probe in probes:
        found = probe()
        if isinstance(found, str):
            reasons.append(found)
            continue
        try:
            server = found.start(options)
        except SandboxError as err:
            reasons.append(str(err))
            continue
        note = _fallback_note(reasons)
        if note:
            server = dataclasses.replace(server, provider=server.provider + note)
        atexit.register(server.stop)
        return server
    if tuple(probes) == PROBES:
        raise SandboxError(_no_server_message(reasons))
    raise SandboxError("No PostgreSQL server could be started: " + "; ".join(reasons))
