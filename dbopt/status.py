"""`dbopt status`: managed and unmanaged indexes, views and their freshness, the last run.

Computed from the same plan apply would run, so what status calls drift, apply would replace.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import psycopg

from dbopt import citus
from dbopt.catalog import Catalog, CatalogIndex, inspect
from dbopt.citus import ShardedIndex
from dbopt.config import Settings
from dbopt.history import History, RunRecord
from dbopt.model import QualifiedName, RunOutcome, SpecSet
from dbopt.planner import Action, ActionKind, ownership
from dbopt.plans import build_plan, leftover_names, relevant


@dataclass(frozen=True, slots=True)
class IndexState:
    """One row of `dbopt status`."""

    name: str
    table: str
    state: str  # ok, missing, invalid, drifted, unmanaged
    valid: bool | None
    size_bytes: int | None
    scans: int | None  # on every node status read, in total
    origin: str  # dbopt, pre-existing, constraint, -
    #: With standbys listed: the scans on each node (StatusReport.nodes), None where unknown.
    node_scans: tuple[int | None, ...] = ()


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
    #: The nodes whose scans are counted (the target first), when standbys are listed.
    nodes: tuple[str, ...] = ()
    #: Nodes that could not be read, and why.
    unreachable: tuple[str, ...] = ()
    standby: bool = False  # the target itself is a standby
    #: Specs that cannot be applied to this database, as ``file:line:column: message``.
    conflicts: tuple[str, ...] = ()

    def attention(self) -> tuple[str, ...]:
        """What a monitoring check should page about, one line each: a managed index or view
        that is missing, INVALID, drifted or left the specs; any INVALID index on a managed
        table; a view that is overdue or holds no data; a last run that did not finish ok; a
        spec that cannot be applied to this database."""
        fine = ("ok", "present (not compared)", "building")
        out = [f"spec {c}" for c in self.conflicts]
        out += [f"index {r.name}: {r.state}" for r in self.managed if r.state not in fine]
        out += [
            f"index {r.name}: INVALID (not dbopt's)"
            for r in self.unmanaged
            if r.valid is False and r.state != "building"
        ]
        for v in self.views:
            if v.state not in fine:
                out.append(f"view {v.name}: {v.state}")
            elif v.populated is False:
                out.append(f"view {v.name}: holds no data (never refreshed)")
            elif v.overdue:
                out.append(f"view {v.name}: refresh overdue for schedule {v.schedule}")
        if self.last_run is not None and self.last_run.outcome not in (
            RunOutcome.SUCCEEDED,
            RunOutcome.RUNNING,
        ):
            out.append(
                f"last run #{self.last_run.id} {self.last_run.command}: {self.last_run.outcome}"
            )
        return tuple(out)


@dataclass(frozen=True, slots=True)
class NodeScans:
    """Index scans read on one node (None: the node could not be read, ``error`` says why)."""

    name: str
    scans: dict[str, int] | None
    error: str = ""


def with_nodes(report: StatusReport, nodes: list[NodeScans]) -> StatusReport:
    """The report with each index's scans per node and in total (an index no standby ever
    scanned may still serve every read there, so the total is what 'unused' must mean)."""

    def spread(row: IndexState) -> IndexState:
        per = tuple(None if n.scans is None else n.scans.get(row.name, 0) for n in nodes)
        known = [x for x in per if x is not None]
        total = sum(known) if known and row.size_bytes is not None else row.scans
        return replace(row, node_scans=per, scans=total)

    return replace(
        report,
        managed=tuple(spread(r) for r in report.managed),
        unmanaged=tuple(spread(r) for r in report.unmanaged),
        nodes=tuple(n.name for n in nodes),
        unreachable=tuple(f"{n.name}: {n.error}" for n in nodes if n.scans is None),
    )


def index_status(
    conn: psycopg.Connection[Any], specs: SpecSet, settings: Settings, history: History
) -> StatusReport:
    """What `dbopt status` shows, from the same plan apply would run (so drift agrees)."""
    owned = history.owned(conn)
    catalog = inspect(conn, relevant(specs, owned), sizes=True, apart=leftover_names(specs, owned))
    shards = _shards(conn, catalog)
    # What cannot be applied (a name taken, a table missing) is reported, not refused.
    result = build_plan(
        conn, specs, settings, history, catalog=catalog, placements=shards, lenient=True
    )
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
        row = IndexState(
            name=str(action.name),
            table=str(action.table),
            state="building"
            if index is not None and index.building
            else _state(action, index, states),
            valid=None if index is None else index.is_valid,
            size_bytes=None if index is None else index.size_bytes,
            scans=None if index is None else index.scans,
            origin="-" if index is None else "dbopt" if owners.owns(index.oid) else "pre-existing",
        )
        managed.append(_over_shards(row, shards.get(action.name)))
    wanted = {a.name for a in result.actions}
    tables = {s.table for s in specs.indexes}
    unmanaged = [
        _over_shards(
            IndexState(
                name=str(i.name),
                table=str(i.table),
                state="building" if i.building else "unmanaged",
                valid=i.is_valid,
                size_bytes=i.size_bytes,
                scans=i.scans,
                origin=f"constraint {i.constraint_name}" if i.backs_constraint else "-",
            ),
            shards.get(i.name),
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
        conflicts=result.conflicts,
    )


def _state(action: Action, index: CatalogIndex | None, states: dict[ActionKind, str]) -> str:
    """The state of a managed index as its planned action says; a repair of one valid on the
    Citus coordinator is of its shards, which ``_over_shards`` names ("ok, but INVALID on
    shard ...")."""
    if not action.compared:
        return "present (not compared)"
    if action.kind == ActionKind.REPAIR and index is not None and index.is_valid:
        return states[ActionKind.SKIP]
    return states[action.kind]


def _shards(conn: psycopg.Connection[Any], catalog: Catalog) -> dict[QualifiedName, ShardedIndex]:
    """On a Citus coordinator: every index of the inspected Citus tables on its shards (the
    coordinator's own copy is an empty shell)."""
    tables = [r.oid for r in catalog.relations.values() if r.sharded and r.inspected]
    return citus.shard_indexes(conn, tables) if tables else {}


def _over_shards(row: IndexState, sharded: ShardedIndex | None) -> IndexState:
    """The row with its size and scans summed over the index's shard placements, and the
    placements where it is not valid named in its state (status pages about them)."""
    if sharded is None:
        return row
    row = replace(row, size_bytes=sharded.size_bytes, scans=sharded.scans)
    if sharded.bad and row.state in ("ok", "unmanaged", "present (not compared)"):
        row = replace(row, state=f"{row.state}, but {sharded.describe_bad()}", valid=False)
    return row


#: How long after its tick a refresh may still be running (or queued) before status calls the
#: view overdue: twice its last duration, at least this much, at most the schedule's interval.
OVERDUE_GRACE = timedelta(minutes=5)


def overdue(
    schedule: str, now: datetime, last: datetime | None, last_duration_ms: float | None
) -> bool:
    """Not refreshed since the schedule's last tick, and the first tick it missed is further
    back than a refresh could still be running from it. Ticks are read in this machine's time
    zone (run status where cron runs, or mind the difference: pg_cron runs in GMT)."""
    from dbopt.cron import next_tick, previous_tick

    try:
        tick = previous_tick(schedule, now)
        if last is not None and last >= tick:
            return False
        missed = tick if last is None else min(tick, next_tick(schedule, last))
        interval = tick - previous_tick(schedule, tick - timedelta(seconds=1))
    except ValueError:
        return False  # validate refuses a schedule that never fires
    grace = max(OVERDUE_GRACE, timedelta(milliseconds=2 * (last_duration_ms or 0)))
    return now - missed > min(grace, interval)


def _view_states(
    specs: SpecSet,
    catalog: Catalog,
    actions: list[Any],
    refreshes: dict[QualifiedName, Any],
    states: dict[ActionKind, str],
) -> tuple[ViewState, ...]:
    now = datetime.now().astimezone()
    schedules = {v.name: v.refresh.schedule for v in specs.views}
    out = []
    for action in actions:
        relation = catalog.relations.get(action.name)
        last = refreshes.get(action.name)
        started = last.started_at if last else None
        schedule = schedules.get(action.name)
        late = bool(
            relation is not None
            and schedule
            and overdue(schedule, now, started, last.duration_ms if last else None)
        )
        out.append(
            ViewState(
                name=str(action.name),
                state=states[action.kind] if action.compared else "present (not compared)",
                populated=None if relation is None else relation.populated,
                size_bytes=None if relation is None else relation.total_bytes,
                schedule=schedule,
                last_refresh=started,
                age_s=None if started is None else (now - started).total_seconds(),
                overdue=late,
            )
        )
    return tuple(out)
