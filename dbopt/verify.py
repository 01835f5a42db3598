"""`dbopt verify`: budgeted queries measured with EXPLAIN ANALYZE and judged against the specs.

How the numbers are made (the CLI says so above every report):

* Every time is the server's own: ``Execution Time`` and ``Planning Time`` of
  ``EXPLAIN (ANALYZE, BUFFERS, VERBOSE, FORMAT JSON)``. Network round trips and client-side
  time are not included, and EXPLAIN ANALYZE's per-node timing adds some overhead of its own.
* ``warmup`` runs are discarded, then ``runs`` runs are recorded. p50 and p95 are
  ``statistics.quantiles(times, n=100, method="inclusive")``: linear interpolation between the
  two closest ranks (numpy's default); with a single run every percentile is that run.
* Buffers, rows and the plan shown are those of the last recorded run.

Safety, so that pointing verify at production is fine: verify changes nothing. Before the
first query runs, :func:`check_budgets` refuses (exit 2, file:line, nothing run) any budget
whose query can reach something that changes data, sequences, statistics, settings, other
sessions or server state: a deny-listed built-in, a VOLATILE function, a view, policy,
operator, cast or function body that runs one (see :mod:`dbopt.readonly`, read from the
database's own catalog). Then every run is its own READ ONLY transaction, always rolled back,
under a ``statement_timeout`` of the budget's ``timeout_ms`` or else
``max(1 s, budget_ms * verify_timeout_factor)``, so a missing index cannot turn into a
ten-minute sequential scan, and a write that got past the checks is refused by the server.
The query text passes :func:`dbopt.sqltext.budget_query_sql` (the parser accepts one
read-only statement) and its parameters are bound by psycopg. verify never runs ANALYZE or
any other statement that writes; running a query is observed like any query (pg_stat_* scan
counters, pg_stat_statements), which is not a change. ``--hypothetical`` adds HypoPG
hypothetical indexes to its own backend's memory and drops exactly those before it returns.

The library measures (:func:`measure`), judges (:func:`judge`) and returns reports
(:func:`run_verify`, :func:`run_hypothetical`); the CLI renders them.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from dbopt.catalog import Catalog, inspect
from dbopt.config import Settings
from dbopt.db import server_message
from dbopt.errors import ConfigError, ConnectError, InputError, Problem, SpecError
from dbopt.model import (
    DEFAULT_SCHEMA,
    IndexSpec,
    Location,
    QualifiedName,
    QueryBudget,
    SpecSet,
    parse_qualified,
)
from dbopt.readonly import CallGraph
from dbopt.sqltext import SqlTextError, budget_query_sql
from dbopt.words import suggest

#: p95 growth against a baseline that counts as a regression (0.20 = 20 %).
DEFAULT_REGRESSION = 0.20
#: ...and the least growth, in milliseconds, that does: sub-millisecond queries jitter by more
#: than 20 % from run to run, and a CI gate that fails at random gets switched off.
DEFAULT_REGRESSION_FLOOR_MS = 1.0
#: The shortest statement_timeout derived from a budget.
MIN_TIMEOUT_MS = 1_000
#: Format version of the JSON report (what --save writes and --baseline reads).
REPORT_VERSION = 1

TIMING_NOTE = (
    "times are the server's execution time from EXPLAIN ANALYZE (no network or client time; "
    "EXPLAIN's own timing overhead included); p50/p95 interpolated between ranks "
    "(statistics.quantiles, inclusive)"
)

_INDEX_SCANS = ("Index Scan", "Index Only Scan", "Bitmap Index Scan")
_CONDITIONS = ("Index Cond", "Recheck Cond", "Hash Cond", "Merge Cond", "Join Filter", "Filter")

Outcome = Literal["ok", "timeout", "error"]


class Status(StrEnum):
    """A query's verdict; warn still passes (exit 0)."""

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"


_RANK = {Status.PASS: 0, Status.WARN: 1, Status.FAIL: 2}


# --- plans ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlanNode:
    """One node of an EXPLAIN plan; actual numbers are totals over all loops (None: estimated)."""

    node_type: str
    relation: QualifiedName | None = None
    index: str | None = None
    cost: float = 0.0
    plan_rows: float = 0.0
    actual_rows: float | None = None
    rows_removed: float | None = None
    total_ms: float | None = None
    loops: int | None = None
    conditions: tuple[str, ...] = ()
    children: tuple[PlanNode, ...] = ()

    def walk(self) -> Iterator[PlanNode]:
        """This node and its descendants, pre-order."""
        yield self
        for child in self.children:
            yield from child.walk()

    @property
    def label(self) -> str:
        """``Index Scan using idx on public.t``, ``Seq Scan on public.t``, ``Hash Join``."""
        text = self.node_type
        if self.index:
            text += f" using {self.index}"
        if self.relation:
            text += f" on {self.relation}"
        return text

    @property
    def never_executed(self) -> bool:
        """EXPLAIN ANALYZE ran the query but this node never ran (loops = 0)."""
        return self.loops == 0

    @property
    def exclusive_ms(self) -> float | None:
        """Time spent in this node itself (children subtracted), when it was measured."""
        if self.total_ms is None:
            return None
        below = sum(c.total_ms or 0.0 for c in self.children)
        return max(0.0, self.total_ms - below)

    @property
    def exclusive_cost(self) -> float:
        """The planner's estimated cost of this node itself."""
        return max(0.0, self.cost - sum(c.cost for c in self.children))


