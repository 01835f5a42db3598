"""Fleets: one spec set, many databases, one report.

Twenty databases on the session's server (copies of one template, made once for the module)
and one on a second local server form the `fleet` environment. The tests plan, apply,
verify, refresh, read status and roll back across all of them, and check the policy: a
target down (a closed port) with and without --continue-on-error, a target whose run lock is
held, a canary whose budgets fail, Ctrl-C in a subprocess, JUnit with one suite per target,
targets from a registry query; and that no password is ever printed.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from click.testing import Result
from conftest import Owner, with_user
from harness.servers import running_server
from helpers import cli, invalid_indexes, read_until, start_dbopt, wait_for, write_files

from dbopt.fleetwork import _file_name
from dbopt.sandbox import Probe, Server

# A fleet's orchestration, signals and output: nothing of the server's major (harness.matrix).
pytestmark = pytest.mark.one_major

COUNT = 20
TEMPLATE = "fleet_template"
SECRET = "fleet-Secret-pw-42"

TABLE = """
CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL, note text);
INSERT INTO orders SELECT g, g % 1000, 'n' FROM generate_series(1, 20000) g;
ANALYZE orders;
"""

ORDERS = """
table: public.orders
indexes:
  - {name: idx_orders_customer, columns: [customer_id], reason: a customer's orders}
queries:
  - name: orders_of_customer
    sql: SELECT id FROM orders WHERE customer_id = %(c)s
    params: {c: 7}
    budget_ms: 200
    runs: 2
    warmup: 1
    expect:
      no_seq_scan_on: [orders]
"""

VIEW = """
name: mv_customers
query: SELECT customer_id, count(*) AS n FROM orders GROUP BY customer_id
indexes:
  - {name: mv_customers_id, columns: [customer_id], unique: true}
"""

#: A concurrent build in this database waiting for a lock (the open write holding it up).
WAITING_HERE = (
    "SELECT pid FROM pg_stat_activity WHERE query LIKE 'CREATE INDEX CONCURRENTLY%' "
    "AND wait_event_type = 'Lock' AND datname = current_database()"
)

SETTINGS = {"lock_timeout": "2s", "retries": 0, "cleanup_wait": "5s"}


@dataclass(frozen=True)
class FleetDbs:
    """The module's databases: owner DSNs (with a password in them) and superuser DSNs."""

    names: list[str]
    dsns: list[str]
    admin: list[str]
    other: str  # the database on the second server (superuser: a server of its own)


def _owner_dsn(dsn: str, owner: Owner) -> str:
    # A trusting server ignores the password; it is there to prove it is never printed.
    return with_user(dsn, owner.name, owner.password or SECRET) if owner.name else dsn


@pytest.fixture(scope="module")
def fleet_dbs(
    pg_server: Server, owner_role: Owner, template_db: str, server_probes: tuple[Probe, ...]
) -> Iterator[FleetDbs]:
    """Twenty copies of one template on the session's server, one database on another."""
    template = pg_server.create_database(TEMPLATE, owner=owner_role.name)
    with psycopg.connect(_owner_dsn(template, owner_role), autocommit=True) as conn:
        conn.execute(TABLE)  # type: ignore[call-overload]
    names = [f"fleet_{i:02}" for i in range(1, COUNT + 1)]
    admin = [pg_server.create_database(n, template=TEMPLATE, owner=owner_role.name) for n in names]
    try:
        with running_server(probes=server_probes) as other:
            other_dsn = other.create_database("fleet_other")
            with psycopg.connect(other_dsn, autocommit=True) as conn:
                conn.execute(TABLE)  # type: ignore[call-overload]
            yield FleetDbs(names, [_owner_dsn(d, owner_role) for d in admin], admin, other_dsn)
    finally:
        for name in [*names, TEMPLATE]:
            pg_server.drop_database(name)


def _reset(dsns: list[str]) -> None:
    """Every database as the template left it: no index, view or history of dbopt's."""
    for dsn in dsns:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DROP SCHEMA IF EXISTS dbopt CASCADE")
            conn.execute("DROP MATERIALIZED VIEW IF EXISTS mv_customers")
            conn.execute("DROP INDEX IF EXISTS idx_orders_customer")


#: A refresh of mv_customers waiting for a lock.
WAITING_REFRESH = (
    "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
    "AND query LIKE 'REFRESH MATERIALIZED VIEW%%'"
)


def _config(targets: list[Any], **extra: Any) -> str:
    return yaml.safe_dump(
        {"environments": {"fleet": {"targets": targets, **SETTINGS, **extra}}}, sort_keys=False
    )


@pytest.fixture
def project(fleet_dbs: FleetDbs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The specs and a `fleet` environment of 21 targets (t01..t20, and the other server's
    database named after its host and database); the working directory is the project."""
    _reset([*fleet_dbs.dsns, fleet_dbs.other])
    targets: list[Any] = [{"name": f"t{i:02}", "dsn": d} for i, d in enumerate(fleet_dbs.dsns, 1)]
    targets.append(fleet_dbs.other)
    write_files(
        tmp_path,
        {
            "indexes/orders.yaml": ORDERS,
            "views/mv_customers.yaml": VIEW,
            "dbopt.yaml": _config(targets),
        },
    )
    monkeypatch.chdir(tmp_path)
    for name in ("DBOPT_DSN", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    yield tmp_path


def dbopt(*args: str, input: str | None = None) -> Result:
    """The CLI in-process; no output of any fleet command may hold the password."""
    result = cli(*args, input=input)
    assert SECRET not in result.output, result.output
    return result


def _rows(result: Result) -> dict[str, dict[str, Any]]:
    report = json.loads(result.stdout)
    return {t["target"]: t for t in report["targets"]}


def _has_index(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('idx_orders_customer')"
        ).fetchone()
    return row == (True,)


@pytest.mark.slow
def test_plan_apply_verify_status_refresh_rollback_across_the_fleet(
    project: Path, fleet_dbs: FleetDbs
) -> None:
    started = time.monotonic()
    plan = dbopt("plan", "--env", "fleet", "--format", "json")
    plan_seconds = time.monotonic() - started
    assert plan.exit_code == 0, plan.output
    rows = _rows(plan)
    assert len(rows) == COUNT + 1
    other = next(n for n in rows if not n.startswith("t"))
    assert other.endswith("/fleet_other")  # named after host/database
    assert {r["outcome"] for r in rows.values()} == {"changes"}
    assert {r["changes"] for r in rows.values()} == {2}  # the index, the view (and its index)
    # Progress: one line per target event, and a running count.
    assert "t07: changes" in plan.stderr
    assert f"{COUNT + 1}/{COUNT + 1} done, 0 failed" in plan.stderr
    print(f"plan across {COUNT + 1} targets: {plan_seconds:.2f} s")

    assert dbopt("plan", "--env", "fleet", "--exit-code").exit_code == 1

    apply = dbopt("apply", "--env", "fleet", "--parallel", "4", "--format", "json")
    assert apply.exit_code == 0, apply.output
    assert {r["outcome"] for r in _rows(apply).values()} == {"applied"}
    assert all(_has_index(d) for d in [*fleet_dbs.dsns, fleet_dbs.other])
    assert "t03: " in apply.stderr  # the targets' own events carry their names

    again = dbopt("plan", "--env", "fleet", "--format", "plain")
    assert again.exit_code == 0, again.output
    assert again.stdout.count(" unchanged ") == COUNT + 1

    verify = dbopt("verify", "--env", "fleet", "--format", "json")
    assert verify.exit_code == 0, verify.output
    assert {r["outcome"] for r in _rows(verify).values()} == {"pass"}
    # Never two targets of one server measured at once: the two servers', side by side.
    assert f"{COUNT + 1} targets, 2 at a time (one per server: 2 servers)" in verify.stderr

    status = dbopt("status", "--env", "fleet", "--exit-code", "--format", "json")
    assert status.exit_code == 0, status.output
    assert {r["outcome"] for r in _rows(status).values()} == {"ok"}

    refresh = dbopt("refresh-views", "--env", "fleet", "--targets", "t1*", "--format", "json")
    assert refresh.exit_code == 0, refresh.output
    refreshed = _rows(refresh)
    assert sorted(refreshed) == [f"t{i}" for i in range(10, 20)]
    assert {r["changes"] for r in refreshed.values()} == {1}

    rollback = dbopt("rollback", "--env", "fleet", "--last", "--target", "t01", "--target", "t02")
    assert rollback.exit_code == 0, rollback.output
    assert not _has_index(fleet_dbs.dsns[0]) and not _has_index(fleet_dbs.dsns[1])
    assert _has_index(fleet_dbs.dsns[2])
    markdown = dbopt("status", "--env", "fleet", "--exit-code", "--format", "markdown")
    assert markdown.exit_code == 1  # t01 and t02 miss their index and view
    assert re.search(r"^\| t01 +\| attention +\|", markdown.stdout, re.M), markdown.stdout
    assert "attention: t02: " in markdown.stdout


@pytest.mark.slow
def test_a_target_down_stops_the_fleet_unless_continue_on_error(
    project: Path, fleet_dbs: FleetDbs, closed_port: int
) -> None:
    down = f"postgresql://app:{SECRET}@127.0.0.1:{closed_port}/app"
    targets = [
        {"name": "a", "dsn": fleet_dbs.dsns[0]},
        {"name": "down", "dsn": down},
        {"name": "b", "dsn": fleet_dbs.dsns[1]},
        {"name": "c", "dsn": fleet_dbs.dsns[2]},
    ]
    (project / "dbopt.yaml").write_text(_config(targets, parallel=1))
    stopped = dbopt("apply", "--env", "fleet", "--format", "json")
    assert stopped.exit_code == 3, stopped.output
    rows = _rows(stopped)
    assert [rows[n]["outcome"] for n in ["a", "down", "b", "c"]] == [
        "applied",
        "unreachable",
        "not started",
        "not started",
    ]
    assert "could not connect to app@127.0.0.1" in rows["down"]["detail"]
    assert not _has_index(fleet_dbs.dsns[1])

    going_on = dbopt("apply", "--env", "fleet", "--continue-on-error", "--format", "plain")
    assert going_on.exit_code == 3, going_on.output
    assert _has_index(fleet_dbs.dsns[1]) and _has_index(fleet_dbs.dsns[2])
    assert "4 targets: " in going_on.stdout and "1 unreachable" in going_on.stdout
    assert "4/4 done, 1 failed" in going_on.stderr


@pytest.mark.slow
def test_a_target_whose_lock_is_held_exits_3_and_the_others_apply(
    project: Path, fleet_dbs: FleetDbs
) -> None:
    targets = [{"name": f"t{i}", "dsn": d} for i, d in enumerate(fleet_dbs.dsns[:4], 1)]
    (project / "dbopt.yaml").write_text(_config(targets))
    with psycopg.connect(fleet_dbs.dsns[2], autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s, hashtext(current_database()))", (0x64626F70,))
        result = dbopt("apply", "--env", "fleet", "--continue-on-error", "--format", "json")
    assert result.exit_code == 3, result.output
    rows = _rows(result)
    assert rows["t3"]["outcome"] == "locked"
    assert [rows[n]["outcome"] for n in ("t1", "t2", "t4")] == ["applied"] * 3
    assert not _has_index(fleet_dbs.dsns[2])


@pytest.mark.slow
def test_a_canary_that_misses_its_budgets_stops_the_rest(
    project: Path, fleet_dbs: FleetDbs
) -> None:
    targets = [{"name": f"t{i}", "dsn": d} for i, d in enumerate(fleet_dbs.dsns[:5], 1)]
    (project / "dbopt.yaml").write_text(_config(targets))
    canary = fleet_dbs.dsns[0]
    with psycopg.connect(canary, autocommit=True) as conn:
        # Every order is customer 7's: no index helps; the budget's expectation fails there.
        conn.execute("UPDATE orders SET customer_id = 7")
        conn.execute("ANALYZE orders")
        try:
            result = dbopt("apply", "--env", "fleet", "--canary", "1", "--format", "json")
        finally:
            conn.execute("UPDATE orders SET customer_id = id % 1000")
            conn.execute("ANALYZE orders")
    assert result.exit_code == 1, result.output
    rows = _rows(result)
    assert rows["t1"]["outcome"] == "budgets failed"
    assert rows["t1"]["canary"] is True
    assert rows["t1"]["failing_budgets"] == ["orders_of_customer"]
    assert rows["t1"]["detail"].endswith("failed: orders_of_customer")
    assert [rows[f"t{i}"]["outcome"] for i in range(2, 6)] == ["not started"] * 4
    assert not any(_has_index(d) for d in fleet_dbs.dsns[1:5])

    # A canary that passes lets the rest go on.
    _reset(fleet_dbs.dsns[:5])
    result = dbopt("apply", "--env", "fleet", "--canary", "2", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = _rows(result)
    assert [rows[n]["canary"] for n in ("t1", "t2", "t3")] == [True, True, False]
    assert {r["outcome"] for r in rows.values()} == {"applied"}
    # The two canaries share a server: one at a time (their budgets are measured there).
    spans = []
    for dsn in fleet_dbs.dsns[:2]:
        with psycopg.connect(dsn) as conn:
            spans.append(
                conn.execute(
                    "SELECT started_at, finished_at FROM dbopt.runs WHERE command = 'apply' "
                    "ORDER BY id DESC LIMIT 1"
                ).fetchone()
            )
    (first_start, first_end), (second_start, second_end) = spans
    assert first_end <= second_start or second_end <= first_start, spans
    # Nothing left to change: the canary's detail is its budgets alone (seen in an exploratory
    # review: "; 1 budget met", a separator with nothing before it).
    again = _rows(dbopt("apply", "--env", "fleet", "--canary", "1", "--format", "json"))
    assert again["t1"]["detail"].endswith("met") and not again["t1"]["detail"].startswith(";")


@pytest.mark.slow
def test_one_confirmation_for_the_whole_fleet(
    project: Path, fleet_dbs: FleetDbs, closed_port: int
) -> None:
    targets = [{"name": f"t{i}", "dsn": d} for i, d in enumerate(fleet_dbs.dsns[:3], 1)]
    (project / "dbopt.yaml").write_text(_config(targets, confirm=True))
    refused = dbopt("apply", "--env", "fleet", input="no\n")
    assert refused.exit_code == 2, refused.output
    assert "apply: 2 creates on 3 targets of fleet\n" in refused.output
    assert refused.output.count("Type the environment name") == 1
    assert not any(_has_index(d) for d in fleet_dbs.dsns[:3])
    done = dbopt("apply", "--env", "fleet", input="fleet\n")
    assert done.exit_code == 0, done.output
    assert all(_has_index(d) for d in fleet_dbs.dsns[:3])

    # A target down while planning for the confirmation ends as unreachable (exit 3), as it
    # does without confirm (seen in an exploratory review: refused, exit 2).
    _reset(fleet_dbs.dsns[:1])
    down = {"name": "down", "dsn": f"host=127.0.0.1 port={closed_port} dbname=x"}
    (project / "dbopt.yaml").write_text(_config([targets[0], down], confirm=True))
    result = dbopt(
        "apply", "--env", "fleet", "--continue-on-error", "--format", "json", input="fleet\n"
    )
    assert result.exit_code == 3, result.output
    report = json.loads(result.stdout[result.stdout.index("{") :])  # after the prompt
    rows = {t["target"]: t for t in report["targets"]}
    assert rows["down"]["outcome"] == "unreachable", rows["down"]
    assert "planning for the confirmation" in rows["down"]["detail"]
    assert rows["t1"]["outcome"] == "applied"


@pytest.mark.slow
def test_ctrl_c_at_the_fleets_confirmation_stops_before_anything_runs(
    project: Path, fleet_dbs: FleetDbs
) -> None:
    """The fleet's planning took Ctrl-C over and gave it back; Ctrl-C at the prompt after it
    still stops the command (it is not taken for a stopped run's extra Ctrl-C)."""
    targets = [{"name": f"t{i}", "dsn": d} for i, d in enumerate(fleet_dbs.dsns[:2], 1)]
    (project / "dbopt.yaml").write_text(_config(targets, confirm=True))
    proc = start_dbopt(project, "apply", "--env", "fleet", "--format", "plain", stdin=True)
    read_until(proc, "Type the environment name")
    try:
        # stdin stays open: only Ctrl-C ends the prompt. Pressed again while nothing happens:
        # one that lands after the prompt is written but before the read begins waits in
        # Python until the read returns (CPython's input() checks signals only then).
        for _ in range(10):
            proc.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=2)
                break
    finally:
        proc.kill()
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 2, out
    assert "not confirmed" in out, out
    assert "Traceback" not in out, out
    assert not any(_has_index(d) for d in fleet_dbs.dsns[:2])


@pytest.mark.slow
def test_verify_junit_has_one_suite_per_target(
    project: Path, fleet_dbs: FleetDbs, closed_port: int
) -> None:
    targets = [{"name": f"t{i}", "dsn": d} for i, d in enumerate(fleet_dbs.dsns[:3], 1)]
    targets.append({"name": "down", "dsn": f"host=127.0.0.1 port={closed_port} dbname=x"})
    (project / "dbopt.yaml").write_text(_config(targets))
    result = dbopt(
        "verify", "--env", "fleet", "--continue-on-error", "--junit", "v.xml", "--format", "plain"
    )
    assert result.exit_code == 3, result.output  # unreachable beats failed budgets
    assert "FAIL t1: orders_of_customer" in result.stdout  # no index yet: a seq scan
    # Missed budgets are findings, not failures (seen: "t1: fail ...; 1/4 done, 0 failed").
    assert "4/4 done, 3 with findings, 1 failed" in result.stderr, result.stderr
    root = ET.parse(project / "v.xml").getroot()
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert sorted(suites) == ["down", "t1", "t2", "t3"]
    assert suites["t2"].get("failures") == "1"
    assert suites["down"].get("errors") == "1"
    assert root.get("tests") == "4"

    # One at a time, the unreachable one first: the fleet stops after it, and the others are
    # skipped cases, not empty green suites (seen in an exploratory review).
    (project / "dbopt.yaml").write_text(_config([targets[3], *targets[:3]]))
    stopped = dbopt("verify", "--env", "fleet", "--parallel", "1", "--junit", "v.xml")
    assert stopped.exit_code == 3, stopped.output
    root = ET.parse(project / "v.xml").getroot()
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert [suites[n].get("skipped") for n in ("down", "t1", "t2", "t3")] == ["0", "1", "1", "1"]
    skipped = suites["t2"].find("testcase/skipped")
    assert skipped is not None and skipped.get("message") == "stopped after down unreachable"
    assert root.get("skipped") == "3"


@pytest.mark.slow
def test_targets_from_a_registry_query(
    project: Path, fleet_dbs: FleetDbs, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = fleet_dbs.dsns[0]
    physical = [psycopg.conninfo.conninfo_to_dict(d)["dbname"] for d in fleet_dbs.dsns]
    with psycopg.connect(registry, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS tenants")
        conn.execute("CREATE TABLE tenants (name text, db text, active bool)")
        for i, db in enumerate(physical[:6], 1):
            conn.execute("INSERT INTO tenants VALUES (%s, %s, %s)", (f"tenant-{i}", db, i != 4))
    try:
        config = {
            "environments": {
                "tenants": {
                    "targets_query": {
                        "dsn": "${REGISTRY_URL}",
                        "sql": "SELECT name, db FROM tenants WHERE active ORDER BY name",
                    },
                    **SETTINGS,
                },
                "wide": {
                    "targets_query": {"dsn": registry, "sql": "SELECT name, db, 1 FROM tenants"},
                },
                # A function of the registry's own that writes (seen in an exploratory review:
                # a query calling pg_cancel_backend or set_config was run).
                "writes": {
                    "targets_query": {
                        "dsn": registry,
                        "sql": "SELECT name, db FROM tenants WHERE touch_registry()",
                    },
                },
                # ...or takes a session's advisory lock, which a read-only transaction allows.
                "locks": {
                    "targets_query": {
                        "dsn": registry,
                        "sql": "SELECT name, db FROM tenants WHERE lock_registry()",
                    },
                },
                # One column holds database names: a DSN there (with its password) is refused,
                # never used as the target's name.
                "one": {
                    "targets_query": {
                        "dsn": registry,
                        "sql": "SELECT 'host=127.0.0.1 password=Secret-pw-42 dbname=' || db "
                        "FROM tenants",
                    },
                },
                # A registry row libpq cannot read (seen in a review: the whole fleet ended
                # with exit 1, "database error: unterminated quoted string", and no line).
                "torn": {
                    "targets_query": {
                        "dsn": registry,
                        "sql": "SELECT name, CASE WHEN name = 'tenant-2' THEN "
                        "'host=''127.0.0.1 password=Secret-pw-42 dbname=' || db ELSE db END "
                        "FROM tenants ORDER BY name",
                    },
                },
            }
        }
        (project / "dbopt.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        monkeypatch.setenv("REGISTRY_URL", registry)
        result = dbopt("plan", "--env", "tenants", "--format", "json")
        assert result.exit_code == 0, result.output
        assert list(_rows(result)) == ["tenant-1", "tenant-2", "tenant-3", "tenant-5", "tenant-6"]

        wide = dbopt("plan", "--env", "wide")
        assert wide.exit_code == 2, wide.output
        assert "dbopt.yaml:12:12: targets_query: it returned 3 columns" in wide.stderr
        with psycopg.connect(registry, autocommit=True) as conn:
            conn.execute("CREATE TABLE registry_log (at timestamptz)")
            conn.execute(
                "CREATE FUNCTION touch_registry() RETURNS bool LANGUAGE sql AS "
                "'INSERT INTO registry_log VALUES (now()) RETURNING true'"
            )
        with psycopg.connect(registry, autocommit=True) as conn:
            conn.execute(
                "CREATE FUNCTION lock_registry() RETURNS bool LANGUAGE sql AS "
                "'SELECT pg_try_advisory_lock(4242)'"
            )
        locks = dbopt("plan", "--env", "locks")
        assert locks.exit_code == 2, locks.output
        assert "lock_registry() is VOLATILE" in locks.stderr, locks.stderr
        writes = dbopt("plan", "--env", "writes")
        assert writes.exit_code == 2, writes.output
        assert "the registry's query must change nothing" in writes.stderr
        with psycopg.connect(registry) as conn:
            assert conn.execute("SELECT count(*) FROM registry_log").fetchone() == (0,)
        one = dbopt("plan", "--env", "one")
        assert one.exit_code == 2, one.output
        assert "row 1 is not a database name" in one.stderr
        assert "Secret-pw-42" not in one.output
        torn = dbopt("plan", "--env", "torn")
        assert torn.exit_code == 2, torn.output
        assert (
            "targets_query: row 2 (tenant-2): invalid connection string: unterminated quoted "
            "string in connection info string"
        ) in torn.stderr, torn.stderr
        assert "Secret-pw-42" not in torn.output
    finally:
        with psycopg.connect(registry, autocommit=True) as conn:
            conn.execute("DROP TABLE tenants")
            conn.execute("DROP FUNCTION IF EXISTS touch_registry()")
            conn.execute("DROP FUNCTION IF EXISTS lock_registry()")
            conn.execute("DROP TABLE IF EXISTS registry_log")


@pytest.mark.slow
def test_ctrl_c_stops_every_target_cleanly(project: Path, fleet_dbs: FleetDbs) -> None:
    targets = [{"name": f"t{i}", "dsn": d} for i, d in enumerate(fleet_dbs.dsns[:4], 1)]
    (project / "dbopt.yaml").write_text(
        _config(targets, parallel=2).replace("lock_timeout: 2s", "lock_timeout: 30s")
    )
    blockers = [psycopg.connect(d) for d in fleet_dbs.dsns[:2]]
    try:
        for blocker in blockers:  # an open write holds each concurrent build up
            blocker.execute("INSERT INTO orders VALUES (-1, 1, 'open transaction')")
        proc = start_dbopt(project, "apply", "--env", "fleet", "--format", "plain")
        for admin in fleet_dbs.admin[:2]:
            with psycopg.connect(admin, autocommit=True) as conn:
                wait_for(conn, WAITING_HERE)
        read_until(proc, "t2: started")
        proc.send_signal(signal.SIGINT)
        read_until(proc, "interrupted: stopping")
        for blocker in blockers:  # the clean-up's DROP INDEX CONCURRENTLY waits for them too
            blocker.rollback()
        out, _ = proc.communicate(timeout=60)
    finally:
        for blocker in blockers:
            blocker.close()
    assert proc.returncode == 130, out
    assert SECRET not in out
    for dsn in fleet_dbs.dsns[:4]:
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert invalid_indexes(conn) == []
    assert not any(_has_index(d) for d in fleet_dbs.dsns[:4])
    with psycopg.connect(fleet_dbs.dsns[0]) as conn:
        assert conn.execute("SELECT outcome FROM dbopt.runs").fetchall() == [("aborted",)]
    with psycopg.connect(fleet_dbs.dsns[3]) as conn:  # never started: no history at all
        assert conn.execute("SELECT to_regclass('dbopt.runs')").fetchone() == (None,)


@pytest.mark.slow
def test_ctrl_c_stops_a_target_waiting_for_its_run_lock(project: Path, fleet_dbs: FleetDbs) -> None:
    """--wait: a target waits for another run's lock in its own thread, which never sees the
    KeyboardInterrupt; Ctrl-C still ends its wait (within a second) and the fleet exits 130."""
    from dbopt.locks import AdvisoryLock

    targets = [{"name": f"t{i}", "dsn": d} for i, d in enumerate(fleet_dbs.dsns[:2], 1)]
    (project / "dbopt.yaml").write_text(_config(targets, parallel=2))
    other_run = psycopg.connect(fleet_dbs.dsns[0], autocommit=True)
    try:
        lock = AdvisoryLock.run(other_run)
        other_run.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (lock.space, lock.name))
        proc = start_dbopt(project, "apply", "--env", "fleet", "--wait", "--format", "json")
        with psycopg.connect(fleet_dbs.admin[0], autocommit=True) as conn:
            wait_for(
                conn,
                "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND wait_event = 'advisory' AND query LIKE '%%pg_advisory_lock%%'",
            )
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        other_run.close()
    assert proc.returncode == 130, out
    report, _ = json.JSONDecoder().raw_decode(out[out.index("{") :])  # stderr follows
    assert {t["target"]: t["outcome"] for t in report["targets"]}["t1"] == "interrupted"
    assert not _has_index(fleet_dbs.dsns[0])  # it never started its run


@pytest.mark.slow
def test_ctrl_c_cancels_a_refresh_running_on_a_target(project: Path, fleet_dbs: FleetDbs) -> None:
    """A fleet's refresh waiting on a lock is cancelled on the server by Ctrl-C, recorded as
    cancelled, and the fleet exits 130 at once (not when the refresh would have ended)."""
    (project / "dbopt.yaml").write_text(
        _config([{"name": "t1", "dsn": fleet_dbs.dsns[0]}]).replace(
            "lock_timeout: 2s", "lock_timeout: 60s"
        )
    )
    applied = dbopt("apply", "--env", "fleet", "--format", "json")
    assert applied.exit_code == 0, applied.output
    blocker = psycopg.connect(fleet_dbs.dsns[0])
    try:
        # An open transaction that refreshed it concurrently holds its EXCLUSIVE lock: dbopt
        # reads the catalog (ACCESS SHARE does not conflict), then its REFRESH waits.
        blocker.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY mv_customers")
        proc = start_dbopt(project, "refresh-views", "--env", "fleet", "--format", "plain")
        with psycopg.connect(fleet_dbs.admin[0], autocommit=True) as conn:
            wait_for(conn, WAITING_REFRESH)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        took = time.monotonic() - started
    finally:
        blocker.close()
    assert proc.returncode == 130, out
    assert took < 20, out  # not the 60 s lock_timeout: the statement was cancelled
    with psycopg.connect(fleet_dbs.dsns[0]) as conn:
        rows = conn.execute("SELECT outcome, message FROM dbopt.refreshes").fetchall()
    assert rows == [("failed", "cancelled (Ctrl-C)")]


@pytest.mark.slow
def test_fleet_config_errors_exit_2_at_their_line(project: Path, fleet_dbs: FleetDbs) -> None:
    (project / "dbopt.yaml").write_text(
        "environments:\n"
        "  both:\n"
        "    dsn: postgresql://a@h/db\n"
        "    targets: [postgresql://a@h/db2]\n"
        "  twice:\n"
        "    targets:\n"
        "      - {name: x, dsn: 'postgresql://a@h/one'}\n"
        "      - {name: x, dsn: 'postgresql://a@h/two'}\n"
    )
    result = dbopt("plan", "--env", "twice")
    assert result.exit_code == 2, result.output
    assert "dbopt.yaml:3:5: environment 'both': give dsn (one database) or targets" in result.stderr
    assert "dbopt.yaml:8:" in result.stderr
    assert "environment 'twice': target name 'x' is used twice (first at line 7)" in result.stderr

    (project / "dbopt.yaml").write_text(
        "environments:\n"
        "  derived:\n"
        "    targets:\n"
        f"      - postgresql://a:{SECRET}@h/same\n"
        "      - postgresql://b@h/same\n"
        "  ok:\n"
        "    targets: ['postgresql://a@h:1/db', 'service=svc', svc2]\n"
        "  one:\n"
        "    dsn: postgresql://a@h/db\n"
    )
    derived = dbopt("plan", "--env", "derived")
    assert derived.exit_code == 2, derived.output
    assert "dbopt.yaml:4:9: environment 'derived': target 'h:5432/same' is named twice" in (
        derived.stderr
    )
    assert "dbopt.yaml:5:9: " in derived.stderr

    one = dbopt("import", "--env", "ok")
    assert one.exit_code == 2
    assert one.stderr.strip().endswith(
        "environment 'ok' is a fleet of 3 selected databases and dbopt import works on one: "
        "choose it with --target NAME"
    )
    unknown = dbopt("plan", "--env", "ok", "--target", "nope")
    assert unknown.exit_code == 2 and "--target nope: no target" in unknown.stderr
    glob = dbopt("plan", "--env", "ok", "--targets", "zz*")
    assert glob.exit_code == 2 and "--targets 'zz*' matches no target" in glob.stderr
    run_id = dbopt("rollback", "--env", "ok", "--run", "3")
    assert run_id.exit_code == 2
    assert "dbopt rollback --run/--index works on one" in run_id.stderr
    not_fleet = dbopt("plan", "--env", "one", "--target", "x")
    assert not_fleet.exit_code == 2 and "'one' names one database" in not_fleet.stderr
    canary = dbopt("apply", "--env", "one", "--canary", "1")
    assert canary.exit_code == 2 and "--canary goes with a fleet environment" in canary.stderr
    # As --canary is (seen in an exploratory review: both were silently ignored).
    for flags in (["--parallel", "2"], ["--continue-on-error"]):
        alone = dbopt("verify", "--env", "one", *flags)
        assert alone.exit_code == 2, alone.output
        assert f"{flags[0]} goes with a fleet environment" in alone.stderr


# --- without a database --------------------------------------------------------------------


def test_the_readme_fleet_config_loads_and_names_its_targets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dbopt.config import load_config
    from dbopt.fleet import resolve

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Fleets", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "dbopt.yaml").write_text(block)
    config = load_config(tmp_path / "dbopt.yaml")
    assert config.environments["tenants"].parallel == 8
    assert config.environments["registry"].targets_query is not None
    fleet = resolve(config, "tenants", {"US_DATABASE_URL": f"postgresql://u:{SECRET}@db-us/app"})
    assert [m.name for m in fleet.members] == ["eu-1", "db-us/app", "app_tenant_3"]
    assert fleet.members[2].target.dsn == "service=app_tenant_3"
    assert [m.name for m in fleet.select(globs=["*-*"]).members] == ["eu-1", "db-us/app"]
    assert [m.name for m in fleet.select(names=["app_tenant_3"]).members] == ["app_tenant_3"]


def test_crontab_lines_of_a_fleet_run_the_same_selection(write: Any) -> None:
    write(
        **{
            "views/mv.yaml": "name: mv\nquery: SELECT 1 AS one\nrefresh: {schedule: '@hourly'}\n",
            "dbopt.yaml": _config(["postgresql://a@h/one", "postgresql://a@h/two"]),
        }
    )
    result = dbopt(
        "refresh-views", "--env", "fleet", "--targets", "h/t*", "--emit", "crontab", "--no-env-file"
    )
    assert result.exit_code == 0, result.output
    assert "refresh-views --env fleet --targets 'h/t*'" in result.stdout
    plan = dbopt("refresh-views", "--env", "fleet", "--plan")
    assert plan.exit_code == 2
    assert "dbopt refresh-views --plan works on one" in plan.stderr


def _fake_fleet(count: int, parallel: int = 2) -> Any:
    from dbopt.config import Settings, Target
    from dbopt.fleet import Fleet, Member

    members = tuple(
        Member(f"m{i}", Target("f", f"dbname=m{i}", Settings())) for i in range(1, count + 1)
    )
    return Fleet("f", members, parallel)


def test_the_runner_keeps_to_parallel_and_stops_after_a_failure() -> None:
    import threading

    from dbopt.errors import LockWaitError
    from dbopt.fleet import Context, Done, Member, Policy, run

    lock = threading.Lock()
    now = {"running": 0, "peak": 0}

    def work(member: Member, context: Context) -> Done:
        if member.name == "m2":  # at once: m3 cannot have started before it failed
            return Done("failed", 1, failed=True)
        with lock:
            now["running"] += 1
            now["peak"] = max(now["peak"], now["running"])
        time.sleep(0.05)
        with lock:
            now["running"] -= 1
        if member.name == "m3":
            raise psycopg.errors.LockNotAvailable("lock timeout")
        return Done("ok")

    fleet = _fake_fleet(8)
    stopped = run(fleet, work, Policy(2))
    outcomes = [r.outcome for r in stopped.results]
    assert outcomes == ["ok", "failed"] + ["not started"] * 6
    assert stopped.exit_code == 1 and stopped.stopped == "m2 failed"

    every = run(fleet, work, Policy(3, continue_on_error=True))
    assert [r.outcome for r in every.results].count("ok") == 6
    assert every.results[2].outcome == "locked" and every.exit_code == 3  # 3 beats 1
    assert now["peak"] == 3  # m2 takes no time: three of the others run at once

    canary = run(fleet, work, Policy(4, canary=2))
    assert [r.outcome for r in canary.results][:3] == ["ok", "failed", "not started"]
    assert [r.canary for r in canary.results][:3] == [True, True, False]
    assert canary.stopped == "m2 failed"

    # Every target started before m2 failed: nothing was held back, so nothing "stopped"
    # (seen in an exploratory review: "no new target started after ..." with none left).
    all_at_once = run(_fake_fleet(3), work, Policy(3))
    assert [r.outcome for r in all_at_once.results] == ["ok", "failed", "locked"]
    assert all_at_once.stopped is None

    # A check that gave up on a held table before anything ran is a lock too, not a refusal.
    def held(member: Member, context: Context) -> Done:
        raise LockWaitError("gave up waiting for a lock")

    waited = run(_fake_fleet(1), held, Policy(1))
    assert [r.outcome for r in waited.results] == ["locked"] and waited.exit_code == 3


def test_verify_never_measures_two_targets_of_one_server_at_a_time() -> None:
    """Seen in an exploratory review: four tenants of one server verified at once measured a
    17 ms p95 at 55-65 ms and failed every budget. verify's policy runs one target per server
    (host and port as written) at a time; other servers' targets still run beside them."""
    import threading

    from dbopt.config import Settings, Target
    from dbopt.fleet import Context, Done, Fleet, Member, Policy, run, server_of

    hosts = ["a", "a", "b", "a", "b", "c"]
    members = tuple(
        Member(f"t{i}", Target("f", f"host={h} port=5432 dbname=t{i}", Settings()))
        for i, h in enumerate(hosts)
    )
    fleet = Fleet("f", members, 4)
    assert server_of(members[0]) == server_of(members[1]) != server_of(members[2])
    lock = threading.Lock()
    now: dict[str, int] = {}
    peaks = {"server": 0, "all": 0}

    def work(member: Member, context: Context) -> Done:
        host = member.target.dsn.split()[0] if member.target.dsn else ""
        with lock:
            now[host] = now.get(host, 0) + 1
            peaks["server"] = max(peaks["server"], now[host])
            peaks["all"] = max(peaks["all"], sum(now.values()))
        time.sleep(0.05)
        with lock:
            now[host] -= 1
        return Done("ok")

    report = run(fleet, work, Policy(4, one_per_server=True))
    assert [r.outcome for r in report.results] == ["ok"] * 6
    assert peaks == {"server": 1, "all": 3}  # a, b and c at once, never two of one
    # Without it (plan, status, apply), up to --parallel of one server run at once.
    peaks.update(server=0, all=0)
    run(fleet, work, Policy(4))
    assert peaks["server"] >= 2 and peaks["all"] == 4
    # apply --canary: the canaries (which verify their budgets) one per server; then the rest
    # as they come (seen in a second review: two canaries of one server at once).
    peaks.update(server=0, all=0)
    canaries = Fleet("f", members[:2], 4)  # both on server a
    run(canaries, work, Policy(4, canary=2, canaries_one_per_server=True))
    assert peaks["server"] == 1


def test_server_turns_know_one_server_however_its_dsns_name_it(fleet_dbs: FleetDbs) -> None:
    """Seen in a review: targets of one server written as 127.0.0.1, localhost, a socket
    directory or a service were measured at once (the DSNs' text differed). The turn is
    taken by what the server says of itself once connected: two spellings of one server
    wait for each other; another server does not."""
    import threading

    from dbopt.fleet import Context
    from dbopt.fleetwork import ServerTurns

    one = fleet_dbs.dsns[0]
    spelt_otherwise = fleet_dbs.dsns[1].replace("@127.0.0.1:", "@localhost:")
    assert "@localhost:" in spelt_otherwise
    turns = ServerTurns()
    context = Context(False, threading.Event())
    entered: list[str] = []

    def measure(dsn: str, name: str) -> None:
        with psycopg.connect(dsn) as conn, turns.turn(conn, context):
            entered.append(name)

    with psycopg.connect(one) as conn, turns.turn(conn, context):
        other = threading.Thread(target=measure, args=(fleet_dbs.other, "other server"))
        same = threading.Thread(target=measure, args=(spelt_otherwise, "same server"))
        other.start()
        same.start()
        other.join(10)
        assert entered == ["other server"]  # it never waits for this server's turn
        same.join(0.5)
        assert same.is_alive() and entered == ["other server"]  # it waits
    same.join(10)
    assert entered == ["other server", "same server"]


def test_server_of_reads_one_machine_and_host_lists_as_one() -> None:
    from dbopt.config import Settings, Target
    from dbopt.fleet import Member, server_of

    def key(dsn: str) -> tuple[str, ...]:
        return server_of(Member("x", Target("f", dsn, Settings())), {})

    local = {
        key("host=localhost port=5433 dbname=a"),
        key("postgresql://u@127.0.0.1:5433/b"),
        key("host=/var/run/postgresql port=5433 dbname=c"),
        key("host=::1 port=5433"),
    }
    assert len(local) == 1
    assert key("host=a,b port=5432") == key("host=b,a port=5432")
    assert key("host=a port=5432") != key("host=a port=5433")
    # Each host with its own port, in whichever order the list is written.
    assert key("host=a,b port=5432,5433") == key("host=b,a port=5433,5432")
    assert key("host=a,b port=5432,5433") != key("host=a,b port=5433,5432")
    assert key("host=b,a hostaddr=2.0.0.2,1.0.0.1") == key("host=a,b hostaddr=1.0.0.1,2.0.0.2")


def test_the_runner_cancels_running_targets_when_interrupted() -> None:
    import threading

    from dbopt.fleet import Context, Done, Member, Policy, run

    interrupt = threading.Event()
    started = threading.Semaphore(0)

    def work(member: Member, context: Context) -> Done:
        cancelled = threading.Event()
        context.on_cancel(cancelled.set)
        started.release()
        assert cancelled.wait(10), "never cancelled"
        return Done("interrupted", 130, detail="cancelled")

    def press_ctrl_c() -> None:
        started.acquire()
        started.acquire()
        interrupt.set()

    threading.Thread(target=press_ctrl_c).start()
    report = run(_fake_fleet(5), work, Policy(2), interrupt=interrupt)
    assert report.interrupted and report.exit_code == 130
    assert [r.outcome for r in report.results] == ["interrupted"] * 2 + ["not started"] * 3
    assert [r.detail for r in report.results][:2] == ["cancelled", "cancelled"]


@pytest.mark.slow
def test_a_target_whose_plan_changed_after_the_confirmation_runs_nothing(
    project: Path, fleet_dbs: FleetDbs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The person confirmed what each target's plan said; a target whose plan is another by
    the time it runs (here: its index built by someone while the prompt waited, and a
    target gaining a change) runs nothing and says why."""
    from dbopt.cli import fleet_output

    targets = [{"name": f"t{i}", "dsn": d} for i, d in enumerate(fleet_dbs.dsns[:3], 1)]
    (project / "dbopt.yaml").write_text(_config(targets, confirm=True))
    real = fleet_output.confirm

    def meanwhile(question: str, env: str) -> None:
        with psycopg.connect(fleet_dbs.dsns[1], autocommit=True) as t2:
            t2.execute("CREATE INDEX idx_orders_customer ON orders (customer_id)")
        real(question, env)

    monkeypatch.setattr(fleet_output, "confirm", meanwhile)
    result = dbopt(
        "apply", "--env", "fleet", "--continue-on-error", "--format", "json", input="fleet\n"
    )
    assert result.exit_code == 2, result.output
    report = json.loads(result.stdout[result.stdout.index("{") :])
    rows = {t["target"]: t for t in report["targets"]}
    assert rows["t1"]["outcome"] != "refused" and rows["t3"]["outcome"] != "refused", rows
    assert rows["t2"]["outcome"] == "refused", rows
    assert "plan changed since the fleet's plan was confirmed" in rows["t2"]["detail"]
    assert _has_index(fleet_dbs.dsns[0]) and _has_index(fleet_dbs.dsns[2])


def test_each_target_has_its_own_plans_folder_inside_plans_dir() -> None:
    """Seen in an exploratory review: targets eu/1 and eu_1 wrote one run-1-rollback.sql for
    two databases, and a target named .. wrote outside --plans-dir."""
    names = ["eu_1", "eu/1", "..", ".", ".hidden", "tenant.a", "db.example.com:5432/app"]
    folders = [_file_name(n) for n in names]
    assert len(set(folders)) == len(names), folders
    assert folders[0] == "eu_1" and folders[5] == "tenant.a"  # already one: kept as it is
    root = Path("/plans")
    for folder in folders:
        assert "/" not in folder and folder.strip(".") and not folder.startswith(".")
        assert (root / folder).resolve().parent == root


def test_a_database_listed_twice_is_refused_at_its_line(tmp_path: Path) -> None:
    """Seen in an exploratory review: two targets on one database (a registry returning it
    under two names) made the fleet take that database's run lock twice and stop itself,
    exit 3, "another dbopt run holds this database's lock" -- the other run being its own."""
    from dbopt.config import load_config
    from dbopt.errors import ConfigError
    from dbopt.fleet import resolve

    (tmp_path / "dbopt.yaml").write_text(
        "environments:\n"
        "  dup:\n"
        "    targets:\n"
        "      - {name: a, dsn: 'postgresql://u@h/db'}\n"
        "      - {name: other, dsn: 'postgresql://u@h/elsewhere'}\n"
        "      - {name: b, dsn: 'host=h port=5432 dbname=db user=v'}\n"
        "  apart:\n"
        "    targets: ['postgresql://u@h/db', 'postgresql://u@h:5433/db', 'service=db']\n"
    )
    config = load_config(tmp_path / "dbopt.yaml")
    with pytest.raises(ConfigError) as err:
        resolve(config, "dup", {})
    assert [str(p) for p in err.value.problems] == [
        f"{tmp_path / 'dbopt.yaml'}:6:9: environment 'dup': target 'b' is the database of "
        "target 'a'; list each database once"
    ]
    assert len(resolve(config, "apart", {}).members) == 3


def test_a_target_libpq_cannot_read_is_refused_at_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen in a review: a target whose connection string libpq cannot read stopped the whole
    fleet with exit 1 ("database error: unterminated quoted string"), no line, no row; a
    port that is no number was refused only when its turn came, after others had run."""
    from dbopt.config import load_config
    from dbopt.errors import ConfigError
    from dbopt.fleet import resolve

    (tmp_path / "dbopt.yaml").write_text(
        "environments:\n"
        "  torn:\n"
        "    targets:\n"
        "      - {name: a, dsn: 'postgresql://u@h/db'}\n"
        '      - {name: b, dsn: "host=\'h dbname=db password=Secret-pw-42"}\n'
        "  port:\n"
        "    targets: ['postgresql://u@h/db', 'postgresql://u:Secret-pw-42h:5433/db']\n"
        "  many:\n"
        "    targets:\n"
        "      - 'host=a,b port=1,2,3 dbname=x'\n"
        '      - "host=\'h dbname=y"\n'
    )
    config = load_config(tmp_path / "dbopt.yaml")
    with pytest.raises(ConfigError) as torn:
        resolve(config, "torn", {})
    assert [str(p) for p in torn.value.problems] == [
        f"{tmp_path / 'dbopt.yaml'}:5:9: environment 'torn': invalid connection string: "
        "unterminated quoted string in connection info string"
    ]
    with pytest.raises(ConfigError) as port:
        resolve(config, "port", {})
    [problem] = [str(p) for p in port.value.problems]
    assert problem.startswith(
        f"{tmp_path / 'dbopt.yaml'}:7:38: environment 'port': invalid connection string: a "
        "port is not a number"
    ), problem
    assert "Secret-pw-42" not in problem + str(port.value) + str(torn.value)
    # Hosts from PGHOST or a service are libpq's to pair (seen in a second review: a port
    # list with PGHOST naming the hosts was refused).
    from dbopt.db import conninfo_problem

    for variable in ("PGHOST", "PGHOSTADDR", "PGPORT", "PGSERVICE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("PGHOST", "a,b")
    assert conninfo_problem("port=5432,5433 dbname=x") is None
    # The environment's lists count as libpq counts them (seen in a fourth review).
    assert conninfo_problem("host=a,b hostaddr=1.0.0.1") is not None
    monkeypatch.setenv("PGHOSTADDR", "1.0.0.1")
    assert conninfo_problem("host=a,b dbname=x") == (
        "2 hosts for 1 host address (hostaddr): give one address for each host"
    )
    monkeypatch.delenv("PGHOSTADDR")
    monkeypatch.setenv("PGPORT", "1,2,3")
    assert conninfo_problem("dbname=x") == (
        "3 ports for 2 hosts: give one port, or one for each host"
    )
    monkeypatch.delenv("PGPORT")
    monkeypatch.delenv("PGHOST")
    # ...else libpq's one default host (seen in a third review: exit 3 when connecting).
    assert conninfo_problem("port=5432,5433 dbname=x") == (
        "2 ports for 1 host: give one port, or one for each host"
    )
    assert conninfo_problem("host=a hostaddr=1.0.0.1,2.0.0.2") == (
        "1 host for 2 host addresses (hostaddr): give one address for each host"
    )
    # Every bad target at once; a port list libpq cannot pair with the hosts is one too.
    with pytest.raises(ConfigError) as many:
        resolve(config, "many", {})
    assert [str(p).split(": ", 1)[1] for p in many.value.problems] == [
        "environment 'many': invalid connection string: 3 ports for 2 hosts: give one port, "
        "or one for each host",
        "environment 'many': invalid connection string: unterminated quoted string in "
        "connection info string",
    ]


def test_the_report_keeps_every_line_of_a_detail(capsys: pytest.CaptureFixture[str]) -> None:
    """Seen in an exploratory review: the table, plain and markdown reports cut a refusal
    at its first line, "...would make concurrent builds and drops wait:", the pids after it
    only in the JSON."""
    from dbopt.cli.fleet_output import print_report
    from dbopt.fleet import FleetReport, TargetResult

    detail = (
        "apply refused: these transactions are older than lock_timeout and would make "
        "concurrent builds and drops wait:\n  pid 4242 (app, idle in transaction, 9s): SELECT 1"
    )
    row = TargetResult("t1", "refused", 2, 0.1, detail=detail, failed=True)
    for fmt in ("plain", "markdown"):
        print_report(FleetReport("f", (row,), False, None), fmt, "apply")
        assert "would make concurrent builds and drops wait: pid 4242" in capsys.readouterr().out


@pytest.mark.slow
def test_fleet_verify_names_its_unstable_queries(
    project: Path, fleet_dbs: FleetDbs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen in an exploratory review: a target's outcome said `unstable`, with no query named
    and no warning, where one database says which and why on stderr."""
    import dbopt.verify.run as run_mod
    from dbopt.verify import Noise

    targets = [{"name": f"t{i}", "dsn": d} for i, d in enumerate(fleet_dbs.dsns[:2], 1)]
    (project / "dbopt.yaml").write_text(_config(targets))
    assert dbopt("apply", "--env", "fleet").exit_code == 0
    # A machine delaying work by up to 500 ms: a 200 ms budget cannot be told from noise.
    noise = Noise(runs=30, p50_ms=0.01, p95_ms=500.01, max_ms=500.01)
    monkeypatch.setattr(run_mod, "measure_noise", lambda conn, settings: noise)
    result = dbopt("verify", "--env", "fleet", "--format", "plain")
    assert result.exit_code == 0, result.output
    assert "UNSTABLE t1: orders_of_customer" in result.stdout
    assert "UNSTABLE t2: orders_of_customer" in result.stdout
    assert "warning: 2 budgeted queries are unstable" in result.stderr
    assert "t1: orders_of_customer, t2: orders_of_customer; exit 0 without --strict" in (
        result.stderr
    )
    strict = dbopt("verify", "--env", "fleet", "--strict", "--format", "plain")
    assert strict.exit_code == 1 and "warning:" not in strict.stderr
