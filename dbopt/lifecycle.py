"""The index lifecycle as library calls: build a plan from specs and a live database."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import psycopg

from dbopt.catalog import Catalog, inspect
from dbopt.catalog.properties import Properties, read_properties
from dbopt.config import Settings
from dbopt.history import History, OwnedObject
from dbopt.model import QualifiedName, SpecSet
from dbopt.normalize import canonical, normalize_specs, normalize_views, simple_canonical
from dbopt.planner import Kind, Plan, ownership, plan


def relevant(specs: SpecSet, owned: Iterable[OwnedObject]) -> set[QualifiedName]:
    """What a plan touches, so the only relations inspection sizes and deparses (and so may
    wait for): the specs' tables and views, and what dbopt made (it may drop it)."""
    touched = {s.table for s in specs.indexes} | {v.name for v in specs.views}
    for fact in owned:
        touched.add(fact.table if fact.kind == "index" else fact.name)
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


@dataclass(frozen=True, slots=True)
class IndexState:
    """One row of `dbopt status`."""

    name: str
    table: str
    state: str  # ok, missing, invalid, drifted, unmanaged
    valid: bool | None
    size_bytes: int | None
    scans: int | None
    origin: str  # dbopt, pre-existing, constraint, -


@dataclass(frozen=True, slots=True)
class ViewState:
    """One materialized view in `dbopt status`."""

    name: str
    state: str  # ok, missing, drifted, left the specs
    populated: bool | None
    size_bytes: int | None
    schedule: str | None
    last_refresh: datetime | None
    age_s: float | None
    overdue: bool  # not refreshed since its schedule's last tick


@dataclass(frozen=True, slots=True)
class StatusReport:
    """Managed and unmanaged indexes, views, and the last run."""

    managed: tuple[IndexState, ...]
    unmanaged: tuple[IndexState, ...]
    last_run: dict[str, Any] | None
    views: tuple[ViewState, ...] = ()


def index_status(
    conn: psycopg.Connection[Any], specs: SpecSet, settings: Settings, history: History
) -> StatusReport:
    """What `dbopt status` shows, from the same plan apply would run (so drift agrees)."""
    owned = history.owned(conn)
    catalog = inspect(conn, relevant(specs, owned))
    result = build_plan(conn, specs, settings, history, catalog=catalog)
    owners = ownership(owned, catalog)
    states = {
        Kind.SKIP: "ok",
        Kind.CREATE: "missing",
        Kind.REPAIR: "invalid",
        Kind.REPLACE: "drifted",
        Kind.DROP: "left the specs",
    }
    managed = []
    view_actions = [a for a in result.actions if a.object_kind == "view"]
    for action in result.actions:
        if action.object_kind == "view":
            continue
        index = catalog.indexes.get(action.name)
        managed.append(
            IndexState(
                name=str(action.name),
                table=str(action.table),
                state=states[action.kind],
                valid=None if index is None else index.is_valid,
                size_bytes=None if index is None else index.size_bytes,
                scans=None if index is None else index.scans,
                origin="-"
                if index is None
                else "dbopt"
                if owners.owns(index.oid)
                else "pre-existing",
            )
        )
    wanted = {a.name for a in result.actions}
    tables = {s.table for s in specs.indexes}
    unmanaged = [
        IndexState(
            name=str(i.name),
            table=str(i.table),
            state="unmanaged",
            valid=i.is_valid,
            size_bytes=i.size_bytes,
            scans=i.scans,
            origin=f"constraint {i.constraint_name}" if i.backs_constraint else "-",
        )
        for t in sorted(tables)
        for i in catalog.indexes_on(t)
        if i.name not in wanted
    ]
    runs = history.runs(conn, limit=1)
    return StatusReport(
        tuple(managed),
        tuple(unmanaged),
        runs[0] if runs else None,
        _view_states(specs, catalog, view_actions, history.last_refreshes(conn), states),
    )


def _view_states(
    specs: SpecSet,
    catalog: Catalog,
    actions: list[Any],
    refreshes: dict[QualifiedName, Any],
    states: dict[Kind, str],
) -> tuple[ViewState, ...]:
    from croniter import croniter

    now = datetime.now().astimezone()
    schedules = {v.name: v.refresh.schedule for v in specs.views}
    out = []
    for action in actions:
        relation = catalog.relations.get(action.name)
        last = refreshes.get(action.name)
        started = last["started_at"] if last else None
        schedule = schedules.get(action.name)
        overdue = bool(
            relation is not None
            and schedule
            and (started is None or started < croniter(schedule, now).get_prev(datetime))
        )
        out.append(
            ViewState(
                name=str(action.name),
                state=states[action.kind],
                populated=None if relation is None else relation.populated,
                size_bytes=None if relation is None else relation.total_bytes,
                schedule=schedule,
                last_refresh=started,
                age_s=None if started is None else (now - started).total_seconds(),
                overdue=overdue,
            )
        )
    return tuple(out)
