"""What the specs' missing indexes would change, estimated by the planner with HypoPG.

Each spec index that does not exist yet becomes a HypoPG hypothetical index (in this
backend's memory only, never in the catalog), and each selected query is planned with plain
EXPLAIN (no ANALYZE) before and after. Exactly the hypothetical indexes a run created are
dropped before it returns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import psycopg
from psycopg import sql

from dbopt.catalog import Catalog, catalog_sql, inspect
from dbopt.config import Settings
from dbopt.db import read_only_transaction, server_message
from dbopt.errors import InputError
from dbopt.model import IndexSpec, QualifiedName, QueryBudget, SpecSet
from dbopt.readonly import CallGraph
from dbopt.verify.measurement import (
    MIN_TIMEOUT_MS,
    estimated_plan,
    raise_if_lost,
    statement_timeout_ms,
)
from dbopt.verify.plan import PlanNode, index_uses
from dbopt.verify.run import index_ancestors
from dbopt.verify.select import check_budgets, select_budgets
from dbopt.verify.verdict import Finding, FindingKind, Status, expectation_findings


class HypoPGMissingError(InputError):
    """The database lacks HypoPG; ``available`` is the version the server could install."""

    def __init__(self, detail: str, *, available: str | None) -> None:
        super().__init__(f"hypothetical indexes need the HypoPG extension{detail}; nothing was run")
        #: What is missing and how to get it, as it follows "needs the HypoPG extension".
        self.detail = detail
        self.available = available


@dataclass(frozen=True, slots=True)
class HypoIndex:
    """An index of the specs that does not exist yet, as HypoPG simulated it (or why not)."""

    spec: IndexSpec
    hypo_name: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class WhatIf:
    """One query's estimated plan without and with the hypothetical indexes."""

    budget: QueryBudget
    status: Status
    findings: tuple[Finding, ...] = ()
    cost_before: float | None = None
    cost_after: float | None = None
    would_use: tuple[str, ...] = ()
    plan_before: PlanNode | None = None
    plan_after: PlanNode | None = None

    @property
    def change(self) -> float | None:
        """Relative change of the estimated total cost (-0.99 = 99 % cheaper)."""
        if self.cost_before is None or self.cost_after is None or not self.cost_before:
            return None
        return self.cost_after / self.cost_before - 1


@dataclass(frozen=True, slots=True)
class HypotheticalReport:
    """What the specs' missing indexes would change, estimated by the planner with HypoPG."""

    hypopg_version: str
    indexes: tuple[HypoIndex, ...]
    queries: tuple[WhatIf, ...]
    server_version: int

    @property
    def failed(self) -> tuple[WhatIf, ...]:
        """Queries whose expectations the hypothetical indexes would still not meet."""
        return tuple(q for q in self.queries if q.status == Status.FAIL)


def hypopg_versions(conn: psycopg.Connection[Any]) -> tuple[str | None, str | None]:
    """(installed version in this database, version the server could install), None if not."""
    row = conn.execute(catalog_sql("hypopg_versions")).fetchone()
    return (row[0], row[1]) if row else (None, None)


def require_hypopg(conn: psycopg.Connection[Any], *, create: bool = False) -> str:
    """The installed HypoPG version; with ``create``, CREATE EXTENSION it when only available.

    Raises HypoPGMissingError (exit 2) saying how to get HypoPG: dbopt does not change a
    database unless asked; InputError when creating it fails.
    """
    installed, available = hypopg_versions(conn)
    if installed:
        return installed
    major = conn.info.server_version // 10000
    if not available:
        raise HypoPGMissingError(
            ", which this server does not have: install it on the database server "
            f"(Debian/Ubuntu: apt-get install postgresql-{major}-hypopg; RHEL: dnf install "
            f"hypopg_{major}; or build it from https://github.com/HypoPG/hypopg), then run "
            "CREATE EXTENSION hypopg in this database",
            available=None,
        )
    if not create:
        raise HypoPGMissingError(
            f": the server has it ({available}) but this database ({conn.info.dbname}) does "
            "not; run CREATE EXTENSION hypopg there",
            available=available,
        )
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS hypopg")
    except psycopg.Error as exc:
        raise InputError(
            f"could not create the HypoPG extension: {server_message(exc)}; nothing was run"
        ) from None
    return hypopg_versions(conn)[0] or available


def hypopg_function(conn: psycopg.Connection[Any], name: str) -> sql.Identifier:
    """One of HypoPG's functions, qualified with the schema it was installed in."""
    row = conn.execute(catalog_sql("hypopg_schema")).fetchone()
    return sql.Identifier(row[0], name) if row else sql.Identifier(name)


def _hypothetical_oids(conn: psycopg.Connection[Any]) -> set[int]:
    """The OIDs of the hypothetical indexes of this backend (HypoPG's ``hypopg()``)."""
    rows = conn.execute(
        sql.SQL("SELECT indexrelid::int8 FROM {}()").format(hypopg_function(conn, "hypopg"))
    ).fetchall()
    return {int(row[0]) for row in rows}


