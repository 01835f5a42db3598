"""`dbopt verify`: budgets, plan expectations, safety, baselines, JUnit and HypoPG.

Unit tests build plans and measurements by hand; the rest run against the real throwaway
PostgreSQL of conftest.py (``db_dsn``: a fresh database per test, ``conn``: autocommit).
"""

from __future__ import annotations

import io
import json
import textwrap
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from helpers import has_extension, settled, skip_without_extension
from psycopg import sql

import dbopt.verify.hypothetical as hypothetical_mod
import dbopt.verify.measurement as measurement_mod
import dbopt.verify.run as run_mod
from dbopt.catalog import Catalog, Relation
from dbopt.cli import verify_output
from dbopt.cli.common import DboptGroup, Options
from dbopt.cli.verify_cmd import verify
from dbopt.config import Settings
from dbopt.errors import CheckFailedError, ConfigError, InputError, SpecError
from dbopt.junit import Case, hypothetical_cases, junit_xml, verify_cases
from dbopt.model import (
    Expectation,
    IndexColumn,
    IndexSpec,
    Location,
    QualifiedName,
    QueryBudget,
    SpecSet,
)
from dbopt.spec import load_specs
from dbopt.verify import (
    Baseline,
    BaselineEntry,
    BaselineError,
    BaselineProblem,
    EmptySelectionError,
    Finding,
    FindingKind,
    HypotheticalReport,
    Measurement,
    Noise,
    Outcome,
    QueryResult,
    Role,
    Selector,
    Status,
    UnknownSelectionError,
    VerifyReport,
    WhatIf,
    explanation,
    explanation_lines,
    hypothetical_dict,
    judge,
    load_baseline,
    measure,
    parse_plan,
    plan_shape,
    query_fingerprint,
    report_dict,
    run_hypothetical,
    run_verify,
    select_budgets,
    statement_timeout_ms,
)

HERE = Location("indexes/appointments.yaml", 7, 5)
APPTS = QualifiedName("public", "appointments")


def budget(**kw: Any) -> QueryBudget:
    base: dict[str, Any] = {
        "name": "q",
        "sql": "SELECT 1",
        "budget_ms": 10.0,
        "location": HERE,
        "relation": "public.appointments",
        "runs": 3,
        "warmup": 1,
    }
    base.update(kw)
    return QueryBudget(**base)


def cli() -> DboptGroup:
    """verify under the same error handling as `dbopt` (DboptGroup maps errors to exit codes)."""
    group = DboptGroup("dbopt")
    group.add_command(verify)
    return group


def run(*args: str) -> Result:
    return CliRunner().invoke(cli(), ["verify", *args])


# --- plans, percentiles, judging (no database) ---------------------------------------------

SEQ_PLAN = {
    "Node Type": "Aggregate",
    "Total Cost": 1050.0,
    "Plan Rows": 1,
    "Actual Total Time": 7.5,
    "Actual Rows": 1,
    "Actual Loops": 1,
    "Plans": [
        {
            "Node Type": "Seq Scan",
            "Relation Name": "appointments",
            "Schema": "public",
            "Total Cost": 1000.0,
            "Plan Rows": 25,
            "Actual Total Time": 7.0,
            "Actual Rows": 25,
            "Actual Loops": 1,
            "Filter": "(barber_id = 7)",
            "Rows Removed by Filter": 49975,
        }
    ],
}


def seq_measurement(times: tuple[float, ...] = (7.0, 7.2, 7.4)) -> Measurement:
    return Measurement(
        query="q",
        outcome=Outcome.OK,
        timeout_ms=1000,
        execution_ms=times,
        planning_ms=(0.1,) * len(times),
        plan=parse_plan(SEQ_PLAN),
        shared_hit=400,
        shared_read=0,
        rows=1,
    )


def test_parse_plan_and_shape() -> None:
    plan = parse_plan(SEQ_PLAN)
    scan = plan.children[0]
    assert scan.relation == APPTS
    assert scan.rows_removed == 49975
    assert scan.conditions == ("Filter: (barber_id = 7)",)
    assert plan.exclusive_ms == pytest.approx(0.5)
    assert plan_shape(plan) == ("Aggregate", "Seq Scan on public.appointments")
    index = parse_plan(
        {"Node Type": "Index Scan", "Index Name": "idx", "Relation Name": "t", "Schema": "s"}
    )
    assert index.label == "Index Scan using idx on s.t"
    assert index.total_ms is None  # no ANALYZE: estimates only


def test_percentiles_are_inclusive_quantiles() -> None:
    m = seq_measurement(tuple(float(i) for i in range(1, 21)))
    assert m.p50_ms == pytest.approx(10.5)
    assert m.p95_ms == pytest.approx(19.05)  # 1 + 0.95 * 19, linear between ranks
    assert m.max_ms == 20.0
    single = seq_measurement((3.0,))
    assert single.p50_ms == single.p95_ms == single.max_ms == 3.0


def test_statement_timeout_from_budget() -> None:
    settings = Settings(verify_timeout_factor=20)
    assert statement_timeout_ms(budget(budget_ms=100.0), settings) == 2000
    assert statement_timeout_ms(budget(budget_ms=5.0), settings) == 1000  # at least 1 s
    assert statement_timeout_ms(budget(budget_ms=5.0, timeout_ms=250.0), settings) == 250


def test_judge_budget_expectations_and_the_node_that_hurt() -> None:
    b = budget(
        budget_ms=2.0,
        expect=Expectation(uses_index=("idx_appt_barber",), no_seq_scan_on=(APPTS,)),
    )
    v = judge(seq_measurement(), b)
    assert v.status == Status.FAIL
    assert [f.kind for f in v.findings] == ["budget", "uses_index", "no_seq_scan_on"]
    assert "p95 7.380 ms is over the budget of 2 ms" in v.findings[0].message
    assert v.culprit is not None and v.culprit.node_type == "Seq Scan"
    assert v.culprit_why is not None
    assert "read 50,000 rows to keep 25 (99.9% removed by its filter)" in v.culprit_why


def test_judge_warn_and_pass() -> None:
    assert judge(seq_measurement(), budget(budget_ms=10.0)).status == Status.PASS
    warned = judge(seq_measurement(), budget(budget_ms=10.0, warn_ms=5.0))
    assert warned.status == Status.WARN
    assert warned.summary.startswith("p95 7.380 ms is over warn_ms 5 ms")