def parse_plan(raw: Mapping[str, Any]) -> PlanNode:
    """A PlanNode tree from the ``"Plan"`` object of EXPLAIN (FORMAT JSON)."""
    loops_raw = raw.get("Actual Loops")
    loops = int(loops_raw) if loops_raw is not None else None
    times = 1 if loops is None else loops

    def total(key: str) -> float | None:
        value = raw.get(key)
        return None if value is None or loops is None else float(value) * times

    relation = None
    if raw.get("Relation Name"):
        # VERBOSE adds "Schema"; without it a plan does not say, and public is the best guess.
        relation = QualifiedName(raw.get("Schema") or DEFAULT_SCHEMA, raw["Relation Name"])
    return PlanNode(
        node_type=str(raw.get("Node Type", "?")),
        relation=relation,
        index=raw.get("Index Name"),
        cost=float(raw.get("Total Cost", 0.0)),
        plan_rows=float(raw.get("Plan Rows", 0.0)),
        actual_rows=total("Actual Rows"),
        rows_removed=total("Rows Removed by Filter"),
        total_ms=total("Actual Total Time"),
        loops=loops,
        conditions=tuple(f"{key}: {raw[key]}" for key in _CONDITIONS if raw.get(key)),
        children=tuple(parse_plan(child) for child in raw.get("Plans", [])),
    )


def plan_shape(plan: PlanNode | None) -> tuple[str, ...]:
    """What baselines compare: each node's type and relation/index, pre-order."""
    return () if plan is None else tuple(node.label for node in plan.walk())


def _fmt_count(value: float) -> str:
    return f"{value:,.0f}"


def _node_numbers(node: PlanNode) -> str:
    if node.never_executed:
        return "never executed"
    if node.actual_rows is None:
        return f"estimated rows {_fmt_count(node.plan_rows)}, cost {node.cost:,.2f}"
    parts = [f"rows {_fmt_count(node.actual_rows)}"]
    if node.rows_removed:
        parts.append(f"removed by filter {_fmt_count(node.rows_removed)}")
    if node.loops and node.loops > 1:
        parts.append(f"loops {node.loops}")
    if node.total_ms is not None:
        parts.append(f"{node.total_ms:.3f} ms")
    return ", ".join(parts)


def plan_lines(
    plan: PlanNode, mark: PlanNode | None = None, why: str | None = None
) -> list[tuple[str, bool]]:
    """The plan as indented lines, each with True when it belongs to the marked node."""
    lines: list[tuple[str, bool]] = []

    def visit(node: PlanNode, depth: int) -> None:
        marked = node is mark
        indent = "  " * depth + ("-> " if depth else "")
        note = f"   <== {why}" if marked and why else ("   <==" if marked else "")
        lines.append((f"{indent}{node.label}  ({_node_numbers(node)}){note}", marked))
        pad = "  " * depth + ("   " if depth else "") + "   "
        lines.extend((f"{pad}{cond}", marked) for cond in node.conditions)
        for child in node.children:
            visit(child, depth + 1)

    visit(plan, 0)
    return lines


def plan_text(plan: PlanNode, mark: PlanNode | None = None, why: str | None = None) -> str:
    """The plan as indented text, the marked node flagged with ``<==``."""
    return "\n".join(line for line, _ in plan_lines(plan, mark, why))


# --- measuring -----------------------------------------------------------------------------


def _percentile(values: Sequence[float], pct: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


@dataclass(frozen=True, slots=True)
class Measurement:
    """What the runs of one budgeted query showed."""

    query: str
    outcome: Outcome
    timeout_ms: int
    warmup: int = 0
    #: Execution and planning time of each recorded run, in order.
    execution_ms: tuple[float, ...] = ()
    planning_ms: tuple[float, ...] = ()
    #: The last recorded run's plan; after a timeout or error, the planner's estimate if any.
    plan: PlanNode | None = None
    shared_hit: int | None = None
    shared_read: int | None = None
    rows: int | None = None
    error: str | None = None

    @property
    def analyzed(self) -> bool:
        """True when the plan carries actual numbers (not only the planner's estimates)."""
        return self.plan is not None and self.plan.total_ms is not None

    @property
    def p50_ms(self) -> float | None:
        """Median execution time."""
        return _percentile(self.execution_ms, 50) if self.execution_ms else None

    @property
    def p95_ms(self) -> float | None:
        """95th percentile of execution time (what budgets are judged on)."""
        return _percentile(self.execution_ms, 95) if self.execution_ms else None

    @property
    def max_ms(self) -> float | None:
        """Slowest recorded run."""
        return max(self.execution_ms) if self.execution_ms else None

    @property
    def planning_p50_ms(self) -> float | None:
        """Median planning time."""
        return _percentile(self.planning_ms, 50) if self.planning_ms else None

    @property
    def indexes_used(self) -> tuple[str, ...]:
        """Names of the indexes the plan scans, sorted."""
        if self.plan is None:
            return ()
        return tuple(
            sorted({n.index for n in self.plan.walk() if n.index and n.node_type in _INDEX_SCANS})
        )

    @property
    def scans(self) -> tuple[str, ...]:
        """The scan nodes of the plan (``Seq Scan on public.t``, ``Index Scan using ...``)."""
        if self.plan is None:
            return ()
        return tuple(n.label for n in self.plan.walk() if n.node_type.endswith("Scan"))

    @property
    def shape(self) -> tuple[str, ...]:
        """The plan's shape, as baselines compare it."""
        return plan_shape(self.plan)


def statement_timeout_ms(budget: QueryBudget, settings: Settings) -> int:
    """The statement_timeout of each run: timeout_ms, else budget_ms times the factor (≥ 1 s)."""
    if budget.timeout_ms is not None:
        return math.ceil(budget.timeout_ms)
    return max(MIN_TIMEOUT_MS, math.ceil(budget.budget_ms * settings.verify_timeout_factor))


def _explain_query(budget: QueryBudget, *, analyze: bool) -> sql.Composed:
    options = "ANALYZE, BUFFERS, VERBOSE, FORMAT JSON" if analyze else "VERBOSE, FORMAT JSON"
    return sql.SQL("EXPLAIN ({}) {}").format(sql.SQL(options), budget_query_sql(budget.sql))


def _read_only(conn: psycopg.Connection[Any], timeout_ms: int) -> psycopg.Cursor[Any]:
    """Open the current transaction's cursor after making it read-only and time-limited."""
    cur = conn.cursor()
    cur.execute("SET TRANSACTION READ ONLY")
    cur.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(timeout_ms)))
    return cur


