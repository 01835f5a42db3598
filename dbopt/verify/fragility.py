"""Plan stability: how close the cheapest plan that breaks ``expect.uses_index`` comes to the
chosen one.

A plan that meets ``uses_index`` only by a hair flips when ANALYZE samples differently. For
each expected index the plan uses, the planner is asked (plain EXPLAIN, read-only, rolled
back) for its best plan without that index, and the two total costs are compared: below the
margin (default 1.10: the alternative costs less than 10 % more) the plan is *fragile*.

How an index is taken out of the planner's sight, safely for a role that may not own the
table and without a lock stronger than the query's own:

- HypoPG 1.4+ ``hypopg_hide_index``: this backend's memory only (no catalog write, no lock),
  undone with ``hypopg_unhide_index`` before returning. The exact answer.
- Without it, the planner settings ``enable_indexscan``, ``enable_indexonlyscan`` and
  ``enable_bitmapscan`` off, for the EXPLAIN's transaction only: the best plan with *no*
  index. That plan also breaks the expectation, so when it is within the margin the plan is
  fragile for certain; when it is not, the verdict is "not checked" unless the tables the
  plan reads have no other index the planner could turn to instead.

Never used: ``DROP INDEX`` in a rolled-back transaction (ACCESS EXCLUSIVE lock on the table:
it blocks the application) and ``UPDATE pg_index SET indisvalid`` (superuser, a catalog write).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from dbopt.catalog import catalog_sql
from dbopt.config import Settings
from dbopt.db import read_only_transaction, server_message
from dbopt.model import QualifiedName, QueryBudget, SpecSet
from dbopt.verify.measurement import (
    MIN_TIMEOUT_MS,
    Measurement,
    Outcome,
    estimated_plan,
    raise_if_lost,
    statement_timeout_ms,
)
from dbopt.verify.plan import PlanNode, index_uses
from dbopt.verify.verdict import Finding, FindingKind, Status, Verdict, index_candidates

if TYPE_CHECKING:
    from dbopt.catalog import Catalog

#: The least ratio (alternative's cost / chosen plan's cost) of a stable plan.
DEFAULT_PLAN_MARGIN = 1.10
#: The first HypoPG version with hypopg_hide_index.
HIDE_SINCE = (1, 4)
#: The planner settings of the fallback: every index path off.
NO_INDEX_SCANS = {
    "enable_indexscan": "off",
    "enable_indexonlyscan": "off",
    "enable_bitmapscan": "off",
}


class Stability(StrEnum):
    """What the check found."""

    STABLE = "stable"
    FRAGILE = "fragile"
    NOT_CHECKED = "not_checked"


class Method(StrEnum):
    """How the expected index was taken out of the planner's sight."""

    HIDE_INDEX = "hypopg_hide_index"
    NO_INDEX_SCANS = "enable_indexscan/indexonlyscan/bitmapscan off"


