"""The values every part of dbopt shares: names, locations, the spec objects, outcomes.

Plain frozen dataclasses and enums with no I/O: the catalog, the planner, the history and the
CLI import them from here without importing the YAML loader that builds the specs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from psycopg import sql

from dbopt.errors import Problem

DEFAULT_SCHEMA = "public"


@dataclass(frozen=True, slots=True)
class Location:
    """Where a spec item was written."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"

    def problem(self, message: str) -> Problem:
        """A problem found at this location."""
        return Problem(self.file, self.line, self.column, message)


@dataclass(frozen=True, slots=True, order=True)
class QualifiedName:
    """A schema-qualified relation name, exactly as PostgreSQL stores it."""

    schema: str
    name: str

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"

    def ident(self) -> sql.Identifier:
        """The name as a composable SQL identifier."""
        return sql.Identifier(self.schema, self.name)


def parse_qualified(text: str, default_schema: str = DEFAULT_SCHEMA) -> QualifiedName:
    """``schema.name`` or ``name`` (in ``default_schema``); raises ValueError otherwise."""
    parts = text.strip().split(".")
    if len(parts) == 1 and parts[0]:
        return QualifiedName(default_schema, parts[0])
    if len(parts) == 2 and all(parts):
        return QualifiedName(parts[0], parts[1])
    raise ValueError(f"'{text}' is not a relation name: write name or schema.name")


@dataclass(frozen=True, slots=True)
class IndexColumn:
    """One key column of an index: a column name or a (normalized) expression."""

    name: str | None = None
    expr: str | None = None
    order: str | None = None
    nulls: str | None = None
    opclass: str | None = None
    collation: str | None = None


@dataclass(frozen=True, slots=True)
class IndexSpec:
    """An index dbopt keeps in place, on a table or on a materialized view."""

    name: str
    table: QualifiedName
    columns: tuple[IndexColumn, ...]
    location: Location
    method: str = "btree"
    unique: bool = False
    nulls_not_distinct: bool = False
    include: tuple[str, ...] = ()
    where: str | None = None
    storage: tuple[tuple[str, str], ...] = ()
    reason: str | None = None
    #: schema.name: indexes live in their table's schema (computed once: a plan of 10,000
    #: specs asks for it 70,000 times).
    qualified_name: QualifiedName = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "qualified_name", QualifiedName(self.table.schema, self.name))

    @property
    def plain_columns(self) -> bool:
        """True when every key column is a plain column (no expression)."""
        return all(c.expr is None for c in self.columns)


@dataclass(frozen=True, slots=True)
class Expectation:
    """What the plan of a budgeted query must show."""

    uses_index: tuple[str, ...] = ()
    no_seq_scan_on: tuple[QualifiedName, ...] = ()
    #: How much costlier the best plan without a uses_index index must be than the chosen
    #: one (1.1 = 10 %) for the plan to count as stable (None: verify's --plan-margin).
    plan_margin: float | None = None


@dataclass(frozen=True, slots=True)
class QueryBudget:
    """A query that matters, with its budgets: a p95 latency (``budget_ms``) and/or the
    deterministic ones (``max_buffers``, ``max_rows_examined``, ``max_cost``); at least one."""

    name: str
    sql: str
    #: p95 execution time target; None when only deterministic budgets are given.
    budget_ms: float | None
    location: Location
    #: The table or view of the spec file the budget is written in ("schema.name").
    relation: str
    params: Mapping[str, Any] = field(default_factory=dict)
    uses_placeholders: bool = False
    warn_ms: float | None = None
    runs: int = 20
    warmup: int = 3
    timeout_ms: float | None = None
    description: str | None = None
    expect: Expectation = Expectation()
    #: Shared buffers (hit + read) of the execution, at most.
    max_buffers: int | None = None
    #: Rows read by the scan nodes (kept + removed by filters and rechecks), at most.
    max_rows_examined: int | None = None
    #: The planner's total cost of the top plan node, at most.
    max_cost: float | None = None


@dataclass(frozen=True, slots=True)
class RefreshSpec:
    """When and how a materialized view is refreshed."""

    schedule: str | None = None
    mode: str = "auto"


@dataclass(frozen=True, slots=True)
class ViewSpec:
    """A materialized view dbopt keeps in place."""

    name: QualifiedName
    query: str
    location: Location
    indexes: tuple[IndexSpec, ...] = ()
    refresh: RefreshSpec = RefreshSpec()
    depends_on: tuple[QualifiedName, ...] = ()
    queries: tuple[QueryBudget, ...] = ()
    reason: str | None = None
    #: Where each depends_on entry was written (same order), so errors can point at it.
    depends_on_at: tuple[Location, ...] = field(default=(), compare=False)

    def concurrent_refresh_index(self) -> IndexSpec | None:
        """A unique index PostgreSQL accepts for REFRESH ... CONCURRENTLY, if there is one."""
        for index in self.indexes:
            if index.unique and index.plain_columns and index.where is None:
                return index
        return None


@dataclass(frozen=True, slots=True)
class SpecSet:
    """Everything the spec files say, validated."""

    indexes: tuple[IndexSpec, ...] = ()
    views: tuple[ViewSpec, ...] = ()
    index_queries: tuple[QueryBudget, ...] = ()
    files: tuple[str, ...] = ()

    @property
    def queries(self) -> tuple[QueryBudget, ...]:
        """Every budgeted query, from index files and view files."""
        return self.index_queries + tuple(q for v in self.views for q in v.queries)

    @property
    def all_indexes(self) -> tuple[IndexSpec, ...]:
        """Table indexes and the indexes of materialized views."""
        return self.indexes + tuple(i for v in self.views for i in v.indexes)

    def relations(self) -> set[QualifiedName]:
        """Every relation the specs name: tables, views, the tables budgets expect things of
        (what inspection may size and deparse, and so wait for)."""
        named = {s.table for s in self.indexes} | {v.name for v in self.views}
        for budget in self.queries:
            named.update(budget.expect.no_seq_scan_on)
            try:
                named.add(parse_qualified(budget.relation))
            except ValueError:
                continue
        return named


class ChangeOutcome(StrEnum):
    """How one change (an action of a run) ended."""

    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"
    ABORTED = "aborted"  # Ctrl-C, or dbopt stopped
    SKIPPED = "skipped"  # not dbopt's object (any more): left alone, says why


class RunOutcome(StrEnum):
    """How a whole run ended."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"
    #: Stopped before a build it was about to start (standbys too far behind for too long):
    #: every change it made is whole; the rest was not started.
    STOPPED = "stopped"


class RefreshOutcome(StrEnum):
    """How one refresh of a materialized view ended."""

    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"  # already running elsewhere, or what it reads failed
