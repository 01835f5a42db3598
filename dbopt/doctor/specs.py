"""Specs against reality: spec'd indexes no budgeted query expects, and spec'd materialized
views that hold no data or are overdue (as `dbopt status` computes it). Unmanaged indexes
that duplicate a spec'd one are found with the other duplicates (dbopt.doctor.redundancy)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from dbopt.doctor.findings import Check, Finding, Severity, ViewRow
from dbopt.doctor.fixes import yaml_flow
from dbopt.history import RefreshRecord
from dbopt.model import QualifiedName, QueryBudget, SpecSet
from dbopt.status import overdue


def _budget_schema(specs: SpecSet, budget: QueryBudget) -> str | None:
    """The schema of the relation a budget is written for: its spec file's table or view
    (the budget's ``relation`` text is "schema.name", which a dot in a name makes ambiguous)."""
    by_file = {s.location.file: s.table for s in specs.indexes}
    by_file.update({v.location.file: v.name for v in specs.views})
    relation = by_file.get(budget.location.file)
    if relation is None:
        known = {str(s.table): s.table for s in specs.indexes}
        known.update({str(v.name): v.name for v in specs.views})
        relation = known.get(budget.relation)
    return None if relation is None else relation.schema


def expected_indexes(specs: SpecSet) -> set[QualifiedName]:
    """The spec'd indexes some budget's ``expect: uses_index`` names. A name there is an
    index name as written (no schema, and a dot is part of it): the spec'd index of that name
    in the schema of the budget's relation, else (as verify reads it) every spec'd index of
    that name."""
    by_name: dict[str, list[QualifiedName]] = {}
    for index in specs.all_indexes:
        by_name.setdefault(index.name, []).append(index.qualified_name)
    out: set[QualifiedName] = set()
    for budget in specs.queries:
        schema = _budget_schema(specs, budget)
        for name in budget.expect.uses_index:
            candidates = by_name.get(name, [])
            here = [q for q in candidates if q.schema == schema]
            out.update(here or candidates)
    return out


def find_unbudgeted(specs: SpecSet) -> list[Finding]:
    """Spec'd indexes that no query's ``expect: uses_index`` names, when the specs budget
    queries at all (without budgets every index would be one). Unique indexes are left out:
    they enforce uniqueness whether or not a budget reads them."""
    if not specs.queries:
        return []
    expected = expected_indexes(specs)
    out = []
    for index in specs.all_indexes:
        if index.unique or index.qualified_name in expected:
            continue
        out.append(
            Finding(
                check=Check.SPEC_UNUSED,
                severity=Severity.INFO,
                object=str(index.qualified_name),
                table=str(index.table),
                message=f"{index.qualified_name}: no budgeted query expects it",
                why="verify cannot tell when a plan stops using it; a budget that names it "
                "(expect: uses_index) keeps it honest, or the unused check will tell",
                fix=f"add a query to {index.location.file} with expect: "
                + yaml_flow({"uses_index": [index.name]})
                + ", or drop the index if no query needs it",
                location=index.location,
            )
        )
    return out


def view_rows(
    specs: SpecSet,
    populated: Mapping[QualifiedName, bool],
    refreshes: Mapping[QualifiedName, RefreshRecord],
    now: datetime,
) -> list[ViewRow]:
    """Each spec'd view's freshness: whether it exists and holds data, its last refresh (from
    dbopt's history) and whether it is overdue against its schedule (status's rule)."""
    out = []
    for view in specs.views:
        last = refreshes.get(view.name)
        started = last.started_at if last else None
        exists = view.name in populated
        schedule = view.refresh.schedule
        out.append(
            ViewRow(
                name=str(view.name),
                exists=exists,
                populated=populated.get(view.name),
                schedule=schedule,
                last_refresh=started,
                age_s=None if started is None else (now - started).total_seconds(),
                overdue=bool(
                    exists
                    and schedule
                    and overdue(schedule, now, started, last.duration_ms if last else None)
                ),
            )
        )
    return out


def find_stale_views(specs: SpecSet, rows: list[ViewRow]) -> list[Finding]:
    """Views that hold no data (error: reading one fails) or are overdue (warning)."""
    where = {str(v.name): v.location for v in specs.views}
    out = []
    for row in rows:
        if not row.exists:
            continue  # `dbopt plan` creates it; not doctor's to say
        if row.populated is False:
            out.append(
                Finding(
                    check=Check.VIEW_NEVER_REFRESHED,
                    severity=Severity.ERROR,
                    object=row.name,
                    table="",
                    message=f"{row.name} holds no data (never refreshed)",
                    why="every query that reads it fails: materialized view has not been populated",
                    fix=f"dbopt refresh-views --view {row.name}",
                    location=where.get(row.name),
                )
            )
        elif row.overdue:
            out.append(
                Finding(
                    check=Check.VIEW_OVERDUE,
                    severity=Severity.WARNING,
                    object=row.name,
                    table="",
                    message=f"{row.name} was not refreshed since its schedule "
                    f"{row.schedule!r} last fired",
                    why="readers see data older than the schedule promises; the cron job "
                    "or pg_cron entry may be missing or failing",
                    fix=f"dbopt refresh-views --view {row.name}; then check the job "
                    "(`dbopt refresh-views --emit crontab` prints it)",
                    numbers=(("age_s", None if row.age_s is None else round(row.age_s)),),
                    location=where.get(row.name),
                    weight=row.age_s or 0.0,
                )
            )
    return out