def test_judge_against_a_baseline() -> None:
    b = budget(budget_ms=100.0)
    same_shape = ("Aggregate", "Seq Scan on public.appointments")
    fp = query_fingerprint(b)

    def verdict(p95: float, shape: tuple[str, ...] = same_shape, fp: str | None = fp) -> Any:
        base = Baseline("base.json", {"q": BaselineEntry(p95, shape, fp)})
        return judge(seq_measurement(), b, baseline=base, threshold=0.2)

    assert verdict(7.0).status == Status.PASS  # +5 %: within the threshold
    slower = verdict(2.0)
    assert slower.status == Status.FAIL
    assert "p95 regressed +269% against the baseline (2.000 -> 7.380 ms" in slower.summary
    assert verdict(7.2, fp="other").findings[0].kind == "note"  # not like with like
    absent = judge(seq_measurement(), b, baseline=Baseline("base.json", {}), threshold=0.2)
    assert absent.status == Status.WARN  # its time goes unchecked: said, not passed silently
    assert absent.summary.startswith("not in the baseline base.json: its p95 is not compared")
    changed = verdict(7.2, shape=("Index Scan using idx on public.appointments",))
    assert changed.status == Status.WARN
    assert "+ Seq Scan on public.appointments" in changed.summary
    assert "- Index Scan using idx on public.appointments" in changed.summary
    # Below the absolute floor a large relative jump is noise, not a regression.
    tiny = seq_measurement((0.05, 0.05, 0.06))
    base = Baseline("base.json", {"q": BaselineEntry(0.02, same_shape, fp)})
    assert judge(tiny, b, baseline=base).status == Status.PASS


def test_one_slow_run_is_not_a_regression_but_a_slow_query_is() -> None:
    """Seen in CI on a loaded machine: four runs as fast as the baseline and one delayed 4 ms
    put p95 far over the regression line; the line lies inside the noise band, so it is
    unstable (exit 0 with a warning, re-measured by --retries), not a failure."""
    b = budget(budget_ms=1000.0)
    shape = ("Aggregate", "Seq Scan on public.appointments")
    base = Baseline("base.json", {"q": BaselineEntry(0.027, shape, query_fingerprint(b))})

    def verdict(times: tuple[float, ...]) -> Any:
        return judge(seq_measurement(times), b, baseline=base, threshold=0.2)

    hiccup = verdict((0.027, 0.028, 0.027, 4.1, 0.027))
    assert hiccup.status == Status.UNSTABLE
    assert hiccup.retryable
    assert hiccup.p95_band is not None and hiccup.p95_band[0] < 1.027 < hiccup.p95_band[1]
    assert hiccup.summary.startswith("p95 +")
    assert "is over the regression line 1.027 ms, but the line is within the measured noise" in (
        hiccup.summary
    )
    # Every run slower: the band is above the line.
    slower = verdict((4.0, 4.1, 4.2, 4.0, 4.1))
    assert slower.status == Status.FAIL
    assert slower.summary.startswith("p95 regressed +")
    assert "(0.027 -> 4.180 ms; threshold 20%, floor 1 ms)" in slower.summary
    assert verdict((0.027, 0.028, 0.027, 0.029, 0.027)).status == Status.PASS
    # A machine delaying work by 2 ms: a p95 a little over the baseline's cannot be told from
    # one over the line; one as fast as the baseline shows no sign of a regression at all.
    under = judge(seq_measurement((0.03,) * 5), b, baseline=base, threshold=0.2, spread_ms=2.0)
    assert under.status == Status.UNSTABLE
    assert "is under the regression line 1.027 ms" in under.summary
    same = judge(seq_measurement((0.027,) * 5), b, baseline=base, threshold=0.2, spread_ms=2.0)
    assert same.status == Status.PASS


def test_select_budgets() -> None:
    a = budget(name="schedule", relation="public.appointments")
    r = budget(name="reviews_top", relation="public.reviews")
    specs = SpecSet(index_queries=(a, r))
    assert select_budgets(specs) == (a, r)
    assert select_budgets(specs, queries=["reviews_top"]) == (r,)
    assert select_budgets(specs, tables=["appointments"]) == (a,)
    # The library names no flag: the error carries what was asked for, the CLI words it.
    with pytest.raises(UnknownSelectionError, match=r"^query schedul: .*did you mean 'schedule'"):
        select_budgets(specs, queries=["schedul"])
    with pytest.raises(UnknownSelectionError, match=r"^table barbers: no budgeted query") as err:
        select_budgets(specs, tables=["barbers"])
    assert (err.value.selector, err.value.name) == (Selector.TABLE, "barbers")
    with pytest.raises(EmptySelectionError):
        select_budgets(specs, queries=["schedule"], tables=["reviews"])
    with pytest.raises(ConfigError, match="nothing to verify"):
        select_budgets(SpecSet())


def test_junit_xml_escapes_and_strips_what_xml_cannot_hold() -> None:
    data = junit_xml(
        "s",
        [
            Case("ok", "c", 0.1),
            Case("bad", "c", 0.2, failure='p95 <&> "x"', details="plan\x00\x1b text"),
        ],
    )
    root = ET.fromstring(data)
    suite = root.find("testsuite")
    assert suite is not None and suite.get("tests") == "2" and suite.get("failures") == "1"
    failure = root.find(".//testcase[@name='bad']/failure")
    assert failure is not None
    assert failure.get("message") == 'p95 <&> "x"'
    assert failure.text == "plan?? text"