def explain(
    conn: psycopg.Connection[Any], budget: QueryBudget, timeout_ms: int, *, analyze: bool
) -> dict[str, Any]:
    """Run EXPLAIN (with ANALYZE or without) on one budget, read-only and rolled back.

    ``conn`` must not be inside a transaction (dbopt.db.connect gives autocommit connections).
    Returns the top object of the JSON plan; raises psycopg errors as they come.
    """
    params = dict(budget.params) if budget.uses_placeholders else None
    with conn.transaction(force_rollback=True), _read_only(conn, timeout_ms) as cur:
        cur.execute(_explain_query(budget, analyze=analyze), params)
        row = cur.fetchone()
    if row is None:  # pragma: no cover - EXPLAIN always returns its row
        raise ValueError("EXPLAIN returned no row")
    doc = json.loads(row[0]) if isinstance(row[0], str) else row[0]
    top: dict[str, Any] = doc[0]
    return top


def _lost(conn: psycopg.Connection[Any], budget: QueryBudget, exc: psycopg.Error) -> None:
    if conn.closed or conn.broken:
        raise ConnectError(
            f"lost the connection while measuring {budget.name}: {server_message(exc)}"
        ) from None


def measure(conn: psycopg.Connection[Any], budget: QueryBudget, settings: Settings) -> Measurement:
    """Run ``warmup`` unrecorded and ``runs`` recorded EXPLAIN ANALYZE runs of one budget.

    A statement_timeout ends the measurement with outcome "timeout", any other server error
    (a read-only violation, a missing relation...) with outcome "error"; both keep the
    planner's estimated plan when plain EXPLAIN can still produce one. Raises ConnectError
    when the connection is lost.
    """
    timeout = statement_timeout_ms(budget, settings)
    execution: list[float] = []
    planning: list[float] = []
    last: dict[str, Any] | None = None
    for run in range(budget.warmup + budget.runs):
        stop: tuple[Outcome, str] | None = None
        try:
            top = explain(conn, budget, timeout, analyze=True)
        except pg_errors.QueryCanceled as exc:
            _lost(conn, budget, exc)
            message = server_message(exc)
            kind: Outcome = "timeout" if "statement timeout" in message else "error"
            stop = (kind, message)
        except psycopg.Error as exc:
            _lost(conn, budget, exc)
            stop = ("error", server_message(exc))
        if stop is not None:
            return Measurement(
                query=budget.name,
                outcome=stop[0],
                timeout_ms=timeout,
                warmup=budget.warmup,
                execution_ms=tuple(execution),
                planning_ms=tuple(planning),
                plan=_estimated_plan(conn, budget, timeout),
                error=stop[1],
            )
        if run >= budget.warmup:
            execution.append(float(top["Execution Time"]))
            planning.append(float(top.get("Planning Time", 0.0)))
            last = top
    assert last is not None  # runs >= 1 (the spec schema's minimum)
    raw_plan = last["Plan"]
    rows = raw_plan.get("Actual Rows")
    return Measurement(
        query=budget.name,
        outcome="ok",
        timeout_ms=timeout,
        warmup=budget.warmup,
        execution_ms=tuple(execution),
        planning_ms=tuple(planning),
        plan=parse_plan(raw_plan),
        # Buffer counts of a node include its children's: the top node holds the query's.
        shared_hit=int(raw_plan.get("Shared Hit Blocks", 0)),
        shared_read=int(raw_plan.get("Shared Read Blocks", 0)),
        rows=None if rows is None else int(rows),
    )


def _estimated_plan(
    conn: psycopg.Connection[Any], budget: QueryBudget, timeout_ms: int
) -> PlanNode | None:
    """The planner's plan without running the query (to explain a timeout), if it has one."""
    try:
        return parse_plan(explain(conn, budget, timeout_ms, analyze=False)["Plan"])
    except psycopg.Error as exc:
        _lost(conn, budget, exc)
        return None


