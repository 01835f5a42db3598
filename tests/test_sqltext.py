"""Free-form SQL from specs goes through the real PostgreSQL parser, and nothing rides along."""

from __future__ import annotations

import pytest

from dbopt.sqltext import (
    CheckedQuery,
    SqlTextError,
    budget_query_sql,
    check_query,
    expression_columns,
    expression_sql,
    query_tree,
    render_expression,
    render_query,
)


@pytest.mark.parametrize(
    ("text", "rendered"),
    [
        ("deleted_at IS NULL", "deleted_at IS NULL"),
        ("status = 'active'", "status = 'active'"),
        ("lower(email)", "lower(email)"),
        ("date(appointment_date)", "date(appointment_date)"),
        ("x IN (1,2)", "x IN (1, 2)"),
        ("x = 'it''s'", "x = 'it''s'"),
        ("x = 1 -- a comment", "x = 1"),
        ("x = 1 /* a comment */", "x = 1"),
        ("x = 1;", "x = 1"),
        ("(a + b) * 2", "(a + b) * 2"),
    ],
)
def test_expressions_are_rendered_by_the_parser(text: str, rendered: str) -> None:
    assert render_expression(text) == rendered


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # The classic injection: the parser sees the stray parenthesis, not a DROP.
        (
            "x = 1); DROP TABLE users; --",
            "syntax error at or near \")\" (near '); DROP TABLE users;')",
        ),
        ("x = 1; DROP TABLE users", "must be a single expression, not several statements"),
        ("x = 1; SELECT 2", "must be a single expression, not several statements"),
        ("a, b", "must be a single expression (found more after it)"),
        ("1 FROM users", "must be a single expression (found more after it)"),
        ("x = 1 ORDER BY 1", "must be a single expression (found more after it)"),
        ("x = 1 LIMIT 1", "must be a single expression (found more after it)"),
        ("x = 1 UNION SELECT 2", "must be a single expression (found more after it)"),
        ("x AS y", "must be a single expression, without an alias"),
        ("*", "must be an expression, not '*' (all columns)"),
        ("users.*", "must be an expression, not '*' (all columns)"),
        ("(SELECT 1)", "must not contain a subquery (PostgreSQL refuses them in indexes)"),
        (
            "EXISTS (SELECT 1 FROM t)",
            "must not contain a subquery (PostgreSQL refuses them in indexes)",
        ),
        ("   ", "is empty: write one SQL expression"),
        ("-- nothing but a comment", "is empty: write one SQL expression"),
        ("x = ", "syntax error at end of input"),
    ],
)
def test_bad_expressions(text: str, message: str) -> None:
    with pytest.raises(SqlTextError) as caught:
        render_expression(text)
    assert str(caught.value) == message


def test_syntax_error_position_is_relative_to_the_expression() -> None:
    with pytest.raises(SqlTextError) as caught:
        render_expression("x = 1); DROP TABLE users; --")
    assert caught.value.position == 5


def test_expression_sql_is_the_rendering_not_the_input() -> None:
    composed = expression_sql("x   =  1  -- trailing")
    assert composed.as_string(None) == "x = 1"
    with pytest.raises(SqlTextError):
        expression_sql("x = 1); DROP TABLE users; --")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("SELECT 1", CheckedQuery("SELECT 1", ())),
        ("  SELECT 1;  ", CheckedQuery("SELECT 1", ())),
        ("VALUES (1)", CheckedQuery("VALUES (1)", ())),
        ("TABLE users", CheckedQuery("TABLE users", ())),
        (
            "WITH a AS (SELECT 1 AS x) SELECT x FROM a",
            CheckedQuery("WITH a AS (SELECT 1 AS x) SELECT x FROM a", ()),
        ),
    ],
)
def test_read_only_queries_pass(text: str, expected: CheckedQuery) -> None:
    assert check_query(text, with_placeholders=False) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("INSERT INTO t VALUES (1)", "must be a read-only SELECT, not INSERT"),
        ("UPDATE t SET x = 1", "must be a read-only SELECT, not UPDATE"),
        ("DELETE FROM t", "must be a read-only SELECT, not DELETE"),
        (
            "MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE",
            "must be a read-only SELECT, not MERGE",
        ),
        ("WITH a AS (SELECT 1) UPDATE t SET x = 1", "must be a read-only SELECT, not UPDATE"),
        (
            "WITH a AS (SELECT 1) INSERT INTO t SELECT * FROM a",
            "must be a read-only SELECT, not INSERT",
        ),
        ("DROP TABLE users", "must be a read-only SELECT, not DROP"),
        ("CREATE TABLE x AS SELECT 1", "must be a read-only SELECT, not CREATE"),
        ("EXPLAIN SELECT 1", "must be a read-only SELECT, not EXPLAIN"),
        ("set work_mem = '1GB'", "must be a read-only SELECT, not SET"),
        ("COPY t TO STDOUT", "must be a read-only SELECT, not COPY"),
        (
            "WITH gone AS (DELETE FROM t RETURNING *) SELECT * FROM gone",
            "must be read-only: it contains DELETE",
        ),
        (
            "WITH n AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM n",
            "must be read-only: it contains INSERT",
        ),
        (
            "SELECT * FROM (WITH u AS (UPDATE t SET x = 1 RETURNING *) SELECT * FROM u) s",
            "must be read-only: it contains UPDATE",
        ),
        ("SELECT * INTO copy FROM t", "must be read-only: it contains SELECT INTO"),
        (
            "SELECT * FROM t FOR UPDATE",
            "must be read-only: it contains FOR UPDATE/SHARE (row locks)",
        ),
        (
            "SELECT * FROM t FOR SHARE",
            "must be read-only: it contains FOR UPDATE/SHARE (row locks)",
        ),
        (
            "SELECT * FROM t FOR NO KEY UPDATE SKIP LOCKED",
            "must be read-only: it contains FOR UPDATE/SHARE (row locks)",
        ),
        ("SELECT 1; SELECT 2", "must be exactly one statement, found 2"),
        ("SELECT 1; DROP TABLE users", "must be exactly one statement, found 2"),
        ("", "must be a statement, found none"),
        (";", "must be a statement, found none"),
        ("SELEC 1", "syntax error at or near \"SELEC\" (near 'SELEC 1')"),
        ("SELECT 1 FROM", "syntax error at end of input"),
    ],
)
def test_writing_or_broken_queries_are_refused(text: str, message: str) -> None:
    with pytest.raises(SqlTextError) as caught:
        check_query(text, with_placeholders=False)
    assert str(caught.value) == message


