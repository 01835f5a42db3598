"""`dbopt status`: managed and unmanaged indexes, views and their freshness, the last run.

Computed from the same plan apply would run, so what status calls drift, apply would replace.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from dbopt.catalog import Catalog, inspect
from dbopt.config import Settings
from dbopt.history import History, RunRecord
from dbopt.model import QualifiedName, SpecSet
from dbopt.planner import ActionKind, ownership
from dbopt.plans import build_plan, relevant


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
    last_run: RunRecord | None
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
        ActionKind.SKIP: "ok",
        ActionKind.CREATE: "missing",
        ActionKind.REPAIR: "invalid",
        ActionKind.REPLACE: "drifted",
        ActionKind.DROP: "left the specs",
    }
    managed = []
    view_actions = [a for a in result.actions if a.object_type == "view"]
    for action in result.actions:
        if action.object_type == "view":
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
    states: dict[ActionKind, str],
) -> tuple[ViewState, ...]:
    from croniter import croniter

    now = datetime.now().astimezone()
    schedules = {v.name: v.refresh.schedule for v in specs.views}
    out = []
    for action in actions:
        relation = catalog.relations.get(action.name)
        last = refreshes.get(action.name)
        started = last.started_at if last else None
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
