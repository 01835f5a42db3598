"""Which candidates to suggest: the whole workload planned with HypoPG, greedily.

Every candidate becomes a hypothetical index at once and every query is planned: a query
whose estimated cost falls by at least :data:`THRESHOLD` (Dexter's rule: 50 %) with all of
them is *improvable*, and the candidates its plan uses form the pool. Then, greedily, the
pool's candidate that *serves* the most improvable queries — under the threshold and within
:data:`NEAR_BEST` of the cost every candidate together gives them — (ties: the
largest relative cost reduction weighted by the query's share of the workload's time, then
the smaller index) joins the suggestions, until no candidate serves another query.
A last pass drops a suggestion whose queries stay under the threshold (and within 10 % of
their cost) without it: the smallest set that keeps every gain.

HypoPG simulates B-tree, BRIN and hash indexes only: a GIN or GiST candidate (full-text
``@@``, trigram ``LIKE '%x%'``, containment, overlap) cannot be planned with. Such a
candidate is the only index that can serve its operator, so it is suggested *unsimulated* for
a query the simulated suggestions leave unimproved, when its table holds at least
:data:`MIN_ROWS_UNSIMULATED` rows: its cost after is unknown until it is built (its budget
asks for the threshold: at most half the estimated cost without it).

HypoPG's indexes live in this backend's memory only; exactly those this module created are
dropped before it returns (the session's others stay).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from dbopt.advise.workload import Skipped, WorkloadQuery, estimate
from dbopt.db import read_only_transaction, server_message
from dbopt.ddl import create_index
from dbopt.model import IndexSpec, QualifiedName
from dbopt.verify.hypothetical import hypopg_function
from dbopt.verify.measurement import MIN_TIMEOUT_MS, raise_if_lost
from dbopt.verify.plan import PlanNode, index_uses

#: A query counts as improved when its estimated cost falls by at least this fraction
#: (Dexter's default --min-cost-savings-pct, 50): smaller estimated gains are within the
#: planner's error and do not pay for an index's writes.
THRESHOLD = 0.5
#: A query is served once its cost is also within this factor of the best any candidate set
#: gives it (a 50 % cut that leaves a 10x better index unused is not served yet).
NEAR_BEST = 1.5
#: Pruning keeps a query's cost within this factor of what the full suggestion set gives.
PRUNE_SLACK = 1.1
#: An unsimulated (GIN, GiST) suggestion needs a table of at least this many estimated rows:
#: below it a sequential scan reads a few pages at most.
MIN_ROWS_UNSIMULATED = 1000


@dataclass(frozen=True, slots=True)
class QueryCost:
    """One query's estimated cost today, with every candidate, and with the suggestions."""

    query: WorkloadQuery
    before: float
    best: float
    after: float
    #: The suggestions (indexes into Evaluation.chosen) its final plan uses.
    uses: tuple[int, ...] = ()

    @property
    def improved(self) -> bool:
        """The suggestions bring its cost down by at least the threshold."""
        return self.after <= (1 - THRESHOLD) * self.before


@dataclass(frozen=True, slots=True)
class Chosen:
    """A suggested index, its HypoPG size estimate, and the queries whose plans use it (or,
    unsimulated, the queries it is the only index method for)."""

    spec: IndexSpec
    #: HypoPG's estimate (None: unsimulated, HypoPG cannot create this method).
    size_bytes: int | None
    serves: tuple[str, ...]
    #: Planned with HypoPG (False: GIN/GiST, which HypoPG does not simulate).
    simulated: bool = True


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What HypoPG showed about the workload and the candidates."""

    costs: tuple[QueryCost, ...]
    chosen: tuple[Chosen, ...]
    failed: tuple[Skipped, ...] = ()
    tried: int = 0
    #: Candidates HypoPG could not create (an operator class missing...), with the reason.
    refused: tuple[tuple[IndexSpec, str], ...] = ()
    plans: int = 0


class _Hypo:
    """The hypothetical indexes of one evaluation: created, sized, dropped."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.create_fn = hypopg_function(conn, "hypopg_create_index")
        self.drop_fn = hypopg_function(conn, "hypopg_drop_index")
        self.size_fn = hypopg_function(conn, "hypopg_relation_size")
        #: oid -> HypoPG's name for it (what plans show).
        self.live: dict[int, str] = {}

    def create(self, spec: IndexSpec) -> tuple[int, str] | str:
        statement = create_index(spec, name="dbopt_advise", concurrently=False).as_string(self.conn)
        try:
            with read_only_transaction(self.conn, timeout_ms=MIN_TIMEOUT_MS) as cur:
                cur.execute(
                    sql.SQL("SELECT indexrelid, indexname FROM {}(%s)").format(self.create_fn),
                    [statement],
                )
                row = cur.fetchone()
        except psycopg.Error as exc:
            raise_if_lost(self.conn, exc)
            return server_message(exc)
        if row is None:  # pragma: no cover - hypopg_create_index returns its row
            return "HypoPG returned no index"
        self.live[int(row[0])] = str(row[1])
        return int(row[0]), str(row[1])

    def size(self, oid: int) -> int:
        row = self.conn.execute(sql.SQL("SELECT {}(%s)").format(self.size_fn), [oid]).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def drop(self, oid: int) -> None:
        if self.live.pop(oid, None) is not None:
            self.conn.execute(sql.SQL("SELECT {}(%s)").format(self.drop_fn), [oid])

    def close(self) -> None:
        if not (self.conn.closed or self.conn.broken):
            for oid in list(self.live):
                self.drop(oid)


