"""Judging a measurement: p95 against the budget, the plan against the expectations, and the
runs against a baseline; the verdict names the plan node that hurt. Pure: no I/O."""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from dbopt.errors import ConfigError
from dbopt.model import IndexSpec, QualifiedName, QueryBudget, SpecSet
from dbopt.verify.budgets import band_text, budget_findings, time_findings

# Re-exported: judging's vocabulary has always been importable from here.
from dbopt.verify.findings import Finding as Finding
from dbopt.verify.findings import FindingKind as FindingKind
from dbopt.verify.findings import Status as Status
from dbopt.verify.measurement import Measurement, Outcome
from dbopt.verify.noise import p95_band
from dbopt.verify.plan import IndexUse, PlanNode, fmt_count, index_uses

if TYPE_CHECKING:
    from dbopt.catalog import Catalog

#: p95 growth against a baseline that counts as a regression (0.20 = 20 %).
DEFAULT_REGRESSION = 0.20
#: ...and the least growth, in milliseconds, that does: sub-millisecond queries jitter by more
#: than 20 % from run to run, and a CI gate that fails at random gets switched off.
DEFAULT_REGRESSION_FLOOR_MS = 1.0


class IndexState(StrEnum):
    """Whether an index of the specs is in the database."""

    PRESENT = "present"
    MISSING = "missing"
    #: It exists, but a failed concurrent build left it INVALID.
    INVALID = "invalid"


_MEANT_STATE = {
    IndexState.MISSING: "in the specs but not built yet: run dbopt apply",
    IndexState.INVALID: "exists but is INVALID (a failed concurrent build): dbopt apply repairs it",
    IndexState.PRESENT: "exists, but the planner did not choose it",
}


@dataclass(frozen=True, slots=True)
class MeantIndex:
    """An index of the specs that was meant to serve a query, and whether it is there.

    ``definition`` is the server's own (``pg_get_indexdef``) when the index exists, else the
    spec's full CREATE INDEX; ``used_by`` names the plan node that scans it, when one does
    (decided by :class:`IndexesUsed`, from the plan that is printed).
    """

    spec: IndexSpec
    state: IndexState
    definition: str = ""
    used_by: str | None = None

    def describe(self) -> str:
        """``CREATE INDEX idx ON public.t USING btree (a DESC) [file:line]: <state> — reason``."""
        head = f"{self.definition or spec_definition(self.spec)} [{self.spec.location}]"
        if self.used_by is not None:
            state = f"the plan uses it ({self.used_by})"
        else:
            state = _MEANT_STATE[self.state]
        reason = f" — {self.spec.reason}" if self.spec.reason else ""
        return f"{head}: {state}{reason}"


def spec_definition(spec: IndexSpec) -> str:
    """The spec's CREATE INDEX in full (DESC, NULLS, opclass, collation, INCLUDE, WHERE...),
    laid out as a DBA writes it."""
    from dbopt.ddl import create_index
    from dbopt.sqlformat import pretty

    text = pretty(create_index(spec, concurrently=False).as_string())
    return " ".join(line.strip() for line in text.splitlines())  # one line, as the server's