def test_placeholders_are_collected_in_order_once() -> None:
    checked = check_query(
        "SELECT * FROM t WHERE shop = %(shop)s AND day = %(day)s AND other = %(shop)s",
        with_placeholders=True,
    )
    assert checked.placeholders == ("shop", "day")
    # The text is kept as psycopg will send it (the $n form was only for the parser).
    assert checked.text == (
        "SELECT * FROM t WHERE shop = %(shop)s AND day = %(day)s AND other = %(shop)s"
    )


def test_double_percent_is_a_literal_percent() -> None:
    checked = check_query("SELECT * FROM t WHERE name LIKE 'a%%'", with_placeholders=True)
    assert checked.placeholders == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "SELECT * FROM t WHERE name LIKE 'a%'",
            "a bare '%' in a query: use %(name)s for parameters and %% for a literal '%'",
        ),
        (
            "SELECT * FROM t WHERE id = %s",
            "a positional placeholder %s: name it, e.g. %(day)s, and give its value under params",
        ),
        ("SELECT %(1x)s", "bad placeholder name %(1x)"),
        ("DELETE FROM t WHERE id = %(id)s", "must be a read-only SELECT, not DELETE"),
    ],
)
def test_bad_placeholders(text: str, message: str) -> None:
    with pytest.raises(SqlTextError) as caught:
        check_query(text, with_placeholders=True)
    assert str(caught.value) == message


def test_without_placeholders_a_percent_is_plain_sql() -> None:
    assert check_query("SELECT 'a%'", with_placeholders=False).placeholders == ()


def test_normalize_query_renders_view_bodies() -> None:
    assert render_query("select a,b from t where x>1;") == "SELECT a, b FROM t WHERE x > 1"
    with pytest.raises(SqlTextError, match="must be exactly one statement, found 2"):
        render_query("SELECT 1; DROP TABLE users")


def test_budget_query_sql_keeps_placeholders() -> None:
    composed = budget_query_sql("SELECT * FROM t WHERE id = %(id)s;")
    assert composed.as_string(None) == "SELECT * FROM t WHERE id = %(id)s"
    with pytest.raises(SqlTextError):
        budget_query_sql("UPDATE t SET x = 1")


def test_budget_query_sql_refuses_what_would_change_something() -> None:
    # The door verify sends budget queries through refuses deny-listed calls itself, so a
    # SpecSet built in code (not loaded from files) gets the same check.
    with pytest.raises(SqlTextError) as err:
        budget_query_sql("SELECT id FROM t WHERE id = (SELECT pg_advisory_lock(%(key)s))")
    assert str(err.value) == (
        "pg_advisory_lock() takes or releases an advisory lock (a session lock outlives the "
        "rolled-back transaction, and any lock can block the application): verify must "
        "change nothing"
    )


def test_query_tree_is_the_checked_statement() -> None:
    tree = query_tree("SELECT f(%(x)s) FROM t", with_placeholders=True)
    assert set(tree) == {"SelectStmt"}
    with pytest.raises(SqlTextError, match="not DELETE"):
        query_tree("DELETE FROM t", with_placeholders=False)


def test_expression_columns_are_the_column_references_the_parser_reads() -> None:
    assert expression_columns("lower(t.email) || name") == ("email", "name")
    assert expression_columns("status IN ('a', 'b') AND created_at > now() - interval '1 day'") == (
        "created_at",
        "status",
    )
    assert expression_columns("'literal'") == ()
