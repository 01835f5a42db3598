"""No session setting changes what dbopt builds or measures (a real server, hostile settings).

A role (ALTER ROLE ... IN DATABASE ... SET), a database (ALTER DATABASE ... SET) and a DSN
(options=-c ...) each try to change what a name means, how SQL text reads, where an index
goes, or whether dbopt may write; every dbopt connection sees the pinned values instead.
Role settings are scoped to the test's database (dropped with it) and reset in a finally.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helpers
import psycopg
import pytest
from helpers import cli
from psycopg import sql
from psycopg.conninfo import make_conninfo

from dbopt.config import Settings
from dbopt.db import FIXED_PINS, connect, pin, replay_sql, session_pins
from dbopt.errors import ConfigError

OWNER = "dbopt_owner"

#: Settings a hostile role or database gives, and what dbopt's sessions must see instead.
HOSTILE: dict[str, tuple[str, str]] = {
    "search_path": ("evil, public", '"public", pg_temp'),
    "DateStyle": ("SQL, DMY", "ISO, MDY"),
    "IntervalStyle": ("sql_standard", "postgres"),
    "extra_float_digits": ("-10", "1"),
    "TimeZone": ("Pacific/Kiritimati", "UTC"),
    "quote_all_identifiers": ("on", "off"),
    "transform_null_equals": ("on", "off"),
    "standard_conforming_strings": ("off", "on"),
    "bytea_output": ("escape", "hex"),
    "lc_monetary": ("C", "C"),
    "client_encoding": ("LATIN1", "UTF8"),
    "default_transaction_read_only": ("on", "off"),
    "default_transaction_isolation": ("serializable", "read committed"),
    "default_table_access_method": ("heap", "heap"),
    "row_security": ("off", "on"),
    "gin_fuzzy_search_limit": ("10", "0"),
    "exit_on_error": ("on", "off"),
    "idle_session_timeout": ("1s", "0"),
    "enable_indexscan": ("off", "on"),
    "enable_seqscan": ("off", "on"),
    "enable_partitionwise_join": ("on", "off"),
    "plan_cache_mode": ("force_generic_plan", "auto"),
    "statement_timeout": ("2s", "0"),  # would cancel builds; a loaded test machine is slow too
    "lock_timeout": ("0", "5s"),
}


def show(conn: psycopg.Connection[Any], name: str) -> str:
    row = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()
    assert row is not None
    return str(row[0])


@pytest.fixture
def database(admin_conn: psycopg.Connection[Any]) -> str:
    return str(admin_conn.info.dbname)


@pytest.fixture
def hostile_role(
    admin_conn: psycopg.Connection[Any], database: str
) -> Iterator[dict[str, tuple[str, str]]]:
    """Every HOSTILE setting this server has (idle_session_timeout came in 14) on dbopt_owner,
    in this database only; reset afterwards. Yields those settings."""
    role, db = sql.Identifier(OWNER), sql.Identifier(database)
    known = {str(r[0]).lower() for r in admin_conn.execute("SELECT name FROM pg_settings")}
    hostile = {name: values for name, values in HOSTILE.items() if name.lower() in known}
    try:
        for name, (value, _pinned) in hostile.items():
            # search_path is a list: a quoted 'evil, public' would be one schema's name.
            given = sql.SQL(value) if name == "search_path" else sql.Literal(value)
            admin_conn.execute(
                sql.SQL("ALTER ROLE {} IN DATABASE {} SET {} = {}").format(
                    role, db, sql.Identifier(name), given
                )
            )
        yield hostile
    finally:
        admin_conn.execute(sql.SQL("ALTER ROLE {} IN DATABASE {} RESET ALL").format(role, db))


@pytest.fixture
def evil(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """public.appointments, and evil.appointments that a hostile search_path would pick."""
    conn.execute(
        """
        CREATE TABLE public.appointments (id int PRIMARY KEY, day date, price money);
        INSERT INTO public.appointments VALUES (1, '2024-01-02', 10), (2, '2024-02-01', 20);
        CREATE SCHEMA evil;
        CREATE TABLE evil.appointments (id int PRIMARY KEY, day date, price money);
        INSERT INTO evil.appointments VALUES (666, '2024-01-02', 666);
        """
    )
    return conn


def test_the_hostile_role_really_is_hostile(
    evil: psycopg.Connection[Any], hostile_role: object, db_dsn: str
) -> None:
    # Without dbopt's pins a plain connection gets the role's settings.
    with psycopg.connect(db_dsn) as plain:
        assert show(plain, "search_path") == "evil, public"
        assert show(plain, "DateStyle") == "SQL, DMY"
        assert plain.execute("SELECT min(id) FROM appointments").fetchone() == (666,)
        plain.rollback()


def test_every_dbopt_connection_sees_the_pinned_values(
    evil: psycopg.Connection[Any], hostile_role: dict[str, tuple[str, str]], db_dsn: str
) -> None:
    with connect(db_dsn) as conn:
        for name, (_value, pinned) in hostile_role.items():
            assert show(conn, name) == pinned, name
        assert conn.execute("SELECT min(id) FROM appointments").fetchone() == (1,)
        assert conn.execute("SELECT current_schemas(false)").fetchone() == (["public"],)
        assert conn.execute("SELECT '01/02/2024'::date::text").fetchone() == ("2024-01-02",)
        assert conn.execute("SELECT 'a\\b'::text").fetchone() == ("a\\b",)
        assert conn.execute("SELECT 1 = NULL").fetchone() == (None,)
        # A writing session may write although the role made transactions read-only.
        conn.execute("CREATE TABLE written (id int)")


def test_one_statement_pins_every_setting_this_server_has(db_dsn: str) -> None:
    pins = session_pins(Settings())
    assert {name for name, _ in pins} >= {name for name, _value, _why in FIXED_PINS}
    with connect(db_dsn) as conn:
        applied = {name.lower() for name in pin(conn, pins)}
        known = {
            str(row[0]).lower()
            for row in conn.execute("SELECT name FROM pg_settings WHERE context = 'user'")
        }
        switches = {
            str(row[0])
            for row in conn.execute("SELECT name FROM pg_settings WHERE name LIKE 'enable%'")
        }
    assert {name.lower() for name, _ in pins if name.lower() in known} <= applied
    assert switches <= applied
    assert "transaction_timeout" not in known or "transaction_timeout" in applied


def test_a_dsn_cannot_unpin_them(evil: psycopg.Connection[Any], db_dsn: str) -> None:
    options = (
        "-c search_path=evil -c default_transaction_read_only=on -c DateStyle=SQL,DMY "
        "-c enable_indexscan=off -c quote_all_identifiers=on"
    )
    with connect(make_conninfo(db_dsn, options=options)) as conn:
        assert show(conn, "search_path") == '"public", pg_temp'
        assert show(conn, "default_transaction_read_only") == "off"
        assert show(conn, "DateStyle") == "ISO, MDY"
        assert show(conn, "enable_indexscan") == "on"
        assert show(conn, "quote_all_identifiers") == "off"


def test_a_database_setting_cannot_either(
    evil: psycopg.Connection[Any], db_dsn: str, database: str
) -> None:
    # The owner of a database may ALTER DATABASE ... SET; dropped with the test database.
    evil.execute(
        sql.SQL("ALTER DATABASE {} SET DateStyle = 'SQL, DMY'").format(sql.Identifier(database))
    )
    evil.execute(
        sql.SQL("ALTER DATABASE {} SET search_path = evil, public").format(sql.Identifier(database))
    )
    with connect(db_dsn) as conn:
        assert show(conn, "DateStyle") == "ISO, MDY"
        assert conn.execute("SELECT min(id) FROM appointments").fetchone() == (1,)


def test_search_path_and_timezone_come_from_the_settings(
    evil: psycopg.Connection[Any], db_dsn: str
) -> None:
    settings = Settings(search_path=("evil", "public"), timezone="Europe/Paris")
    with connect(db_dsn, settings=settings) as conn:
        assert conn.execute("SELECT min(id) FROM appointments").fetchone() == (666,)
        assert show(conn, "TimeZone") == "Europe/Paris"
    # A schema name is taken as written: "Evil" is not evil, and is no error either.
    with connect(db_dsn, settings=Settings(search_path=("Evil", "public"))) as conn:
        assert conn.execute("SELECT min(id) FROM appointments").fetchone() == (1,)


def test_an_unknown_timezone_is_bad_input(db_dsn: str) -> None:
    with pytest.raises(ConfigError) as caught:
        connect(db_dsn, settings=Settings(timezone="Mars/Olympus_Mons"))
    assert str(caught.value).startswith(
        'the server refuses a session setting: invalid value for parameter "TimeZone": '
        '"Mars/Olympus_Mons"'
    )
    assert caught.value.exit_code == 2


def test_read_only_sessions_cannot_write(db_dsn: str) -> None:
    with connect(db_dsn, read_only=True) as conn:
        assert show(conn, "default_transaction_read_only") == "on"
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("CREATE TABLE nope (id int)")


def test_timeouts_and_memory_come_from_the_settings(db_dsn: str) -> None:
    settings = Settings(
        lock_timeout_ms=1_234, statement_timeout_ms=60_000, maintenance_work_mem="256MB"
    )
    with connect(db_dsn, settings=settings) as conn:
        assert show(conn, "lock_timeout") == "1234ms"
        assert show(conn, "statement_timeout") == "1min"
        assert show(conn, "maintenance_work_mem") == "256MB"
    # lock_timeout_ms, as callers gave it before settings=, still wins.
    with connect(db_dsn, settings=settings, lock_timeout_ms=300) as conn:
        assert show(conn, "lock_timeout") == "300ms"


def test_pins_survive_a_non_autocommit_connection(db_dsn: str) -> None:
    with connect(db_dsn, autocommit=False) as conn:
        conn.rollback()  # the pins were committed: a rollback does not undo them
        assert show(conn, "search_path") == '"public", pg_temp'


# --- what dbopt builds, end to end -------------------------------------------------------

VIEW = """\
    name: mv_january
    query: "SELECT id, day FROM appointments WHERE day = '01/02/2024'"
    """

INDEX = """\
    table: public.appointments
    indexes:
      - name: appt_early
        columns: [day]
        where: "day < '01/03/2024'"
    """


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return helpers.project(
        tmp_path,
        monkeypatch,
        {"views/mv_january.yaml": VIEW, "indexes/appointments.yaml": INDEX},
    )


def test_apply_builds_what_the_specs_say_under_a_hostile_role(
    evil: psycopg.Connection[Any],
    hostile_role: object,
    project: Path,
    db_dsn: str,
    admin_conn: psycopg.Connection[Any],
) -> None:
    hostile_dsn = make_conninfo(db_dsn, options="-c default_transaction_read_only=on")
    result = cli("apply", "--dsn", hostile_dsn)
    assert result.exit_code == 0, result.output
    # The view reads public.appointments (not evil's), and 01/02/2024 is January 2nd.
    reads = admin_conn.execute(
        "SELECT DISTINCT d.refobjid::regclass::text FROM pg_depend d "
        "JOIN pg_rewrite r ON r.oid = d.objid "
        "WHERE r.ev_class = 'public.mv_january'::regclass AND d.refobjid <> r.ev_class"
    ).fetchall()
    assert reads == [("appointments",)]
    assert admin_conn.execute("SELECT id FROM public.mv_january").fetchall() == [(1,)]
    predicate = admin_conn.execute(
        "SELECT pg_get_expr(indpred, indrelid) FROM pg_index "
        "WHERE indexrelid = 'public.appt_early'::regclass"
    ).fetchone()
    assert predicate == ("(day < '2024-01-03'::date)",)
    # And the plan is empty afterwards, under the same hostile settings.
    replan = cli("plan", "--dsn", hostile_dsn, "--exit-code")
    assert replan.exit_code == 0, replan.output


@pytest.fixture
def tablespace(admin_conn: psycopg.Connection[Any]) -> Iterator[str]:
    """A tablespace dbopt_owner may use (needs a superuser and a directory of the server's)."""
    name = f"dbopt_ts_{secrets.token_hex(3)}"
    row = admin_conn.execute("SHOW data_directory").fetchone()
    assert row is not None
    location = f"{row[0]}/../{name}"
    try:
        # The directory must belong to the server's OS user: let the server make it.
        admin_conn.execute(
            sql.SQL("COPY (SELECT 1) TO PROGRAM {}").format(sql.Literal(f"mkdir -p '{location}'"))
        )
    except psycopg.Error as exc:
        pytest.skip(f"cannot make a tablespace directory on this server: {exc}")
    admin_conn.execute(
        sql.SQL("CREATE TABLESPACE {} LOCATION {}").format(
            sql.Identifier(name), sql.Literal(location)
        )
    )
    admin_conn.execute(
        sql.SQL("GRANT CREATE ON TABLESPACE {} TO {}").format(
            sql.Identifier(name), sql.Identifier(OWNER)
        )
    )
    try:
        yield name
    finally:
        admin_conn.execute(sql.SQL("DROP TABLESPACE IF EXISTS {}").format(sql.Identifier(name)))


def test_indexes_are_built_in_the_database_default_tablespace(
    evil: psycopg.Connection[Any],
    project: Path,
    db_dsn: str,
    database: str,
    tablespace: str,
    admin_conn: psycopg.Connection[Any],
) -> None:
    role, db = sql.Identifier(OWNER), sql.Identifier(database)
    admin_conn.execute(
        sql.SQL("ALTER ROLE {} IN DATABASE {} SET default_tablespace = {}").format(
            role, db, sql.Literal(tablespace)
        )
    )
    try:
        with psycopg.connect(db_dsn) as plain:  # the role's setting is in force...
            assert show(plain, "default_tablespace") == tablespace
        with connect(db_dsn) as conn:  # ...but not for dbopt
            assert show(conn, "default_tablespace") == ""
        result = cli("apply", "--dsn", db_dsn)
        assert result.exit_code == 0, result.output
        placed = admin_conn.execute(
            "SELECT relname, reltablespace FROM pg_class "
            "WHERE relname IN ('appt_early', 'mv_january') ORDER BY 1"
        ).fetchall()
        assert placed == [("appt_early", 0), ("mv_january", 0)]
    finally:
        admin_conn.execute(sql.SQL("ALTER ROLE {} IN DATABASE {} RESET ALL").format(role, db))
        # What dbopt built must leave the tablespace empty, or it could not be dropped.
        admin_conn.execute("DROP MATERIALIZED VIEW IF EXISTS public.mv_january")


def test_printed_sql_carries_the_pins_that_give_it_its_meaning(
    evil: psycopg.Connection[Any], hostile_role: object, db_dsn: str
) -> None:
    # SQL that dbopt prints (plan --sql, rollback files) is replayed by psql in a session of
    # its own: the same pins must come first, or `appointments` may mean evil.appointments.
    text = replay_sql(Settings(timezone="Europe/Paris"))
    assert text.startswith('SET search_path = "public", pg_temp;\n')
    assert "SET TimeZone = 'Europe/Paris';\n" in text
    assert "SET default_tablespace = '';\n" in text
    with psycopg.connect(db_dsn, autocommit=True) as psql_like:
        psql_like.execute(text)
        assert psql_like.execute("SELECT min(id) FROM appointments").fetchone() == (1,)
        assert show(psql_like, "DateStyle") == "ISO, MDY"