def test_load_baseline_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_baseline(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(BaselineError, match="not a dbopt verify report") as err:
        load_baseline(bad)
    assert err.value.problem == BaselineProblem.NOT_A_REPORT and "--" not in str(err.value)


# --- against a real PostgreSQL -------------------------------------------------------------

ROWS = 50_000


@pytest.fixture
def appointments(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """50k appointments over 2,000 barbers: without an index the planner must seq scan."""
    conn.execute(
        "CREATE TABLE appointments (id int PRIMARY KEY, barber_id int NOT NULL, "
        "status text NOT NULL, notes text)"
    )
    conn.execute(
        "INSERT INTO appointments SELECT g, g % 2000, "
        "(ARRAY['confirmed','pending','done'])[1 + g % 3], repeat('x', 40) "
        f"FROM generate_series(1, {ROWS}) g"
    )
    conn.execute("CREATE TABLE barbers (id int PRIMARY KEY, name text)")
    conn.execute("INSERT INTO barbers SELECT g, 'b' || g FROM generate_series(1, 50) g")
    conn.execute("ANALYZE")
    return conn


SCHEDULE = """\
    table: appointments
    indexes:
      - name: idx_appt_barber
        columns: [barber_id]
        reason: each barber's schedule
    queries:
      - name: barber_schedule
        sql: |
          SELECT id, status FROM appointments
          WHERE barber_id = %(barber_id)s AND status IN ('confirmed', 'pending')
        params: {barber_id: 7}
        budget_ms: 0.5  # a seq scan of 50k rows is several times that, even on a noisy machine
        runs: 10
        warmup: 3
        expect:
          uses_index: [idx_appt_barber]
          no_seq_scan_on: [appointments]
    """

BARBERS = """\
    table: barbers
    queries:
      - name: barber_by_id
        sql: SELECT name FROM barbers WHERE id = 3
        budget_ms: 200
        runs: 3
        warmup: 0
    """


def write_specs(root: Path, files: dict[str, str]) -> Path:
    specs = root / "indexes"
    specs.mkdir(exist_ok=True)
    for name, body in files.items():
        (specs / name).write_text(textwrap.dedent(body))
    return specs


def test_missing_index_fails_and_says_why_then_passes_once_built(
    appointments: psycopg.Connection[Any], db_dsn: str, tmp_path: Path
) -> None:
    specs = write_specs(tmp_path, {"appointments.yaml": SCHEDULE, "barbers.yaml": BARBERS})
    junit = tmp_path / "verify.xml"
    args = ["--dsn", db_dsn, "--specs", str(specs), "--format", "plain"]
    result = run(*args, "--junit", str(junit))
    assert result.exit_code == 1, result.output
    out = result.output
    assert "the server's execution time from EXPLAIN ANALYZE" in out
    assert "fail (budget, no_seq_scan_on, uses_index)" in out
    assert "FAIL barber_schedule (" in out
    assert "expected index idx_appt_barber is not used (it uses no index)" in out
    assert "it is not in the database yet: run dbopt apply" in out
    # The plan tree, with the seq scan marked and the filter that threw most rows away.
    assert "Seq Scan on public.appointments  (rows " in out
    assert "<== a Seq Scan, which expect.no_seq_scan_on forbids on public.appointments" in out
    assert "removed by its filter" in out
    # The param 7 is an int like the column (the server typed it), not psycopg's smallint.
    assert "Filter: (" in out and "appointments.barber_id = 7)" in out
    # The index of the specs that was meant to serve it.
    assert "meant to be served by:" in out
    assert "CREATE INDEX idx_appt_barber ON public.appointments (barber_id) [" in out
    assert "in the specs but not built yet: run dbopt apply — each barber's schedule" in out
    assert "1 of 2 budgeted queries failed: barber_schedule" in out

    root = ET.parse(junit).getroot()
    cases = root.findall(".//testcase")
    assert sorted(c.get("name", "") for c in cases) == ["barber_by_id", "barber_schedule"]
    failed = {c.get("name"): c.find("failure") for c in cases}
    assert failed["barber_by_id"] is None
    failure = failed["barber_schedule"]
    assert failure is not None and failure.get("type") == "budget"
    assert "over the budget of 0.5 ms" in (failure.get("message") or "")
    assert "Seq Scan on public.appointments" in (failure.text or "")

    appointments.execute("CREATE INDEX idx_appt_barber ON appointments (barber_id)")
    appointments.execute("ANALYZE appointments")
    result = run(*args, "--junit", str(junit))
    assert result.exit_code == 0, result.output
    assert "2 queries: 2 pass, 0 warn, 0 fail" in result.output
    assert "idx_appt_barber" in result.output
    assert not ET.parse(junit).getroot().findall(".//failure")


def test_json_and_markdown_and_table_formats(
    appointments: psycopg.Connection[Any], db_dsn: str, tmp_path: Path
) -> None:
    specs = write_specs(tmp_path, {"appointments.yaml": SCHEDULE, "barbers.yaml": BARBERS})
    args = ["--dsn", db_dsn, "--specs", str(specs)]
    result = run(*args, "--format", "json")
    assert result.exit_code == 1
    # stdout holds the JSON; the CLI's "error: ..." line goes to stderr.
    data = json.loads(result.stdout)
    assert data["summary"] == {"pass": 1, "warn": 0, "unstable": 0, "fail": 1}
    q = {item["name"]: item for item in data["queries"]}["barber_schedule"]
    assert q["status"] == "fail" and q["runs"] == 10 and q["warmup"] == 3
    assert q["scans"] == ["Seq Scan on public.appointments"]
    assert q["rows"] == 17 and q["shared_hit"] + q["shared_read"] > 0
    assert q["p50_ms"] <= q["p95_ms"] <= q["max_ms"]
    assert q["culprit"] == "Seq Scan on public.appointments"

    markdown = run(*args, "--format", "markdown").output
    assert "| query " in markdown and "#### FAIL barber_schedule" in markdown
    assert "```text" in markdown

    # Rich: filter text with [brackets] must print as text, not as console markup.
    table = run(*args, "--format", "table").output
    assert "Query budgets (times in ms)" in table and "<==" in table


def test_query_and_table_select_a_subset(
    appointments: psycopg.Connection[Any], db_dsn: str, tmp_path: Path
) -> None:
    specs = write_specs(tmp_path, {"appointments.yaml": SCHEDULE, "barbers.yaml": BARBERS})
    args = ["--dsn", db_dsn, "--specs", str(specs), "--format", "json"]
    for flag in (["--query", "barber_by_id"], ["--table", "public.barbers"]):
        result = run(*args, *flag)
        assert result.exit_code == 0, result.output
        assert [q["name"] for q in json.loads(result.stdout)["queries"]] == ["barber_by_id"]
    result = run(*args, "--query", "barber_by_di")
    assert result.exit_code == 2
    assert "--query barber_by_di: no budgeted query has that name; did you mean" in result.output
    # The library's errors carry what was asked for; the CLI words them as its flags.
    result = run(*args, "--table", "public.barbrs")
    assert result.exit_code == 2
    assert "--table public.barbrs: no budgeted query is written for public.barbrs" in result.output
    result = run(*args, "--query", "barber_by_id", "--table", "public.appointments")
    assert result.exit_code == 2
    assert "--query and --table together select no query" in result.output


def test_expectation_naming_an_unknown_index_or_table_is_a_spec_error(
    appointments: psycopg.Connection[Any], db_dsn: str, tmp_path: Path
) -> None:
    specs = write_specs(
        tmp_path,
        {
            "barbers.yaml": """\
                table: barbers
                queries:
                  - name: by_id
                    sql: SELECT name FROM barbers WHERE id = 3
                    budget_ms: 200
                    expect:
                      uses_index: [barbers_pkey_typo]
                      no_seq_scan_on: [barberz]
                """
        },
    )
    result = run("--dsn", db_dsn, "--specs", str(specs), "--format", "plain")
    assert result.exit_code == 2, result.output
    out = result.output
    where = f"{specs / 'barbers.yaml'}:3:5"
    assert f"{where}: query by_id: expect.uses_index names 'barbers_pkey_typo'" in out
    assert "neither in the specs nor in the database; did you mean 'barbers_pkey'?" in out
    assert f"{where}: query by_id: expect.no_seq_scan_on names public.barberz" in out
    assert "2 problems in the query budgets; nothing was run" in out
    assert "Query budgets" not in out  # nothing measured


def test_dml_in_a_budget_is_refused_by_validation(db_dsn: str, tmp_path: Path) -> None:
    specs = write_specs(
        tmp_path,
        {
            "barbers.yaml": """\
                table: barbers
                queries:
                  - name: purge
                    sql: DELETE FROM barbers
                    budget_ms: 10
                """
        },
    )
    result = run("--dsn", db_dsn, "--specs", str(specs))
    assert result.exit_code == 2
    assert "the query is not valid: must be a read-only SELECT, not DELETE" in result.output


def test_read_only_transaction_refuses_writes_validation_cannot_see(
    appointments: psycopg.Connection[Any],
) -> None:
    # A SELECT the parser accepts, calling a function that deletes: only the server knows.
    appointments.execute(
        "CREATE FUNCTION purge() RETURNS int LANGUAGE plpgsql AS "
        "'BEGIN DELETE FROM barbers; RETURN 1; END'"
    )
    b = budget(sql="SELECT purge()", relation="public.barbers")
    m = measure(appointments, b, Settings())
    assert m.outcome == "error"
    assert m.error == "cannot execute DELETE in a read-only transaction"
    v = judge(m, b)
    assert v.status == Status.FAIL
    assert v.summary == "the query failed: cannot execute DELETE in a read-only transaction"
    assert appointments.execute("SELECT count(*) FROM barbers").fetchone() == (50,)


def test_read_only_transaction_refuses_dml_when_validation_is_bypassed(
    appointments: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Take the parser out of the door entirely: the database must still refuse.
    monkeypatch.setattr(measurement_mod, "budget_query_sql", lambda text: sql.SQL(text))
    for statement in ("DELETE FROM barbers", "UPDATE barbers SET name = 'x'"):
        m = measure(appointments, budget(sql=statement), Settings())
        assert m.outcome == "error"
        assert m.error is not None and "in a read-only transaction" in m.error
    assert appointments.execute("SELECT count(*) FROM barbers WHERE name <> 'x'").fetchone() == (
        50,
    )


# --- verify changes nothing -----------------------------------------------------------------


def scans_and_reset(conn: psycopg.Connection[Any]) -> tuple[int, Any]:
    """(seq_scan of barbers, when the database's statistics were last reset), flushed first."""

    def read() -> tuple[int, Any]:
        row = conn.execute(
            "SELECT (SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'barbers'), "
            "(SELECT stats_reset FROM pg_stat_database WHERE datname = current_database())"
        ).fetchone()
        assert row is not None
        return row[0], row[1]

    if conn.info.server_version >= 150000:
        conn.execute("SELECT pg_stat_force_next_flush()")  # this backend's pending counts, now
        return read()
    # Before 15 a backend's counts and resets reach readers through the statistics collector.
    return settled(read, "the statistics of barbers", hold=1.2)


def test_a_refused_budget_stops_verify_before_any_query_runs(
    appointments: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    # As the superuser, who may reset statistics: only dbopt's check stands in the way.
    admin_conn.execute(
        "CREATE FUNCTION looks_harmless() RETURNS int STABLE LANGUAGE plpgsql "
        "AS 'BEGIN PERFORM pg_stat_reset(); RETURN 1; END'"
    )
    admin_conn.execute("SELECT count(*) FROM barbers")
    before = scans_and_reset(admin_conn)
    assert before[0] > 0
    # The harmless query comes first: had anything run, barbers' seq_scan would have grown.
    good = budget(name="good", sql="SELECT count(*) FROM barbers", relation="public.barbers")
    for text, message in [
        (
            "SELECT pg_stat_reset()",
            "query bad: cannot be run: pg_stat_reset() resets the server's statistics: verify "
            "must change nothing",
        ),
        (
            "SELECT name FROM barbers WHERE id = looks_harmless()",
            "query bad: public.looks_harmless() calls pg_catalog.pg_stat_reset(), which resets "
            "the server's statistics: verify must change nothing",
        ),
    ]:
        bad = budget(name="bad", sql=text)
        for run_it in (run_verify, run_hypothetical):
            with pytest.raises(SpecError) as err:
                run_it(admin_conn, SpecSet(index_queries=(good, bad)), Settings())
            assert err.value.args[0] == "1 problem in the query budgets; nothing was run"
            assert [str(p) for p in err.value.problems] == [f"{HERE}: {message}"]
            assert scans_and_reset(admin_conn) == before
    # What the check stood in front of: the READ ONLY, rolled-back run does reset them.
    m = measure(admin_conn, budget(sql="SELECT looks_harmless()"), Settings())
    assert m.outcome == "ok"
    after = scans_and_reset(admin_conn)
    assert after[1] is not None and after[1] != before[1] and after[0] == 0


def test_refused_built_ins_leave_sessions_locks_slots_and_settings_alone(
    admin_conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    slot = "dbopt_verify_slot"
    with psycopg.connect(db_dsn, autocommit=True) as other:
        pid = other.info.backend_pid
        bad = (
            budget(name="kill", sql=f"SELECT pg_terminate_backend({pid})"),
            budget(name="lock", sql="SELECT pg_advisory_lock(42)"),
            budget(name="slot", sql=f"SELECT * FROM pg_create_physical_replication_slot('{slot}')"),
            budget(name="setting", sql="SELECT set_config('work_mem', '1MB', false)"),
            budget(name="seed", sql="SELECT setseed(0.5)"),
        )
        try:
            with pytest.raises(SpecError) as err:
                run_verify(admin_conn, SpecSet(index_queries=bad), Settings())
            assert err.value.args[0] == "5 problems in the query budgets; nothing was run"
            messages = [p.message for p in err.value.problems]
            assert messages[0] == (
                "query kill: cannot be run: pg_terminate_backend() interrupts or ends another "
                "session: verify must change nothing"
            )
            assert messages[4] == (
                "query seed: pg_catalog.setseed(double precision) is a VOLATILE built-in that "
                "dbopt does not know to be harmless: verify must change nothing"
            )
            assert other.execute("SELECT 1").fetchone() == (1,)  # still alive
            held = admin_conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
            assert held.fetchone() == (0,)
            slots = admin_conn.execute(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", [slot]
            )
            assert slots.fetchone() == (0,)
        finally:
            admin_conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE slot_name = %s",
                [slot],
            )


def test_verify_refuses_a_volatile_function_at_its_file_and_line(
    appointments: psycopg.Connection[Any], db_dsn: str, tmp_path: Path
) -> None:
    appointments.execute(
        "CREATE TABLE visits (barber_id int);"
        "CREATE FUNCTION log_visit(int) RETURNS int LANGUAGE plpgsql "
        "AS 'BEGIN INSERT INTO visits VALUES ($1); RETURN $1; END';"
        "CREATE FUNCTION barber_label(int) RETURNS text STABLE LANGUAGE sql "
        "AS $$ SELECT 'barber ' || $1 $$"
    )
    specs = write_specs(
        tmp_path,
        {
            "barbers.yaml": """\
                table: barbers
                queries:
                  - name: labelled
                    sql: SELECT barber_label(id) FROM barbers WHERE id = 3
                    budget_ms: 200
                    runs: 2
                  - name: logged
                    sql: SELECT name FROM barbers WHERE id = log_visit(3)
                    budget_ms: 200
                """
        },
    )
    args = ["--dsn", db_dsn, "--specs", str(specs), "--format", "plain"]
    result = run(*args)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"{specs / 'barbers.yaml'}:7:5: query logged: public.log_visit(integer) is VOLATILE, so "
        "it may write or change state (declare it STABLE or IMMUTABLE if it only reads): "
        "verify must change nothing",
        "error: 1 problem in the query budgets; nothing was run",
    ]
    assert "Query budgets" not in result.output
    # A STABLE function that only reads is fine, and the query is measured as before.
    result = run(*args, "--query", "labelled")
    assert result.exit_code == 0, result.output
    assert "1 query: 1 pass, 0 warn, 0 fail" in result.output


def test_statement_timeout_stops_a_slow_query(
    conn: psycopg.Connection[Any], db_dsn: str, tmp_path: Path
) -> None:
    b = budget(sql="SELECT pg_sleep(30)", budget_ms=50.0, timeout_ms=300.0, runs=3, warmup=2)
    started = time.monotonic()
    m = measure(conn, b, Settings())
    assert time.monotonic() - started < 5  # stopped at the first run, not 5 x 30 s
    assert m.outcome == "timeout" and m.execution_ms == ()
    assert m.plan is not None and m.plan.node_type == "Result"  # the planner's estimate
    v = judge(m, b)
    assert v.status == Status.FAIL
    assert v.summary.startswith(
        "stopped by statement_timeout after 300 ms (budget 50 ms); the plan shown is the "
        "planner's estimate"
    )
    # The connection is usable afterwards, outside any transaction.
    assert conn.execute("SHOW statement_timeout").fetchone() == ("0",)

    specs = write_specs(
        tmp_path,
        {
            "slow.yaml": """\
                table: slow
                queries:
                  - name: sleepy
                    sql: SELECT pg_sleep(30)
                    budget_ms: 50
                    timeout_ms: 300
                """
        },
    )
    result = run("--dsn", db_dsn, "--specs", str(specs), "--format", "plain")
    assert result.exit_code == 1
    assert "fail (timeout)" in result.output
    assert "stopped by statement_timeout after 300 ms" in result.output


def quiet_or_noisy(monkeypatch: pytest.MonkeyPatch, spread_ms: float) -> None:
    """This run's machine as measured by verify's probe: delaying work by ``spread_ms`` one
    run in twenty (a 10 µs probe: its relative jitter caps nothing)."""
    noise = Noise(runs=30, p50_ms=0.01, p95_ms=0.01 + spread_ms, max_ms=0.01 + spread_ms)
    monkeypatch.setattr(run_mod, "measure_noise", lambda conn, settings: noise)


def test_baseline_detects_an_injected_regression(
    appointments: psycopg.Connection[Any],
    db_dsn: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    appointments.execute("CREATE INDEX idx_appt_barber ON appointments (barber_id)")
    appointments.execute("ANALYZE appointments")
    # A generous budget and no expectations: only the baseline can catch the regression.
    specs = write_specs(
        tmp_path,
        {
            "appointments.yaml": """\
                table: appointments
                queries:
                  - name: barber_schedule
                    sql: SELECT id FROM appointments WHERE barber_id = %(b)s
                    params: {b: 7}
                    budget_ms: 1000
                    runs: 5
                    warmup: 1
                """,
            "barbers.yaml": BARBERS,
        },
    )
    saved = tmp_path / "base.json"
    args = ["--dsn", db_dsn, "--specs", str(specs), "--format", "plain"]
    result = run(*args, "--save", str(saved))
    assert result.exit_code == 0, result.output
    assert load_baseline(saved).entries["barber_schedule"].shape[-1] == (
        "Bitmap Index Scan using idx_appt_barber"
    )

    result = run(*args, "--baseline", str(saved))
    assert result.exit_code == 0, result.output  # unchanged: no regression
    assert "fail (regression)" not in result.output

    appointments.execute("DROP INDEX idx_appt_barber")  # the injected regression
    # A machine delaying work by 100 ms: the regression line is within every p95's noise.
    quiet_or_noisy(monkeypatch, 100.0)
    noisy = run(*args, "--baseline", str(saved), "--regression-floor", "0.5")
    assert noisy.exit_code == 0, noisy.output
    assert "unstable (regression)" in noisy.output
    assert "but the line is within the measured noise" in noisy.output
    # (The other query, in its budget and the baseline, may be within 100 ms of noise too.)
    warning = noisy.stderr.partition("or of the baseline's regression line): ")[2]
    assert "barber_schedule" in warning.partition(";")[0], noisy.stderr
    strict = run(*args, "--baseline", str(saved), "--regression-floor", "0.5", "--strict")
    assert strict.exit_code == 1, strict.output
    assert "(--strict)" in strict.stderr
    # A baseline of other specs (every query renamed) would check nothing: refused before
    # anything runs (seen in an exploratory review: 2 pass, exit 0, the gate silently off).
    other = json.loads(saved.read_text())
    for item in other["queries"]:
        item["name"] = "renamed_" + item["name"]
    (tmp_path / "other.json").write_text(json.dumps(other))
    disjoint = run(*args, "--baseline", str(tmp_path / "other.json"))
    assert disjoint.exit_code == 2, disjoint.output
    assert "none of the 2 queries verified is in it" in disjoint.stderr
    other["queries"][0]["p95_ms"] = -1
    (tmp_path / "other.json").write_text(json.dumps(other))
    negative = run(*args, "--baseline", str(tmp_path / "other.json"))
    assert negative.exit_code == 2 and "a query entry is malformed" in negative.stderr
    # A quiet machine: the sequential scan's runs are all above the line.
    quiet_or_noisy(monkeypatch, 0.0)
    result = run(*args, "--baseline", str(saved), "--regression-floor", "0.5")
    assert result.exit_code == 1, result.output
    out = result.output
    assert "fail (plan_changed, regression)" not in out  # plan change alone only warns
    assert "fail (regression)" in out
    assert "p95 regressed +" in out and "against the baseline" in out
    assert "warn: the plan changed shape since the baseline:" in out
    assert "+ Seq Scan on public.appointments" in out
    assert "- Bitmap Index Scan using idx_appt_barber" in out
    assert "1 of 2 budgeted queries failed: barber_schedule" in out


def test_no_connection_exits_3(tmp_path: Path) -> None:
    specs = write_specs(tmp_path, {"barbers.yaml": BARBERS})
    result = run("--dsn", "postgresql://nobody:s3cret@127.0.0.1:1/x", "--specs", str(specs))
    assert result.exit_code == 3
    assert "could not connect" in result.output
    assert "s3cret" not in result.output


def test_bad_flags_exit_2(tmp_path: Path) -> None:
    specs = write_specs(tmp_path, {"barbers.yaml": BARBERS})
    result = run("--specs", str(specs), "--create-extension")
    assert result.exit_code == 2
    assert "--create-extension only applies with --hypothetical" in result.output
    result = run("--specs", str(specs), "--hypothetical", "--save", "x.json")
    assert result.exit_code == 2
    result = run("--specs", str(specs), "--baseline", str(tmp_path / "nope.json"))
    assert result.exit_code == 2
    assert "nope.json: no such file (write one with --save)" in result.output
    (tmp_path / "list.json").write_text("[]")
    result = run("--specs", str(specs), "--baseline", str(tmp_path / "list.json"))
    assert result.exit_code == 2
    assert (
        "list.json: not a dbopt verify report (version 1); write one with dbopt verify --save"
        in (result.output)
    )


# --- hypothetical indexes ------------------------------------------------------------------


HYPO_SPECS = {
    "appointments.yaml": """\
        table: appointments
        indexes:
          - name: idx_appt_barber
            columns: [barber_id]
          - name: idx_appt_status
            columns: [status]
        queries:
          - name: barber_schedule
            sql: SELECT id FROM appointments WHERE barber_id = %(b)s
            params: {b: 7}
            budget_ms: 2
            expect: {uses_index: [idx_appt_barber]}
          - name: by_status_expected_wrongly
            sql: SELECT id FROM appointments WHERE barber_id = 9
            budget_ms: 2
            expect: {uses_index: [idx_appt_status]}
        """
}


def test_hypothetical_indexes_with_hypopg(
    appointments: psycopg.Connection[Any],
    db_dsn: str,
    admin_conn: psycopg.Connection[Any],
    tmp_path: Path,
) -> None:
    if not has_extension(appointments, "hypopg"):
        skip_without_extension(appointments, "hypopg", "Debian: postgresql-NN-hypopg")
    specs_dir = write_specs(tmp_path, HYPO_SPECS)
    args = ["--dsn", db_dsn, "--specs", str(specs_dir), "--format", "plain", "--hypothetical"]

    # Not installed in the database: say how, change nothing, exit 2.
    result = run(*args)
    assert result.exit_code == 2
    assert "run CREATE EXTENSION hypopg there, or pass --create-extension" in result.output
    assert (
        appointments.execute("SELECT 1 FROM pg_extension WHERE extname = 'hypopg'").fetchone()
        is None
    )

    # HypoPG is not a trusted extension: the owner role may not create it, and is told so.
    result = run(*args, "--create-extension")
    assert result.exit_code == 2
    assert 'permission denied to create extension "hypopg"' in result.output
    admin_conn.execute("CREATE EXTENSION hypopg")

    junit = tmp_path / "hypo.xml"
    result = run(*args, "--junit", str(junit), "--query", "barber_schedule")
    assert result.exit_code == 0, result.output
    assert "nothing was built or run" in result.output
    assert "would use" in result.output and "idx_appt_barber" in result.output
    assert len(ET.parse(junit).getroot().findall(".//testcase")) == 1

    specs = load_specs([(specs_dir, True)])
    # A hypothetical index the caller made before: verify must leave it where it was.
    mine = appointments.execute(
        "SELECT indexname FROM hypopg_create_index('CREATE INDEX ON barbers (name)')"
    ).fetchall()
    report = run_hypothetical(appointments, specs, Settings())
    assert appointments.execute("SELECT indexname FROM hypopg()").fetchall() == mine
    assert {h.spec.name for h in report.indexes} == {"idx_appt_barber", "idx_appt_status"}
    assert all(h.hypo_name and h.hypo_name.startswith("<") for h in report.indexes)
    by_name = {q.budget.name: q for q in report.queries}
    good = by_name["barber_schedule"]
    assert good.status == Status.PASS and good.would_use == ("idx_appt_barber",)
    assert good.cost_before is not None and good.cost_after is not None
    assert good.change is not None and good.change < -0.5  # far cheaper with the index
    wrong = by_name["by_status_expected_wrongly"]
    assert wrong.status == Status.FAIL
    assert "expected index idx_appt_status is not used" in wrong.findings[0].message
    # Hypothetical indexes are gone afterwards, and nothing was built.
    assert admin_conn.execute("SELECT count(*) FROM hypopg_list_indexes").fetchone() == (0,)
    assert appointments.execute(
        "SELECT count(*) FROM pg_indexes WHERE indexname LIKE 'idx_appt%'"
    ).fetchone() == (0,)

    result = run(*args)
    assert result.exit_code == 1
    assert "by_status_expected_wrongly" in result.output


def test_hypothetical_refuses_before_it_creates_the_extension(
    appointments: psycopg.Connection[Any],
    admin_dsn: str,
    admin_conn: psycopg.Connection[Any],
    tmp_path: Path,
) -> None:
    if not has_extension(appointments, "hypopg"):
        skip_without_extension(appointments, "hypopg", "Debian: postgresql-NN-hypopg")
    specs = write_specs(
        tmp_path,
        {
            "barbers.yaml": """\
                table: barbers
                queries:
                  - name: seeded
                    sql: SELECT setseed(0.5), name FROM barbers
                    budget_ms: 20
                """
        },
    )
    # The superuser could create HypoPG: the refusal must come first.
    result = run("--dsn", admin_dsn, "--specs", str(specs), "--hypothetical", "--create-extension")
    assert result.exit_code == 2
    assert "query seeded: pg_catalog.setseed(double precision) is a VOLATILE built-in" in (
        result.output
    )
    assert "nothing was run" in result.output
    installed = admin_conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'hypopg'")
    assert installed.fetchone() is None


def test_hypothetical_without_hypopg_says_how_to_get_it(
    conn: psycopg.Connection[Any], db_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hypothetical_mod, "hypopg_versions", lambda _conn: (None, None))
    specs = SpecSet(index_queries=(budget(),))
    major = conn.info.server_version // 10000
    with pytest.raises(InputError, match=f"apt-get install postgresql-{major}-hypopg"):
        run_hypothetical(conn, specs, Settings())
    files = write_specs(tmp_path, {"barbers.yaml": BARBERS})
    result = run("--dsn", db_dsn, "--specs", str(files), "--hypothetical")
    assert result.exit_code == 2
    assert "--hypothetical needs the HypoPG extension, which this server does not have" in (
        result.output
    )


def test_run_verify_library_api(appointments: psycopg.Connection[Any]) -> None:
    b = budget(
        sql="SELECT id FROM appointments WHERE barber_id = %(b)s",
        params={"b": 7},
        uses_placeholders=True,
        budget_ms=1000.0,
        expect=Expectation(no_seq_scan_on=(QualifiedName("public", "nope"),)),
    )
    with pytest.raises(SpecError) as err:
        run_verify(appointments, SpecSet(index_queries=(b,)), Settings())
    assert err.value.problems[0].line == HERE.line
    ok = budget(
        sql="SELECT id FROM appointments WHERE barber_id = %(b)s",
        params={"b": 7},
        uses_placeholders=True,
        budget_ms=1000.0,
    )
    report = run_verify(appointments, SpecSet(index_queries=(ok,)), Settings())
    (result,) = report.results
    assert result.verdict.status == Status.PASS
    assert result.measurement.rows == ROWS // 2000
    assert len(result.measurement.execution_ms) == ok.runs


def test_no_seq_scan_on_a_partitioned_table_covers_its_partitions(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute("CREATE TABLE events (id int, at date NOT NULL) PARTITION BY RANGE (at)")
    conn.execute(
        "CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO "
        "('2026-01-01') PARTITION BY RANGE (at)"
    )
    # A sub-partition (seen in a review: only the partitions one level down were counted).
    conn.execute(
        "CREATE TABLE events_2025_h1 PARTITION OF events_2025 FOR VALUES FROM ('2025-01-01') "
        "TO ('2025-07-01')"
    )
    conn.execute(
        "CREATE TABLE events_2025_h2 PARTITION OF events_2025 FOR VALUES FROM ('2025-07-01') "
        "TO ('2026-01-01')"
    )
    conn.execute(
        "INSERT INTO events SELECT g, DATE '2025-01-01' + g % 300 FROM generate_series(1, 5000) g"
    )
    conn.execute("ANALYZE events")
    b = budget(
        sql="SELECT count(*) FROM events WHERE id = 5",
        budget_ms=1000.0,
        relation="public.events",
        expect=Expectation(no_seq_scan_on=(QualifiedName("public", "events"),)),
    )
    (result,) = run_verify(conn, SpecSet(index_queries=(b,)), Settings()).results
    assert result.verdict.status == Status.FAIL
    assert result.verdict.summary in {
        f"Seq Scan on public.events_2025_{half} (expect.no_seq_scan_on: public.events)"
        for half in ("h1", "h2")
    }, result.verdict.summary


# --- one explanation, the same words in every output (no database) -------------------------

SPEC_AT = Location("indexes/appointments.yaml", 3, 5)


def failing() -> VerifyReport:
    """One query over budget, with a forbidden seq scan and a spec index not built yet."""
    b = budget(
        budget_ms=5.0,
        expect=Expectation(uses_index=("idx_appt_barber",), no_seq_scan_on=(APPTS,)),
    )
    spec = IndexSpec(
        name="idx_appt_barber",
        table=APPTS,
        columns=(IndexColumn(name="barber_id"),),
        location=SPEC_AT,
        reason="each barber's schedule",
    )
    m = seq_measurement()
    v = judge(m, b, specs=SpecSet(indexes=(spec,), index_queries=(b,)))
    return VerifyReport((QueryResult(b, m, v),), 150000)


def test_the_explanation_says_why_with_the_plan_and_the_meant_index() -> None:
    (result,) = failing().results
    text = explanation(result)
    assert text.splitlines()[0].startswith("- fail: p95 7.380 ms is over the budget of 5 ms")
    assert "\nplan of the last run:\nAggregate  (rows 1, 7.500 ms)\n" in text
    assert "<== a Seq Scan, which expect.no_seq_scan_on forbids on public.appointments" in text
    assert "\nmeant to be served by:\n  CREATE INDEX idx_appt_barber ON public.appointments" in text
    roles = [line.role for line in explanation_lines(result)]
    assert Role.CULPRIT in roles and roles.count(Role.HEADING) == 2
    # Only the findings that count carry a status a terminal colours.
    assert {line.status for line in explanation_lines(result) if line.role == Role.FINDING} == {
        Status.FAIL
    }


def test_a_sub_partitions_scan_is_meant_for_the_specs_of_every_table_above_it() -> None:
    """Seen in a review: only the partitioned table directly above a scanned partition was
    looked up, so a spec on the root of a two-level partitioned table was never named."""
    root, middle = QualifiedName("public", "appts_all"), QualifiedName("public", "appts_2025")

    def table(name: QualifiedName, kind: str, partitions: tuple[QualifiedName, ...]) -> Relation:
        return Relation(
            name=name,
            relkind=kind,
            is_partition=name != root,
            owner="o",
            owned=True,
            total_bytes=None,
            estimated_rows=0,
            columns=("barber_id",),
            partitions=partitions,
        )

    catalog = Catalog(
        server_version=150000,
        relations={
            root: table(root, "p", (middle,)),
            middle: table(middle, "p", (APPTS,)),
            APPTS: table(APPTS, "r", ()),
        },
    )
    spec = IndexSpec(
        name="idx_all_barber",
        table=root,
        columns=(IndexColumn(name="barber_id"),),
        location=SPEC_AT,
    )
    b = budget(sql="SELECT count(*) FROM appts_all WHERE barber_id = 7", budget_ms=5.0)
    v = judge(seq_measurement(), b, catalog=catalog, specs=SpecSet(indexes=(spec,)))
    assert [mi.spec.name for mi in v.meant] == ["idx_all_barber"]


def test_without_uses_index_only_indexes_leading_with_a_query_column_are_meant() -> None:
    """Seen in an exploratory review: a failing query without uses_index listed every spec
    index of its table as 'meant to serve' it, those that could never serve it too."""
    b = budget(
        sql="SELECT count(*) FROM appointments WHERE barber_id = 7 AND lower(status) = 'x'",
        budget_ms=5.0,
    )

    def spec(name: str, column: IndexColumn) -> IndexSpec:
        return IndexSpec(name=name, table=APPTS, columns=(column,), location=SPEC_AT)

    specs = (
        spec("idx_appt_barber", IndexColumn(name="barber_id")),
        spec("idx_appt_client", IndexColumn(name="client_id")),  # cannot serve it
        spec("idx_appt_status", IndexColumn(expr="lower(status)")),
        spec("idx_appt_made", IndexColumn(expr="date_trunc('day', created_at)")),
    )
    m = seq_measurement()
    v = judge(m, b, specs=SpecSet(indexes=specs, index_queries=(b,)))
    assert v.status == Status.FAIL
    assert [mi.spec.name for mi in v.meant] == ["idx_appt_barber", "idx_appt_status"]

    def meant(sql: str, server_version: int = 150000) -> list[str]:
        query = budget(sql=sql, budget_ms=5.0)
        catalog = Catalog(server_version=server_version)
        found = judge(m, query, catalog=catalog, specs=SpecSet(indexes=specs))
        return [mi.spec.name for mi in found.meant]

    everything = [s.name for s in specs]
    # What the text cannot tell (seen in a review: these hid every index): a join matching
    # columns it does not name, the table read through a view or a function.
    assert meant("SELECT 1 FROM appointments JOIN clients USING (client_id)") == everything
    assert meant("SELECT 1 FROM appointments NATURAL JOIN clients") == everything
    assert meant("SELECT * FROM upcoming WHERE client = 5") == everything
    assert meant("SELECT * FROM appointments_of(5)") == everything
    cte = "WITH r AS (SELECT * FROM appointments) SELECT r.id FROM r WHERE r.client_id = 5"
    assert meant(cte) == everything
    sub = "SELECT s.id FROM (SELECT * FROM appointments) s WHERE s.client_id = 5"
    assert meant(sub) == everything
    assert meant("SELECT 1 FROM appointments a WHERE (a).client_id = 5") == everything
    # A column of another table (c.status) is not this table's; an unqualified one may be.
    joined = (
        "SELECT 1 FROM appointments a JOIN clients c ON c.id = a.client_id WHERE c.status = 'x'"
    )
    assert meant(joined) == ["idx_appt_client"]
    # From PostgreSQL 18 a later key may serve it (skip scan).
    wide = (
        IndexSpec(
            name="idx_appt_day_barber",
            table=APPTS,
            columns=(IndexColumn(name="created_at"), IndexColumn(name="barber_id")),
            location=SPEC_AT,
        ),
    )
    query = budget(sql="SELECT 1 FROM appointments WHERE barber_id = 7", budget_ms=5.0)
    for version, expected in ((170000, []), (180000, ["idx_appt_day_barber"])):
        found = judge(
            m, query, catalog=Catalog(server_version=version), specs=SpecSet(indexes=wide)
        )
        assert [mi.spec.name for mi in found.meant] == expected


@pytest.mark.parametrize("fmt", ["plain", "markdown"])
def test_plain_and_markdown_print_the_explanation(fmt: str) -> None:
    report = failing()
    out = io.StringIO()
    verify_output.print_text(report, fmt, out, 0)
    printed = [line.strip() for line in out.getvalue().splitlines()]
    for line in explanation(report.results[0]).splitlines():
        assert line.strip() in printed


def test_the_terminal_table_prints_the_same_words(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # rich wraps at the console width
    report = failing()
    out = io.StringIO()
    verify_output.print_rich(report, out, 0)
    printed = [line.strip() for line in out.getvalue().splitlines()]
    for line in explanation(report.results[0]).splitlines():
        assert line.strip() in printed


def test_json_and_junit_carry_the_explanation() -> None:
    report = failing()
    (result,) = report.results
    assert report_dict(report)["queries"][0]["explanation"] == explanation(result)
    (case,) = verify_cases(report)
    assert case.details == explanation(result)
    failure = ET.fromstring(junit_xml("s", [case])).find(".//failure")
    assert failure is not None and failure.text == explanation(result)


def test_a_note_is_not_coloured_as_a_pass() -> None:
    note = Finding(Status.PASS, FindingKind.NOTE, "not in the baseline base.json")
    result = QueryResult(
        budget(), seq_measurement(), judge(seq_measurement(), budget())
    )  # a pass, shown with -v
    lines = explanation_lines(result)
    # A pass shows the budget it met, coloured as a pass; a note is not coloured at all.
    (met,) = [line for line in lines if line.role == Role.FINDING]
    assert met.text.startswith("- pass: p95 7.380 ms is within the budget of 10 ms")
    assert met.status == Status.PASS
    what_if = WhatIf(budget(), Status.PASS, (note,))
    (line,) = explanation_lines(what_if)
    assert line.text == "- pass: not in the baseline base.json" and line.status is None


def test_a_hypothetical_query_is_explained_the_same_way() -> None:
    finding = Finding(Status.FAIL, FindingKind.USES_INDEX, "expected index i is not used")
    plan = parse_plan(SEQ_PLAN["Plans"][0])
    q = WhatIf(budget(), Status.FAIL, (finding,), 10.0, 9.0, (), plan, plan)
    report = HypotheticalReport("1.4.1", (), (q,), 150000)
    text = explanation(q)
    assert text == (
        "- fail: expected index i is not used\n\n"
        "estimated plan with the hypothetical indexes:\n"
        "Seq Scan on public.appointments  (rows 25, removed by filter 49,975, 7.000 ms)\n"
        "   Filter: (barber_id = 7)"
    )
    assert hypothetical_dict(report)["queries"][0]["explanation"] == text
    (case,) = hypothetical_cases(report)
    assert case.details == text


def _markdown_blocks_stand_apart(text: str) -> None:
    """Every table and fenced block of ``text`` has a blank line (or a heading) before it and
    a blank line after it: GitHub would otherwise run a summary line into the table."""
    lines = text.splitlines()
    fenced = False
    for i, line in enumerate(lines):
        starts_table = line.startswith("|") and (i == 0 or not lines[i - 1].startswith("|"))
        ends_table = (
            line.startswith("|") and i + 1 < len(lines) and not lines[i + 1].startswith("|")
        )
        if line.startswith("```"):
            fenced = not fenced
            if fenced:
                assert i == 0 or lines[i - 1] == "", text
            else:
                assert i + 1 == len(lines) or lines[i + 1] == "", text
        elif starts_table and not fenced:
            assert i == 0 or lines[i - 1] == "" or lines[i - 1].startswith("#"), text
        if ends_table and not fenced:
            assert lines[i + 1] == "", text


def test_markdown_separates_summary_lines_from_tables() -> None:
    out = io.StringIO()
    verify_output.print_text(failing(), "markdown", out, 0)
    _markdown_blocks_stand_apart(out.getvalue())
    # Times in one format: the budget as the measured times are.
    assert "| 5.000 " in out.getvalue() and "| 7.380 " in out.getvalue()

    finding = Finding(Status.FAIL, FindingKind.USES_INDEX, "expected index i is not used")
    plan = parse_plan(SEQ_PLAN["Plans"][0])
    q = WhatIf(budget(), Status.FAIL, (finding,), 10.0, 9.0, (), plan, plan)
    report = HypotheticalReport("1.4.1", (), (q,), 150000)
    opts = Options(env=None, dsn=None, config=None, specs=(), fmt="markdown", verbose=0)
    out = io.StringIO()
    with pytest.raises(CheckFailedError, match="would still miss their expectations"):
        verify_output.finish_hypothetical(report, opts, None, out)
    text = out.getvalue()
    _markdown_blocks_stand_apart(text)
    assert "nothing was built or run.\n\nEvery index in the specs exists already" in text
    assert "#### FAIL q (indexes/appointments.yaml:7:5)\n\n```text\n- fail: expected" in text
