"""Budget parameters get the type the server infers from their context, not psycopg's guess
from the Python value (``7`` would go out as smallint against a bigint column)."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from dbopt.cli import main
from dbopt.config import Settings
from dbopt.model import Location, QueryBudget
from dbopt.verify import Measurement, Outcome, measure, plan_text

AT = Location("indexes/accounts.yaml", 1, 1)


@pytest.fixture
def accounts(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    conn.execute(
        "CREATE TABLE accounts (id bigint PRIMARY KEY, opened timestamptz NOT NULL, "
        "email text NOT NULL, active boolean NOT NULL, meta jsonb NOT NULL)"
    )
    conn.execute(
        "INSERT INTO accounts SELECT g, TIMESTAMPTZ '2025-01-01 00:00+00' + g * interval '1 min', "
        "'u' || g || '@example.com', g % 2 = 0, jsonb_build_object('k', g % 10) "
        "FROM generate_series(1, 20000) g"
    )
    conn.execute("CREATE INDEX idx_accounts_opened ON accounts (opened)")
    conn.execute("CREATE INDEX idx_accounts_email ON accounts (email)")
    conn.execute("ANALYZE accounts")
    return conn


def measured(conn: psycopg.Connection[Any], query: str, **params: Any) -> Measurement:
    b = QueryBudget(
        name="q",
        sql=query,
        budget_ms=1000.0,
        location=AT,
        relation="public.accounts",
        params=params,
        uses_placeholders=True,
        runs=1,
        warmup=0,
    )
    m = measure(conn, b, Settings())
    assert m.outcome == Outcome.OK, m.error
    return m


def conditions(m: Measurement) -> str:
    assert m.plan is not None
    return "\n".join(c for node in m.plan.walk() for c in node.conditions)


def test_an_int_param_against_a_bigint_column_is_a_bigint(
    accounts: psycopg.Connection[Any],
) -> None:
    # What psycopg alone would send: the smallest type that holds the value.
    row = accounts.execute("EXPLAIN SELECT * FROM accounts WHERE id = %s", [7]).fetchall()
    assert "smallint" in str(row)

    m = measured(accounts, "SELECT * FROM accounts WHERE id = %(id)s", id=7)
    assert "Index Cond: (accounts.id = '7'::bigint)" in conditions(m)
    assert m.plan is not None and "smallint" not in plan_text(m.plan)
    assert m.indexes_used == ("accounts_pkey",) and m.rows == 1


def test_timestamptz_text_and_other_params_take_their_columns_types(
    accounts: psycopg.Connection[Any],
) -> None:
    since = dt.datetime(2025, 1, 5, tzinfo=dt.UTC)
    m = measured(
        accounts,
        "SELECT id FROM accounts WHERE opened BETWEEN %(since)s AND %(until)s",
        since=since,
        until=since + dt.timedelta(minutes=30),
    )
    assert "'2025-01-05 00:00:00+00'::timestamp with time zone" in conditions(m)
    assert m.indexes_used == ("idx_accounts_opened",) and m.rows == 31

    # A date (YAML's unquoted 2025-01-05) against timestamptz: midnight in the session zone.
    m = measured(
        accounts, "SELECT id FROM accounts WHERE opened >= %(day)s", day=dt.date(2025, 1, 5)
    )
    assert "::timestamp with time zone" in conditions(m) and "::date" not in conditions(m)

    m = measured(accounts, "SELECT id FROM accounts WHERE email = %(e)s", e="u7@example.com")
    assert "Index Cond: (accounts.email = 'u7@example.com'::text)" in conditions(m)
    assert m.indexes_used == ("idx_accounts_email",) and m.rows == 1

    m = measured(accounts, "SELECT id FROM accounts WHERE id = ANY (%(ids)s)", ids=[1, 2, 3])
    assert "'{1,2,3}'::bigint[]" in conditions(m) and m.rows == 3

    m = measured(accounts, "SELECT id FROM accounts WHERE active = %(a)s AND id < 5", a=True)
    assert m.rows == 2  # ids 2 and 4

    m = measured(accounts, "SELECT id FROM accounts WHERE meta @> %(m)s AND id < 30", m={"k": 3})
    assert "'{\"k\": 3}'::jsonb" in conditions(m) and m.rows == 3

    m = measured(accounts, "SELECT id FROM accounts WHERE id = %(id)s", id=None)
    assert m.rows == 0  # NULL is NULL whatever its type


def test_a_param_without_context_falls_back_to_psycopgs_type(
    accounts: psycopg.Connection[Any],
) -> None:
    # The server cannot type $1 in concat(): that parameter alone is typed by its value.
    m = measured(
        accounts,
        "SELECT concat(%(n)s, '-', email) FROM accounts WHERE id = %(id)s",
        n=5,
        id=3,
    )
    assert "Index Cond: (accounts.id = '3'::bigint)" in conditions(m) and m.rows == 1


def test_yaml_params_through_the_cli(
    accounts: psycopg.Connection[Any], db_dsn: str, tmp_path: Path
) -> None:
    specs = tmp_path / "indexes"
    specs.mkdir()
    (specs / "accounts.yaml").write_text(
        textwrap.dedent(
            """\
            table: accounts
            queries:
              - name: recent_for_id
                sql: SELECT email FROM accounts WHERE id = %(id)s AND opened >= %(since)s
                params: {id: 4000000000, since: 2025-01-05}
                budget_ms: 1000
                runs: 1
                warmup: 0
            """
        )
    )
    result = CliRunner().invoke(
        main, ["verify", "--dsn", db_dsn, "--specs", str(specs), "--format", "json", "-v"]
    )
    assert result.exit_code == 0, result.output
    (query,) = json.loads(result.stdout)["queries"]
    # psycopg alone sends 4000000000 as bigint but the date as date; the server decides both.
    assert "'4000000000'::bigint" in query["plan"]
    assert "::timestamp with time zone" in query["plan"] and "::date" not in query["plan"]
    assert query["indexes"] == ["accounts_pkey"]