@dataclass(frozen=True, slots=True)
class IndexesUsed:
    """The one answer to "does this plan use index X", for every output alike.

    Built from the parsed plan that is printed (:func:`~dbopt.verify.plan.index_uses`): each
    index scan, qualified with its table's schema, counts for that index and for every
    partitioned index it is a partition of (a plan names the partition's index, a spec the
    parent's). ``rename`` maps HypoPG's names to spec names.
    """

    scans: tuple[IndexUse, ...] = ()
    #: For a partition's index, the partitioned indexes above it, nearest first.
    ancestors: Mapping[QualifiedName, tuple[QualifiedName, ...]] = field(default_factory=dict)
    rename: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        plan: PlanNode | None,
        ancestors: Mapping[QualifiedName, tuple[QualifiedName, ...]] | None = None,
        rename: Mapping[str, str] | None = None,
    ) -> IndexesUsed:
        """The indexes ``plan`` uses."""
        return cls(index_uses(plan), ancestors or {}, rename or {})

    def _named(self, use: IndexUse) -> QualifiedName:
        return QualifiedName(use.index.schema, self.rename.get(use.index.name, use.index.name))

    def node_for(self, index: QualifiedName) -> PlanNode | None:
        """The first plan node that scans ``index`` (or a partition of it), or None."""
        for use in self.scans:
            named = self._named(use)
            if index == named or index in self.ancestors.get(use.index, ()):
                return use.node
        return None

    def node_named(self, name: str, candidates: Sequence[QualifiedName]) -> PlanNode | None:
        """The node scanning the index ``name`` resolves to (``candidates``: its qualified
        names in the specs or the database); by bare name when nothing resolves it."""
        if candidates:
            for qname in candidates:
                node = self.node_for(qname)
                if node is not None:
                    return node
            return None
        for use in self.scans:
            names = {self._named(use).name} | {a.name for a in self.ancestors.get(use.index, ())}
            if name in names:
                return use.node
        return None

    @property
    def shown(self) -> str:
        """The indexes scanned, as the plan names them (schema-qualified): for messages."""
        return ", ".join(sorted({str(self._named(u)) for u in self.scans})) or "no index"


def index_candidates(
    name: str, budget: QueryBudget, specs: SpecSet | None, catalog: Catalog | None
) -> tuple[QualifiedName, ...]:
    """The qualified index an expectation's bare ``name`` means: the spec index of that name,
    else the database's indexes of that name (the budget's schema first)."""
    if specs is not None:
        spec = [i.qualified_name for i in specs.all_indexes if i.name == name]
        if spec:
            return tuple(spec)
    if catalog is None:
        return ()
    found = {q for q in catalog.indexes if q.name == name}
    found |= {
        q
        for q, kind in catalog.names.items()
        if q.name == name and kind in ("index", "partitioned index")
    }
    schema = budget.relation.partition(".")[0]
    return tuple(sorted(found, key=lambda q: (q.schema != schema, q.schema)))


class BaselineProblem(StrEnum):
    """Why a file cannot serve as a baseline."""

    MISSING = "missing"
    UNREADABLE = "unreadable"
    NOT_A_REPORT = "not_a_report"
    MALFORMED = "malformed"
    #: None of the queries verified is in it: a baseline of other specs would check nothing.
    DISJOINT = "disjoint"


class BaselineError(ConfigError):
    """A baseline file is missing or is not a report verify saved."""

    def __init__(self, path: Path, problem: BaselineProblem, detail: str) -> None:
        super().__init__(f"baseline {path}: {detail}")
        self.path = path
        self.problem = problem
        #: What is wrong with the file, in words.
        self.detail = detail


@dataclass(frozen=True, slots=True)
class BaselineEntry:
    """One query of an earlier report."""

    p95_ms: float | None
    shape: tuple[str, ...]
    sql_sha256: str | None