# --- judging -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    """One reason behind a verdict; kind is budget, warn, timeout, error, uses_index,
    no_seq_scan_on, regression, plan_changed or note."""

    status: Status
    kind: str
    message: str


@dataclass(frozen=True, slots=True)
class MeantIndex:
    """An index of the specs that was meant to serve a query, and whether it is there."""

    spec: IndexSpec
    state: Literal["present", "missing", "invalid"]

    def describe(self) -> str:
        """``idx on public.t (a, b): in the specs, not built yet: run dbopt apply``."""
        cols = ", ".join(c.name or f"({c.expr})" for c in self.spec.columns)
        where = f" WHERE {self.spec.where}" if self.spec.where else ""
        head = f"{self.spec.name} on {self.spec.table} ({cols}){where} [{self.spec.location}]"
        tail = {
            "missing": "in the specs but not built yet: run dbopt apply",
            "invalid": "exists but is INVALID (a failed concurrent build): dbopt apply repairs it",
            "present": "exists, but the planner did not choose it",
        }[self.state]
        reason = f" — {self.spec.reason}" if self.spec.reason else ""
        return f"{head}: {tail}{reason}"


@dataclass(frozen=True, slots=True)
class BaselineEntry:
    """One query of an earlier report."""

    p95_ms: float | None
    shape: tuple[str, ...]
    sql_sha256: str | None


@dataclass(frozen=True, slots=True)
class Baseline:
    """An earlier report (written with --save), by query name."""

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

    @property
    def reasons(self) -> tuple[str, ...]:
        """The messages of the findings that decided the status (fail ones, or warn ones)."""
        return tuple(f.message for f in self.findings if f.status == self.status)

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
    """A table and, when it is partitioned, its partitions (their scans count as its scans)."""
    found = {table}
    relation = catalog.relations.get(table) if catalog else None
    if relation is not None:
        found.update(relation.partitions)
    return found


def _index_state(
    name: str, table: QualifiedName | None, catalog: Catalog | None
) -> Literal["present", "missing", "invalid"] | None:
    if catalog is None:
        return None
    for qname, index in catalog.indexes.items():
        if qname.name == name and (table is None or qname.schema == table.schema):
            return "present" if index.is_valid else "invalid"
    return "missing"


def _culprit(
    plan: PlanNode, forbidden: Mapping[QualifiedName, QualifiedName]
) -> tuple[PlanNode, str] | None:
    """The node that hurt most, and why: a forbidden seq scan, a wasteful one, the slowest."""
    nodes = list(plan.walk())

    def waste(node: PlanNode) -> str:
        kept = node.actual_rows or 0.0
        read = kept + (node.rows_removed or 0.0)
        if not node.rows_removed or not read:
            return ""
        # Rounded down: 49,983 of 50,000 is "99.9%", never a misleading "100%".
        share = math.floor(node.rows_removed / read * 1000) / 10
        return (
            f"read {_fmt_count(read)} rows to keep {_fmt_count(kept)} "
            f"({share:g}% removed by its filter)"
        )

    for node in nodes:
        if (
            node.node_type == "Seq Scan"
            and node.relation is not None
            and node.relation in forbidden
        ):
            why = f"a Seq Scan, which expect.no_seq_scan_on forbids on {forbidden[node.relation]}"
            return node, why + (f": {waste(node)}" if waste(node) else "")
    wasteful = [
        n
        for n in nodes
        if n.node_type == "Seq Scan"
        and n.rows_removed is not None
        and n.rows_removed > (n.actual_rows or 0.0)
    ]
    if wasteful:
        node = max(wasteful, key=lambda n: n.rows_removed or 0.0)
        return node, waste(node)
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


def _meant_indexes(
    budget: QueryBudget,
    specs: SpecSet | None,
    catalog: Catalog | None,
    culprit: PlanNode | None,
) -> tuple[MeantIndex, ...]:
    """The spec indexes meant to serve a query: its uses_index, else those on the hurt table."""
    if specs is None:
        return ()
    by_name = {i.name: i for i in specs.all_indexes}
    chosen = [by_name[n] for n in budget.expect.uses_index if n in by_name]
    if not chosen and culprit is not None and culprit.relation is not None:
        chosen = [i for i in specs.all_indexes if i.table == culprit.relation]
    return tuple(
        MeantIndex(spec, _index_state(spec.name, spec.table, catalog) or "present")
        for spec in chosen
    )


def _expectation_findings(
    budget: QueryBudget,
    plan: PlanNode,
    catalog: Catalog | None,
    estimated: bool,
    rename: Mapping[str, str] | None = None,
    say_missing: bool = True,
) -> list[Finding]:
    """uses_index and no_seq_scan_on checked against a plan.

    ``rename`` maps hypothetical index names to spec names; ``say_missing`` adds "not built
    yet: run dbopt apply" to an unused index the catalog does not have.
    """
    findings: list[Finding] = []
    rename = rename or {}
    used = {
        rename.get(n.index, n.index) for n in plan.walk() if n.index and n.node_type in _INDEX_SCANS
    }
    shown = ", ".join(sorted(used)) or "no index"
    by = " by the estimated plan" if estimated else ""
    within = " in the estimated plan" if estimated else ""
    for name in budget.expect.uses_index:
        if name in used:
            continue
        state = _index_state(name, None, catalog) if say_missing else None
        why = {
            "missing": " — it is not in the database yet: run dbopt apply",
            "invalid": " — it exists but is INVALID: dbopt apply repairs it",
        }.get(state or "", "")
        findings.append(
            Finding(
                Status.FAIL,
                "uses_index",
                f"expected index {name} is not used{by} (it uses {shown}){why}",
            )
        )
    for table in budget.expect.no_seq_scan_on:
        scanned = _relations_of(table, catalog)
        for node in plan.walk():
            if node.node_type == "Seq Scan" and node.relation in scanned:
                findings.append(
                    Finding(
                        Status.FAIL,
                        "no_seq_scan_on",
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


def _baseline_findings(
    m: Measurement,
    budget: QueryBudget,
    entry: BaselineEntry | None,
    baseline: Baseline,
    threshold: float,
    floor_ms: float,
) -> list[Finding]:
    if entry is None:
        return [Finding(Status.PASS, "note", f"not in the baseline {baseline.path}")]
    if entry.sql_sha256 and entry.sql_sha256 != query_fingerprint(budget):
        return [Finding(Status.PASS, "note", "the query or its params changed since the baseline")]
    findings: list[Finding] = []
    p95 = m.p95_ms
    if p95 is not None and entry.p95_ms is not None:
        growth = (p95 - entry.p95_ms) / entry.p95_ms if entry.p95_ms > 0 else math.inf
        if growth > threshold and p95 - entry.p95_ms >= floor_ms:
            findings.append(
                Finding(
                    Status.FAIL,
                    "regression",
                    f"p95 regressed {growth:+.0%} against the baseline "
                    f"({entry.p95_ms:.3f} -> {p95:.3f} ms; threshold {threshold:.0%})",
                )
            )
    if entry.shape and m.shape and tuple(entry.shape) != m.shape:
        findings.append(
            Finding(
                Status.WARN,
                "plan_changed",
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
) -> Verdict:
    """Judge a measurement: p95 against budget_ms/warn_ms, the expectations, the baseline.

    ``catalog`` words findings about missing or INVALID indexes and expands partitioned
    tables; ``specs`` names the indexes meant to serve a failing query. Pure: no I/O.
    """
    findings: list[Finding] = []
    if m.outcome == "timeout":
        findings.append(
            Finding(
                Status.FAIL,
                "timeout",
                f"stopped by statement_timeout after {m.timeout_ms} ms (budget "
                f"{budget.budget_ms:g} ms); the plan shown is the planner's estimate",
            )
        )
    elif m.outcome == "error":
        findings.append(Finding(Status.FAIL, "error", f"the query failed: {m.error}"))
    elif m.p95_ms is not None:
        numbers = f"p50 {m.p50_ms or 0.0:.3f} ms, max {m.max_ms or 0.0:.3f} ms"
        if m.p95_ms > budget.budget_ms:
            findings.append(
                Finding(
                    Status.FAIL,
                    "budget",
                    f"p95 {m.p95_ms:.3f} ms is over the budget of {budget.budget_ms:g} ms "
                    f"({numbers})",
                )
            )
        elif budget.warn_ms is not None and m.p95_ms > budget.warn_ms:
            findings.append(
                Finding(
                    Status.WARN,
                    "warn",
                    f"p95 {m.p95_ms:.3f} ms is over warn_ms {budget.warn_ms:g} ms "
                    f"(budget {budget.budget_ms:g} ms)",
                )
            )
    if m.plan is not None:
        findings += _expectation_findings(budget, m.plan, catalog, estimated=not m.analyzed)
    if baseline is not None and m.outcome == "ok":
        entry = baseline.entries.get(budget.name)
        findings += _baseline_findings(m, budget, entry, baseline, threshold, regression_floor_ms)
    status = max((f.status for f in findings), key=_RANK.__getitem__, default=Status.PASS)
    culprit: tuple[PlanNode, str] | None = None
    if m.plan is not None:
        forbidden = {
            rel: table
            for table in budget.expect.no_seq_scan_on
            for rel in _relations_of(table, catalog)
        }
        culprit = _culprit(m.plan, forbidden)
    meant = _meant_indexes(budget, specs, catalog, culprit[0] if culprit else None)
    return Verdict(
        query=budget.name,
        status=status,
        findings=tuple(sorted(findings, key=lambda f: -_RANK[f.status])),
        culprit=culprit[0] if culprit else None,
        culprit_why=culprit[1] if culprit else None,
        meant=meant if status != Status.PASS else (),
    )


# --- selecting and checking ----------------------------------------------------------------


def select_budgets(
    specs: SpecSet, queries: Sequence[str] = (), tables: Sequence[str] = ()
) -> tuple[QueryBudget, ...]:
    """The budgets named by --query/--table (all when neither); ConfigError for unknown names.

    ``tables`` match the table or view of the file a query is written in.
    """
    every = specs.queries
    if not every:
        raise ConfigError(
            "the specs have no budgeted queries (a queries: list in an index or view file); "
            "nothing to verify"
        )
    names = [q.name for q in every]
    for name in queries:
        if name not in names:
            raise ConfigError(
                f"--query {name}: no budgeted query has that name" + suggest(name, names)
            )
    relations = sorted({q.relation for q in every})
    wanted: set[str] = set()
    for text in tables:
        try:
            table = str(parse_qualified(text))
        except ValueError as exc:
            raise ConfigError(f"--table {text}: {exc}") from None
        if table not in relations:
            raise ConfigError(
                f"--table {text}: no budgeted query is written for {table}"
                + (suggest(table, relations) or f"; tables with queries: {', '.join(relations)}")
            )
        wanted.add(table)
    chosen = tuple(
        q
        for q in every
        if (not queries or q.name in queries) and (not wanted or q.relation in wanted)
    )
    if not chosen:
        raise ConfigError("--query and --table together select no query")
    return chosen


def _at(loc: Location, message: str) -> Problem:
    return loc.problem(message)


def check_budgets(
    budgets: Sequence[QueryBudget], specs: SpecSet, catalog: Catalog, calls: CallGraph
) -> None:
    """Raise SpecError, before anything runs, for what makes a budget impossible to judge or
    unsafe to run (``calls``: the database's CallGraph, see :func:`budget_problems`)."""
    problems = budget_problems(budgets, specs, catalog, calls)
    if problems:
        count = len(problems)
        raise SpecError(
            f"{count} problem{'s' if count != 1 else ''} in the query budgets; nothing was run",
            problems,
        )


def budget_problems(
    budgets: Sequence[QueryBudget], specs: SpecSet, catalog: Catalog, calls: CallGraph
) -> list[Problem]:
    """What makes budgets impossible to judge or unsafe to run (also checked by `validate --dsn`).

    An expectation naming an index that is neither in the specs nor in the database, or a
    table that does not exist, is a mistake in the spec, not a failed check. So is a query
    the budget SQL door refuses, and one that can reach anything that changes something on
    this database (``calls``: its CallGraph, read with ``CallGraph.read(conn)``).
    """
    problems: list[Problem] = []
    index_names = {i.name for i in specs.all_indexes} | {
        n.name for n, kind in catalog.names.items() if kind in ("index", "partitioned index")
    }
    relations = set(catalog.relations) | {v.name for v in specs.views}
    for budget in budgets:
        try:
            budget_query_sql(budget.sql)
        except SqlTextError as exc:
            problems.append(budget.location.problem(f"query {budget.name}: cannot be run: {exc}"))
        else:
            for refusal in calls.refusals(budget.sql, with_placeholders=True):
                problems.append(budget.location.problem(f"query {budget.name}: {refusal}"))
        for name in budget.expect.uses_index:
            if name not in index_names:
                problems.append(
                    _at(
                        budget.location,
                        f"query {budget.name}: expect.uses_index names '{name}', which is "
                        "neither in the specs nor in the database"
                        + suggest(name, sorted(index_names)),
                    )
                )
        for table in budget.expect.no_seq_scan_on:
            if table not in relations:
                problems.append(
                    _at(
                        budget.location,
                        f"query {budget.name}: expect.no_seq_scan_on names {table}, which "
                        "does not exist" + suggest(str(table), sorted(str(r) for r in relations)),
                    )
                )
    return problems


# --- the whole run -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueryResult:
    """One budget, what its runs showed, and the verdict."""

    budget: QueryBudget
    measurement: Measurement
    verdict: Verdict


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """Every selected budget, measured and judged."""

    results: tuple[QueryResult, ...]
    server_version: int
    baseline: str | None = None
    threshold: float = DEFAULT_REGRESSION

    def count(self, status: Status) -> int:
        """How many queries got ``status``."""
        return sum(1 for r in self.results if r.verdict.status == status)

    @property
    def failed(self) -> tuple[QueryResult, ...]:
        """The results that fail (the CLI exits 1 when there is any)."""
        return tuple(r for r in self.results if r.verdict.status == Status.FAIL)


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
) -> VerifyReport:
    """Measure and judge the selected budgets on ``conn`` (autocommit), in spec order.

    Raises ConfigError for an unknown --query/--table, SpecError for a budget that cannot be
    judged (nothing runs then), ConnectError when the connection is lost.
    """
    chosen = select_budgets(specs, queries, tables)
    catalog = inspect(conn, specs.relations())
    check_budgets(chosen, specs, catalog, CallGraph.read(conn))
    results = []
    for budget in chosen:
        if progress is not None:
            progress(budget)
        m = measure(conn, budget, settings)
        verdict = judge(
            m,
            budget,
            catalog=catalog,
            specs=specs,
            baseline=baseline,
            threshold=threshold,
            regression_floor_ms=regression_floor_ms,
        )
        results.append(QueryResult(budget, m, verdict))
    return VerifyReport(
        tuple(results),
        catalog.server_version,
        baseline=baseline.path if baseline else None,
        threshold=threshold,
    )


