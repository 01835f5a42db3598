"""The throwaway-Postgres harness, on real servers: the fixtures, the library and the CLI."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import psycopg
import pytest
from harness.servers import describe_provider, running_server
from helpers import cli, closed_port
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from dbopt.cli.sandbox_cmd import sandbox
from dbopt.errors import EXIT_BAD_INPUT, EXIT_CONNECT, InputError, SandboxError
from dbopt.sandbox import SHARED_DB_PREFIX, Probe, Server, start_server

TEMPLATE_DB = "dbopt_template"  # made by tests/conftest.py


def _databases(server: Server) -> set[str]:
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        return {str(row[0]) for row in conn.execute("SELECT datname FROM pg_database")}


def _has_table(dsn: str, table: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
        return bool(row and row[0])


@pytest.fixture
def no_server_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Make all three providers fail; return the password hidden in DBOPT_TEST_DSN."""
    password = "Sup3rSecretPw"
    monkeypatch.setenv(
        "DBOPT_TEST_DSN", f"postgresql://ci:{password}@127.0.0.1:{closed_port()}/postgres"
    )
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("DBOPT_PG_BIN", str(empty))
    return password


# --- the fixtures ----------------------------------------------------------------------------


def test_server_answers(conn: psycopg.Connection[Any], pg_server: Server) -> None:
    row = conn.execute("SELECT current_database(), 6 * 7").fetchone()
    assert row is not None
    assert row[0].startswith("t_test_server_answers_") or row[0].startswith(SHARED_DB_PREFIX)
    assert row[1] == 42
    with psycopg.connect(pg_server.dsn) as admin:
        assert admin.info.server_version == conn.info.server_version >= 120000


def test_each_test_database_is_fresh(
    conn: psycopg.Connection[Any], db_dsn: str, pg_server: Server, request: pytest.FixtureRequest
) -> None:
    conn.execute("CREATE TABLE only_here (id int PRIMARY KEY)")
    assert _has_table(db_dsn, "only_here")
    # What the next test gets: another clone of the same template.
    name = f"second_{request.node.name[-20:]}"
    second = pg_server.create_database(name, template=TEMPLATE_DB)
    try:
        assert not _has_table(second, "only_here")
        assert not _has_table(pg_server.dsn_for(TEMPLATE_DB), "only_here")
    finally:
        pg_server.drop_database(name)


def test_db_marker_is_applied(request: pytest.FixtureRequest, db_dsn: str) -> None:
    assert request.node.get_closest_marker("db") is not None


def test_unit_tests_get_no_marker(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("db") is None


# --- the library -----------------------------------------------------------------------------


def test_create_and_drop_database(pg_server: Server) -> None:
    dsn = pg_server.create_database("harness_scratch")
    assert dsn == pg_server.dsn_for("harness_scratch")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int)")
        physical = conn.info.dbname
    # A session left open must not block the drop (WITH (FORCE) on 13+).
    with psycopg.connect(dsn) as idle:
        assert physical in _databases(pg_server)
        assert not idle.closed
        pg_server.drop_database("harness_scratch")
    assert physical not in _databases(pg_server)


def test_sql_file_error_names_file_and_line(
    conn: psycopg.Connection[Any], pg_server: Server, tmp_path: Path
) -> None:
    # With psql (from the server's bin dir or PATH) when there is one; without, see below.
    bad = tmp_path / "broken.sql"
    bad.write_text("CREATE TABLE ok (id int);\nCREATE TABLE broken (id nosuchtype);\n")
    with pytest.raises(InputError) as caught:
        pg_server.load_sql(conn.info.dbname, bad)
    assert caught.value.exit_code == EXIT_BAD_INPUT
    assert "broken.sql:2" in str(caught.value)
    assert 'type "nosuchtype" does not exist' in str(caught.value)


