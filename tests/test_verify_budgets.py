"""verify as a gate that does not flake: deterministic budgets, measured noise, retries.

Unit tests build plans and measurements by hand; the rest measure on the real throwaway
PostgreSQL of conftest.py. Noise is made two ways: a pretended machine jitter (the machine's
own is what it is), and, in the stability test, a CPU hog running alongside, bounded in time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import Result
from helpers import Write, cli

import dbopt.verify.run as run_mod
from dbopt.config import Settings
from dbopt.errors import SpecError
from dbopt.model import Location, QueryBudget
from dbopt.spec import load_specs
from dbopt.verify import (
    FindingKind,
    Measurement,
    Noise,
    Outcome,
    Status,
    judge,
    measure,
    p95_band,
    parse_plan,
    rows_examined,
    run_verify,
    statement_timeout_ms,
)

HERE = Location("indexes/t.yaml", 5, 5)


def budget(**kw: Any) -> QueryBudget:
    base: dict[str, Any] = {
        "name": "q",
        "sql": "SELECT 1",
        "budget_ms": None,
        "location": HERE,
        "relation": "public.t",
    }
    base.update(kw)
    return QueryBudget(**base)


def measured(times: tuple[float, ...], **kw: Any) -> Measurement:
    base: dict[str, Any] = {
        "query": "q",
        "outcome": Outcome.OK,
        "timeout_ms": 1000,
        "execution_ms": times,
        "planning_ms": tuple(0.1 for _ in times),
        "plan": parse_plan(
            {
                "Node Type": "Seq Scan",
                "Relation Name": "t",
                "Schema": "public",
                "Total Cost": 20.5,
                "Actual Total Time": 1.0,
                "Actual Rows": 10,
                "Rows Removed by Filter": 990,
                "Actual Loops": 1,
            }
        ),
        "shared_hit": 4,
        "shared_read": 1,
        "rows_examined": 1000,
    }
    base.update(kw)
    return Measurement(**base)


# --- spec: the new keys and "at least one budget" (no database) ----------------------------


def test_deterministic_budgets_load_and_budget_ms_becomes_optional(write: Write) -> None:
    write(
        **{
            "indexes/t.yaml": """\
            table: t
            queries:
              - name: only_work
                sql: SELECT count(*) FROM t
                max_buffers: 100
                max_rows_examined: 5000
                max_cost: 12.5
              - name: both
                sql: SELECT 1
                budget_ms: 5
                max_rows_examined: 0
            """
        }
    )
    only, both = load_specs([(Path("indexes"), False)]).queries
    assert (only.budget_ms, only.max_buffers, only.max_rows_examined, only.max_cost) == (
        None,
        100,
        5000,
        12.5,
    )
    assert (both.budget_ms, both.max_rows_examined, both.max_buffers) == (5.0, 0, None)
    # No budget_ms: no latency to scale the statement_timeout from.
    assert statement_timeout_ms(only, Settings()) == 10_000


def test_a_query_without_any_budget_is_refused_at_its_line(write: Write) -> None:
    write(
        **{
            "indexes/t.yaml": """\
            table: t
            queries:
              - name: no_budget
                sql: SELECT 1
              - name: warn_alone
                sql: SELECT 1
                warn_ms: 3
                max_cost: 10
              - name: bad_values
                sql: SELECT 1
                max_buffers: -1
                max_rows_examined: 1.5
                max_cost: lots
            """
        }
    )
    with pytest.raises(SpecError) as caught:
        load_specs([(Path("indexes"), False)])
    assert [str(p) for p in caught.value.problems] == [
        "indexes/t.yaml:3:5: queries[0]: no budget: give budget_ms (p95 latency in ms) "
        "and/or a deterministic max_buffers, max_rows_examined or max_cost",
        "indexes/t.yaml:7:5: queries[1].warn_ms: warns below budget_ms: give budget_ms too",
        "indexes/t.yaml:11:18: queries[2].max_buffers: must be at least 0, got -1",
        "indexes/t.yaml:12:24: queries[2].max_rows_examined: expected an integer, "
        "got the number 1.5",
        "indexes/t.yaml:13:15: queries[2].max_cost: expected a number, got the string 'lots'",
    ]


# --- rows examined, noise band, judging (no database) ---------------------------------------


def test_rows_examined_counts_scans_with_their_loops_filters_and_rechecks() -> None:
    plan = parse_plan(
        {
            "Node Type": "Nested Loop",
            "Actual Total Time": 5.0,
            "Actual Rows": 40,
            "Actual Loops": 1,
            "Plans": [
                {
                    # Parallel: numbers are per process, loops count leader + 2 workers.
                    "Node Type": "Seq Scan",
                    "Relation Name": "a",
                    "Actual Total Time": 1.0,
                    "Actual Rows": 10,
                    "Rows Removed by Filter": 300,
                    "Actual Loops": 3,
                },
                {
                    "Node Type": "Bitmap Heap Scan",
                    "Relation Name": "b",
                    "Actual Total Time": 0.1,
                    "Actual Rows": 2,
                    "Rows Removed by Index Recheck": 5,
                    "Rows Removed by Filter": 1,
                    "Actual Loops": 30,
                    "Plans": [
                        {
                            # TIDs for the heap scan above: not rows read a second time.
                            "Node Type": "Bitmap Index Scan",
                            "Index Name": "b_idx",
                            "Actual Total Time": 0.05,
                            "Actual Rows": 8,
                            "Actual Loops": 30,
                        }
                    ],
                },
                {
                    # A function's rows are made, not read from a relation.
                    "Node Type": "Function Scan",
                    "Actual Total Time": 0.1,
                    "Actual Rows": 1000,
                    "Actual Loops": 1,
                },
            ],
        }
    )
    assert rows_examined(plan) == (10 + 300) * 3 + (2 + 5 + 1) * 30
    estimated = parse_plan({"Node Type": "Seq Scan", "Relation Name": "a", "Total Cost": 1.0})
    assert rows_examined(estimated) is None


def test_the_noise_band_is_deterministic_and_widened_by_the_machines_jitter() -> None:
    times = (1.0, 1.1, 0.9, 1.05, 1.2, 0.95, 1.0, 3.0, 1.1, 1.0)
    p95 = measured(times).p95_ms or 0.0
    assert p95 == pytest.approx(2.19)
    band = p95_band(times)
    assert band == p95_band(times)  # a fixed seed: the same runs, the same band
    assert band is not None and band[0] < p95 <= band[1]  # the slow run is not certain
    # The machine's spread is added both ways, in ms (not multiplied: see noise.py).
    low, high = p95_band(times, spread_ms=1.5) or (0, 0)
    assert (low, high) == pytest.approx((min(band[0], p95 - 1.5), max(band[1], p95 + 1.5)))
    assert (p95_band(times, spread_ms=100.0) or (1, 0))[0] == 0.0  # never below zero
    # ...but never more than the probe's delay in proportion: a fast query's band stays
    # near it however many milliseconds the probe lost.
    low, high = p95_band(times, spread_ms=100.0, jitter=0.5) or (0, 0)
    assert (low, high) == pytest.approx((min(band[0], p95 / 1.5), max(band[1], p95 * 1.5)))
    assert p95_band((2.0,)) == (2.0, 2.0) and p95_band(()) is None


def test_a_budget_within_the_noise_is_unstable_and_outside_it_is_not() -> None:
    steady = (5.0, 5.1, 4.9, 5.0, 5.05, 4.95, 5.0, 5.02, 4.98, 5.0)
    m = measured(steady)
    p95 = m.p95_ms or 0.0
    assert judge(m, budget(budget_ms=10.0)).status == Status.PASS
    assert judge(m, budget(budget_ms=2.0)).status == Status.FAIL
    at = judge(m, budget(budget_ms=p95))
    assert at.status == Status.UNSTABLE
    assert at.findings[0].kind == FindingKind.BUDGET
    assert "within the measured noise" in at.summary and "noise band" in at.summary
    # The same runs on a machine that delays work by 2.5 ms: 7 ms is no longer clear.
    assert judge(m, budget(budget_ms=7.0), spread_ms=2.5).status == Status.UNSTABLE
    assert judge(m, budget(budget_ms=7.0), spread_ms=0.5).status == Status.PASS
    # A query four times over its budget fails however noisy the machine's probe was
    # relative to its own ~1 ms (a multiplied jitter of 3.6 once called this unstable).
    assert judge(m, budget(budget_ms=1.25), spread_ms=3.0).status == Status.FAIL
    # A millionth of a ms fails a 5 ms query even when the probe lost 10 ms, since it lost
    # less than twice its own time (jitter 1.0).
    assert judge(m, budget(budget_ms=0.000001), spread_ms=10.0, jitter=1.0).status == Status.FAIL
    # Near warn_ms only: pass and warn exit alike, so it warns (never unstable).
    near_warn = judge(m, budget(budget_ms=50.0, warn_ms=p95), spread_ms=0.5)
    assert near_warn.status == Status.WARN and "within the measured noise" in near_warn.summary


def test_deterministic_findings_each_pass_or_fail_with_measured_and_limit() -> None:
    m = measured((1.0, 1.0, 1.0))
    held = budget(max_buffers=5, max_rows_examined=1000, max_cost=20.5)
    v = judge(m, held)
    assert v.status == Status.PASS
    assert {f.kind: (f.status, f.message) for f in v.findings} == {
        FindingKind.MAX_BUFFERS: (
            Status.PASS,
            "shared buffers 5 (hit 4 + read 1) is within max_buffers 5",
        ),
        FindingKind.MAX_ROWS_EXAMINED: (
            Status.PASS,
            "rows examined 1,000 is within max_rows_examined 1,000",
        ),
        FindingKind.MAX_COST: (Status.PASS, "planner cost 20.50 is within max_cost 20.50"),
    }
    tight = judge(m, budget(max_buffers=4, max_rows_examined=999, max_cost=20))
    assert tight.status == Status.FAIL
    assert [f.message for f in tight.findings] == [
        "shared buffers 5 (hit 4 + read 1) is over max_buffers 4",
        "rows examined 1,000 is over max_rows_examined 999",
        "planner cost 20.50 is over max_cost 20",
    ]
    assert not tight.retryable  # deterministic: measuring again cannot change it


def test_only_time_verdicts_are_retried_and_runs_are_pooled() -> None:
    m = measured((5.0, 5.1, 4.9))
    assert judge(m, budget(budget_ms=1.0)).retryable  # a time failure
    assert judge(m, budget(budget_ms=m.p95_ms)).retryable  # unstable
    assert not judge(m, budget(budget_ms=100.0)).retryable  # a pass
    # Over its time budget and over a deterministic one: the verdict fails either way.
    assert not judge(m, budget(budget_ms=1.0, max_rows_examined=1)).retryable
    pooled = m.pooled(measured((4.0, 4.1), shared_hit=999))
    assert pooled.execution_ms == (5.0, 5.1, 4.9, 4.0, 4.1)
    assert (pooled.measurements, pooled.shared_hit) == (2, 4)
    stopped = m.pooled(measured((), outcome=Outcome.TIMEOUT))
    assert (stopped.outcome, stopped.measurements) == (Outcome.TIMEOUT, 2)


# --- on a real server --------------------------------------------------------------------------

TABLE = """\
    table: t
    queries:
      - name: filter_scan
        sql: SELECT count(*) FROM t WHERE k = 7
        max_rows_examined: 1000
        max_buffers: {pages}
        max_cost: {cost}
      - name: by_key
        sql: SELECT v FROM t WHERE id = 7
        max_rows_examined: 1
        max_buffers: 3
        expect: {{uses_index: [t_pkey]}}