# --- reports as data (JSON output, --save, --baseline) -------------------------------------


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def result_dict(result: QueryResult) -> dict[str, Any]:
    """One query of the JSON report."""
    b, m, v = result.budget, result.measurement, result.verdict
    return {
        "name": b.name,
        "table": b.relation,
        "location": str(b.location),
        "status": v.status.value,
        "outcome": m.outcome,
        "p50_ms": _round(m.p50_ms),
        "p95_ms": _round(m.p95_ms),
        "max_ms": _round(m.max_ms),
        "budget_ms": b.budget_ms,
        "warn_ms": b.warn_ms,
        "planning_ms": _round(m.planning_p50_ms),
        "shared_hit": m.shared_hit,
        "shared_read": m.shared_read,
        "rows": m.rows,
        "runs": len(m.execution_ms),
        "warmup": m.warmup,
        "timeout_ms": m.timeout_ms,
        "indexes": list(m.indexes_used),
        "scans": list(m.scans),
        "plan_shape": list(m.shape),
        "sql_sha256": query_fingerprint(b),
        "findings": [
            {"status": f.status.value, "kind": f.kind, "message": f.message} for f in v.findings
        ],
        "culprit": v.culprit.label if v.culprit else None,
        "culprit_why": v.culprit_why,
        "meant_indexes": [mi.describe() for mi in v.meant],
        "plan": plan_text(m.plan, v.culprit, v.culprit_why) if m.plan else None,
        "execution_ms": [round(t, 3) for t in m.execution_ms],
    }