@dataclass(frozen=True, slots=True)
class Fragility:
    """The cheapest plan found that breaks ``uses_index``, against the chosen plan."""

    stability: Stability
    margin: float
    chosen_cost: float
    method: Method | None = None
    #: The expected index the alternative does without (all of them: NO_INDEX_SCANS).
    without: str | None = None
    alternative: PlanNode | None = None
    chosen: PlanNode | None = None
    #: Why it was not checked (or the fallback could not conclude).
    note: str | None = None

    @property
    def alternative_cost(self) -> float | None:
        """The alternative's total cost, as the planner estimates it."""
        return self.alternative.cost if self.alternative is not None else None

    @property
    def ratio(self) -> float | None:
        """The alternative's cost over the chosen plan's (below the margin: fragile)."""
        if self.alternative is None or self.chosen_cost <= 0:
            return None
        return self.alternative.cost / self.chosen_cost

    @property
    def instead(self) -> str:
        """What the alternative scans that the chosen plan does not (else its top node)."""
        if self.alternative is None:
            return ""
        before = {n.label for n in self.chosen.walk()} if self.chosen is not None else set()
        scans = [
            n.label
            for n in self.alternative.walk()
            if n.node_type.endswith("Scan") and n.label not in before
        ]
        return ", ".join(dict.fromkeys(scans)) or self.alternative.label

    def finding(self, *, fail: bool = False) -> Finding:
        """The verdict's finding: fragile warns (fails with ``fail``), the others are notes."""
        ratio, alt = self.ratio, self.alternative_cost
        if self.stability == Stability.NOT_CHECKED or ratio is None or alt is None:
            return Finding(Status.PASS, FindingKind.NOTE, f"fragility not checked: {self.note}")
        numbers = (
            f"the best plan without {self.without} ({self.instead}) costs {alt:,.2f}, "
            f"{ratio:.3f}x the chosen plan's {self.chosen_cost:,.2f} "
            f"(plan_margin {self.margin:g}"
        )
        if self.stability == Stability.FRAGILE:
            return Finding(
                Status.FAIL if fail else Status.WARN,
                FindingKind.FRAGILE,
                f"fragile plan: {numbers}); an ANALYZE that samples differently can flip it",
            )
        return Finding(Status.PASS, FindingKind.NOTE, f"stable plan: {numbers})")

    def as_dict(self) -> dict[str, Any]:
        """The JSON report's ``plan_stability`` of a query."""
        ratio = self.ratio
        return {
            "stability": self.stability.value,
            "margin": self.margin,
            "method": self.method.value if self.method else None,
            "chosen_cost": self.chosen_cost,
            "alternative_cost": self.alternative_cost,
            "ratio": None if ratio is None else round(ratio, 4),
            "without": self.without,
            "alternative": self.instead or None,
            "alternative_top": self.alternative.label if self.alternative else None,
            "note": self.note,
        }


def _version(text: str | None) -> tuple[int, ...]:
    """``1.4.0`` as (1, 4, 0); () when there is none."""
    parts = []
    for part in (text or "").split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _hypopg(conn: psycopg.Connection[Any]) -> tuple[str | None, str | None]:
    """(installed HypoPG version, the schema of its functions), None when not installed."""
    version = conn.execute(catalog_sql("hypopg_versions")).fetchone()
    schema = conn.execute(catalog_sql("hypopg_schema")).fetchone()
    return (version[0] if version else None), (schema[0] if schema else None)


def _expected_indexes(
    budget: QueryBudget,
    chosen: PlanNode,
    specs: SpecSet | None,
    catalog: Catalog | None,
    ancestors: Mapping[QualifiedName, tuple[QualifiedName, ...]],
) -> dict[str, tuple[QualifiedName, ...]]:
    """For each name of ``uses_index``: the qualified indexes it means, and those the plan
    scans for it (a partition's index counts for its partitioned index)."""
    found: dict[str, tuple[QualifiedName, ...]] = {}
    for name in budget.expect.uses_index:
        candidates = set(index_candidates(name, budget, specs, catalog))
        scanned = set()
        for use in index_uses(chosen):
            family = {use.index, *ancestors.get(use.index, ())}
            if family & candidates or (not candidates and name in {q.name for q in family}):
                scanned.add(use.index)
        found[name] = tuple(sorted(candidates | scanned))
    return found


def _oids(
    conn: psycopg.Connection[Any], indexes: Sequence[QualifiedName]
) -> dict[QualifiedName, tuple[int, ...]]:
    """Each index's OID and its partitions' indexes' OIDs (one catalog read, no lock)."""
    found: dict[QualifiedName, list[int]] = {}
    rows = conn.execute(
        catalog_sql("index_family"),
        {"schemas": [q.schema for q in indexes], "names": [q.name for q in indexes]},
    ).fetchall()
    for schema, name, oid in rows:
        found.setdefault(QualifiedName(schema, name), []).append(int(oid))
    return {k: tuple(v) for k, v in found.items()}


