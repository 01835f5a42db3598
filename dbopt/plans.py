"""Building a plan: inspect what the specs touch, let the server check and normalise them,
read what dbopt owns, diff (pure, in dbopt.planner), and read the properties of what a replace
or drop touches."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import psycopg

from dbopt.catalog import Catalog, inspect
from dbopt.catalog.properties import Properties, read_properties
from dbopt.config import Settings
from dbopt.deparse import canonical, normalize_specs, normalize_views, simple_canonical
from dbopt.history import History, OwnedObject
from dbopt.model import QualifiedName, SpecSet
from dbopt.planner import Plan, plan


def relevant(specs: SpecSet, owned: Iterable[OwnedObject]) -> set[QualifiedName]:
    """What a plan touches, so the only relations inspection sizes and deparses (and so may
    wait for): the specs' tables and views, and what dbopt made (it may drop it)."""
    touched = {s.table for s in specs.indexes} | {v.name for v in specs.views}
    for fact in owned:
        touched.add(fact.table if fact.object_type == "index" else fact.name)
    return touched


def build_plan(
    conn: psycopg.Connection[Any],
    specs: SpecSet,
    settings: Settings,
    history: History,
    *,
    replace_drifted: bool = False,
    prune: bool = False,
    cascade: bool = False,
    catalog: Catalog | None = None,
) -> Plan:
    """Inspect the catalog (unless given), let the server check and normalise the specs, read
    what dbopt owns, and diff; the properties of what a replace or drop touches are read
    (one query per kind) and the plan made again with them."""
    owned = history.owned(conn)
    if catalog is None:
        catalog = inspect(conn, relevant(specs, owned))
    # Only specs whose index exists need comparing; the rest are creates.
    existing = [
        s
        for s in specs.indexes
        if s.qualified_name in catalog.indexes and s.table in catalog.relations
    ]
    view_indexes = [
        i
        for v in specs.views
        for i in v.indexes
        if v.name in catalog.relations and i.qualified_name in catalog.indexes
    ]
    # Plain-column indexes whose text already matches need no server round trip.
    fast: dict[QualifiedName, str] = {}
    for spec in existing + view_indexes:
        text = simple_canonical(spec)
        if text is not None and text == canonical(catalog.indexes[spec.qualified_name].definition):
            fast[spec.qualified_name] = text
    normalized_slow, round_trips = normalize_specs(
        conn,
        [s for s in existing + view_indexes if s.qualified_name not in fast],
        settings.lock_timeout_ms,
    )
    normalized = {**fast, **normalized_slow}
    checked = normalize_views(
        conn,
        specs.views,
        {n for n, r in catalog.relations.items() if r.relkind == "m"},
        settings.lock_timeout_ms,
    )
    queries = catalog.queries + round_trips + checked.round_trips + 2

    def diff(properties: Properties | None) -> Plan:
        return plan(
            specs.indexes,
            catalog,
            normalized,
            owned,
            views=specs.views,
            normalized_views=checked.definitions,
            view_columns=checked.columns,
            properties=properties,
            replace_drifted=replace_drifted,
            prune=prune,
            cascade=cascade,
            catalog_queries=queries,
        )

    first = diff(None)
    indexes, views = first.wants_properties
    if not indexes and not views:
        return first
    result = diff(read_properties(conn, indexes, views))
    return replace(result, catalog_queries=queries + 1)
