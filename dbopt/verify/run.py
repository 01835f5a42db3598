"""A whole verify run: select the budgets, check them, then measure and judge each in turn."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from dbopt.catalog import Catalog, catalog_sql, inspect
from dbopt.config import Settings
from dbopt.model import QualifiedName, QueryBudget, SpecSet
from dbopt.readonly import CallGraph
from dbopt.verify import fragility
from dbopt.verify.measurement import Measurement, measure
from dbopt.verify.noise import Noise, measure_noise, noise_budget
from dbopt.verify.plan import index_uses
from dbopt.verify.select import check_budgets, select_budgets
from dbopt.verify.verdict import (
    DEFAULT_REGRESSION,
    DEFAULT_REGRESSION_FLOOR_MS,
    Baseline,
    BaselineError,
    BaselineProblem,
    Status,
    Verdict,
    judge,
)


@dataclass(frozen=True, slots=True)
class QueryResult:
    """One budget, what its runs showed, and the verdict."""

    budget: QueryBudget
    measurement: Measurement
    verdict: Verdict
    #: How close a plan that breaks expect.uses_index comes (None: not checked).
    stability: fragility.Fragility | None = None


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """Every selected budget, measured and judged."""

    results: tuple[QueryResult, ...]
    server_version: int
    baseline: str | None = None
    threshold: float = DEFAULT_REGRESSION
    #: The machine's jitter, measured before the budgets (None when no budget has budget_ms).
    noise: Noise | None = None
    #: How many re-measurements were allowed (--retries).
    retries: int = 0

    def count(self, status: Status) -> int:
        """How many queries got ``status``."""
        return sum(1 for r in self.results if r.verdict.status == status)

    @property
    def worst(self) -> Status:
        """The worst verdict of the run (pass when it measured nothing)."""
        return max(
            (r.verdict.status for r in self.results), key=lambda s: s.rank, default=Status.PASS
        )

    @property
    def failed(self) -> tuple[QueryResult, ...]:
        """The results that fail (the CLI exits 1 when there is any)."""
        return tuple(r for r in self.results if r.verdict.status == Status.FAIL)

    @property
    def unstable(self) -> tuple[QueryResult, ...]:
        """The results whose time verdict is within the noise (exit 1 only with --strict)."""
        return tuple(r for r in self.results if r.verdict.status == Status.UNSTABLE)


def index_ancestors(
    conn: psycopg.Connection[Any], indexes: Collection[QualifiedName]
) -> dict[QualifiedName, tuple[QualifiedName, ...]]:
    """For each of ``indexes`` that is a partition's index, the partitioned indexes above it,
    nearest first (one catalog read, no lock; nothing to read when no plan scans an index)."""
    wanted = sorted(set(indexes))
    if not wanted:
        return {}
    found: dict[QualifiedName, list[QualifiedName]] = {}
    rows = conn.execute(
        catalog_sql("index_ancestors"),
        {"schemas": [q.schema for q in wanted], "names": [q.name for q in wanted]},
    ).fetchall()
    for schema, name, up_schema, up_name in rows:
        found.setdefault(QualifiedName(schema, name), []).append(QualifiedName(up_schema, up_name))
    return {k: tuple(v) for k, v in found.items()}


def run_verify(
    conn: psycopg.Connection[Any],
    specs: SpecSet,
    settings: Settings,
    *,
    queries: Sequence[str] = (),
    tables: Sequence[str] = (),
    baseline: Baseline | None = None,
    threshold: float = DEFAULT_REGRESSION,
    regression_floor_ms: float = DEFAULT_REGRESSION_FLOOR_MS,
    progress: Callable[[QueryBudget], None] | None = None,
    plan_margin: float = fragility.DEFAULT_PLAN_MARGIN,
    fail_on_fragile: bool = False,
    retries: int = 0,
) -> VerifyReport:
    """Measure and judge the selected budgets on ``conn`` (autocommit), in spec order.

    First the machine's jitter (:func:`~dbopt.verify.noise.measure_noise`, when time is
    judged: a budget_ms, or a ``baseline``'s p95); then each budget. Up to ``retries`` times, the
    queries whose verdict could change by measuring again (:attr:`Verdict.retryable`: a time
    verdict unstable or failed, nothing else failing) are measured again, their runs pooled
    with the earlier ones (more runs narrow the noise band; see
    :meth:`Measurement.pooled`), and judged again.

    A plan that meets expect.uses_index is checked for how close the cheapest plan without
    an expected index comes (see :mod:`dbopt.verify.fragility`): within ``plan_margin`` it
    warns, or fails with ``fail_on_fragile``.

    Raises ConfigError for a query name or table that selects nothing (see
    :func:`select_budgets`), SpecError for a budget that cannot be judged (nothing runs
    then), ConnectError when the connection is lost.
    """
    chosen = select_budgets(specs, queries, tables)
    if baseline is not None and not any(b.name in baseline.entries for b in chosen):
        raise BaselineError(
            Path(baseline.path),
            BaselineProblem.DISJOINT,
            f"none of the {len(chosen)} queries verified is in it (a baseline of other specs "
            "checks nothing); nothing was run",
        )
    catalog = inspect(conn, specs.relations())
    check_budgets(chosen, specs, catalog, CallGraph.read(conn))
    noise = None
    # Time is judged against budget_ms, or against a baseline's p95: both within the noise.
    if baseline is not None or any(b.budget_ms is not None for b in chosen):
        if progress is not None:
            progress(noise_budget())
        noise = measure_noise(conn, settings)

    def take(budget: QueryBudget) -> Measurement:
        if progress is not None:
            progress(budget)
        return measure(conn, budget, settings)

    measured = [(budget, take(budget)) for budget in chosen]
    ancestors = index_ancestors(conn, [u.index for _, m in measured for u in index_uses(m.plan)])

    def judge_one(m: Measurement, budget: QueryBudget) -> Verdict:
        spread = noise.spread_ms if noise is not None else 0.0
        jitter = noise.jitter if noise is not None else None
        return judge(
            m,
            budget,
            catalog=catalog,
            specs=specs,
            baseline=baseline,
            threshold=threshold,
            regression_floor_ms=regression_floor_ms,
            ancestors=ancestors,
            spread_ms=spread,
            jitter=jitter,
        )

    results = [QueryResult(budget, m, judge_one(m, budget)) for budget, m in measured]
    for _ in range(retries):
        again = [r for r in results if r.verdict.retryable]
        if not again:
            break
        redo = {id(r) for r in again}
        if noise is not None:  # the machine now, not as it was before the first round
            noise = measure_noise(conn, settings) or noise
        measured = [
            (r.budget, r.measurement.pooled(take(r.budget)) if id(r) in redo else r.measurement)
            for r in results
        ]
        results = [
            QueryResult(b, m, judge_one(m, b)) if id(r) in redo else r
            for r, (b, m) in zip(results, measured, strict=True)
        ]
    results = [
        _with_stability(conn, r, settings, specs, catalog, ancestors, plan_margin, fail_on_fragile)
        for r in results
    ]
    return VerifyReport(
        tuple(results),
        catalog.server_version,
        baseline=baseline.path if baseline else None,
        threshold=threshold,
        noise=noise,
        retries=retries,
    )


def _with_stability(
    conn: psycopg.Connection[Any],
    result: QueryResult,
    settings: Settings,
    specs: SpecSet,
    catalog: Catalog,
    ancestors: Mapping[QualifiedName, tuple[QualifiedName, ...]],
    margin: float,
    fail: bool,
) -> QueryResult:
    """``result`` with its plan stability checked and judged, when that applies."""
    b, m, v = result.budget, result.measurement, result.verdict
    if m.plan is None or not fragility.applies(b, m, v):
        return result
    found = fragility.check_fragility(
        conn, b, m.plan, settings, margin=margin, specs=specs, catalog=catalog, ancestors=ancestors
    )
    return QueryResult(b, m, fragility.with_finding(v, found.finding(fail=fail)), found)