def report_dict(report: VerifyReport) -> dict[str, Any]:
    """The report as JSON-ready data: what --format json prints and --save writes."""
    return {
        "dbopt_verify": REPORT_VERSION,
        "server_version": report.server_version,
        "timing": TIMING_NOTE,
        "baseline": report.baseline,
        "regression_threshold": report.threshold,
        "summary": {s.value: report.count(s) for s in Status},
        "queries": [result_dict(r) for r in report.results],
    }


def load_baseline(path: Path) -> Baseline:
    """Read a report written by ``--save``; ConfigError when it is missing or not one."""
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--baseline {path}: no such file (write one with --save)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"--baseline {path}: not a dbopt verify report: {exc}") from None
    if not isinstance(data, dict) or data.get("dbopt_verify") != REPORT_VERSION:
        raise ConfigError(
            f"--baseline {path}: not a dbopt verify report (version {REPORT_VERSION}); "
            "write one with dbopt verify --save FILE"
        )
    entries: dict[str, BaselineEntry] = {}
    for item in data.get("queries", []):
        try:
            p95 = item.get("p95_ms")
            entries[str(item["name"])] = BaselineEntry(
                p95_ms=None if p95 is None else float(p95),
                shape=tuple(str(s) for s in item.get("plan_shape", [])),
                sql_sha256=item.get("sql_sha256"),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ConfigError(f"--baseline {path}: a query entry is malformed: {item!r}") from None
    return Baseline(str(path), entries)


# --- hypothetical indexes (HypoPG) ---------------------------------------------------------


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
    row = conn.execute(
        "SELECT (SELECT extversion FROM pg_extension WHERE extname = 'hypopg'),"
        " (SELECT default_version FROM pg_available_extensions WHERE name = 'hypopg')"
    ).fetchone()
    return (row[0], row[1]) if row else (None, None)


def require_hypopg(conn: psycopg.Connection[Any], *, create: bool = False) -> str:
    """The installed HypoPG version; with ``create``, CREATE EXTENSION it when only available.

    Raises InputError (exit 2) saying how to get HypoPG: dbopt does not change a database
    unless asked.
    """
    installed, available = hypopg_versions(conn)
    if installed:
        return installed
    major = conn.info.server_version // 10000
    if not available:
        raise InputError(
            "--hypothetical needs the HypoPG extension, which this server does not have: "
            f"install it on the database server (Debian/Ubuntu: apt-get install "
            f"postgresql-{major}-hypopg; RHEL: dnf install hypopg_{major}; or build it from "
            "https://github.com/HypoPG/hypopg), then run CREATE EXTENSION hypopg in this "
            "database; nothing was run"
        )
    if not create:
        raise InputError(
            f"--hypothetical needs the HypoPG extension: the server has it ({available}) but "
            f"this database ({conn.info.dbname}) does not; run CREATE EXTENSION hypopg there, "
            "or pass --create-extension; nothing was run"
        )
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS hypopg")
    except psycopg.Error as exc:
        raise InputError(
            f"could not create the HypoPG extension: {server_message(exc)}; nothing was run"
        ) from None
    return hypopg_versions(conn)[0] or available


def _hypopg_function(conn: psycopg.Connection[Any], name: str) -> sql.Identifier:
    row = conn.execute(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
        " WHERE e.extname = 'hypopg'"
    ).fetchone()
    return sql.Identifier(row[0], name) if row else sql.Identifier(name)


def _hypothetical_oids(conn: psycopg.Connection[Any]) -> set[int]:
    """The OIDs of the hypothetical indexes of this backend (HypoPG's ``hypopg()``)."""
    rows = conn.execute(
        sql.SQL("SELECT indexrelid::int8 FROM {}()").format(_hypopg_function(conn, "hypopg"))
    ).fetchall()
    return {int(row[0]) for row in rows}


def _plain_plan(
    conn: psycopg.Connection[Any], budget: QueryBudget, timeout_ms: int
) -> PlanNode | str:
    """The estimated plan, or the server's error message."""
    try:
        return parse_plan(explain(conn, budget, timeout_ms, analyze=False)["Plan"])
    except psycopg.Error as exc:
        _lost(conn, budget, exc)
        return server_message(exc)


def _create_hypothetical(
    conn: psycopg.Connection[Any], spec: IndexSpec, create_fn: sql.Identifier
) -> HypoIndex:
    from dbopt.ddl import create_index

    statement = create_index(spec, concurrently=False).as_string(conn)
    try:
        # HypoPG keeps hypothetical indexes in this backend's memory, not in the catalog:
        # they outlive the rolled-back transaction until hypopg_reset().
        with conn.transaction(force_rollback=True), _read_only(conn, MIN_TIMEOUT_MS) as cur:
            cur.execute(sql.SQL("SELECT indexname FROM {}(%s)").format(create_fn), [statement])
            row = cur.fetchone()
    except psycopg.Error as exc:
        if conn.closed or conn.broken:
            raise ConnectError(f"lost the connection: {server_message(exc)}") from None
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
    before = {b.name: _plain_plan(conn, b, timeouts[b.name]) for b in chosen}
    existing = _hypothetical_oids(conn)
    try:
        create_fn = _hypopg_function(conn, "hypopg_create_index")
        hypo = tuple(_create_hypothetical(conn, spec, create_fn) for spec in missing)
        after = {b.name: _plain_plan(conn, b, timeouts[b.name]) for b in chosen}
    finally:
        if not (conn.closed or conn.broken):
            # Those this call made, even when it stopped half-way; the caller's stay.
            drop_fn = _hypopg_function(conn, "hypopg_drop_index")
            for oid in sorted(_hypothetical_oids(conn) - existing):
                conn.execute(sql.SQL("SELECT {}(%s)").format(drop_fn), [oid])
    rename = {h.hypo_name: h.spec.name for h in hypo if h.hypo_name}
    results = [_what_if(b, before[b.name], after[b.name], rename, catalog) for b in chosen]
    return HypotheticalReport(version, hypo, tuple(results), catalog.server_version)


def _what_if(
    budget: QueryBudget,
    before: PlanNode | str,
    after: PlanNode | str,
    rename: Mapping[str, str],
    catalog: Catalog,
) -> WhatIf:
    for plan in (before, after):
        if isinstance(plan, str):
            return WhatIf(
                budget, Status.FAIL, (Finding(Status.FAIL, "error", f"the query failed: {plan}"),)
            )
    assert isinstance(before, PlanNode) and isinstance(after, PlanNode)
    # Judged as if the specs were applied: hypothetical indexes count under their spec names.
    findings = _expectation_findings(
        budget, after, catalog, estimated=True, rename=rename, say_missing=False
    )
    used = sorted(
        {
            rename[n.index]
            for n in after.walk()
            if n.index is not None and n.index in rename and n.node_type in _INDEX_SCANS
        }
    )
    status = Status.FAIL if findings else Status.PASS
    shown = {hypo: f"{name} (hypothetical)" for hypo, name in rename.items()}
    after = _renamed(after, shown)
    return WhatIf(
        budget,
        status,
        tuple(findings),
        cost_before=before.cost,
        cost_after=after.cost,
        would_use=tuple(used),
        plan_before=before,
        plan_after=after,
    )


def _renamed(plan: PlanNode, names: Mapping[str, str]) -> PlanNode:
    """The plan with HypoPG's index names (``<13556>btree_t_v``) replaced by spec names."""
    return replace(
        plan,
        index=names.get(plan.index, plan.index) if plan.index else None,
        children=tuple(_renamed(child, names) for child in plan.children),
    )


def hypothetical_dict(report: HypotheticalReport) -> dict[str, Any]:
    """The hypothetical report as JSON-ready data."""
    return {
        "dbopt_verify_hypothetical": REPORT_VERSION,
        "server_version": report.server_version,
        "hypopg_version": report.hypopg_version,
        "note": "estimated by the planner (EXPLAIN without ANALYZE); nothing was built",
        "indexes": [
            {
                "name": h.spec.name,
                "table": str(h.spec.table),
                "hypothetical_name": h.hypo_name,
                "error": h.error,
            }
            for h in report.indexes
        ],
        "queries": [
            {
                "name": q.budget.name,
                "table": q.budget.relation,
                "status": q.status.value,
                "cost_before": q.cost_before,
                "cost_after": q.cost_after,
                "cost_change": None if q.change is None else round(q.change, 4),
                "would_use": list(q.would_use),
                "findings": [
                    {"status": f.status.value, "kind": f.kind, "message": f.message}
                    for f in q.findings
                ],
                "plan_before": plan_text(q.plan_before) if q.plan_before else None,
                "plan_after": plan_text(q.plan_after) if q.plan_after else None,
            }
            for q in report.queries
        ],
    }


def explanation(result: QueryResult) -> str:
    """Why a query did not pass, as text: its reasons, the plan with the node that hurt marked,
    and the spec indexes meant to serve it (for terminals, Markdown and JUnit alike)."""
    m, v = result.measurement, result.verdict
    lines = [f"- {f.status.value}: {f.message}" for f in v.findings]
    if m.plan is not None:
        which = "plan of the last run" if m.analyzed else "estimated plan (EXPLAIN without ANALYZE)"
        lines += ["", f"{which}:", plan_text(m.plan, v.culprit, v.culprit_why)]
    if v.meant:
        lines += ["", "meant to be served by:"] + [f"  {mi.describe()}" for mi in v.meant]
    return "\n".join(lines)