def test_sql_file_loads_without_psql(
    conn: psycopg.Connection[Any],
    db_dsn: str,
    pg_server: Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No psql anywhere: the file goes through psycopg, pg_dump's \\restrict lines skipped.
    monkeypatch.setenv("PATH", str(tmp_path))
    no_psql = dataclasses.replace(pg_server, bin_dir=None)
    good = tmp_path / "dump.sql"
    good.write_text("\\restrict k1\nCREATE TABLE loaded (id int);\n\\unrestrict k1\n")
    no_psql.load_sql(conn.info.dbname, good)
    assert _has_table(db_dsn, "loaded")
    bad = tmp_path / "bad.sql"
    bad.write_text("SELECT 1;\n\nCREATE TABLE nope (id nosuchtype);\n")
    with pytest.raises(InputError, match=r"bad\.sql:3: type \"nosuchtype\" does not exist"):
        no_psql.load_sql(conn.info.dbname, bad)


def test_describe_provider_names_a_provider() -> None:
    text = describe_provider()
    assert isinstance(text, str)
    assert re.match(r"(DBOPT_TEST_DSN|Docker|local binaries|none)\b", text), text


def test_no_server_names_all_three_options(no_server_anywhere: str) -> None:
    with pytest.raises(SandboxError) as caught:
        start_server()
    message = str(caught.value)
    assert caught.value.exit_code == EXIT_CONNECT
    assert "DBOPT_TEST_DSN=postgresql://user@host/db" in message
    assert "cannot connect" in message
    assert "Docker" in message
    assert "no engine reachable" in message
    assert "apt-get install postgresql" in message
    assert "DBOPT_PG_BIN" in message
    assert "no initdb" in message
    assert no_server_anywhere not in message
    assert describe_provider().startswith("none (")
    assert no_server_anywhere not in describe_provider()


def test_invalid_setting_name_is_refused_before_starting() -> None:
    with pytest.raises(SandboxError, match="invalid server setting name"):
        start_server(settings={"work_mem = '1GB'\nfsync": "on"})


def _local_only(server: Server) -> None:
    if server.data_dir is None:
        pytest.skip(f"needs a server started by the harness, not {server.provider}")


def test_borrowed_server_masks_password_and_drops_only_its_databases(
    pg_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The local sandbox trusts every connection, so any password "works" against it.
    _local_only(pg_server)
    password = "Hunter2Secret"
    params = conninfo_to_dict(pg_server.dsn)
    monkeypatch.setenv("DBOPT_TEST_DSN", make_conninfo("", **params, password=password))
    assert "DBOPT_TEST_DSN" in describe_provider()
    assert password not in describe_provider()
    borrowed = start_server()
    try:
        assert borrowed.provider.startswith("DBOPT_TEST_DSN")
        assert password not in borrowed.provider
        assert password not in repr(borrowed)
        dsn = borrowed.create_database("mine")
        physical = conninfo_to_dict(dsn)["dbname"]
        assert str(physical).startswith(SHARED_DB_PREFIX)
        assert physical in _databases(pg_server)
        with pytest.raises(SandboxError, match="did not create it"):
            borrowed.drop_database(TEMPLATE_DB)
    finally:
        borrowed.stop()
    borrowed.stop()  # idempotent
    assert physical not in _databases(pg_server)
    assert TEMPLATE_DB in _databases(pg_server)


@pytest.mark.slow
def test_running_server_applies_settings_and_cleans_up(
    pg_server: Server, server_probes: tuple[Probe, ...]
) -> None:
    _local_only(pg_server)
    settings = {"work_mem": "7MB", "application_name": "it's"}
    # An optional library the server does not have is left out instead of failing the start.
    optional = ["dbopt_no_such_library"]
    with running_server(settings, optional_preload=optional, probes=server_probes) as server:
        assert server.data_dir is not None and server.data_dir.is_dir()
        with psycopg.connect(server.dsn) as conn:
            assert conn.execute("SHOW work_mem").fetchone() == ("7MB",)
            assert conn.execute("SHOW application_name").fetchone() == ("it's",)
            assert conn.execute("SHOW fsync").fetchone() == ("off",)
            preloaded = conn.execute("SHOW shared_preload_libraries").fetchone()
            assert preloaded is not None and "dbopt_no_such_library" not in preloaded[0]
        data_dir = server.data_dir
    assert not data_dir.exists()
    assert not data_dir.parent.exists()


# --- the CLI ---------------------------------------------------------------------------------


def _data_dir(stderr: str) -> Path | None:
    match = re.search(r"^Data directory: (.+)$", stderr, flags=re.MULTILINE)
    return Path(match.group(1)) if match else None


@pytest.mark.slow
def test_cli_prints_dsn_and_cleans_up(tmp_path: Path, pg_server: Server) -> None:
    schema = tmp_path / "schema.sql"
    schema.write_text(
        "CREATE TABLE appointments (id int PRIMARY KEY, barber_id int);\n"
        "CREATE INDEX appointments_barber ON appointments (barber_id);\n"
    )
    result = cli("--exit-after-ready", "--schema", str(schema), command=sandbox)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"postgresql://\S+/\S*dbopt_sandbox", lines[0])
    assert lines[1].startswith("export DATABASE_URL=")
    assert f"Loaded {schema}." in result.stderr
    data_dir = _data_dir(result.stderr)
    if pg_server.data_dir is not None:
        assert data_dir is not None
        assert not data_dir.exists()
        assert not data_dir.parent.exists()


def test_cli_without_server_exits_3_with_the_options(no_server_anywhere: str) -> None:
    result = cli("--exit-after-ready", command=sandbox)
    assert result.exit_code == EXIT_CONNECT
    assert "DBOPT_TEST_DSN" in result.stderr and "apt-get install postgresql" in result.stderr
    assert no_server_anywhere not in result.output
    assert "Traceback" not in result.output


def test_cli_help_has_examples() -> None:
    result = cli("--help", command=sandbox)
    assert result.exit_code == 0
    assert "Examples:" in result.output
    assert "--exit-after-ready" in result.output