@contextmanager
def _hypothetical(conn: psycopg.Connection[Any]) -> Iterator[_Hypo]:
    hypo = _Hypo(conn)
    try:
        yield hypo
    finally:
        hypo.close()


class _Planner:
    """Plans queries and counts how many plans it made."""

    def __init__(self, conn: psycopg.Connection[Any], timeout_ms: int) -> None:
        self.conn = conn
        self.timeout_ms = timeout_ms
        self.count = 0

    def plan(self, query: WorkloadQuery) -> PlanNode | str:
        self.count += 1
        return estimate(self.conn, query, self.timeout_ms)

    def cost(self, query: WorkloadQuery, fallback: float) -> float:
        plan = self.plan(query)
        return plan.cost if isinstance(plan, PlanNode) else fallback


def _used(plan: PlanNode | str, names: Mapping[str, int]) -> set[int]:
    if not isinstance(plan, PlanNode):
        return set()
    return {names[u.index.name] for u in index_uses(plan) if u.index.name in names}


def _unsimulated(
    costs: Sequence[QueryCost],
    candidates: Sequence[IndexSpec],
    refused: Sequence[IndexSpec],
    origin: Mapping[str, Sequence[int]],
    rows: Mapping[QualifiedName, float],
) -> tuple[Chosen, ...]:
    """GIN/GiST candidates HypoPG refused, for the queries still unimproved that gave rise to
    them (one per indexed column or expression: the first the query's predicates named)."""
    serving: dict[IndexSpec, list[str]] = {}
    for cost in costs:
        if cost.improved:
            continue
        keys: set[tuple[QualifiedName, tuple[str | None, ...]]] = set()
        for i in origin.get(cost.query.name, ()):
            spec = candidates[i]
            key = (spec.table, tuple(c.name or c.expr for c in spec.columns))
            if spec not in refused or key in keys:
                continue
            if rows.get(spec.table, 0.0) < MIN_ROWS_UNSIMULATED:
                continue
            keys.add(key)
            serving.setdefault(spec, []).append(cost.query.name)
    return tuple(
        Chosen(spec, None, tuple(names), simulated=False) for spec, names in serving.items()
    )


