"""A small shop schema (orders, a customers view) for the trust tests.

Shared by tests/test_trust.py and tests/test_trust_review.py; the ``shop`` fixture that sets
it up is in conftest.py, the generic helpers (cli, oid, waits...) in tests/helpers.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import environments, project

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


#: The shop's `test` environment (short lock waits, one retry).
SETTINGS = {"lock_timeout": "2s", "retries": 1, "retry_backoff": "10ms", "cleanup_wait": "5s"}


def make_shop(
    conn: psycopg.Connection[Any], db_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """The orders table and its spec file; the working directory is the project."""
    conn.execute(TABLE)  # type: ignore[call-overload]
    return project(
        tmp_path,
        monkeypatch,
        {
            "indexes/orders.yaml": ORDERS,
            "dbopt.yaml": environments(test={"dsn": db_dsn, **SETTINGS}),
        },
    )


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
