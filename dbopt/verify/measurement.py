"""Measuring one budgeted query: EXPLAIN ANALYZE runs, read-only, rolled back, time-limited.

Every time is the server's own (``Execution Time`` and ``Planning Time`` of EXPLAIN ANALYZE);
``warmup`` runs are discarded, then ``runs`` runs are recorded; percentiles interpolate
between ranks. Each run is its own READ ONLY transaction, always rolled back, under the
statement_timeout of :func:`statement_timeout_ms`.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from dbopt.config import Settings
from dbopt.db import read_only_transaction, server_message
from dbopt.errors import ConnectError
from dbopt.model import QueryBudget
from dbopt.sqltext import budget_query_sql, check_query
from dbopt.verify.params import bind, indeterminate, register
from dbopt.verify.plan import PlanNode, index_uses, parse_plan, plan_shape, rows_examined

#: The shortest statement_timeout derived from a budget.
MIN_TIMEOUT_MS = 1_000
#: The statement_timeout of a budget with neither timeout_ms nor budget_ms (deterministic
#: budgets only): no latency to scale, and a CI query on seeded data should not take longer.
DEFAULT_TIMEOUT_MS = 10_000

#: Set in every EXPLAIN's transaction: on a Citus coordinator, the plan of every task (on
#: every shard), not only the slowest one's (dbopt.verify.plan reads them). Elsewhere it is an
#: unused placeholder setting, gone with the transaction.
EXPLAIN_SETTINGS = {"citus.explain_all_tasks": "on"}

TIMING_NOTE = (
    "times are the server's execution time from EXPLAIN ANALYZE (no network or client time; "
    "EXPLAIN's own timing overhead included); p50/p95 interpolated between ranks "
    "(statistics.quantiles, inclusive)"
)


class Outcome(StrEnum):
    """How the runs of one budgeted query ended."""

    OK = "ok"
    #: Stopped by its statement_timeout.
    TIMEOUT = "timeout"
    #: Any other server error (a read-only violation, a missing relation...).
    ERROR = "error"


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
    #: Rows read by the scan nodes of the last recorded run (:func:`rows_examined`).
    rows_examined: int | None = None
    #: How many measurements the runs were pooled from (1, plus one per retry).
    measurements: int = 1

    @property
    def buffers(self) -> int | None:
        """Shared buffers of the last recorded run's execution: hit + read.

        Which of the two a page is depends on what the cache held (the first run reads what
        later runs hit); the sum depends only on the plan and the data. Planning buffers are
        left out (the first planning in a session reads the catalog, later ones hit its
        cache), and so are temp buffers (a sort or hash spilling depends on work_mem, not on
        the data alone) and local ones (temporary tables, which budgets cannot read).
        """
        if self.shared_hit is None or self.shared_read is None:
            return None
        return self.shared_hit + self.shared_read

    @property
    def cost(self) -> float | None:
        """The planner's total cost of the top plan node (estimated plans have one too)."""
        return None if self.plan is None else self.plan.cost

    def pooled(self, again: Measurement) -> Measurement:
        """This measurement with the recorded runs of ``again`` (a re-measurement) added.

        The deterministic numbers (buffers, rows, plan) stay this one's: they cannot differ
        for the same plan, data and statistics. A re-measurement that did not complete
        replaces this one (its timeout or error is the news).
        """
        count = self.measurements + again.measurements
        if again.outcome != Outcome.OK:
            return replace(again, measurements=count)
        return replace(
            self,
            execution_ms=self.execution_ms + again.execution_ms,
            planning_ms=self.planning_ms + again.planning_ms,
            measurements=count,
        )

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
        return tuple(sorted({use.index.name for use in index_uses(self.plan)}))

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
    """The statement_timeout of each run: timeout_ms, else budget_ms times the factor (≥ 1 s),
    else (deterministic budgets only) :data:`DEFAULT_TIMEOUT_MS`."""
    if budget.timeout_ms is not None:
        return math.ceil(budget.timeout_ms)
    if budget.budget_ms is None:
        return DEFAULT_TIMEOUT_MS
    return max(MIN_TIMEOUT_MS, math.ceil(budget.budget_ms * settings.verify_timeout_factor))


def _explain_query(budget: QueryBudget, *, analyze: bool) -> sql.Composed:
    options = "ANALYZE, BUFFERS, VERBOSE, FORMAT JSON" if analyze else "VERBOSE, FORMAT JSON"
    return sql.SQL("EXPLAIN ({}) {}").format(sql.SQL(options), budget_query_sql(budget.sql))


def _placeholders(budget: QueryBudget) -> tuple[str, ...]:
    """The budget's placeholder names in the order psycopg numbers them ($1, $2...)."""
    return check_query(budget.sql, with_placeholders=True).placeholders


