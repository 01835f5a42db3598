"""The shipped specs (indexes/, views/) on the BookedBarber reference schema, at a small scale.

Applies them, checks that every budgeted query uses the index it expects, refreshes the views
and rolls back to the original catalog — so the specs this repository ships cannot rot.
Timings are not asserted here (machines are shared and noisy): `make bench` measures them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import Result
from helpers import catalog_snapshot, cli

from dbopt.spec import load_specs
from tools.demo import load_bookedbarber

ROOT = Path(__file__).resolve().parent.parent
SPECS = ["--specs", str(ROOT / "indexes"), "--specs", str(ROOT / "views")]
SCALE = "0.05"  # 50,000 appointments: enough for the planner to prefer every index


def dbopt(*args: str) -> Result:
    return cli(*args, *SPECS)


@pytest.mark.slow
def test_shipped_specs_apply_verify_refresh_and_roll_back(
    conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    load_bookedbarber(db_dsn, SCALE)
    original = catalog_snapshot(conn)
    db = ("--dsn", db_dsn)

    assert dbopt("validate", *db).exit_code == 0
    applied = dbopt("apply", *db, "--jobs", "2")
    assert applied.exit_code == 0, applied.output
    assert json.loads(dbopt("plan", *db, "--format", "json").output)["changes"] == 0

    conn.execute("VACUUM (ANALYZE)")
    verified = dbopt("verify", *db, "--format", "json")
    report = json.loads(verified.stdout)
    expectations = {
        q["name"]: [f for f in q["findings"] if f["kind"] in ("uses_index", "no_seq_scan_on")]
        for q in report["queries"]
    }
    assert len(expectations) == 21
    failed = {
        name: [f["message"] for f in findings if f["status"] == "fail"]
        for name, findings in expectations.items()
        if any(f["status"] == "fail" for f in findings)
    }
    assert failed == {}
    assert all(q["outcome"] == "ok" for q in report["queries"])
    # And positively: each query's plan used every index its spec expects.
    specs = load_specs([(ROOT / "indexes", True), (ROOT / "views", True)])
    used = {q["name"]: set(q["indexes"]) for q in report["queries"]}
    expected = {b.name: set(b.expect.uses_index) for b in specs.queries if b.expect.uses_index}
    assert len(expected) >= 19
    assert {name: want - used[name] for name, want in expected.items() if want - used[name]} == {}

    refreshed = dbopt("refresh-views", *db, "--concurrently-only")
    assert refreshed.exit_code == 0, refreshed.output
    modes = conn.execute("SELECT DISTINCT mode, outcome FROM dbopt.refreshes").fetchall()
    assert modes == [("concurrent", "ok")]

    rolled = dbopt("rollback", *db, "--last", "--yes")
    assert rolled.exit_code == 0, rolled.output
    assert catalog_snapshot(conn) == original
