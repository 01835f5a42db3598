"""Noise, measured: the machine's own jitter, and how far each query's p95 could move.

Two measurements, both reported, neither guessed:

* **The machine's jitter** (:func:`measure_noise`): before the budgets, a fixed trivial query
  (:data:`NOISE_SQL`, a count over a small ``generate_series``: no table, no cache, the same
  work everywhere) runs :data:`NOISE_RUNS` times through the path every budget takes (EXPLAIN
  ANALYZE, READ ONLY, rolled back). Its spread ``p95 - p50`` (in ms) is how much this
  machine, right now, delays a fixed amount of work one run in twenty; measured again before
  each round of ``--retries``.
* **Each query's own spread** (:func:`p95_band`): a bootstrap interval of its p95 — the runs
  resampled with replacement :data:`RESAMPLES` times (a fixed seed, so the same runs give
  the same interval), the 5th and 95th percentiles of the resampled p95s. It says how much
  the p95 of another ``runs`` runs of the same query could differ.

A query's noise band is the wider of the two around its p95: its own bootstrap interval, or
the machine's spread added both ways (``p95 - spread`` to ``p95 + spread``), capped by the
probe's jitter in proportion (a 20 µs query was not delayed by the 3 ms a 1 ms probe lost).
Added, not only multiplied: the probe's relative spread swings from a few percent to several
hundred on a loaded machine, and as a factor alone it would call a query four times over its
budget "unstable" (a green build for a clear failure). A time verdict whose threshold lies
inside the band cannot be told from noise: it is ``unstable`` (see
:mod:`~dbopt.verify.verdict`); a band wholly above the budget fails.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from dbopt.config import Settings
from dbopt.model import Location, QueryBudget
from dbopt.verify.measurement import Measurement, Outcome, measure

#: The fixed trivial query whose spread is the machine's jitter (about a millisecond of CPU).
NOISE_SQL = "SELECT count(*) FROM generate_series(1, 10000)"
NOISE_RUNS = 30
NOISE_WARMUP = 3
#: Bootstrap resamples of each query's runs, and the interval kept (5th to 95th percentile).
RESAMPLES = 500
CONFIDENCE = 0.90
_SEED = 14


@dataclass(frozen=True, slots=True)
class Noise:
    """The machine's jitter, from the runs of :data:`NOISE_SQL`."""

    runs: int
    p50_ms: float
    p95_ms: float
    max_ms: float

    @property
    def spread_ms(self) -> float:
        """``p95 - p50`` of the probe: how late a fixed amount of work may come, in ms."""
        return max(0.0, self.p95_ms - self.p50_ms)

    @property
    def jitter(self) -> float:
        """Relative spread, ``(p95 - p50) / p50``: 0.1 is "a tenth slower, one run in 20"."""
        return (self.p95_ms - self.p50_ms) / self.p50_ms if self.p50_ms > 0 else 0.0

    def describe(self) -> str:
        """``machine jitter ±12% (SELECT count(*) ...: p50 0.8 ms, p95 0.9 ms, 30 runs)``."""
        return (
            f"machine jitter {self.jitter:.0%} ({NOISE_SQL}: p50 {self.p50_ms:.3f} ms, "
            f"p95 {self.p95_ms:.3f} ms, max {self.max_ms:.3f} ms, {self.runs} runs)"
        )


def _p95_sorted(values: Sequence[float]) -> float:
    """The inclusive 95th percentile of sorted ``values`` (as statistics.quantiles gives it)."""
    if len(values) == 1:
        return values[0]
    pos = (len(values) - 1) * 0.95
    low = int(pos)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (pos - low)


def p95_band(
    times: Sequence[float], spread_ms: float = 0.0, jitter: float | None = None
) -> tuple[float, float] | None:
    """The noise band of the p95 of ``times``: a bootstrap interval of it, widened by the
    machine's delay (see :class:`Noise`): ``spread_ms`` either side, but never more than the
    probe's ``jitter`` in proportion (``p95 / (1 + jitter)`` .. ``p95 x (1 + jitter)``) — a
    delay the probe saw neither in milliseconds nor relative to its own time is not assumed.
    Deterministic for given times. None without times."""
    if not times:
        return None
    ordered = sorted(times)
    p95 = _p95_sorted(ordered)
    low = high = p95
    if len(times) > 1:
        rng = random.Random(_SEED)
        n = len(times)
        estimates = sorted(_p95_sorted(sorted(rng.choices(ordered, k=n))) for _ in range(RESAMPLES))
        tail = (1 - CONFIDENCE) / 2
        low = estimates[int(tail * (RESAMPLES - 1))]
        high = estimates[round((1 - tail) * (RESAMPLES - 1))]
    # The machine may have delayed this p95 by its spread, or may delay the next one so; a
    # fast query cannot have been delayed by more than the probe was, in proportion.
    down, up = p95 - spread_ms, p95 + spread_ms
    if jitter is not None:
        down, up = max(down, p95 / (1 + jitter)), min(up, p95 * (1 + jitter))
    return max(0.0, min(low, down)), max(high, up)


def noise_budget() -> QueryBudget:
    """The calibration query as a budget, so that it takes the very path budgets take."""
    return QueryBudget(
        name="(machine jitter)",
        sql=NOISE_SQL,
        budget_ms=None,
        location=Location("(dbopt)", 0, 0),
        relation="",
        runs=NOISE_RUNS,
        warmup=NOISE_WARMUP,
    )


def measure_noise(conn: psycopg.Connection[Any], settings: Settings) -> Noise | None:
    """Run :data:`NOISE_SQL` as a budget would run; None if it could not run."""
    m: Measurement = measure(conn, noise_budget(), settings)
    if m.outcome != Outcome.OK or m.p50_ms is None or m.p95_ms is None or m.max_ms is None:
        return None
    return Noise(runs=len(m.execution_ms), p50_ms=m.p50_ms, p95_ms=m.p95_ms, max_ms=m.max_ms)
