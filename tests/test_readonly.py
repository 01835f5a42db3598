"""verify changes nothing: what dbopt.readonly refuses in a query, and why.

The first tests parse queries (no database): every place a function can be called, and the
deny-list. The rest read the catalog of a real throwaway database (conftest.py: ``conn`` is
the non-superuser owner, ``admin_conn`` the superuser) holding the objects a query can reach
without naming a function: user-defined functions, operators, aggregates, views, row-level
security policies, domains, casts and foreign tables. End-to-end runs of verify and validate
live beside their other tests (test_verify.py, test_livecheck.py).
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from dbopt.db import read_only_transaction
from dbopt.readonly import (
    DENIED,
    HARMLESS_VOLATILE,
    CallGraph,
    Reference,
    denied,
    references,
    static_refusals,
)
from dbopt.sqltext import SqlTextError

VERIFY = ": verify must change nothing"
VOLATILE = (
    "is VOLATILE, so it may write or change state (declare it STABLE or IMMUTABLE if it only reads)"
)


# --- what a query names (no database) ------------------------------------------------------


def test_references_are_found_in_every_clause() -> None:
    refs = references(
        """
        WITH c AS (SELECT f_cte(1))
        SELECT f_target(a), s.f_qualified(), "Quoted"(), t.col, (t.row).attr,
               count(*) FILTER (WHERE f_filter()) OVER (ORDER BY f_window())
          FROM t, LATERAL f_lateral(1) AS x, ROWS FROM (f_rows()) AS r, s.v
         WHERE a IN (SELECT f_sub()) AND b === 1 AND OPERATOR(s.###)(c, d)
           AND e::s.mood IS NULL AND a BETWEEN 1 AND 2
         GROUP BY f_group(a) HAVING f_having() > 0
         UNION SELECT f_union(), 1, 1, 1, 1, 1
         ORDER BY 1 USING ~<~
        """,
        with_placeholders=False,
    )
    functions = {r.name for r in refs if r.kind == "function" and r.schema is None}
    assert functions >= {
        "f_cte",
        "f_target",
        "Quoted",
        "f_filter",
        "f_window",
        "f_lateral",
        "f_rows",
        "f_sub",
        "f_group",
        "f_having",
        "f_union",
        "count",
    }
    assert Reference("function", "f_qualified", "s") in refs
    assert Reference("attribute", "col") in refs  # t.col may be col(t)
    assert Reference("attribute", "attr") in refs
    assert Reference("relation", "t") in refs and Reference("relation", "v", "s") in refs
    assert Reference("operator", "===") in refs and Reference("operator", "###", "s") in refs
    assert Reference("operator", "~<~") in refs
    assert Reference("type", "mood", "s") in refs
    # Sorting, grouping, IN, BETWEEN... compare with operators the query does not name.
    assert {r.name for r in refs if r.kind == "operator"} >= {"=", "<", ">", "<=", ">="}
    assert not any(r.name == "BETWEEN" for r in refs)


@pytest.mark.parametrize(
    ("text", "subject"),
    [
        ("SELECT pg_stat_reset()", "pg_stat_reset()"),
        ("SELECT * FROM pg_stat_reset()", "pg_stat_reset()"),
        ("WITH r AS (SELECT pg_stat_reset()) SELECT * FROM r", "pg_stat_reset()"),
        ("SELECT 1 WHERE EXISTS (SELECT pg_advisory_lock(1))", "pg_advisory_lock()"),
        ("SELECT 1 WHERE 1 = ANY (SELECT txid_current())", "txid_current()"),
        ("SELECT pg_catalog.pg_terminate_backend(42)", "pg_catalog.pg_terminate_backend()"),
        ('SELECT "pg_catalog"."set_config"(%(k)s, %(v)s, false)', "pg_catalog.set_config()"),
        ('SELECT "PG_STAT_RESET"()', "PG_STAT_RESET()"),
        ("SELECT x FROM t ORDER BY pg_switch_wal()", "pg_switch_wal()"),
        ("SELECT x FROM t GROUP BY x HAVING pg_cancel_backend(1)", "pg_cancel_backend()"),
        ("SELECT sum(x) OVER (ORDER BY nextval('s')) FROM t", "nextval()"),
        ("SELECT count(*) FILTER (WHERE setval('s', 1) > 0) FROM t", "setval()"),
        ("SELECT * FROM t, LATERAL pg_reload_conf() AS r", "pg_reload_conf()"),
        ("SELECT 1 UNION SELECT pg_rotate_logfile()::int", "pg_rotate_logfile()"),
        ("VALUES (pg_create_restore_point('x'))", "pg_create_restore_point()"),
        ("SELECT CASE WHEN x THEN lo_export(1, '/tmp/x') END FROM t", "lo_export()"),
        (
            "SELECT ARRAY(SELECT pg_logical_emit_message(true, 'p', 'm'))",
            "pg_logical_emit_message()",
        ),
        (
            "SELECT * FROM pg_create_logical_replication_slot('s', 'test_decoding')",
            "pg_create_logical_replication_slot()",
        ),
        ("SELECT query_to_xml('SELECT pg_stat_reset()', true, true, '')", "query_to_xml()"),
        ("SELECT dblink_exec('dbname=x', 'DELETE FROM t')", "dblink_exec()"),
        (
            "SELECT * FROM ext.hypopg_create_index('CREATE INDEX ON t (x)')",
            "ext.hypopg_create_index()",
        ),
        ("SELECT binary_upgrade_set_next_pg_type_oid(1)", "binary_upgrade_set_next_pg_type_oid()"),
        # The parser resolves the escapes: this is pg_stat_reset.
        ('SELECT U&"pg\\005fstat\\005freset"()', "pg_stat_reset()"),
        ("SELECT * FROM t LIMIT pg_stat_reset()::int", "pg_stat_reset()"),
        ("SELECT x FROM t WINDOW w AS (ORDER BY pg_stat_reset())", "pg_stat_reset()"),
    ],
)
def test_denied_calls_are_refused_wherever_they_are(text: str, subject: str) -> None:
    (refusal,) = static_refusals(text, with_placeholders=True)
    assert refusal.subject == subject
    assert str(refusal) == f"{subject} {denied(subject.rsplit('.', 1)[-1][:-2])}{VERIFY}"


def test_denied_message_names_the_function_and_why() -> None:
    (refusal,) = static_refusals("SELECT pg_stat_reset()", with_placeholders=False)
    assert str(refusal) == f"pg_stat_reset() resets the server's statistics{VERIFY}"
    assert refusal.message == "pg_stat_reset() resets the server's statistics"


@pytest.mark.parametrize(
    "text",
    [
        "SELECT random(), now(), clock_timestamp(), lower(name) FROM t ORDER BY 1",
        "SELECT 'pg_stat_reset()' AS not_a_call",
        "SELECT t.nextval FROM t  -- pg_stat_reset() in a comment is not a call",
        "SELECT pg_stat_get_numscans('t'::regclass), txid_current_if_assigned()",
    ],
)
def test_what_changes_nothing_is_not_refused(text: str) -> None:
    assert static_refusals(text, with_placeholders=False) == []


def test_an_unparsable_query_is_a_sql_text_error() -> None:
    with pytest.raises(SqlTextError, match="must be a read-only SELECT, not DELETE"):
        static_refusals("DELETE FROM t", with_placeholders=False)


def test_policy_lists_are_lower_case_and_disjoint() -> None:
    # Names are matched lower-cased; a name both denied and harmless would be a typo.
    assert all(name == name.lower() for name in [*DENIED, *HARMLESS_VOLATILE])
    assert not set(DENIED) & HARMLESS_VOLATILE
    assert denied("DBLINK_EXEC") and denied("binary_upgrade_create_empty_extension")
    assert denied("pg_sleep") is None


# --- what the database holds ---------------------------------------------------------------


def refused(conn: psycopg.Connection[Any], text: str) -> list[str]:
    """The refusals of ``text`` on ``conn``'s database, as messages."""
    graph = CallGraph.read(conn)
    return [str(r) for r in graph.refusals(text, with_placeholders=False)]


USER_FUNCTIONS = """
CREATE TABLE visits (id int);
CREATE TABLE barbers (id int PRIMARY KEY, name text);
-- VOLATILE by default, and it writes.
CREATE FUNCTION log_visit() RETURNS int LANGUAGE plpgsql
    AS 'BEGIN INSERT INTO visits VALUES (1); RETURN 1; END';
CREATE FUNCTION barber_label(int) RETURNS text STABLE LANGUAGE sql
    AS $$ SELECT 'barber ' || $1 $$;
-- Declared STABLE, and calls what changes something all the same.
CREATE FUNCTION looks_harmless() RETURNS int STABLE LANGUAGE plpgsql
    AS 'BEGIN PERFORM pg_stat_reset(); RETURN 1; END';
CREATE FUNCTION wraps_it(int) RETURNS int IMMUTABLE LANGUAGE sql
    AS 'SELECT $1 + looks_harmless()';
"""


def test_volatile_user_functions_are_refused_in_every_form(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute(USER_FUNCTIONS)
    message = f"public.log_visit() {VOLATILE}{VERIFY}"
    for text in (
        "SELECT log_visit()",
        "SELECT * FROM log_visit()",
        "WITH x AS (SELECT log_visit()) SELECT * FROM x",
        "SELECT id FROM barbers WHERE id = (SELECT log_visit())",
        "SELECT id FROM barbers ORDER BY log_visit()",
        "SELECT public.log_visit()",
        'SELECT "public"."log_visit"()',
        "SELECT b.id FROM barbers b, LATERAL (SELECT log_visit()) x",
    ):
        assert refused(conn, text) == [message], text
    # b.logged_name is logged_name(b): a call without parentheses.
    conn.execute(
        "CREATE FUNCTION logged_name(barbers) RETURNS text LANGUAGE plpgsql "
        "AS 'BEGIN INSERT INTO visits VALUES ($1.id); RETURN $1.name; END'"
    )
    logged = f"public.logged_name(public.barbers) {VOLATILE}{VERIFY}"
    assert refused(conn, "SELECT b.logged_name FROM barbers b") == [logged]
    assert refused(conn, "SELECT (b).logged_name FROM barbers b") == [logged]
    # Only functions that take a row can be called so: pg_catalog.system(internal), a VOLATILE
    # built-in, cannot, so a column named system is just a column.
    conn.execute("ALTER TABLE barbers ADD COLUMN system text")
    assert refused(conn, "SELECT b.system, b.name FROM barbers b") == []


def test_stable_user_functions_pass_unless_their_body_calls_something_unsafe(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute(USER_FUNCTIONS)
    assert refused(conn, "SELECT barber_label(id) FROM barbers WHERE id = 3") == []
    assert refused(conn, "SELECT looks_harmless()") == [
        "public.looks_harmless() calls pg_catalog.pg_stat_reset(), which resets the server's "
        f"statistics{VERIFY}"
    ]
    assert refused(conn, "SELECT wraps_it(1)") == [
        "public.wraps_it(integer) calls public.looks_harmless(), which calls "
        f"pg_catalog.pg_stat_reset(), which resets the server's statistics{VERIFY}"
    ]


def test_bodies_are_read_around_comments_and_strings(conn: psycopg.Connection[Any]) -> None:
    conn.execute(USER_FUNCTIONS)
    conn.execute(
        """
        CREATE FUNCTION commented() RETURNS int STABLE LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM log_visit /* the visit */ ();
            RETURN 1;
        END $$;
        CREATE FUNCTION dashes() RETURNS int STABLE LANGUAGE plpgsql AS $$
        DECLARE s text := '--'; BEGIN PERFORM "log_visit"(); RETURN 1; END $$;
        CREATE FUNCTION pg_temp.temporary() RETURNS int LANGUAGE sql AS 'SELECT 1';
        """
    )
    for name in ("commented", "dashes"):
        assert refused(conn, f"SELECT {name}()") == [
            f"public.{name}() calls public.log_visit(), which {VOLATILE}{VERIFY}"
        ]
    (message,) = refused(conn, "SELECT pg_temp.temporary()")
    assert message.startswith("pg_temp_") and message.endswith(f".temporary() {VOLATILE}{VERIFY}")


def test_bodies_dynamic_sql_sql_standard_bodies_and_parameter_defaults(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute(USER_FUNCTIONS)
    conn.execute(
        """
        CREATE FUNCTION dynamic(text) RETURNS int STABLE LANGUAGE plpgsql
            AS 'DECLARE r int; BEGIN EXECUTE $1 INTO r; RETURN r; END';
        CREATE FUNCTION with_default(x int DEFAULT log_visit()) RETURNS int STABLE LANGUAGE sql
            AS 'SELECT x';
        CREATE VIEW visit_view AS SELECT log_visit() AS v;
        CREATE FUNCTION reads_view() RETURNS bigint STABLE LANGUAGE sql
            AS 'SELECT count(*) FROM visit_view';
        """
    )
    assert refused(conn, "SELECT dynamic('SELECT 1')") == [
        f"public.dynamic(text) runs dynamic SQL (EXECUTE), which dbopt cannot check{VERIFY}"
    ]
    if conn.info.server_version >= 140000:  # SQL-standard function bodies came in 14
        conn.execute(
            "CREATE FUNCTION atomic_body() RETURNS int STABLE LANGUAGE sql "
            "BEGIN ATOMIC SELECT log_visit(); END"
        )
        # Kept parsed, not as text: pg_depend names the user's functions it calls
        # (log_visit) but none of the built-ins (pg_stat_reset, nextval): never read as safe.
        assert refused(conn, "SELECT atomic_body()") == [
            "public.atomic_body() has a SQL-standard body (BEGIN ATOMIC), which dbopt cannot "
            f"read to check{VERIFY}"
        ]
    assert refused(conn, "SELECT with_default()") == [
        f"public.with_default(integer) uses public.log_visit(), which {VOLATILE}{VERIFY}"
    ]
    assert refused(conn, "SELECT reads_view()") == [
        "public.reads_view() mentions view public.visit_view, which uses public.log_visit(), "
        f"which {VOLATILE}{VERIFY}"
    ]


def test_operators_aggregates_views_policies_domains(conn: psycopg.Connection[Any]) -> None:
    conn.execute(USER_FUNCTIONS)
    conn.execute(
        """
        CREATE FUNCTION add_and_log(int, int) RETURNS int LANGUAGE plpgsql
            AS 'BEGIN INSERT INTO visits VALUES ($1); RETURN $1 + $2; END';
        CREATE OPERATOR === (leftarg = int, rightarg = int, function = add_and_log);
        CREATE AGGREGATE sum_and_log(int) (sfunc = add_and_log, stype = int, initcond = '0');
        CREATE VIEW logged AS SELECT id, log_visit() AS v FROM barbers;
        CREATE TABLE private (id int);
        ALTER TABLE private ENABLE ROW LEVEL SECURITY;
        CREATE POLICY mine ON private USING (id = log_visit());
        CREATE DOMAIN checked_int AS int CHECK (VALUE > log_visit());
        """
    )
    runs = f"runs public.add_and_log(integer, integer), which {VOLATILE}{VERIFY}"
    assert refused(conn, "SELECT 1 === 2") == [f"operator public.=== {runs}"]
    assert refused(conn, "SELECT OPERATOR(public.===)(1, 2)") == [f"operator public.=== {runs}"]
    # An aggregate is IMMUTABLE in pg_proc whatever it runs: its support functions decide.
    assert refused(conn, "SELECT sum_and_log(id) FROM barbers") == [
        f"public.sum_and_log(integer) runs public.add_and_log(integer, integer), which "
        f"{VOLATILE}{VERIFY}"
    ]
    assert refused(conn, "SELECT id FROM logged") == [
        f"view public.logged uses public.log_visit(), which {VOLATILE}{VERIFY}"
    ]
    assert refused(conn, "SELECT count(*) FROM private") == [
        "table public.private has a row-level security policy that uses public.log_visit(), "
        f"which {VOLATILE}{VERIFY}"
    ]
    assert refused(conn, "SELECT 5::checked_int") == [
        "a cast to public.checked_int checks domain public.checked_int, which has a CHECK "
        f"constraint that uses public.log_visit(), which {VOLATILE}{VERIFY}"
    ]
    # Reading a table, a view or a column of such a type without them is fine.
    assert refused(conn, "SELECT id FROM barbers WHERE id IN (1, 2) ORDER BY id") == []


def test_a_user_defined_comparison_operator_refuses_what_may_compare(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute(USER_FUNCTIONS)
    conn.execute(
        """
        CREATE FUNCTION text_eq_int(text, int) RETURNS bool LANGUAGE plpgsql
            AS 'BEGIN INSERT INTO visits VALUES ($2); RETURN $1 = $2::text; END';
        CREATE OPERATOR public.= (leftarg = text, rightarg = int, function = text_eq_int);
        """
    )
    # ORDER BY, IN and joins compare with = or < without naming them: dbopt cannot tell which
    # overload the server picks, so any query is refused while the unsafe = is visible.
    (message,) = refused(conn, "SELECT name FROM barbers ORDER BY name")
    assert message.startswith("operator public.= runs public.text_eq_int(text, integer)")


def test_casts_and_an_implicit_cast_through_an_unsafe_function(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute(USER_FUNCTIONS)
    conn.execute(
        """
        CREATE TYPE mood AS ENUM ('happy', 'sad');
        CREATE FUNCTION to_mood(int) RETURNS mood LANGUAGE plpgsql
            AS 'BEGIN INSERT INTO visits VALUES ($1); RETURN ''happy''; END';
        CREATE CAST (int AS mood) WITH FUNCTION to_mood(int);
        """
    )
    assert refused(conn, "SELECT 1::mood") == [
        f"a cast to public.mood runs public.to_mood(integer), which {VOLATILE}{VERIFY}"
    ]
    assert refused(conn, "SELECT id FROM barbers") == []  # an explicit cast must be named
    conn.execute("DROP CAST (int AS mood)")
    conn.execute("CREATE CAST (int AS mood) WITH FUNCTION to_mood(int) AS IMPLICIT")
    assert refused(conn, "SELECT id FROM barbers") == [
        "the implicit cast from integer to public.mood runs public.to_mood(integer), which "
        f"{VOLATILE}; PostgreSQL applies it without the query naming it, so dbopt cannot rule "
        f"it out for any query{VERIFY}"
    ]


def test_overloads_and_schemas_resolve_conservatively(conn: psycopg.Connection[Any]) -> None:
    conn.execute(USER_FUNCTIONS)
    conn.execute(
        """
        CREATE FUNCTION pick(int) RETURNS int STABLE LANGUAGE sql AS 'SELECT $1';
        CREATE FUNCTION pick(text) RETURNS int LANGUAGE sql AS 'SELECT 1';
        CREATE SCHEMA elsewhere;
        CREATE FUNCTION elsewhere.lower(text) RETURNS text LANGUAGE plpgsql
            AS 'BEGIN INSERT INTO visits VALUES (1); RETURN $1; END';
        """
    )
    # Which pick() runs depends on argument types dbopt does not resolve: any unsafe overload
    # refuses the name.
    assert refused(conn, "SELECT pick(1)") == [f"public.pick(text) {VOLATILE}{VERIFY}"]
    # elsewhere is not on the search path: lower() is pg_catalog's, unless qualified.
    assert refused(conn, "SELECT lower(name) FROM barbers") == []
    assert refused(conn, "SELECT elsewhere.lower(name) FROM barbers") == [
        f"elsewhere.lower(text) {VOLATILE}{VERIFY}"
    ]
    conn.execute("SET search_path = elsewhere, public")
    assert refused(conn, "SELECT lower(name) FROM barbers") == [
        f"elsewhere.lower(text) {VOLATILE}{VERIFY}"
    ]


def test_built_ins_volatile_denied_and_harmless(conn: psycopg.Connection[Any]) -> None:
    # setseed() is not on the deny-list, but VOLATILE: it changes the session's random state.
    assert static_refusals("SELECT setseed(0.5)", with_placeholders=False) == []
    assert refused(conn, "SELECT setseed(0.5)") == [
        "pg_catalog.setseed(double precision) is a VOLATILE built-in that dbopt does not know "
        f"to be harmless{VERIFY}"
    ]
    # txid_current() is STABLE, yet assigns a transaction ID: the deny-list catches it.
    assert refused(conn, "SELECT txid_current()") == [
        f"txid_current() assigns a transaction ID{VERIFY}"
    ]
    harmless = (
        "SELECT random(), clock_timestamp(), timeofday(), gen_random_uuid(), pg_sleep(0), "
        "pg_relation_size('pg_class'), now(), * FROM pg_locks, pg_stat_activity"
    )
    assert refused(conn, harmless) == []


def test_a_denied_built_in_that_is_not_volatile_is_read_for_what_calls_it(
    conn: psycopg.Connection[Any],
) -> None:
    """The graph leaves out built-ins that are neither VOLATILE nor denied (safe, and nothing
    they run is read), not a denied one that says STABLE: a function calling it is refused."""
    conn.execute(
        "CREATE FUNCTION xid_now() RETURNS bigint STABLE LANGUAGE sql AS 'SELECT txid_current()'"
    )
    assert refused(conn, "SELECT xid_now()") == [
        f"public.xid_now() calls pg_catalog.txid_current(), which assigns a transaction ID{VERIFY}"
    ]
    assert refused(conn, "SELECT lower('A'), length('ab')") == []  # left out: safe


def test_allow_listed_names_are_volatile_built_ins_here(conn: psycopg.Connection[Any]) -> None:
    # The allow-list only matters for VOLATILE built-ins; a listed name that is not one (on
    # this server's version) would hide a mistake.
    rows = conn.execute(
        "SELECT DISTINCT proname FROM pg_proc WHERE pronamespace = 'pg_catalog'::regnamespace "
        "AND provolatile = 'v' AND proname = ANY(%s)",
        [sorted(HARMLESS_VOLATILE)],
    ).fetchall()
    present = {r[0] for r in rows}
    assert {"random", "clock_timestamp", "pg_sleep"} <= present
    # A built-in from 13 on (pgcrypto's before).
    assert ("gen_random_uuid" in present) == (conn.info.server_version >= 130000)
    # timezone: only its timetz overload, and only before 15 (STABLE since), is VOLATILE; a
    # query's AT TIME ZONE names every overload (seen on 12: plan left such indexes
    # uncompared).
    assert ("timezone" in present) == (conn.info.server_version < 150000)
    others = conn.execute(
        "SELECT DISTINCT proname FROM pg_proc WHERE proname = ANY(%s) AND provolatile <> 'v' "
        "AND proname <> 'timezone'",
        [sorted(HARMLESS_VOLATILE)],
    ).fetchall()
    assert others == []


def test_foreign_tables_and_partitioned_tables_with_foreign_partitions(
    conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    available = admin_conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'file_fdw'"
    ).fetchone()
    if available is None:
        pytest.skip("file_fdw is not available on the test server")
    admin_conn.execute(
        """
        CREATE EXTENSION file_fdw;
        CREATE SERVER files FOREIGN DATA WRAPPER file_fdw;
        CREATE FOREIGN TABLE lines (line text) SERVER files OPTIONS (program 'echo hi');
        CREATE TABLE events (id int, at date) PARTITION BY RANGE (at);
        CREATE TABLE events_2025 PARTITION OF events
            FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
        CREATE FOREIGN TABLE events_old PARTITION OF events
            FOR VALUES FROM ('2000-01-01') TO ('2025-01-01') SERVER files OPTIONS (program 'true');
        """
    )
    foreign = (
        "is read through a foreign-data wrapper: another server (or a program) runs a query "
        f"dbopt cannot check{VERIFY}"
    )
    assert refused(conn, "SELECT * FROM lines") == [f"foreign table public.lines {foreign}"]
    assert refused(conn, "SELECT * FROM events WHERE id = 1") == [
        f"partitioned table public.events reads foreign table public.events_old, which {foreign}"
    ]
    assert refused(conn, "SELECT * FROM events_2025 WHERE id = 1") == []


# --- the one read-only transaction (dbopt.db), shared by verify, validate and CallGraph ------


def test_read_only_transaction_refuses_writes_and_always_rolls_back(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute("CREATE TABLE t (id int)")
    with read_only_transaction(conn) as cur:
        assert cur.execute("SHOW transaction_read_only").fetchone() == ("on",)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            cur.execute("INSERT INTO t VALUES (1)")
    # The failed statement ended that transaction, and the connection is idle again.
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with read_only_transaction(conn) as cur:
        cur.execute("SELECT pg_catalog.set_config('application_name', 'changed', true)")
    assert conn.execute("SHOW application_name").fetchone() != ("changed",)


def test_read_only_transaction_sets_timeout_and_search_path_for_itself_only(
    conn: psycopg.Connection[Any],
) -> None:
    before = conn.execute("SELECT current_setting('statement_timeout'), current_schemas(true)")
    expected = before.fetchone()
    with read_only_transaction(conn, timeout_ms=1234, search_path=("pg_catalog", "pg_temp")) as cur:
        assert cur.execute("SHOW statement_timeout").fetchone() == ("1234ms",)
        assert cur.execute("SELECT current_schemas(true)").fetchone() == (["pg_catalog"],)
        with pytest.raises(psycopg.errors.QueryCanceled):
            cur.execute("SELECT pg_sleep(5)")
    after = conn.execute("SELECT current_setting('statement_timeout'), current_schemas(true)")
    assert after.fetchone() == expected
