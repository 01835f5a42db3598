"""A small shop schema (orders, a customers view) and helpers for the trust tests.

Shared by tests/test_trust.py and tests/test_trust_review.py; the ``shop`` fixture that sets
it up is in conftest.py.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import psycopg
from click.testing import CliRunner, Result

from dbopt.cli import main

TABLE = """
CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL, status text NOT NULL,
                     total numeric, created_at timestamptz NOT NULL DEFAULT now());
INSERT INTO orders (id, customer_id, status, total, created_at)
SELECT g, g % 100, (ARRAY['new','paid','shipped'])[1 + g % 3], g, now() - g * interval '1 min'
  FROM generate_series(1, 3000) g;
"""

ORDERS = """
table: public.orders
indexes:
  - {name: idx_orders_customer, columns: [customer_id]}
  - {name: idx_orders_status, columns: [status], where: "status <> 'shipped'"}
"""


def cli(*args: str, input: str | None = None) -> Result:
    fmt = [] if "--format" in args else ["--format", "plain"]
    return CliRunner().invoke(main, [*args, *fmt], input=input)


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def make_shop(conn: psycopg.Connection[Any], db_dsn: str, tmp_path: Path, monkeypatch: Any) -> Path:
    """The orders table and its spec file; the working directory is the project."""
    conn.execute(TABLE)  # type: ignore[call-overload]
    write(tmp_path, "indexes/orders.yaml", ORDERS)
    write(
        tmp_path,
        "dbopt.yaml",
        f"""
        environments:
          test:
            dsn: "{db_dsn}"
            lock_timeout: 2s
            retries: 1
            retry_backoff: 10ms
            cleanup_wait: 5s
        """,
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def oid(conn: psycopg.Connection[Any], name: str) -> int | None:
    row = conn.execute("SELECT to_regclass(%s)::oid::bigint", (name,)).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def indexdef(conn: psycopg.Connection[Any], name: str) -> str | None:
    row = conn.execute("SELECT pg_get_indexdef(to_regclass(%s))", (name,)).fetchone()
    return None if row is None else row[0]


def temporary_names(conn: psycopg.Connection[Any]) -> list[str]:
    rows = conn.execute(
        "SELECT relname FROM pg_class WHERE relname LIKE '%dbopt\\_new' "
        "OR relname LIKE '%dbopt\\_old'"
    ).fetchall()
    return [r[0] for r in rows]


def invalid_indexes(conn: psycopg.Connection[Any]) -> list[str]:
    rows = conn.execute("SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid")
    return [r[0] for r in rows.fetchall()]


MV = """
name: mv_customers
query: SELECT customer_id, count(*) AS n FROM orders GROUP BY customer_id
indexes:
  - {name: mv_customers_id, columns: [customer_id], unique: true}
"""

MV_CHANGED = """
name: mv_customers
query: SELECT customer_id, count(*) AS n, sum(total) AS total FROM orders GROUP BY customer_id
indexes:
  - {name: mv_customers_id, columns: [customer_id], unique: true}
"""
