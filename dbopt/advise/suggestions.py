"""From chosen candidates to suggestions: names, reasons, write overhead and new budgets.

Names follow the specs' convention, ``idx_<table>_<key columns>`` (``_<value>`` for a partial
index on one constant, ``_<method>`` for a method other than B-tree), kept within 63 bytes and
never taking a name the database or the specs hold (``_2``, ``_3``... otherwise).

A query a suggestion serves gets a budget unless the specs already budget it (same pglast
fingerprint). Its ``max_cost`` is the estimated cost with the index times
:data:`COST_HEADROOM`: deterministic, the same on any machine, and — since the index at least
halves the cost — lower than the cost without it, so verify fails when the gain is lost. A
``budget_ms`` is added when pg_stat_statements measured the query: its mean time scaled by the
estimated cost ratio, times :data:`TIME_HEADROOM` (p95 against a mean, shared CI machines),
at least :data:`MIN_BUDGET_MS`. Normalised statements have ``$n`` parameters: the budget binds
the most common value of the column each one is compared with (the costliest lookup), the
middle of its histogram for a range, 20 for LIMIT and 0 for OFFSET; a parameter with none of
these gets no budget (said so).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import psycopg

from dbopt.advise.evaluation import THRESHOLD, Evaluation, QueryCost
from dbopt.advise.querytree import TableUse
from dbopt.advise.workload import Source, WorkloadQuery
from dbopt.catalog import catalog_sql, inspect
from dbopt.ddl import derived_name
from dbopt.model import IndexSpec, QualifiedName, SpecSet

#: max_cost = estimated cost with the index x this (< 2: below the cost without it).
COST_HEADROOM = 1.5
#: budget_ms = measured mean x (cost after / cost before) x this.
TIME_HEADROOM = 4.0
MIN_BUDGET_MS = 5.0
_WORD = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True, slots=True)
class WriteLoad:
    """A table's writes since its statistics began: what each new index must keep up with."""

    table: QualifiedName
    inserts: int
    updates: int
    hot_updates: int
    deletes: int
    since: datetime
    age_s: float
    reset: bool

    @property
    def entries(self) -> int:
        """Index entries a new index would have added since then: one per insert and per
        non-HOT update (a partial index fewer)."""
        return self.inserts + self.updates - self.hot_updates

    @property
    def entries_per_hour(self) -> float | None:
        """:attr:`entries` per hour; None when the statistics cover less than an hour (too
        short a window to give a rate)."""
        if self.age_s < 3600:
            return None
        return self.entries / (self.age_s / 3600)

    def text(self) -> str:
        """The write overhead in words."""
        origin = "the last statistics reset" if self.reset else "the server started"
        rate = self.entries_per_hour
        load = (
            f"about {rate:,.0f} index entries per hour to maintain"
            if rate is not None
            else f"{self.entries:,} index entries to maintain in that time (too short a window "
            "for an hourly rate)"
        )
        return (
            f"{self.table} took {self.inserts:,} inserts, {self.updates:,} updates "
            f"({self.hot_updates:,} HOT) and {self.deletes:,} deletes since {origin} "
            f"({self.since:%Y-%m-%d %H:%M}, {_age(self.age_s)} ago): {load}"
        )


@dataclass(frozen=True, slots=True)
class Served:
    """A query a suggestion serves, with its estimated costs."""

    query: WorkloadQuery
    before: float
    #: None: unknown until the index is built (HypoPG does not simulate its method).
    after: float | None
    #: The spec budget that already covers it, if any.
    budgeted_as: str | None = None

    @property
    def change(self) -> float | None:
        """Relative cost change (-0.99: 99 % cheaper); None when the cost after is unknown."""
        if self.after is None:
            return None
        return self.after / self.before - 1 if self.before else 0.0

    def costs_text(self) -> str:
        """``cost 1,200 -> 8 (-99%)``, or what is known of an unsimulated suggestion."""
        if self.after is None or self.change is None:
            return (
                f"estimated cost {self.before:,.0f} -> unknown until built (HypoPG does not "
                "simulate this index method)"
            )
        return f"estimated cost {self.before:,.0f} -> {self.after:,.0f} ({self.change:+.0%})"