"""


def make_table(conn: psycopg.Connection[Any], rows: int) -> None:
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, k int NOT NULL, v text NOT NULL)")
    grow(conn, 0, rows)


def grow(conn: psycopg.Connection[Any], start: int, rows: int) -> None:
    conn.execute(
        "INSERT INTO t SELECT i, i %% 100, repeat('x', 40)"
        " FROM generate_series(%s::int, %s::int) i",
        (start + 1, start + rows),
    )
    conn.execute("VACUUM (ANALYZE) t")


def verify_json(db_dsn: str, *args: str) -> tuple[Result, dict[str, Any]]:
    result = cli("verify", "--dsn", db_dsn, "--specs", "indexes", "--format", "json", *args)
    return result, json.loads(result.stdout)


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {q["name"]: q for q in report["queries"]}


def test_deterministic_budgets_fail_exactly_when_the_data_grows_past_them(
    conn: psycopg.Connection[Any], db_dsn: str, write: Write
) -> None:
    make_table(conn, 1000)
    pages, cost = conn.execute(
        "SELECT relpages, (relpages * current_setting('seq_page_cost')::float8"
        " + reltuples * (current_setting('cpu_tuple_cost')::float8"
        " + current_setting('cpu_operator_cost')::float8)) FROM pg_class WHERE relname = 't'"
    ).fetchone() or (0, 0.0)
    write(**{"indexes/t.yaml": TABLE.format(pages=pages, cost=round(cost + 1, 2))})

    result, report = verify_json(db_dsn)
    assert result.exit_code == 0, result.output
    first = by_name(report)
    scan, key = first["filter_scan"], first["by_key"]
    assert scan["status"] == "pass" and key["status"] == "pass"
    # Every row of t is read once (10 kept, 990 removed by the filter); each page once.
    assert (scan["rows_examined"], scan["buffers"]) == (1000, pages)
    assert (scan["max_rows_examined"], scan["max_buffers"]) == (1000, pages)
    assert key["rows_examined"] == 1
    assert scan["budget_ms"] is None and scan["p95_band_ms"] is not None
    assert report["noise"] is None  # no budget_ms anywhere: no time to judge
    kinds = {f["kind"]: f["status"] for f in scan["findings"]}
    assert kinds == {"max_rows_examined": "pass", "max_buffers": "pass", "max_cost": "pass"}
    # Against a baseline, time is judged (the p95's growth): within the machine's noise.
    verify_json(db_dsn, "--save", "base.json")
    _, against = verify_json(db_dsn, "--baseline", "base.json")
    assert against["noise"] is not None and against["noise"]["runs"] == 30

    grow(conn, 1000, 1)  # one row more than the budget allows
    result, report = verify_json(db_dsn)
    assert result.exit_code == 1
    scan = by_name(report)["filter_scan"]
    assert scan["status"] == "fail" and scan["rows_examined"] == 1001
    failed = [f["message"] for f in scan["findings"] if f["status"] == "fail"]
    assert "rows examined 1,001 is over max_rows_examined 1,000" in failed
    assert by_name(report)["by_key"]["status"] == "pass"

    grow(conn, 1001, 20_000)  # twenty times the data: the index keeps by_key in budget
    result, report = verify_json(db_dsn)
    scan, key = by_name(report)["filter_scan"], by_name(report)["by_key"]
    fails = {f["kind"] for f in scan["findings"] if f["status"] == "fail"}
    assert fails == {"max_rows_examined", "max_buffers", "max_cost"}
    assert key["status"] == "pass" and key["rows_examined"] == 1 and key["buffers"] <= 3
    assert "shared buffers" in result.stdout
    # Every format carries the deterministic findings.
    for fmt in ("plain", "markdown", "table"):
        text = cli("verify", "--dsn", db_dsn, "--specs", "indexes", "--format", fmt).stdout
        assert "rows examined 21,001 is over max_rows_examined 1,000" in text, fmt
        if fmt != "table":  # a terminal's table wraps its cells
            assert "21,001 (max 1,000)" in text, fmt


def test_deterministic_numbers_are_identical_across_runs_and_sessions(
    conn: psycopg.Connection[Any], db_dsn: str, write: Write
) -> None:
    make_table(conn, 20_000)
    conn.execute("CREATE INDEX t_k ON t (k)")
    conn.execute("ANALYZE t")
    write(
        **{
            "indexes/t.yaml": """\
            table: t
            queries:
              - {name: seq, sql: "SELECT count(*) FROM t WHERE v <> 'y'", max_buffers: 100000}
              - {name: bitmap, sql: "SELECT count(*) FROM t WHERE k IN (1, 2, 3)",
                 max_buffers: 100000, max_rows_examined: 100000}
              - {name: join, sql: "SELECT count(*) FROM t a JOIN t b ON a.id = b.k",
                 max_cost: 100000, max_rows_examined: 100000, warmup: 0, runs: 1}
            """
        }
    )
    numbers = []
    for _ in range(3):  # each verify is a new session: caches warm, plans the same
        result, report = verify_json(db_dsn)
        assert result.exit_code == 0, result.output
        numbers.append(
            {q["name"]: (q["buffers"], q["rows_examined"], q["cost"]) for q in report["queries"]}
        )
    assert numbers[0] == numbers[1] == numbers[2]
    assert numbers[0]["bitmap"][1] == 600  # 3 values of k, 200 rows each


def test_a_budget_at_the_measured_p95_is_unstable_on_a_real_server(
    conn: psycopg.Connection[Any], db_dsn: str, write: Write
) -> None:
    make_table(conn, 5000)
    write(
        **{
            "indexes/t.yaml": """\
            table: t
            queries:
              - {name: scan, sql: "SELECT count(*) FROM t WHERE k = 7", budget_ms: 1000}
            """
        }
    )
    specs = load_specs([(Path("indexes"), False)])
    report = run_verify(conn, specs, Settings())
    (result,) = report.results
    m = result.measurement
    assert report.noise is not None and report.noise.runs == 30  # measured, not guessed
    assert result.verdict.status == Status.PASS
    at = replace(result.budget, budget_ms=m.p95_ms)
    verdict = judge(m, at, spread_ms=report.noise.spread_ms, jitter=report.noise.jitter)
    assert verdict.status == Status.UNSTABLE, verdict.findings
    low, high = verdict.p95_band or (0.0, 0.0)
    assert low <= (m.p95_ms or 0.0) <= high
    # Twice the top of the band, or under half its bottom, is no longer a matter of noise.
    assert judge(
        m,
        replace(at, budget_ms=high * 2),
        spread_ms=report.noise.spread_ms,
        jitter=report.noise.jitter,
    ).status == (Status.PASS)
    assert judge(
        m,
        replace(at, budget_ms=low / 2),
        spread_ms=report.noise.spread_ms,
        jitter=report.noise.jitter,
    ).status == (Status.FAIL)


def pretend_noise(monkeypatch: pytest.MonkeyPatch, spread_ms: float) -> None:
    """Make this run's machine delay work by up to ``spread_ms`` one run in twenty (the
    real one is what it is)."""
    # A 10 µs probe: its relative jitter (100 x spread) caps nothing.
    noise = Noise(runs=30, p50_ms=0.01, p95_ms=0.01 + spread_ms, max_ms=0.01 + spread_ms)
    monkeypatch.setattr(run_mod, "measure_noise", lambda conn, settings: noise)


NOISY = """\
    table: t
    queries:
      - {name: near, sql: "SELECT count(*) FROM t", budget_ms: 0.5, runs: 5, warmup: 1}
      - {name: far, sql: "SELECT count(*) FROM t", budget_ms: 60000, runs: 5, warmup: 1}
      - {name: over, sql: "SELECT count(*) FROM t, generate_series(1, 300) g",
         budget_ms: 0.000001, runs: 5, warmup: 1}
      - {name: over_rows, sql: "SELECT count(*) FROM t", budget_ms: 0.5, runs: 5, warmup: 1,
         max_rows_examined: 10}