def explain(
    conn: psycopg.Connection[Any],
    budget: QueryBudget,
    timeout_ms: int,
    *,
    analyze: bool,
    planner: Mapping[str, str] | None = None,
    past_lock_timeout: bool = False,
) -> dict[str, Any]:
    """Run EXPLAIN (with ANALYZE or without) on one budget, read-only and rolled back
    (``past_lock_timeout``: see dbopt.db.read_only_transaction).

    The parameters go out untyped, so the server gives each the type its context infers
    (see :mod:`dbopt.verify.params`). ``planner`` settings (``enable_indexscan: off``...)
    apply to this transaction only. ``conn`` must not be inside a transaction
    (dbopt.db.connect gives autocommit connections). Returns the top object of the JSON plan;
    raises psycopg errors as they come.
    """
    typed: set[str] = set()
    while True:
        params = bind(conn, budget.params, typed) if budget.uses_placeholders else None
        try:
            with read_only_transaction(
                conn, timeout_ms=timeout_ms, past_lock_timeout=past_lock_timeout
            ) as cur:
                for setting, value in {**EXPLAIN_SETTINGS, **(planner or {})}.items():
                    cur.execute("SELECT set_config(%s, %s, true)", (setting, value))
                register(cur)
                cur.execute(_explain_query(budget, analyze=analyze), params)
                row = cur.fetchone()
        except psycopg.Error as exc:
            # Nothing ran: the server could not type a parameter from its context.
            name = indeterminate(exc, _placeholders(budget)) if params else None
            if name is None or name in typed:
                raise
            typed.add(name)
            continue
        break
    if row is None:  # pragma: no cover - EXPLAIN always returns its row
        raise ValueError("EXPLAIN returned no row")
    first = row[0]
    doc = json.loads(first) if isinstance(first, str) else first
    top: dict[str, Any] = doc[0]
    return top


def raise_if_lost(
    conn: psycopg.Connection[Any], exc: psycopg.Error, doing: str | None = None
) -> None:
    """Raise ConnectError when ``exc`` cost us the connection (a server error did not)."""
    if conn.closed or conn.broken:
        during = f" while {doing}" if doing else ""
        raise ConnectError(f"lost the connection{during}: {server_message(exc)}") from None


def estimated_plan(
    conn: psycopg.Connection[Any],
    budget: QueryBudget,
    timeout_ms: int,
    *,
    planner: Mapping[str, str] | None = None,
) -> PlanNode | str:
    """The planner's plan without running the query (plain EXPLAIN), or the server's error;
    ``planner`` settings as :func:`explain` takes them."""
    try:
        top = explain(conn, budget, timeout_ms, analyze=False, planner=planner)
        return parse_plan(top["Plan"])
    except psycopg.Error as exc:
        raise_if_lost(conn, exc, f"measuring {budget.name}")
        return server_message(exc)


#: The settings of the run that counts buffers and rows examined: serial, from block 0.
SERIAL = {"max_parallel_workers_per_gather": "0", "synchronize_seqscans": "off"}


def measure(conn: psycopg.Connection[Any], budget: QueryBudget, settings: Settings) -> Measurement:
    """Run ``warmup`` unrecorded and ``runs`` recorded EXPLAIN ANALYZE runs of one budget.

    A statement_timeout ends the measurement with :attr:`Outcome.TIMEOUT`, any other server
    error (a read-only violation, a missing relation...) with :attr:`Outcome.ERROR`; both keep
    the planner's estimated plan when plain EXPLAIN can still produce one. Raises ConnectError
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
            raise_if_lost(conn, exc, f"measuring {budget.name}")
            message = server_message(exc)
            timed_out = "statement timeout" in message
            stop = (Outcome.TIMEOUT if timed_out else Outcome.ERROR, message)
        except psycopg.Error as exc:
            raise_if_lost(conn, exc, f"measuring {budget.name}")
            stop = (Outcome.ERROR, server_message(exc))
        if stop is not None:
            estimate = estimated_plan(conn, budget, timeout)
            return Measurement(
                query=budget.name,
                outcome=stop[0],
                timeout_ms=timeout,
                warmup=budget.warmup,
                execution_ms=tuple(execution),
                planning_ms=tuple(planning),
                plan=estimate if isinstance(estimate, PlanNode) else None,
                error=stop[1],
            )
        if run >= budget.warmup:
            execution.append(float(top["Execution Time"]))
            planning.append(float(top.get("Planning Time", 0.0)))
            last = top
    assert last is not None  # runs >= 1 (the spec schema's minimum)
    raw_plan = last["Plan"]
    rows = raw_plan.get("Actual Rows")
    plan = parse_plan(raw_plan)
    counted, counted_plan = raw_plan, plan
    if budget.max_buffers is not None or budget.max_rows_examined is not None:
        # Counted on one more run without parallel workers: how many workers a Gather gets,
        # and which of them reaches a LIMIT first, change what a parallel plan reads (and a
        # synchronized seq scan starts where another one is); a serial run reads the same
        # every time for given data.
        try:
            counted = explain(conn, budget, timeout, analyze=True, planner=SERIAL)["Plan"]
            counted_plan = parse_plan(counted)
        except psycopg.Error as exc:
            raise_if_lost(conn, exc, f"measuring {budget.name}")
    return Measurement(
        query=budget.name,
        outcome=Outcome.OK,
        timeout_ms=timeout,
        warmup=budget.warmup,
        execution_ms=tuple(execution),
        planning_ms=tuple(planning),
        plan=plan,
        # Buffer counts of a node include its children's (and a Gather's its workers'): the
        # top node holds the query's. The last run's, after the warmup: the first run of a
        # query may also prune pages and mark dead index entries, which later runs skip.
        shared_hit=int(counted.get("Shared Hit Blocks", 0)),
        shared_read=int(counted.get("Shared Read Blocks", 0)),
        rows=None if rows is None else int(rows),
        rows_examined=rows_examined(counted_plan),
    )
