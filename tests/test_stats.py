"""`dbopt stats dump|restore`: production's planner statistics pinned into a CI database.

Restoring needs PostgreSQL 18 (pg_restore_relation_stats/pg_restore_attribute_stats): those
tests skip before 18 with the reason the version matrix allows there only
(`skip_before_major`), and run on 18 (`--pg-major 18`, the npm build). Dumping and the refusal
before 18 run on every major.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import Owner, with_user
from harness import builds
from harness.matrix import skip_allowed
from helpers import cli, environments, project, server_label, server_major, skip_before_major
from psycopg import sql

from dbopt.errors import InputError
from dbopt.sandbox import probe_local, start_server
from dbopt.stats import NOT_BEFORE_18, load

PG18 = "pg_restore_relation_stats and pg_restore_attribute_stats"

SCHEMA = """
CREATE TABLE orders (id bigint PRIMARY KEY, status text NOT NULL, customer_id int NOT NULL,
                     note text NOT NULL) WITH (autovacuum_enabled = false);
CREATE INDEX orders_status ON orders (status);
"""

#: Production: 200,000 orders, 0.1 % of them pending, 10 % cancelled, the rest done.
PRODUCTION_ROWS = """
INSERT INTO orders
SELECT g, CASE WHEN g % 1000 = 0 THEN 'pending' WHEN g % 10 = 0 THEN 'cancelled' ELSE 'done' END,
       g % 5000, repeat('x', 40)
  FROM generate_series(1, 200000) g;
ANALYZE orders;
"""

#: CI's seed: 2,000 orders, half of them pending (seeds rarely have production's skew).
CI_ROWS = """
INSERT INTO orders
SELECT g, CASE WHEN g % 2 = 0 THEN 'pending' ELSE 'done' END, g % 50, repeat('x', 40)
  FROM generate_series(1, 2000) g;
ANALYZE orders;
"""

QUERY = "SELECT * FROM orders WHERE status = 'pending'"

SPEC = f"""
table: public.orders
indexes:
  - {{name: orders_status, columns: [status]}}
queries:
  - name: pending_orders
    sql: {QUERY}
    budget_ms: 500
    runs: 3
    warmup: 1
    expect: {{uses_index: [orders_status]}}
"""


@pytest.fixture
def ci_dsn(pg_server: Any, template_db: str, owner_role: Owner) -> Iterator[str]:
    """A second fresh database on the test's server (the "CI" one), as ``dbopt_owner``."""
    name = f"t_stats_ci_{secrets.token_hex(3)}"
    dsn = pg_server.create_database(name, template=template_db, owner=owner_role.name)
    try:
        if owner_role.name is None:
            yield dsn
        else:
            yield with_user(dsn, owner_role.name, owner_role.password)
    finally:
        pg_server.drop_database(name)


def _shape(node: dict[str, Any]) -> tuple[Any, ...]:
    """A plan node's type and index, with its children's: what "the same plan" means."""
    children = tuple(_shape(child) for child in node.get("Plans", []))
    return (node["Node Type"], node.get("Index Name"), children)


def _explain(conn: psycopg.Connection[Any], query: str) -> dict[str, Any]:
    """The top node of EXPLAIN (FORMAT JSON) without ANALYZE: estimates only."""
    row = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) {}").format(sql.SQL(query))).fetchone()
    assert row is not None
    return dict(row[0][0]["Plan"])


def _estimates(conn: psycopg.Connection[Any]) -> tuple[tuple[Any, ...], float, float]:
    """The pending query's plan shape, its row estimate, and the table's row estimate."""
    pending = _explain(conn, QUERY)
    table = _explain(conn, "SELECT * FROM orders")
    return _shape(pending), float(pending["Plan Rows"]), float(table["Plan Rows"])


def _status_stats(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT n_distinct, most_common_vals::text, most_common_freqs FROM pg_stats "
        "WHERE schemaname = 'public' AND tablename = 'orders' AND attname = 'status'"
    ).fetchone()
    return tuple(row) if row else ()