@dataclass(frozen=True, slots=True)
class Suggestion:
    """An index to add: its spec (named, with its reason), size and what it serves."""

    spec: IndexSpec
    #: HypoPG's estimate; None when HypoPG does not simulate the method (GIN, GiST).
    size_bytes: int | None
    serves: tuple[Served, ...]
    writes: WriteLoad | None = None

    @property
    def simulated(self) -> bool:
        """HypoPG planned the workload with it (its costs after are the planner's)."""
        return self.size_bytes is not None


@dataclass(frozen=True, slots=True)
class NewBudget:
    """A ``queries:`` entry for a query a suggestion serves, with why its numbers."""

    table: QualifiedName
    name: str
    sql: str
    params: Mapping[str, str]
    max_cost: int
    budget_ms: float | None
    uses_index: str
    why: str


def _age(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 60:.0f} minutes"


def size_text(size: int | None) -> str:
    """Bytes in the unit people read (kB, MB, GB)."""
    if size is None:
        return "size unknown"
    value = float(size)
    for unit in ("bytes", "kB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:,.0f} {unit}" if unit == "bytes" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{value:,.1f} GB"  # pragma: no cover


def _writes(conn: psycopg.Connection[Any]) -> dict[QualifiedName, WriteLoad]:
    out: dict[QualifiedName, WriteLoad] = {}
    for row in conn.execute(catalog_sql("advise_writes")):
        schema, name, ins, upd, hot, dele, since, reset, age = row
        table = QualifiedName(schema, name)
        out[table] = WriteLoad(table, ins, upd, hot, dele, since, float(age or 0), bool(reset))
    return out


def _expression_words(expr: str) -> str:
    """The words of an expression worth a name: ``to_tsvector(CAST('english' AS regconfig),
    COALESCE(body, ''))`` -> ``to_tsvector_body`` (no literals, keywords or cast types)."""
    from pglast.keywords import COL_NAME_KEYWORDS, RESERVED_KEYWORDS

    text = re.sub(r"'(?:[^']|'')*'", " ", expr.lower())
    text = re.sub(r"\bas\s+\w+|::\s*\w+", " ", text)
    words = re.findall(r"[a-z_][a-z0-9_]*", text)
    kept = [w for w in words if w not in RESERVED_KEYWORDS and w not in COL_NAME_KEYWORDS]
    return "_".join(kept) or "expr"


def index_name(spec: IndexSpec, taken: set[str]) -> str:
    """``idx_<table>_<key columns>[_<value>][_<method>]``, within 63 bytes, not in ``taken``."""
    parts = [spec.table.name, *(c.name or _expression_words(c.expr or "") for c in spec.columns)]
    base = "idx_" + "_".join(_WORD.sub("_", p.lower()).strip("_") or "x" for p in parts)
    suffix = ""
    if spec.where is not None:
        value = re.fullmatch(r"(?:\w+|\"[^\"]+\") = '(\w+)'", spec.where)
        suffix += f"_{value.group(1).lower()}" if value else "_partial"
    if spec.method != "btree":
        opclass = spec.columns[0].opclass or ""
        suffix += "_trgm" if "trgm" in opclass else f"_{spec.method}"
    name = derived_name(base, suffix)
    number = 2
    while name in taken:
        name = derived_name(base, f"{suffix}_{number}")
        number += 1
    taken.add(name)
    return name


def _served_text(s: Served) -> str:
    q = s.query
    if q.source == Source.STATEMENTS:
        head = f"pg_stat_statements {q.name} ({q.calls:,} calls, mean {q.mean_ms or 0:.2f} ms)"
    elif q.source == Source.FILE:
        head = f"the query at {q.where}"
    else:
        head = f"budgeted query {q.name}"
    return f"{head}: {s.costs_text()}"


def _reason(
    spec: IndexSpec, served: Sequence[Served], size: int | None, writes: WriteLoad | None
) -> str:
    text = "dbopt advise: " + "; ".join(_served_text(s) for s in served[:3])
    if len(served) > 3:
        text += f"; and {len(served) - 3} more"
    if size is None:
        text += (
            f"; {spec.method.upper()} is the only index method for its operator, and HypoPG "
            "cannot simulate it: size and gain are measured once built (dbopt verify)"
        )
    else:
        text += f"; about {size_text(size)} (HypoPG estimate)"
    if writes is not None:
        text += f"; {writes.text()}"
    return text


# --- budgets ---------------------------------------------------------------------------------


def _params(tree: Mapping[str, Any]) -> dict[int, tuple[str | None, str]]:
    """$n -> (column it is compared with, "eq"/"range"/"limit"/"offset")."""
    found: dict[int, tuple[str | None, str]] = {}

    def param(node: Any) -> int | None:
        while isinstance(node, dict) and "TypeCast" in node:
            node = node["TypeCast"].get("arg")
        if isinstance(node, dict) and "ParamRef" in node:
            return int(node["ParamRef"].get("number", 0))
        return None

    def column(node: Any) -> str | None:
        while isinstance(node, dict) and "TypeCast" in node:
            node = node["TypeCast"].get("arg")
        if isinstance(node, dict) and "ColumnRef" in node:
            fields = node["ColumnRef"].get("fields", [])
            last = fields[-1].get("String", {}).get("sval") if fields else None
            return str(last) if last else None
        return None

    def walk(node: Any) -> Iterator[Mapping[str, Any]]:
        if isinstance(node, dict):
            yield node
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    for node in walk(tree):
        if "SelectStmt" in node:
            stmt = node["SelectStmt"]
            for key, kind in (("limitCount", "limit"), ("limitOffset", "offset")):
                n = param(stmt.get(key))
                if n:
                    found[n] = (None, kind)
        if "A_Expr" not in node:
            continue
        expr = node["A_Expr"]
        kind = "range" if expr.get("kind") == "AEXPR_BETWEEN" else "eq"
        op = "".join(str(x.get("String", {}).get("sval", "")) for x in expr.get("name", []))
        if op in ("<", ">", "<=", ">="):
            kind = "range"
        left, right = expr.get("lexpr"), expr.get("rexpr")
        items = right.get("List", {}).get("items", []) if isinstance(right, dict) else []
        for side, other in ((left, right), (right, left)):
            name = column(side)
            if name is None:
                continue
            for value in [other, *items]:
                n = param(value)
                if n:
                    found.setdefault(n, (name, kind))
    return found


def _values(
    conn: psycopg.Connection[Any], tables: Sequence[QualifiedName]
) -> dict[tuple[QualifiedName, str], tuple[str | None, str | None]]:
    rows = conn.execute(
        catalog_sql("advise_values"),
        {"schemas": [t.schema for t in tables], "names": [t.name for t in tables]},
    )
    return {(QualifiedName(s, n), c): (common, middle) for s, n, c, common, middle in rows}


def _budget(
    q: WorkloadQuery,
    cost: QueryCost,
    after: float | None,
    uses: Sequence[TableUse],
    spec: IndexSpec,
    values: Mapping[tuple[QualifiedName, str], tuple[str | None, str | None]],
    name: str,
) -> NewBudget | str:
    """The budget for ``q`` (named ``name``), or why it gets none. ``after``: its estimated
    cost with ``spec`` (None: unsimulated)."""
    index, table, method = spec.name, spec.table, spec.method.upper()
    params: dict[str, str] = {}
    mapping = _params(q.tree()) if q.parameters else {}
    for n in range(1, q.parameters + 1):
        column, kind = mapping.get(n, (None, "?"))
        value: str | None = {"limit": "20", "offset": "0"}.get(kind)
        if column is not None:
            for use in uses:
                common, middle = values.get((use.table, column), (None, None))
                value = value or (middle if kind == "range" else common or middle)
        if value is None:
            return f"no value to measure parameter ${n} with: write its budget by hand"
        params[f"p{n}"] = value
    text = re.sub(r"\$(\d+)", r"%(p\1)s", q.text.replace("%", "%%"))
    if after is None:
        # Unsimulated (GIN, GiST): the budget asks for the threshold every suggestion meets.
        ratio = 1 - THRESHOLD
        max_cost = math.floor(cost.before * ratio)
        why = (
            f"max_cost: {ratio:.0%} of the estimated cost without {index} "
            f"({cost.before:,.0f}), the threshold of every suggestion: HypoPG cannot simulate "
            f"{method}, so verify tells whether the built index reaches it"
        )
    else:
        ratio = after / cost.before if cost.before else 1.0
        max_cost = math.ceil(after * COST_HEADROOM)
        why = (
            f"max_cost: the estimated cost with {index} ({after:,.0f}) x {COST_HEADROOM}, "
            f"below the {cost.before:,.0f} without it, so verify fails if the gain is lost"
        )
    budget_ms = None
    if q.mean_ms is not None and cost.before:
        scaled = q.mean_ms * ratio * TIME_HEADROOM
        budget_ms = float(max(MIN_BUDGET_MS, math.ceil(scaled)))
        why += (
            f"; budget_ms: the measured mean ({q.mean_ms:.2f} ms) x the estimated cost ratio "
            f"x {TIME_HEADROOM:g} headroom, at least {MIN_BUDGET_MS:g} ms"
        )
    if params:
        why += "; params: the most common value of each compared column (pg_stats)"
    return NewBudget(table, name, text, params, max_cost, budget_ms, index, why)


def _budget_name(name: str, taken: set[str]) -> str:
    """``name``, or ``name_2``, ``name_3``... when a spec budget or a new one has it."""
    found, number = name, 2
    while found in taken:
        found = f"{name}_{number}"
        number += 1
    taken.add(found)
    return found


def suggestions(
    conn: psycopg.Connection[Any],
    evaluation: Evaluation,
    specs: SpecSet,
    uses_of: Mapping[str, tuple[TableUse, ...]],
    budgeted: Mapping[str, str],
) -> tuple[tuple[Suggestion, ...], tuple[NewBudget, ...], tuple[tuple[str, str], ...]]:
    """Name the chosen indexes, give each its reason, and budget the queries they serve.

    Returns the suggestions, the new budgets, and (query, why) for each served query that
    gets no budget (a parameter with no value to measure it with).
    """
    chosen = [c for c in evaluation.chosen if c.serves]
    catalog = inspect(conn, {c.spec.table for c in chosen})
    taken = {n.name for n in catalog.names} | {i.name for i in specs.all_indexes}
    writes = _writes(conn)
    costs = {c.query.name: c for c in evaluation.costs}
    values = _values(conn, sorted({c.spec.table for c in chosen}))
    out: list[Suggestion] = []
    budgets: list[NewBudget] = []
    unbudgeted: list[tuple[str, str]] = []
    budget_names = {b.name for b in specs.queries}
    done: set[str] = set()
    for item in chosen:
        name = index_name(item.spec, taken)
        served = tuple(
            Served(
                costs[n].query,
                costs[n].before,
                costs[n].after if item.simulated else None,
                budgeted.get(n),
            )
            for n in item.serves
        )
        load = writes.get(item.spec.table)
        spec = replace(
            item.spec, name=name, reason=_reason(item.spec, served, item.size_bytes, load)
        )
        out.append(Suggestion(spec, item.size_bytes, served, load))
        for s in served:
            q = s.query
            if s.budgeted_as is not None or q.name in done:
                continue
            done.add(q.name)
            made = _budget(
                q,
                costs[q.name],
                s.after,
                uses_of.get(q.name, ()),
                spec,
                values,
                _budget_name(q.name, budget_names),
            )
            if isinstance(made, NewBudget):
                budgets.append(made)
            else:
                unbudgeted.append((q.name, made))
    return tuple(out), tuple(budgets), tuple(unbudgeted)