def _create_hypothetical(
    conn: psycopg.Connection[Any], spec: IndexSpec, create_fn: sql.Identifier
) -> HypoIndex:
    from dbopt.ddl import create_index

    statement = create_index(spec, concurrently=False).as_string(conn)
    try:
        # HypoPG keeps hypothetical indexes in this backend's memory, not in the catalog:
        # they outlive the rolled-back transaction until hypopg_reset().
        with read_only_transaction(conn, timeout_ms=MIN_TIMEOUT_MS) as cur:
            cur.execute(sql.SQL("SELECT indexname FROM {}(%s)").format(create_fn), [statement])
            row = cur.fetchone()
    except psycopg.Error as exc:
        raise_if_lost(conn, exc)
        return HypoIndex(spec, error=server_message(exc))
    return HypoIndex(spec, hypo_name=str(row[0]) if row else None)


def run_hypothetical(
    conn: psycopg.Connection[Any],
    specs: SpecSet,
    settings: Settings,
    *,
    queries: Sequence[str] = (),
    tables: Sequence[str] = (),
    create_extension: bool = False,
) -> HypotheticalReport:
    """Estimate, with HypoPG, what the spec indexes that do not exist yet would change.

    Each missing index becomes a hypothetical one (this backend's memory only), and each
    selected query is planned with plain EXPLAIN (no ANALYZE) before and after. A query fails
    when its expectations would still not hold with every index built. The budgets are
    checked first (nothing is created or planned when one is refused); at the end exactly the
    hypothetical indexes this call created are dropped, so the session is left as it was.
    """
    chosen = select_budgets(specs, queries, tables)
    catalog = inspect(conn, specs.relations())
    check_budgets(chosen, specs, catalog, CallGraph.read(conn))
    version = require_hypopg(conn, create=create_extension)
    missing = [i for i in specs.all_indexes if i.qualified_name not in catalog.indexes]
    timeouts = {b.name: statement_timeout_ms(b, settings) for b in chosen}
    before = {b.name: estimated_plan(conn, b, timeouts[b.name]) for b in chosen}
    existing = _hypothetical_oids(conn)
    try:
        create_fn = hypopg_function(conn, "hypopg_create_index")
        hypo = tuple(_create_hypothetical(conn, spec, create_fn) for spec in missing)
        after = {b.name: estimated_plan(conn, b, timeouts[b.name]) for b in chosen}
    finally:
        if not (conn.closed or conn.broken):
            # Those this call made, even when it stopped half-way; the caller's stay.
            drop_fn = hypopg_function(conn, "hypopg_drop_index")
            for oid in sorted(_hypothetical_oids(conn) - existing):
                conn.execute(sql.SQL("SELECT {}(%s)").format(drop_fn), [oid])
    rename = {h.hypo_name: h.spec.name for h in hypo if h.hypo_name}
    scanned = [u.index for p in after.values() if isinstance(p, PlanNode) for u in index_uses(p)]
    ancestors = index_ancestors(conn, [q for q in scanned if q.name not in rename])
    results = [
        _what_if(b, before[b.name], after[b.name], rename, catalog, specs, ancestors)
        for b in chosen
    ]
    return HypotheticalReport(version, hypo, tuple(results), catalog.server_version)


def _what_if(
    budget: QueryBudget,
    before: PlanNode | str,
    after: PlanNode | str,
    rename: Mapping[str, str],
    catalog: Catalog,
    specs: SpecSet,
    ancestors: Mapping[QualifiedName, tuple[QualifiedName, ...]],
) -> WhatIf:
    """Judge one query as if the specs were applied (``str``: the server's error)."""
    if isinstance(before, str) or isinstance(after, str):
        error = before if isinstance(before, str) else after
        failed = Finding(Status.FAIL, FindingKind.ERROR, f"the query failed: {error}")
        return WhatIf(budget, Status.FAIL, (failed,))
    # Hypothetical indexes count under their spec names.
    findings = expectation_findings(
        budget,
        after,
        catalog,
        estimated=True,
        rename=rename,
        say_missing=False,
        specs=specs,
        ancestors=ancestors,
    )
    used = sorted({rename[u.index.name] for u in index_uses(after) if u.index.name in rename})
    status = Status.FAIL if findings else Status.PASS
    shown = {hypo: f"{name} (hypothetical)" for hypo, name in rename.items()}
    return WhatIf(
        budget,
        status,
        tuple(findings),
        cost_before=before.cost,
        cost_after=after.cost,
        would_use=tuple(used),
        plan_before=before,
        plan_after=_renamed(after, shown),
    )


def _renamed(plan: PlanNode, names: Mapping[str, str]) -> PlanNode:
    """The plan with HypoPG's index names (``<13556>btree_t_v``) replaced by spec names."""
    return replace(
        plan,
        index=names.get(plan.index, plan.index) if plan.index else None,
        children=tuple(_renamed(child, names) for child in plan.children),
    )
