"""EXPLAIN (FORMAT JSON) plans as values: the tree of nodes verify measures and judges.

On a Citus coordinator the plan of a query on a distributed table is one ``Custom Scan
(Citus Adaptive)`` whose ``Distributed Query`` holds the plan each task ran on its shard
(``Job`` -> ``Tasks`` -> ``Remote Plan``; every task with ``citus.explain_all_tasks``, which
verify sets: see Citus's src/backend/distributed/planner/multi_explain.c, ExplainJob,
ExplainTask, ExplainTaskPlacement). Those plans become children of the Custom Scan like any
other node, their shard names (``orders_102008``, ``orders_code_102008``) read back as the
coordinator's (``orders``, ``orders_code``), each node marked with the shard and node it ran
on, so ``uses_index`` and ``no_seq_scan_on`` see what the shards do and a bad plan says where.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
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
    #: Where a Citus task ran this node: ``shard 102008 on 127.0.0.1:5433`` (None: here).
    shard: str | None = None

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
        if self.shard:
            text += f" in {self.shard}"
        return text

    @property
    def shape_label(self) -> str:
        """The label without the shard (shards move; the shape of the plan does not)."""
        return replace(self, shard=None).label if self.shard else self.label

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
        children=tuple(parse_plan(child) for child in raw.get("Plans", []))
        + _distributed(raw.get("Distributed Query")),
    )


# --- Citus: the plans of the tasks inside a distributed plan ---------------------------------

#: A shard's name: its table's (or index's) name, an underscore, the shard id.
_SHARD_SUFFIX = re.compile(r"^(?P<base>.+)_(?P<shard>[0-9]+)$")
#: The ``Node`` of a task: ``host=127.0.0.1 port=5433 dbname=app``.
_NODE = re.compile(r"host=(?P<host>\S+) port=(?P<port>[0-9]+)")


def _distributed(query: Any) -> tuple[PlanNode, ...]:
    """The plans inside Citus's ``Distributed Query``: its subplans' and its job's tasks'."""
    if not isinstance(query, Mapping):
        return ()
    out: list[PlanNode] = []
    for subplan in query.get("Subplans") or ():
        if isinstance(subplan, Mapping):
            out.extend(parse_plan(top["Plan"]) for top in _plans(subplan.get("PlannedStmt")))
    job = query.get("Job")
    if isinstance(job, Mapping):
        out.extend(_job(job))
    return tuple(out)


def _job(job: Mapping[str, Any]) -> Iterator[PlanNode]:
    """Each task's remote plan (a task whose plan Citus could not get has none), then those
    of the jobs it depends on (re-partition joins)."""
    for task in job.get("Tasks") or ():
        if not isinstance(task, Mapping):
            continue
        found = _NODE.search(str(task.get("Node", "")))
        node = f"{found['host']}:{found['port']}" if found else "a worker"
        for top in _plans(task.get("Remote Plan")):
            yield _on_shard(parse_plan(top["Plan"]), node)
    for dependent in job.get("Dependent Jobs") or ():
        if isinstance(dependent, Mapping):
            yield from _job(dependent)


def _plans(value: Any) -> list[Mapping[str, Any]]:
    """The ``{"Plan": ...}`` objects in a remote EXPLAIN's output, however Citus nested its
    rows (a list of rows, each the remote server's JSON list)."""
    if isinstance(value, Mapping):
        return [value] if isinstance(value.get("Plan"), Mapping) else []
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [top for item in value for top in _plans(item)]
    return []


def _on_shard(plan: PlanNode, node: str) -> PlanNode:
    """A task's plan in the coordinator's names: ``orders_102008`` is shard 102008 of
    ``orders``, and ``orders_code_102008`` that shard's copy of index ``orders_code``. Each node
    is marked with the shard (of its own relation, else the task's first) and the node."""
    shards = [
        m["shard"]
        for n in plan.walk()
        if n.relation is not None and (m := _SHARD_SUFFIX.match(n.relation.name))
    ]
    first = shards[0] if shards else None

    def rename(n: PlanNode) -> PlanNode:
        relation, shard = n.relation, first
        if relation is not None and (m := _SHARD_SUFFIX.match(relation.name)):
            relation, shard = QualifiedName(relation.schema, m["base"]), m["shard"]
        index = n.index
        if index is not None:
            for sid in dict.fromkeys([shard, *shards]):
                if sid is not None and index.endswith(f"_{sid}"):
                    index = index[: -len(sid) - 1]
                    break
        return replace(
            n,
            relation=relation,
            index=index,
            shard=f"shard {shard} on {node}" if shard else f"a task on {node}",
            children=tuple(rename(c) for c in n.children),
        )

    return rename(plan)


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
    return () if plan is None else tuple(node.shape_label for node in plan.walk())


def fmt_count(value: float) -> str:
    """A row count for people: ``49,975``."""
    return f"{value:,.0f}"