"""


def test_unstable_is_reported_in_every_format_and_exits_0_unless_strict(
    conn: psycopg.Connection[Any], db_dsn: str, write: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_table(conn, 1000)
    write(**{"indexes/t.yaml": NOISY})
    # A machine that delays work by up to 1 ms: 0.5 ms cannot be told from a count of 1,000
    # rows (tens of microseconds), 60 s can, and so can a millionth of a ms for a query that
    # counts 300,000 rows (several ms).
    pretend_noise(monkeypatch, 1.0)
    result, report = verify_json(db_dsn, "--junit", "v.xml")
    status = {q["name"]: q["status"] for q in report["queries"]}
    assert status == {"near": "unstable", "far": "pass", "over": "fail", "over_rows": "fail"}
    assert result.exit_code == 1  # "over" fails
    assert report["summary"] == {"pass": 1, "warn": 0, "unstable": 1, "fail": 2}
    assert report["noise"]["jitter"] == pytest.approx(100.0)
    near = by_name(report)["near"]
    low, high = near["p95_band_ms"]
    assert low <= 0.5 <= high
    assert near["findings"][0]["status"] == "unstable"
    cases = {c.get("name"): c for c in ET.parse("v.xml").getroot().iter("testcase")}
    assert cases["near"].find("failure") is None  # not a failure without --strict...
    assert "unstable: p95" in (cases["near"].findtext("system-out") or "")
    assert cases["over"].find("failure") is not None

    write(**{"indexes/t.yaml": NOISY.replace("0.000001", "60000")})
    for fmt in ("plain", "markdown", "table"):
        shown = cli("verify", "--dsn", db_dsn, "--specs", "indexes", "--format", fmt)
        assert shown.exit_code == 1, fmt  # over_rows still fails
        assert "UNSTABLE near" in shown.stdout and "1 unstable" in shown.stdout, fmt
        assert "machine jitter 10000%" in shown.stdout, fmt

    write(**{"indexes/t.yaml": NOISY.replace("0.000001", "60000").split("  - {name: over_r")[0]})
    quiet = cli("verify", "--dsn", db_dsn, "--specs", "indexes", "--junit", "v.xml")
    assert quiet.exit_code == 0, quiet.output
    assert "warning: 1 of 3 budgeted queries are unstable" in quiet.stderr
    assert "--retries N measures them again" in quiet.stderr
    strict = cli("verify", "--dsn", db_dsn, "--specs", "indexes", "--strict", "--junit", "v.xml")
    assert strict.exit_code == 1
    assert "1 of 3 budgeted queries are unstable" in strict.stderr and "(--strict)" in strict.stderr
    cases = {c.get("name"): c for c in ET.parse("v.xml").getroot().iter("testcase")}
    failure = cases["near"].find("failure")
    assert failure is not None and failure.get("type") == "budget"  # ...but one with --strict


def test_retries_remeasure_only_unstable_and_time_failed_queries(
    conn: psycopg.Connection[Any], db_dsn: str, write: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_table(conn, 1000)
    write(**{"indexes/t.yaml": NOISY})
    pretend_noise(monkeypatch, 1.0)
    _, report = verify_json(db_dsn, "--retries", "2")
    assert report["retries"] == 2
    took = {q["name"]: (q["measurements"], q["runs"], q["status"]) for q in report["queries"]}
    assert took == {
        "near": (3, 15, "unstable"),  # still within the (pretended) noise: measured 3 times
        "far": (1, 5, "pass"),
        "over": (3, 15, "fail"),  # a time failure: measured again, still failing
        "over_rows": (1, 5, "fail"),  # fails a deterministic budget: nothing to re-measure
    }
    table = cli("verify", "--dsn", db_dsn, "--specs", "indexes", "--retries", "1", "-v")
    assert "10 (2x)" in table.stdout  # the runs column says how many measurements
    assert "10 runs in 2 measurements" in table.stdout


# --- verdicts stay put on a loaded machine ---------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
STABILITY_RUNS = int(os.environ.get("DBOPT_STABILITY_RUNS", "20"))


@pytest.fixture
def cpu_hog() -> Iterator[None]:
    """One process spinning on a CPU for at most 90 s (ended at the test's end, by its pid)."""
    hog = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nend = time.monotonic() + 90\nwhile time.monotonic() < end: pass",
        ]
    )
    try:
        yield
    finally:
        hog.kill()
        hog.wait(timeout=10)