def _call(conn: psycopg.Connection[Any], function: sql.Composable, oids: Sequence[int]) -> None:
    """``SELECT function(oid)`` for each OID, in one read-only transaction that is rolled
    back (HypoPG keeps what it hides in this backend's memory: the rollback does not undo it)."""
    with read_only_transaction(conn, timeout_ms=MIN_TIMEOUT_MS) as cur:
        for oid in oids:
            cur.execute(sql.SQL("SELECT {}(%s::oid)").format(function), [oid])


def _hidden(conn: psycopg.Connection[Any], schema: str) -> set[int]:
    """The OIDs this backend's HypoPG hides already (the caller's: left as they are)."""
    fn = sql.Identifier(schema, "hypopg_hidden_indexes")
    rows = conn.execute(sql.SQL("SELECT indexid::int8 FROM {}()").format(fn)).fetchall()
    return {int(row[0]) for row in rows}


def _without(
    conn: psycopg.Connection[Any],
    budget: QueryBudget,
    timeout_ms: int,
    schema: str,
    oids: Sequence[int],
) -> PlanNode | str:
    """The estimated plan with ``oids`` hidden by HypoPG; every index this call hid is
    shown again before it returns (also when it stops half-way)."""
    before = _hidden(conn, schema)
    mine = [oid for oid in oids if oid not in before]
    try:
        _call(conn, sql.Identifier(schema, "hypopg_hide_index"), mine)
        return estimated_plan(conn, budget, timeout_ms)
    finally:
        if not (conn.closed or conn.broken):
            _call(conn, sql.Identifier(schema, "hypopg_unhide_index"), mine)


def _other_indexes(
    conn: psycopg.Connection[Any], chosen: PlanNode, excluded: Sequence[int]
) -> list[QualifiedName]:
    """The valid indexes of the tables ``chosen`` reads, but for ``excluded`` (OIDs)."""
    tables = sorted({n.relation for n in chosen.walk() if n.relation is not None})
    rows = conn.execute(
        catalog_sql("other_indexes"),
        {
            "schemas": [t.schema for t in tables],
            "names": [t.name for t in tables],
            "excluded": list(excluded),
        },
    ).fetchall()
    return [QualifiedName(schema, name) for schema, name in rows]


def _judged(
    alternative: PlanNode | str,
    chosen: PlanNode,
    margin: float,
    method: Method,
    without: str,
    still_scanned: Sequence[QualifiedName],
) -> Fragility:
    """One alternative against the chosen plan (``str``: the server's error)."""
    base = Fragility(Stability.NOT_CHECKED, margin, chosen.cost, method, without, chosen=chosen)
    if isinstance(alternative, str):
        return replace(base, note=f"planning without {without} failed: {alternative}")
    scanned = {u.index for u in index_uses(alternative)}
    if scanned & set(still_scanned):
        shown = ", ".join(str(q) for q in sorted(scanned & set(still_scanned)))
        return replace(base, note=f"the planner still chose {shown} with it out of sight")
    if chosen.cost <= 0:
        return replace(base, note="the chosen plan costs nothing to compare with")
    ratio = alternative.cost / chosen.cost
    stability = Stability.FRAGILE if ratio < margin else Stability.STABLE
    return replace(base, stability=stability, alternative=alternative)


