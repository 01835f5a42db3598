"""A measurement against the budgets of its query: time (budget_ms, warn_ms, judged within
the measured noise) and the deterministic ones (max_buffers, max_rows_examined, max_cost).
Pure: no I/O.

Time is judged on the p95 and its noise band (:func:`dbopt.verify.noise.p95_band`): a
budget_ms inside the band is ``unstable`` — the runs cannot tell pass from fail on this
machine, now. A warn_ms inside the band warns (warn and pass exit alike: nothing flips).
The deterministic budgets are judged on numbers of the last recorded run, which do not vary
between runs for given data and statistics (see :attr:`Measurement.buffers`,
:func:`dbopt.verify.plan.rows_examined`), so they are never unstable and never re-measured.
"""

from __future__ import annotations

from dataclasses import replace

from dbopt.model import QueryBudget
from dbopt.verify.findings import Finding, FindingKind, Status
from dbopt.verify.measurement import Measurement, Outcome


def band_text(band: tuple[float, float]) -> str:
    """``noise band 7.912-9.204 ms``."""
    return f"noise band {band[0]:.3f}-{band[1]:.3f} ms"


def _runs_text(m: Measurement) -> str:
    runs = f"{len(m.execution_ms)} runs"
    if m.measurements > 1:
        runs += f" in {m.measurements} measurements"
    return runs


def time_findings(
    m: Measurement, budget: QueryBudget, band: tuple[float, float] | None
) -> list[Finding]:
    """How the runs ended, and p95 against budget_ms and warn_ms within the noise ``band``
    (:func:`dbopt.verify.noise.p95_band` of the runs)."""
    limit = f"budget {budget.budget_ms:g} ms" if budget.budget_ms is not None else "no budget_ms"
    if m.outcome == Outcome.TIMEOUT:
        return [
            Finding(
                Status.FAIL,
                FindingKind.TIMEOUT,
                f"stopped by statement_timeout after {m.timeout_ms} ms ({limit}); "
                "the plan shown is the planner's estimate",
            )
        ]
    if m.outcome == Outcome.ERROR:
        return [Finding(Status.FAIL, FindingKind.ERROR, f"the query failed: {m.error}")]
    if budget.budget_ms is None or m.p95_ms is None or band is None:
        return []
    p95, low, high = m.p95_ms, band[0], band[1]
    numbers = (
        f"p50 {m.p50_ms or 0.0:.3f} ms, max {m.max_ms or 0.0:.3f} ms, {band_text(band)}, "
        f"{_runs_text(m)}"
    )
    if low <= budget.budget_ms <= high:
        side = "over" if p95 > budget.budget_ms else "under"
        return [
            Finding(
                Status.UNSTABLE,
                FindingKind.BUDGET,
                f"p95 {p95:.3f} ms is {side} the budget of {budget.budget_ms:g} ms, but the "
                f"budget is within the measured noise ({numbers}): this machine cannot tell "
                "pass from fail now",
            )
        ]
    if p95 > budget.budget_ms:
        return [
            Finding(
                Status.FAIL,
                FindingKind.BUDGET,
                f"p95 {p95:.3f} ms is over the budget of {budget.budget_ms:g} ms ({numbers})",
            )
        ]
    warn = budget.warn_ms
    if warn is not None and (p95 > warn or low <= warn < high):
        how = "over" if p95 > warn else "under, but within the measured noise of,"
        return [
            Finding(
                Status.WARN,
                FindingKind.WARN,
                f"p95 {p95:.3f} ms is {how} warn_ms {warn:g} ms (budget "
                f"{budget.budget_ms:g} ms; {numbers})",
            )
        ]
    return [
        Finding(
            Status.PASS,
            FindingKind.BUDGET,
            f"p95 {p95:.3f} ms is within the budget of {budget.budget_ms:g} ms ({numbers})",
        )
    ]


def _judged(kind: FindingKind, what: str, value: float | None, limit: float, shown: str) -> Finding:
    if value is None:
        return Finding(Status.FAIL, kind, f"{what} not measured: the query did not complete")
    over = value > limit
    verb = "is over" if over else "is within"
    return Finding(
        Status.FAIL if over else Status.PASS,
        kind,
        f"{what} {shown} {verb} {kind.value} {limit:,.{_places(limit)}f}",
    )


def _places(value: float) -> int:
    return 0 if float(value).is_integer() else 2


def _distributed(m: Measurement) -> bool:
    """True when part of the plan ran on Citus shards (tasks of a distributed query)."""
    return m.plan is not None and any(n.shard is not None for n in m.plan.walk())


#: Why buffers and cost are not judged on a distributed plan.
_ON_SHARDS = (
    "cannot be judged on a distributed (Citus) plan: the coordinator's node counts none of "
    "what the shards do; use max_rows_examined, which counts every task's scans"
)


def budget_findings(m: Measurement, budget: QueryBudget) -> list[Finding]:
    """The deterministic budgets the query states, each its own finding, pass or fail (a
    failure for max_buffers and max_cost on a distributed plan, which cannot be judged)."""
    found = []
    if _distributed(m):
        for kind, limit in (
            (FindingKind.MAX_BUFFERS, budget.max_buffers),
            (FindingKind.MAX_COST, budget.max_cost),
        ):
            if limit is not None:
                found.append(Finding(Status.FAIL, kind, f"{kind.value} {_ON_SHARDS}"))
        budget = replace(budget, max_buffers=None, max_cost=None)
    if budget.max_buffers is not None:
        shown = (
            f"{m.buffers:,} (hit {m.shared_hit:,} + read {m.shared_read:,})"
            if m.buffers is not None and m.shared_hit is not None and m.shared_read is not None
            else ""
        )
        found.append(
            _judged(FindingKind.MAX_BUFFERS, "shared buffers", m.buffers, budget.max_buffers, shown)
        )
    if budget.max_rows_examined is not None:
        rows = m.rows_examined
        found.append(
            _judged(
                FindingKind.MAX_ROWS_EXAMINED,
                "rows examined",
                rows,
                budget.max_rows_examined,
                f"{rows:,}" if rows is not None else "",
            )
        )
    if budget.max_cost is not None:
        # An estimated plan (after a timeout) still has the planner's cost: it is judged too.
        cost = m.cost
        found.append(
            _judged(
                FindingKind.MAX_COST,
                "planner cost",
                cost,
                budget.max_cost,
                f"{cost:,.2f}" if cost is not None else "",
            )
        )
    return found