# How verify's noise band holds under a CPU hog: the client's statistics, not the server's
# major (harness.matrix runs it on one major).
@pytest.mark.slow
@pytest.mark.one_major
def test_demo_verdicts_do_not_flip_between_pass_and_fail_under_a_cpu_hog(
    conn: psycopg.Connection[Any], db_dsn: str, cpu_hog: None
) -> None:
    from tools.demo import load_bookedbarber

    load_bookedbarber(db_dsn, "0.02")
    specs = ["--specs", str(ROOT / "indexes"), "--specs", str(ROOT / "views")]
    applied = cli("apply", "--dsn", db_dsn, *specs)
    assert applied.exit_code == 0, applied.output
    conn.execute("VACUUM (ANALYZE)")
    seen: dict[str, set[str]] = {}
    jitters = []
    started = time.monotonic()
    for _ in range(STABILITY_RUNS):
        result = cli("verify", "--dsn", db_dsn, *specs, "--format", "json")
        assert result.exit_code in (0, 1), result.output
        report = json.loads(result.stdout)
        jitters.append(report["noise"]["jitter"])
        for q in report["queries"]:
            seen.setdefault(q["name"], set()).add(q["status"])
    flipped = {name: s for name, s in seen.items() if "fail" in s and s & {"pass", "warn"}}
    assert len(seen) == 21
    assert flipped == {}, f"verdicts flipped in {STABILITY_RUNS} runs: {flipped}"
    took = time.monotonic() - started
    print(f"{STABILITY_RUNS} verify runs in {took:.1f}s, jitter {sorted(jitters)}: {seen}")