def evaluate(
    conn: psycopg.Connection[Any],
    queries: Sequence[WorkloadQuery],
    candidates: Sequence[IndexSpec],
    tables_of: Mapping[str, frozenset[QualifiedName]],
    *,
    origin: Mapping[str, Sequence[int]] | None = None,
    rows: Mapping[QualifiedName, float] | None = None,
    baseline: Sequence[IndexSpec] = (),
    timeout_ms: int = 10_000,
) -> Evaluation:
    """Choose the suggestions among ``candidates`` for ``queries`` (see the module's doc).

    ``tables_of``: the tables each query (by name) reads, so a candidate is tried only on
    the queries it can serve. ``origin``: the candidates (positions) each query gave rise
    to, and ``rows`` each table's estimated rows: for the unsimulated suggestions.
    ``baseline``: spec'd indexes not built yet, hypothetical throughout (costs "before"
    include them), so nothing is suggested for what the specs already cover.
    """
    # The spec'd indexes not built yet are part of today: what they serve needs nothing new.
    with _hypothetical(conn) as pending:
        for spec in baseline:
            pending.create(spec)
        planner = _Planner(conn, timeout_ms)
        failed: list[Skipped] = []
        before: dict[str, float] = {}
        for q in queries:
            plan = planner.plan(q)
            if isinstance(plan, PlanNode):
                before[q.name] = plan.cost
            else:
                failed.append(Skipped(q.name, f"could not be planned: {plan}"))
        planned = [q for q in queries if q.name in before]
        total_ms = sum(q.total_ms or 0.0 for q in planned)
        weight = {
            q.name: (q.total_ms or 0.0) / total_ms if total_ms else 1.0 / max(1, len(planned))
            for q in planned
        }
        refused: list[tuple[IndexSpec, str]] = []
        with _hypothetical(conn) as hypo:
            names: dict[str, int] = {}
            sizes: dict[int, int] = {}
            oids: dict[int, int] = {}
            for i, spec in enumerate(candidates):
                made = hypo.create(spec)
                if isinstance(made, str):
                    refused.append((spec, made))
                    continue
                names[made[1]] = i
                oids[i] = made[0]
                sizes[i] = hypo.size(made[0])
            best: dict[str, float] = {}
            pool: set[int] = set()
            for q in planned:
                plan = planner.plan(q)
                best[q.name] = plan.cost if isinstance(plan, PlanNode) else before[q.name]
                if best[q.name] <= (1 - THRESHOLD) * before[q.name]:
                    pool |= _used(plan, names)

            def serves(n: str, c: float) -> bool:
                return c <= (1 - THRESHOLD) * before[n] and c <= NEAR_BEST * best[n]

            for oid in oids.values():
                hypo.drop(oid)
            improvable = [q for q in planned if best[q.name] <= (1 - THRESHOLD) * before[q.name]]
            chosen: list[int] = []
            live: dict[int, int] = {}
            current = dict(before)
            served: set[str] = set()

            def relevant(i: int, among: Sequence[WorkloadQuery]) -> list[WorkloadQuery]:
                return [q for q in among if candidates[i].table in tables_of.get(q.name, ())]

            while True:
                unserved = [q for q in improvable if q.name not in served]
                if not unserved:
                    break
                pick: tuple[tuple[int, float, int], int, dict[str, float]] | None = None
                for i in sorted(pool - set(chosen)):
                    trial_queries = relevant(i, unserved)
                    if not trial_queries:
                        continue
                    made = hypo.create(candidates[i])
                    if isinstance(made, str):
                        continue
                    costs = {q.name: planner.cost(q, current[q.name]) for q in trial_queries}
                    hypo.drop(made[0])
                    newly = sum(1 for n, c in costs.items() if serves(n, c))
                    gain = sum(weight[n] * (current[n] - c) / before[n] for n, c in costs.items())
                    # Gains within 1 % of the cost before are a tie (the planner is not that exact):
                    # then the smaller index wins (a partial one on a selective constant).
                    key = (newly, round(gain, 2), -sizes.get(i, 0))
                    if pick is None or key > pick[0]:
                        pick = (key, i, costs)
                if pick is None or pick[0][0] == 0:
                    break
                _key, i, costs = pick
                made = hypo.create(candidates[i])
                if isinstance(made, str):  # pragma: no cover - it was created a moment ago
                    break
                chosen.append(i)
                live[i] = made[0]
                for n, c in costs.items():
                    current[n] = min(current[n], c)
                    if serves(n, c):
                        served.add(n)
            # Prune: a suggestion whose queries keep their gain without it goes.
            for i in list(reversed(chosen)) if len(chosen) > 1 else []:
                hypo.drop(live.pop(i))
                check = relevant(i, [q for q in improvable if q.name in served])
                costs = {q.name: planner.cost(q, before[q.name]) for q in check}
                keeps = all(
                    serves(n, c) and c <= PRUNE_SLACK * current[n] for n, c in costs.items()
                )
                if keeps:
                    chosen.remove(i)
                    continue
                made = hypo.create(candidates[i])
                if isinstance(made, str):  # pragma: no cover
                    chosen.remove(i)
                    continue
                live[i] = made[0]
            final_names = {hypo.live[oid]: i for i, oid in live.items()}
            position = {i: n for n, i in enumerate(chosen)}
            costs_out: list[QueryCost] = []
            serving: dict[int, list[str]] = {i: [] for i in chosen}
            for q in planned:
                plan = planner.plan(q)
                after = plan.cost if isinstance(plan, PlanNode) else before[q.name]
                used = sorted(_used(plan, final_names))
                cost = QueryCost(
                    q, before[q.name], best[q.name], after, tuple(position[i] for i in used)
                )
                if cost.improved:
                    for i in used:
                        serving[i].append(q.name)
                costs_out.append(cost)
            chosen_out = tuple(
                Chosen(candidates[i], sizes.get(i, 0), tuple(serving[i])) for i in chosen
            )
    unsimulated = {i for i, (spec, _why) in enumerate(refused) if spec.method != "btree"}
    chosen_out += _unsimulated(
        costs_out,
        candidates,
        [refused[i][0] for i in sorted(unsimulated)],
        origin or {},
        rows or {},
    )
    return Evaluation(
        costs=tuple(costs_out),
        chosen=chosen_out,
        failed=tuple(failed),
        tried=len(candidates),
        refused=tuple(refused),
        plans=planner.count,
    )
