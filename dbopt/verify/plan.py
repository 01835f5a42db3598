"""EXPLAIN (FORMAT JSON) plans as values: the tree of nodes verify measures and judges."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from dbopt.model import DEFAULT_SCHEMA, QualifiedName

#: The node types that scan an index (what ``uses_index`` counts as using it).
INDEX_SCANS = ("Index Scan", "Index Only Scan", "Bitmap Index Scan")
#: The conditions of a node that the plan shows under it, in this order.
_CONDITIONS = ("Index Cond", "Recheck Cond", "Hash Cond", "Merge Cond", "Join Filter", "Filter")


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
    #: Rows a Bitmap Heap Scan read from lossy pages and dropped on rechecking the condition.
    rows_rechecked: float | None = None
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
    def scans_index(self) -> bool:
        """True for an index scan of any kind (it names the index it reads)."""
        return bool(self.index) and self.node_type in INDEX_SCANS

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
        rows_rechecked=total("Rows Removed by Index Recheck"),
        total_ms=total("Actual Total Time"),
        loops=loops,
        conditions=tuple(f"{key}: {raw[key]}" for key in _CONDITIONS if raw.get(key)),
        children=tuple(parse_plan(child) for child in raw.get("Plans", [])),
    )


@dataclass(frozen=True, slots=True)
class IndexUse:
    """One scan of an index in a plan, the index qualified with its table's schema.

    EXPLAIN names an index without its schema; an index always lives in its table's schema,
    which VERBOSE gives on the scan (on the Bitmap Heap Scan above a Bitmap Index Scan).
    """

    index: QualifiedName
    node: PlanNode


def index_uses(plan: PlanNode | None) -> tuple[IndexUse, ...]:
    """Every index scan of the plan, pre-order: under joins, Append and Merge Append,
    BitmapAnd/BitmapOr, InitPlans, SubPlans and CTEs alike (they are all nodes of the tree)."""
    found: list[IndexUse] = []

    def visit(node: PlanNode, above: QualifiedName | None) -> None:
        relation = node.relation or above
        if node.scans_index and node.index:
            schema = relation.schema if relation else DEFAULT_SCHEMA
            found.append(IndexUse(QualifiedName(schema, node.index), node))
        # Only a Bitmap Heap Scan's relation is its Bitmap Index Scans' table.
        below = relation if node.node_type in _BITMAP_PARENTS else None
        for child in node.children:
            visit(child, below)

    if plan is not None:
        visit(plan, None)
    return tuple(found)


#: The nodes whose relation is the table of the Bitmap Index Scans under them.
_BITMAP_PARENTS = ("Bitmap Heap Scan", "BitmapAnd", "BitmapOr")


def rows_examined(plan: PlanNode | None) -> int | None:
    """Rows read by the scan nodes: those kept, removed by a filter or by an index recheck.

    A scan node is one that reads a relation (it names one: Seq, Index, Index Only, Bitmap
    Heap, Tid, Sample, Foreign Scan); a Bitmap Index Scan's rows are TIDs its Bitmap Heap
    Scan reads, so they are not counted twice, and a CTE, function or subquery scan reads
    rows another node already counted or made. EXPLAIN gives each number per loop (averaged
    over the loops, and over leader and workers for a parallel node, whose loops count the
    processes), so each is multiplied by its loops: ``(rows + removed) x loops``, summed,
    rounded. None when the plan carries no actual numbers.
    """
    if plan is None or plan.total_ms is None:
        return None
    total = 0.0
    for node in plan.walk():
        if node.relation is None or node.node_type == "ModifyTable":
            continue
        total += (node.actual_rows or 0.0) + (node.rows_removed or 0.0)
        total += node.rows_rechecked or 0.0
    return round(total)


def plan_shape(plan: PlanNode | None) -> tuple[str, ...]:
    """What baselines compare: each node's type and relation/index, pre-order."""
    return () if plan is None else tuple(node.label for node in plan.walk())


def fmt_count(value: float) -> str:
    """A row count for people: ``49,975``."""
    return f"{value:,.0f}"