def test_parallel_plans_count_the_same_whatever_the_workers_launched(
    conn: psycopg.Connection[Any],
) -> None:
    """Buffers and rows examined are counted on a serial run: the same whatever workers a
    Gather got, whichever reached a LIMIT first, and however a non-parallel Hash under a
    Gather was built once per process (each of these moved the numbers of a parallel run)."""
    make_table(conn, 30_001)  # not divisible by 2 or 3: per-loop rounding would show
    conn.execute("CREATE TABLE small (k int PRIMARY KEY)")
    conn.execute("INSERT INTO small SELECT g FROM generate_series(0, 99) g")
    conn.execute("ANALYZE small")
    for setting in (
        "parallel_setup_cost = 0",
        "parallel_tuple_cost = 0",
        "min_parallel_table_scan_size = 0",
        "max_parallel_workers_per_gather = 2",
        "enable_parallel_hash = off",
    ):
        conn.execute(f"SET {setting}")
    cases = {
        "count": "SELECT count(*) FROM t WHERE k = 7",
        "limit": "SELECT * FROM t WHERE k = 99 LIMIT 50",
        "hash join": "SELECT count(*) FROM t JOIN small USING (k)",
    }
    for name, text in cases.items():
        scan = budget(sql=text, max_rows_examined=1, max_buffers=1, runs=1)
        numbers = set()
        for workers in (2, 1, 0, 2, 2):  # 0: the Gather is planned, no worker is launched
            conn.execute(f"SET max_parallel_workers = {workers}")
            m = measure(conn, scan, Settings())
            assert m.plan is not None
            assert any(n.node_type.startswith("Gather") for n in m.plan.walk()), (name, m.plan)
            numbers.add((m.rows_examined, m.buffers))
        assert len(numbers) == 1, (name, numbers)
        if name == "count":
            assert next(iter(numbers))[0] == 30_001
