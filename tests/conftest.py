"""Shared fixtures: one throwaway PostgreSQL server per session, a fresh database per test.

``pg_server`` starts the server lazily, the first time a test asks for a database, so unit
tests run without one. Every database test gets ``db_dsn``: a database cloned from the
session's ``dbopt_template`` (see `prepare_template`), dropped after the test; ``conn`` is an
autocommit connection to it. Tests using these fixtures are marked ``db`` automatically, so
``pytest -m "not db"`` runs the unit tests alone.
"""

from __future__ import annotations

import re
import secrets
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

import psycopg
import pytest

from dbopt.errors import SandboxError
from dbopt.sandbox import Server, describe_provider, start_server

TEMPLATE_DB = "dbopt_template"

# Fixtures that need the server: a test using any of them is a `db` test.
DB_FIXTURES = frozenset({"pg_server", "template_db", "db_dsn", "conn"})

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


def pytest_report_header(config: pytest.Config) -> str:
    """Say which server the database tests will use, without starting it."""
    return f"dbopt test server: {describe_provider()}"


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
def pg_server() -> Iterator[Server]:
    """The session's PostgreSQL server; the run stops with one message if none can start."""
    try:
        server = start_server(SERVER_SETTINGS, SERVER_PRELOAD, SERVER_OPTIONAL_PRELOAD)
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


@pytest.fixture(scope="session")
def template_db(pg_server: Server) -> str:
    """Create ``dbopt_template`` once and fill it through `prepare_template`; return its name."""
    dsn = pg_server.create_database(TEMPLATE_DB)
    with psycopg.connect(dsn, autocommit=True) as conn:
        prepare_template(conn)
    return TEMPLATE_DB


def _database_name(request: pytest.FixtureRequest) -> str:
    """Name a test's database after the test, so a leftover one says where it came from."""
    test = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")[:30]
    return f"t_{test}_{secrets.token_hex(3)}"


@pytest.fixture
def db_dsn(pg_server: Server, template_db: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database for this test, cloned from the template; dropped afterwards."""
    name = _database_name(request)
    dsn = pg_server.create_database(name, template=template_db)
    try:
        yield dsn
    finally:
        pg_server.drop_database(name)


@pytest.fixture
def conn(db_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to this test's database, closed after the test."""
    with psycopg.connect(db_dsn, autocommit=True) as connection:
        yield connection