@dataclass(frozen=True, slots=True)
class Baseline:
    """An earlier report (see :func:`dbopt.verify.report.load_baseline`), by query name."""

    path: str
    entries: Mapping[str, BaselineEntry] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Pass, warn or fail for one query, with the findings and the node that hurt."""

    query: str
    status: Status
    findings: tuple[Finding, ...] = ()
    culprit: PlanNode | None = None
    culprit_why: str | None = None
    meant: tuple[MeantIndex, ...] = ()
    #: The noise band of the p95 (:func:`~dbopt.verify.noise.p95_band`), when it was measured.
    p95_band: tuple[float, float] | None = None

    @property
    def reasons(self) -> tuple[str, ...]:
        """The messages of the findings that decided the status (fail ones, or warn ones)."""
        return tuple(f.message for f in self.findings if f.status == self.status)

    @property
    def retryable(self) -> bool:
        """True when re-measuring could change the verdict: a time finding is unstable or
        fails, and nothing that does not depend on time (an expectation, a deterministic
        budget, an error) fails."""
        timed = any(
            f.kind.timed and f.status in (Status.UNSTABLE, Status.FAIL) for f in self.findings
        )
        fixed = any(not f.kind.timed and f.status == Status.FAIL for f in self.findings)
        return timed and not fixed

    @property
    def summary(self) -> str:
        """One line: the first deciding reason, or 'within budget'."""
        reasons = self.reasons
        if self.status == Status.PASS or not reasons:
            return "within budget"
        more = f" (+{len(reasons) - 1} more)" if len(reasons) > 1 else ""
        return reasons[0] + more


def query_fingerprint(budget: QueryBudget) -> str:
    """sha256 of the query text and its parameters: baselines compare only like with like."""
    body = json.dumps([budget.sql, dict(budget.params)], sort_keys=True, default=str)
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def _relations_of(table: QualifiedName, catalog: Catalog | None) -> set[QualifiedName]:
    """A table and, when it is partitioned, its partitions at every level (their scans count
    as its scans)."""
    found = {table}
    todo = [table]
    while todo and catalog is not None:
        relation = catalog.relations.get(todo.pop())
        for partition in relation.partitions if relation is not None else ():
            if partition not in found:
                found.add(partition)
                todo.append(partition)
    return found


def _index_state(candidates: Sequence[QualifiedName], catalog: Catalog | None) -> IndexState | None:
    """Whether the index is in the database (the first of ``candidates`` that is), if known."""
    if catalog is None:
        return None
    for qname in candidates:
        index = catalog.indexes.get(qname)
        if index is not None:
            return IndexState.PRESENT if index.is_valid else IndexState.INVALID
        if catalog.names.get(qname) in ("index", "partitioned index"):
            return IndexState.PRESENT  # known by name only (its table was not inspected)
    return IndexState.MISSING


def _waste(node: PlanNode) -> str:
    """``read 50,000 rows to keep 25 (99.9% removed by its filter)``, or "" when none was."""
    kept = node.actual_rows or 0.0
    read = kept + (node.rows_removed or 0.0)
    if not node.rows_removed or not read:
        return ""
    # Rounded down: 49,983 of 50,000 is "99.9%", never a misleading "100%".
    share = math.floor(node.rows_removed / read * 1000) / 10
    return (
        f"read {fmt_count(read)} rows to keep {fmt_count(kept)} ({share:g}% removed by its filter)"
    )


def _culprit(
    plan: PlanNode, forbidden: Mapping[QualifiedName, QualifiedName]
) -> tuple[PlanNode, str]:
    """The node that hurt most, and why: a forbidden seq scan, a wasteful one, the slowest."""
    nodes = list(plan.walk())
    for node in nodes:
        if (
            node.node_type == "Seq Scan"
            and node.relation is not None
            and node.relation in forbidden
        ):
            why = f"a Seq Scan, which expect.no_seq_scan_on forbids on {forbidden[node.relation]}"
            waste = _waste(node)
            return node, why + (f": {waste}" if waste else "")
    wasteful = [
        n
        for n in nodes
        if n.node_type == "Seq Scan"
        and n.rows_removed is not None
        and n.rows_removed > (n.actual_rows or 0.0)
    ]
    if wasteful:
        node = max(wasteful, key=lambda n: n.rows_removed or 0.0)
        return node, _waste(node)
    if plan.total_ms is not None:
        node = max(nodes, key=lambda n: n.exclusive_ms or 0.0)
        share = (node.exclusive_ms or 0.0) / plan.total_ms if plan.total_ms else 0.0
        return node, f"{node.exclusive_ms or 0.0:.3f} ms, {share:.0%} of the time, spent here"
    filtered = [n for n in nodes if n.node_type == "Seq Scan" and n.conditions]
    if filtered:
        node = max(filtered, key=lambda n: n.cost)
        return node, (
            f"estimated: reads all of {node.relation} and filters it "
            f"(cost {node.cost:,.2f} of {plan.cost:,.2f})"
        )
    node = max(nodes, key=lambda n: n.exclusive_cost)
    return node, f"estimated: the costliest node (cost {node.exclusive_cost:,.2f})"


def _parents(relation: QualifiedName, catalog: Catalog | None) -> set[QualifiedName]:
    """A relation and the partitioned tables it is a partition of, at every level (a
    sub-partition's grandparent's specs serve it too)."""
    found = {relation}
    if catalog is None:
        return found
    parent_of = {p: r.name for r in catalog.relations.values() for p in r.partitions}
    while relation in parent_of and parent_of[relation] not in found:
        relation = parent_of[relation]
        found.add(relation)
    return found


def _meant_indexes(
    budget: QueryBudget,
    specs: SpecSet | None,
    catalog: Catalog | None,
    culprit: PlanNode | None,
    used: IndexesUsed,
) -> tuple[MeantIndex, ...]:
    """The spec indexes meant to serve a query: its uses_index, else those on the hurt table
    that lead with a column the query names of that table (before PostgreSQL 18, one that
    leads with another column cannot serve it; from 18 any key may, by skip scan); each with
    its definition and, when the plan scans it, the node that does."""
    if specs is None:
        return ()
    by_name = {i.name: i for i in specs.all_indexes}
    chosen = [by_name[n] for n in budget.expect.uses_index if n in by_name]
    if not chosen and culprit is not None and culprit.relation is not None:
        tables = _parents(culprit.relation, catalog)
        # PostgreSQL 18 skips through a leading column the query does not name (skip scan).
        any_key = catalog is not None and catalog.server_version >= 180000
        chosen = []
        for spec in specs.all_indexes:
            if spec.table not in tables:
                continue
            named = _query_columns(budget, spec.table)
            keys = _key_columns(spec, every=any_key)
            if named is None or keys & named:
                chosen.append(spec)
    meant = []
    for spec in chosen:
        state = _index_state((spec.qualified_name,), catalog) or IndexState.PRESENT
        found = catalog.indexes.get(spec.qualified_name) if catalog else None
        node = used.node_for(spec.qualified_name)
        meant.append(
            MeantIndex(
                spec,
                state,
                definition=found.definition if found else spec_definition(spec),
                used_by=node.label if node is not None else None,
            )
        )
    return tuple(meant)


def _query_columns(budget: QueryBudget, table: QualifiedName) -> frozenset[str] | None:
    """The columns of ``table`` a budget's query names (None: that cannot be told from its
    text -- a view, a function, USING -- so every index of the table counts)."""
    from dbopt.sqltext import SqlTextError, table_columns

    try:
        return table_columns(budget.sql, table, with_placeholders=budget.uses_placeholders)
    except SqlTextError:
        return None


def _key_columns(spec: IndexSpec, *, every: bool) -> frozenset[str]:
    """The columns an index's first key names (its column, or those of its expression); with
    ``every``, those of all its keys."""
    from dbopt.sqltext import SqlTextError, expression_columns

    out: set[str] = set()
    for column in spec.columns if every else spec.columns[:1]:
        if column.name:
            out.add(column.name)
            continue
        try:
            out.update(expression_columns(column.expr or ""))
        except SqlTextError:
            continue
    return frozenset(out)


_UNUSED_BECAUSE = {
    IndexState.MISSING: " — it is not in the database yet: run dbopt apply",
    IndexState.INVALID: " — it exists but is INVALID: dbopt apply repairs it",
}


def expectation_findings(
    budget: QueryBudget,
    plan: PlanNode,
    catalog: Catalog | None,
    *,
    estimated: bool,
    rename: Mapping[str, str] | None = None,
    say_missing: bool = True,
    specs: SpecSet | None = None,
    ancestors: Mapping[QualifiedName, tuple[QualifiedName, ...]] | None = None,
) -> list[Finding]:
    """uses_index and no_seq_scan_on checked against a plan.

    Whether an index is used is :class:`IndexesUsed`'s answer for ``plan`` (``ancestors``:
    the partitioned indexes above the partitions' indexes it names; ``rename`` maps
    hypothetical index names to spec names); ``specs`` and ``catalog`` say which index a bare
    name means. ``say_missing`` adds "not built yet: run dbopt apply" to an unused index the
    catalog does not have.
    """
    findings: list[Finding] = []
    used = IndexesUsed.of(plan, ancestors, rename)
    by = " by the estimated plan" if estimated else ""
    within = " in the estimated plan" if estimated else ""
    for name in budget.expect.uses_index:
        candidates = index_candidates(name, budget, specs, catalog)
        if used.node_named(name, candidates) is not None:
            continue
        state = _index_state(candidates, catalog) if say_missing else None
        why = _UNUSED_BECAUSE.get(state, "") if state is not None else ""
        findings.append(
            Finding(
                Status.FAIL,
                FindingKind.USES_INDEX,
                f"expected index {name} is not used{by} (it uses {used.shown}){why}",
            )
        )
    for table in budget.expect.no_seq_scan_on:
        scanned = _relations_of(table, catalog)
        for node in plan.walk():
            if node.node_type == "Seq Scan" and node.relation in scanned:
                findings.append(
                    Finding(
                        Status.FAIL,
                        FindingKind.NO_SEQ_SCAN_ON,
                        f"Seq Scan on {node.relation}{within} (expect.no_seq_scan_on: {table})",
                    )
                )
                break
    return findings


def _shape_change(before: Sequence[str], after: Sequence[str]) -> str:
    gone = Counter(before) - Counter(after)
    new = Counter(after) - Counter(before)
    parts = [f"- {label}" for label in sorted(gone.elements())]
    parts += [f"+ {label}" for label in sorted(new.elements())]
    return "; ".join(parts) or "same nodes, in another order"


def _regression_line(before_ms: float, threshold: float, floor_ms: float) -> float:
    """The p95 above which a query regressed against a baseline p95 of ``before_ms``: more
    than ``threshold`` slower, and by at least ``floor_ms``."""
    return max(before_ms * (1 + threshold), before_ms + floor_ms)


def _regression(
    p95: float | None,
    before: float | None,
    threshold: float,
    floor_ms: float,
    band: tuple[float, float] | None,
) -> Finding | None:
    """p95 against the baseline's, judged like budget_ms (see :mod:`~dbopt.verify.budgets`):
    the regression line inside the p95's noise ``band`` is unstable (one slow run in five
    must not fail a gate by itself), a p95 over it with the band above it fails."""
    # As fast as the baseline or faster (to the microsecond EXPLAIN reports: interpolating
    # equal runs may add a float's last digit): no sign of a regression, noisy or not.
    if p95 is None or before is None or round(p95, 3) <= round(before, 3):
        return None
    line = _regression_line(before, threshold, floor_ms)
    growth = (p95 - before) / before if before > 0 else math.inf
    numbers = f"{before:.3f} -> {p95:.3f} ms; threshold {threshold:.0%}, floor {floor_ms:g} ms"
    if band is not None and band[0] <= line <= band[1]:
        side = "over" if p95 > line else "under"
        return Finding(
            Status.UNSTABLE,
            FindingKind.REGRESSION,
            f"p95 {growth:+.0%} against the baseline ({numbers}) is {side} the regression "
            f"line {line:.3f} ms, but the line is within the measured noise "
            f"({band_text(band)}): this machine cannot tell a regression from noise now",
        )
    if p95 > line:
        return Finding(
            Status.FAIL,
            FindingKind.REGRESSION,
            f"p95 regressed {growth:+.0%} against the baseline ({numbers})",
        )
    return None


def _baseline_findings(
    m: Measurement,
    budget: QueryBudget,
    entry: BaselineEntry | None,
    baseline: Baseline,
    threshold: float,
    floor_ms: float,
    band: tuple[float, float] | None,
) -> list[Finding]:
    if entry is None:
        # Warned, not passed in silence: its time goes unchecked (a new query: save anew).
        return [
            Finding(
                Status.WARN,
                FindingKind.NOTE,
                f"not in the baseline {baseline.path}: its p95 is not compared (a query added "
                "since: save a new baseline with --save)",
            )
        ]
    if entry.sql_sha256 and entry.sql_sha256 != query_fingerprint(budget):
        return [
            Finding(
                Status.PASS, FindingKind.NOTE, "the query or its params changed since the baseline"
            )
        ]
    findings: list[Finding] = []
    regressed = _regression(m.p95_ms, entry.p95_ms, threshold, floor_ms, band)
    if regressed is not None:
        findings.append(regressed)
    if entry.shape and m.shape and tuple(entry.shape) != m.shape:
        findings.append(
            Finding(
                Status.WARN,
                FindingKind.PLAN_CHANGED,
                f"the plan changed shape since the baseline: {_shape_change(entry.shape, m.shape)}",
            )
        )
    return findings


def judge(
    m: Measurement,
    budget: QueryBudget,
    *,
    catalog: Catalog | None = None,
    specs: SpecSet | None = None,
    baseline: Baseline | None = None,
    threshold: float = DEFAULT_REGRESSION,
    regression_floor_ms: float = DEFAULT_REGRESSION_FLOOR_MS,
    ancestors: Mapping[QualifiedName, tuple[QualifiedName, ...]] | None = None,
    spread_ms: float = 0.0,
    jitter: float | None = None,
) -> Verdict:
    """Judge a measurement: p95 against budget_ms/warn_ms within its noise band (``spread_ms``:
    the machine's, see :mod:`~dbopt.verify.noise`), the deterministic budgets, the
    expectations, the baseline.

    ``catalog`` words findings about missing or INVALID indexes and expands partitioned
    tables; ``specs`` names the indexes meant to serve a failing query; ``ancestors`` (see
    :func:`dbopt.verify.run.index_ancestors`) lets a partition's index count for the
    partitioned index it belongs to. Pure: no I/O.
    """
    band = p95_band(m.execution_ms, spread_ms, jitter) if m.outcome == Outcome.OK else None
    findings = time_findings(m, budget, band) + budget_findings(m, budget)
    used = IndexesUsed.of(m.plan, ancestors)
    if m.plan is not None:
        findings += expectation_findings(
            budget, m.plan, catalog, estimated=not m.analyzed, specs=specs, ancestors=ancestors
        )
    if baseline is not None and m.outcome == Outcome.OK:
        entry = baseline.entries.get(budget.name)
        findings += _baseline_findings(
            m, budget, entry, baseline, threshold, regression_floor_ms, band
        )
    status = max((f.status for f in findings), key=lambda s: s.rank, default=Status.PASS)
    culprit: tuple[PlanNode, str] | None = None
    if m.plan is not None:
        forbidden = {
            rel: table
            for table in budget.expect.no_seq_scan_on
            for rel in _relations_of(table, catalog)
        }
        culprit = _culprit(m.plan, forbidden)
    meant = _meant_indexes(budget, specs, catalog, culprit[0] if culprit else None, used)
    return Verdict(
        query=budget.name,
        status=status,
        # The worst first; among passes, notes before the budgets that were met.
        findings=tuple(
            sorted(
                findings,
                key=lambda f: (-f.status.rank, f.status == Status.PASS and f.kind.judges),
            )
        ),
        culprit=culprit[0] if culprit else None,
        culprit_why=culprit[1] if culprit else None,
        meant=meant if status != Status.PASS else (),
        p95_band=band,
    )