def check_fragility(
    conn: psycopg.Connection[Any],
    budget: QueryBudget,
    chosen: PlanNode,
    settings: Settings,
    *,
    margin: float = DEFAULT_PLAN_MARGIN,
    specs: SpecSet | None = None,
    catalog: Catalog | None = None,
    ancestors: Mapping[QualifiedName, tuple[QualifiedName, ...]] | None = None,
) -> Fragility:
    """How close the cheapest plan without one of the budget's ``uses_index`` indexes comes
    to ``chosen`` (a plan that meets them all), by plain EXPLAIN, read-only and rolled back.

    ``budget.expect.plan_margin`` overrides ``margin``. With HypoPG 1.4+ each expected index
    is hidden in turn (see the module's docstring for the fallback without it). Changes
    nothing that outlives the call; raises ConnectError when the connection is lost.
    """
    margin = budget.expect.plan_margin or margin
    timeout = statement_timeout_ms(budget, settings)
    expected = _expected_indexes(budget, chosen, specs, catalog, ancestors or {})
    try:
        version, schema = _hypopg(conn)
        oids = _oids(conn, sorted({q for qs in expected.values() for q in qs}))
        if schema is not None and _version(version) >= HIDE_SINCE:
            found = [
                _judged(
                    _without(
                        conn, budget, timeout, schema, [o for q in qs for o in oids.get(q, ())]
                    ),
                    chosen,
                    margin,
                    Method.HIDE_INDEX,
                    name,
                    qs,
                )
                for name, qs in expected.items()
            ]
            return _worst(found)
        every = sorted({q for qs in expected.values() for q in qs})
        alternative = estimated_plan(conn, budget, timeout, planner=NO_INDEX_SCANS)
        without = ", ".join(budget.expect.uses_index)
        judged = _judged(alternative, chosen, margin, Method.NO_INDEX_SCANS, without, every)
        if judged.stability == Stability.FRAGILE:
            # Sound without HypoPG: a plan with no index breaks the expectation too, and
            # one that may use another index can only be cheaper still.
            note = f"costed with every index path off: hiding only {without} {_needs(version)}"
            return replace(judged, note=note)
        if judged.stability == Stability.NOT_CHECKED:
            return judged
        others = _other_indexes(conn, chosen, [o for q in every for o in oids.get(q, ())])
        if not others:
            return judged  # no other index to turn to: the index-free plan is the best one
        ratio = judged.ratio or 0.0
        return replace(
            judged,
            stability=Stability.NOT_CHECKED,
            note=(
                f"{_needs(version)}; without it only plans with no index at all were costed "
                f"(the best, {judged.instead}, costs {ratio:.3f}x the chosen plan), and "
                f"{others[0]}{f' (+{len(others) - 1} more)' if len(others) > 1 else ''} "
                "might serve nearly as cheaply"
            ),
        )
    except psycopg.Error as exc:
        raise_if_lost(conn, exc, f"checking the plan stability of {budget.name}")
        note = f"the check failed: {server_message(exc)}"
        return Fragility(Stability.NOT_CHECKED, margin, chosen.cost, note=note, chosen=chosen)


def _needs(version: str | None) -> str:
    have = f"this database has {version}" if version else "this database does not have it"
    return f"needs HypoPG 1.4+ ({have})"


_ORDER = {Stability.FRAGILE: 0, Stability.NOT_CHECKED: 1, Stability.STABLE: 2}


def _worst(found: Sequence[Fragility]) -> Fragility:
    """Fragile before not checked before stable; the cheapest alternative among equals."""
    return min(found, key=lambda f: (_ORDER[f.stability], f.ratio or 0.0))


def applies(budget: QueryBudget, m: Measurement, verdict: Verdict) -> bool:
    """Whether a query's plan stability is checked: it has ``uses_index``, its runs ended
    well, and its plan meets the expectation (a plan that already breaks it is a failure)."""
    return (
        bool(budget.expect.uses_index)
        and m.outcome == Outcome.OK
        and m.plan is not None
        and not any(f.kind == FindingKind.USES_INDEX for f in verdict.findings)
    )


def with_finding(verdict: Verdict, finding: Finding) -> Verdict:
    """``verdict`` with one more finding, its status the worst of them."""
    findings = sorted((*verdict.findings, finding), key=lambda f: -f.status.rank)
    status = max((f.status for f in findings), key=lambda s: s.rank)
    return replace(verdict, status=status, findings=tuple(findings))