@pytest.fixture
def pair(
    conn: psycopg.Connection[Any],
    db_dsn: str,
    ci_dsn: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[psycopg.Connection[Any]]:
    """Production (``conn``: 200,000 skewed rows) and CI (2,000 rows seeded evenly), the
    orders spec, environments `production` and `ci`; yields a connection to CI."""
    skip_before_major(conn, 18, PG18)
    conn.execute(SCHEMA + PRODUCTION_ROWS)  # type: ignore[call-overload]
    project(
        tmp_path,
        monkeypatch,
        {
            "indexes/orders.yaml": SPEC,
            "dbopt.yaml": environments(production={"dsn": db_dsn}, ci={"dsn": ci_dsn}),
        },
    )
    with psycopg.connect(ci_dsn, autocommit=True) as ci:
        ci.execute(SCHEMA + CI_ROWS)  # type: ignore[call-overload]
        yield ci


@pytest.mark.slow
def test_restored_statistics_give_ci_production_s_plan(
    pair: psycopg.Connection[Any], conn: psycopg.Connection[Any]
) -> None:
    ci = pair
    role = ci.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    assert role == (False,)  # the owner role restores: no superuser needed
    production, prod_rows, prod_total = _estimates(conn)
    before, _rows, _total = _estimates(ci)
    assert production == ("Index Scan", "orders_status", ())
    assert before != production, before  # CI's own statistics: half the rows are pending
    assert cli("verify", "--env", "ci").exit_code == 1  # so CI's verify fails uses_index

    dumped = cli("stats", "dump", "--env", "production", "-o", "stats.json")
    assert dumped.exit_code == 0, dumped.output
    assert "wrote the statistics of 1 relation(s) from PostgreSQL 18" in dumped.stderr
    doc = json.loads(Path("stats.json").read_text(encoding="utf-8"))
    assert [(r["schema"], r["name"], r["reltuples"]) for r in doc["relations"]] == [
        ("public", "orders", 200000.0)
    ]
    restored = cli("stats", "restore", "--env", "ci", "stats.json")
    assert restored.exit_code == 0, restored.output
    pages = doc["relations"][0]["relpages"]
    assert f"restored public.orders: 200000 rows in {pages} pages, 4 column(s)" in restored.stdout
    assert "autovacuum may analyze" not in restored.stderr  # off for these tables

    after, ci_rows, ci_total = _estimates(ci)
    assert after == production
    # Production's selectivity of the table CI has: the planner sizes the table from its file.
    assert ci_total < prod_total / 10
    assert abs(ci_rows - prod_rows / prod_total * ci_total) <= 1, (ci_rows, ci_total)
    assert _status_stats(ci) == _status_stats(conn)
    assert cli("verify", "--env", "ci").exit_code == 0


@pytest.mark.slow
def test_a_file_that_does_not_fit_is_refused_before_anything_is_restored(
    pair: psycopg.Connection[Any],
) -> None:
    ci = pair
    assert cli("stats", "dump", "--env", "production", "-o", "stats.json").exit_code == 0
    doc = json.loads(Path("stats.json").read_text(encoding="utf-8"))
    columns = doc["relations"][0]["columns"]
    columns.append({"name": "discount", "type": "numeric", "stats": []})
    next(c for c in columns if c["name"] == "customer_id")["type"] = "bigint"
    Path("stats.json").write_text(json.dumps(doc), encoding="utf-8")
    before = (_status_stats(ci), _estimates(ci))

    result = cli("stats", "restore", "--env", "ci", "stats.json")

    assert result.exit_code == 2
    assert result.stderr == (
        "error: stats.json does not fit this database; nothing was restored:\n"
        "  public.orders: column customer_id is integer here but bigint in the file\n"
        "  public.orders: column discount (numeric) does not exist here\n"
    )
    assert (_status_stats(ci), _estimates(ci)) == before


@pytest.mark.slow
def test_a_value_the_server_refuses_rolls_everything_back(
    pair: psycopg.Connection[Any],
) -> None:
    ci = pair
    assert cli("stats", "dump", "--env", "production", "-o", "stats.json").exit_code == 0
    doc = json.loads(Path("stats.json").read_text(encoding="utf-8"))
    columns = doc["relations"][0]["columns"]
    customer = next(c for c in columns if c["name"] == "customer_id")
    customer["stats"][0]["most_common_vals"] = "{one,two}"  # not integers
    customer["stats"][0]["most_common_freqs"] = [0.5, 0.5]
    Path("stats.json").write_text(json.dumps(doc), encoding="utf-8")
    before = (_status_stats(ci), _estimates(ci))

    result = cli("stats", "restore", "--env", "ci", "stats.json")

    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert lines[0] == (
        "error: stats.json holds values this server refuses; nothing was restored:"
    ), result.stderr
    assert lines[1].startswith("  public.orders column customer_id: "), result.stderr
    assert (_status_stats(ci), _estimates(ci)) == before  # status, restored first, rolled back


def test_restore_before_18_says_what_is_not_possible(
    conn: psycopg.Connection[Any], db_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On 12-17 restore refuses in one sentence; on 18 the same file restores (and warns that
    autovacuum may overwrite it). Runs on every major."""
    conn.execute(
        "CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL);"
        "INSERT INTO orders SELECT g, 'done' FROM generate_series(1, 100) g; ANALYZE orders"
    )
    spec = "table: public.orders\nindexes:\n  - {name: orders_status, columns: [status]}\n"
    project(tmp_path, monkeypatch, {"indexes/orders.yaml": spec})
    assert cli("stats", "dump", "--dsn", db_dsn, "-o", "stats.json").exit_code == 0

    result = cli("stats", "restore", "--dsn", db_dsn, "stats.json")

    if server_major(conn) < 18:
        version = server_label(conn).removeprefix("PostgreSQL ")
        assert result.exit_code == 2
        assert result.stderr == f"error: {NOT_BEFORE_18.format(version=version)}\n"
        assert result.stderr.count(". ") == 0  # one sentence
    else:
        assert result.exit_code == 0, result.output
        assert "restored public.orders: 100 rows in 1 pages, 2 column(s)" in result.stdout
        assert "warning: autovacuum may analyze public.orders" in result.stderr


CROSS = """
CREATE TABLE events (id int PRIMARY KEY, kind text NOT NULL, tags int[] NOT NULL,
                     at timestamptz NOT NULL, span int4range) WITH (autovacuum_enabled = false);
"""


def _column_stats(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    rows = conn.execute(
        "SELECT attname, null_frac, n_distinct, most_common_vals::text, most_common_freqs, "
        "histogram_bounds::text, most_common_elems::text, correlation FROM pg_stats "
        "WHERE schemaname = 'public' AND tablename = 'events' ORDER BY attname"
    ).fetchall()
    return [tuple(r) for r in rows]


@pytest.mark.slow
def test_a_dump_from_this_major_restores_into_18(
    conn: psycopg.Connection[Any], db_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Production on any major feeds a CI on 18 (a second server, the 18 build): texts,
    arrays, timestamps and (from 17) ranges come back as production's pg_stats showed them."""
    conn.execute(
        CROSS + "INSERT INTO events SELECT g, "
        "CASE WHEN g % 10 < 6 THEN 'view' WHEN g % 10 < 9 THEN 'click' ELSE 'buy' END, "
        "ARRAY[g % 7, g % 11], timestamptz '2026-01-01 00:00+00' + g * interval '1 min', "
        "int4range(g % 100, g % 100 + g % 13 + 1) FROM generate_series(1, 5000) g; "
        "ANALYZE events"
    )
    spec = "table: public.events\nindexes:\n  - {name: events_kind, columns: [kind]}\n"
    project(tmp_path, monkeypatch, {"indexes/events.yaml": spec})
    assert cli("stats", "dump", "--dsn", db_dsn, "-o", "stats.json").exit_code == 0

    ci_server = start_server(probes=(partial(probe_local, builds.bin_dir_for(18)),))
    try:
        ci_dsn = ci_server.create_database("stats_ci")
        with psycopg.connect(ci_dsn, autocommit=True) as ci:
            ci.execute(CROSS)  # type: ignore[call-overload]
            result = cli("stats", "restore", "--dsn", ci_dsn, "stats.json")
            assert result.exit_code == 0, result.output
            assert "restored public.events: 5000 rows" in result.stdout
            if server_major(conn) < 18:
                assert f"note: the file comes from {server_label(conn)} and this is 18" in (
                    result.stderr
                )
            production, restored = _column_stats(conn), _column_stats(ci)
            ranges = "SELECT range_bounds_histogram::text FROM pg_stats WHERE attname = 'span'"
            ci_ranges = ci.execute(ranges).fetchone()
    finally:
        ci_server.stop()
    assert restored == production
    assert [r[0] for r in restored] == ["at", "id", "kind", "span", "tags"]
    assert any(r[6] for r in restored)  # most_common_elems of tags
    if server_major(conn) >= 17:
        assert ci_ranges is not None and ci_ranges[0]  # range histograms from 17 on


def test_dump_reads_what_the_role_may_see_and_says_what_is_hidden(
    conn: psycopg.Connection[Any],
    admin_dsn: str,
    admin_conn: psycopg.Connection[Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Any major: a reading role dumps the tables budgets read (through a plain view too);
    the columns it may not SELECT are named, and marked hidden in the file."""
    conn.execute(
        "CREATE TABLE customers (id int PRIMARY KEY, email text NOT NULL, secret text);"
        "INSERT INTO customers SELECT g, 'c' || g, 's' FROM generate_series(1, 500) g;"
        "CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL, status text);"
        "INSERT INTO orders SELECT g, g % 500, 'done' FROM generate_series(1, 1000) g;"
        "CREATE VIEW open_orders AS SELECT * FROM orders WHERE status <> 'done';"
        "ANALYZE customers; ANALYZE orders"
    )
    reader = f"stats_reader_{secrets.token_hex(3)}"
    admin_conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(reader)))
    try:
        admin_conn.execute(
            sql.SQL(
                "GRANT SELECT (id, email) ON customers TO {0}; "
                "GRANT SELECT ON orders, open_orders TO {0}"
            ).format(sql.Identifier(reader))
        )
        project(
            tmp_path,
            monkeypatch,
            {
                "indexes/customers.yaml": """
                    table: public.customers
                    indexes:
                      - {name: customers_email, columns: [email]}
                    queries:
                      - name: open
                        sql: SELECT count(*) FROM open_orders
                        budget_ms: 100
                """
            },
        )
        result = cli("stats", "dump", "--dsn", with_user(admin_dsn, reader), "-o", "s.json")
    finally:
        admin_conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(reader)))
        admin_conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(reader)))

    assert result.exit_code == 0, result.output
    assert (
        f"warning: public.customers: no statistics for columns secret: pg_stats does not show "
        f"them to role {reader}, which may not SELECT them"
    ) in result.stderr
    dumped = load(Path("s.json"))
    assert [str(r.name) for r in dumped.relations] == ["public.customers", "public.orders"]
    customers = dumped.relations[0]
    assert customers.reltuples == 500 and customers.hidden == ["secret"]
    assert [(c.name, c.type, bool(c.rows)) for c in customers.columns] == [
        ("id", "integer", True),
        ("email", "text", True),
        ("secret", "text", False),
    ]
    assert dumped.server_version_num // 10000 == server_major(conn)


# --- no database ------------------------------------------------------------------------------


def test_a_file_that_is_not_a_statistics_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text('{"format": "something else"}', encoding="utf-8")
    with pytest.raises(InputError, match="not a statistics file from `dbopt stats dump`"):
        load(path)
    path.write_text(
        json.dumps(
            {
                "format": "dbopt-stats/1",
                "server_version_num": 150014,
                "relations": [
                    {
                        "schema": "public",
                        "name": "t",
                        "relpages": "many",
                        "reltuples": 1.0,
                        "relallvisible": 0,
                        "columns": [
                            {"name": "a", "type": "int", "stats": [{"inherited": 0, "x": 1}]}
                        ],
                    }
                ],
            }
        ),
        encoding="utf-8",
    )
    with pytest.raises(InputError) as err:
        load(path)
    assert str(err.value).splitlines() == [
        f"{path} is not a valid statistics file; nothing was restored:",
        '  public.t: "relpages" must be an integer',
        '  public.t: column a: "inherited" must be a boolean',
        "  public.t: column a: unknown statistics x",
    ]


def test_the_matrix_allows_a_later_major_s_skip_only_before_that_major() -> None:
    reason = f"needs PostgreSQL 18 or later ({PG18}); this is PostgreSQL 15.14"
    assert skip_allowed(reason, 15)
    assert skip_allowed(reason, 17)
    assert not skip_allowed(reason, 18)
    assert not skip_allowed(reason, None)  # the unit tests' run
    assert skip_allowed("needs the hypopg extension, which PostgreSQL 18.4 here lacks (x)", 18)
    assert not skip_allowed("flaky", 15)
