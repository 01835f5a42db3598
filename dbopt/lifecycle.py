"""The index lifecycle as library calls: build a plan from specs and a live database."""

from __future__ import annotations

from typing import Any

import psycopg

from dbopt.catalog import inspect
from dbopt.config import Settings
from dbopt.history import History
from dbopt.normalize import normalize_specs
from dbopt.planner import Plan, plan
from dbopt.spec import SpecSet


def build_plan(
    conn: psycopg.Connection[Any],
    specs: SpecSet,
    settings: Settings,
    history: History,
    *,
    replace_drifted: bool = False,
    prune: bool = False,
) -> Plan:
    """Inspect the catalog, let the server normalise the specs, and diff them."""
    catalog = inspect(conn)
    # Only specs whose index exists need comparing; the rest are creates.
    existing = [
        s
        for s in specs.indexes
        if s.qualified_name in catalog.indexes and s.table in catalog.relations
    ]
    normalized, round_trips = normalize_specs(conn, existing, settings.lock_timeout_ms)
    managed = history.managed(conn)
    return plan(
        specs.indexes,
        catalog,
        normalized,
        managed,
        replace_drifted=replace_drifted,
        prune=prune,
        catalog_queries=catalog.queries + round_trips + 2,
    )
