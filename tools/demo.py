"""`make demo`: dbopt's main job on a throwaway database, each step's real output shown.

Starts a sandbox PostgreSQL, loads the BookedBarber reference schema and data, then runs the
dbopt commands a DBA would run, as separate processes, exactly as typed: validate, plan,
verify (the before picture), apply, verify (the after picture), refresh-views, status and
rollback --plan, and ends with a before/after table per budgeted query. Cleans up on exit,
also on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from dbopt.sandbox import start_server

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "bookedbarber"
DEFAULT_SCALE = "0.5"


def load_bookedbarber(dsn: str, scale: str) -> float:
    """Create the reference schema and its data at ``scale``; returns seconds taken.

    Scale 1 is about 1,000,000 appointments. Ends with VACUUM (ANALYZE) so the planner has
    statistics and index-only scans a visibility map, as on a real database.
    """
    started = time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute((FIXTURES / "schema.sql").read_text())
        conn.execute("SELECT set_config('dbopt.scale', %s, false)", (scale,))
        conn.execute((FIXTURES / "data.sql").read_text())
        conn.execute("VACUUM (ANALYZE)")
    return time.monotonic() - started


def _banner(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def _run(args: list[str], *, expect: tuple[int, ...] = (0,)) -> int:
    """Run one dbopt command as a person would, showing it and its real output."""
    shown = ["dbopt", *args]
    print(f"$ {shlex.join(shown)}", flush=True)
    proc = subprocess.run([sys.executable, "-m", "dbopt", *args], cwd=ROOT, check=False)
    print(f"(exit {proc.returncode})", flush=True)
    if proc.returncode not in expect:
        raise SystemExit(f"demo: `{shlex.join(shown)}` exited {proc.returncode}, expected {expect}")
    return proc.returncode


def _before_after(before: Path, after: Path) -> None:
    from tabulate import tabulate

    old = {q["name"]: q for q in json.loads(before.read_text())["queries"]}
    new = {q["name"]: q for q in json.loads(after.read_text())["queries"]}
    rows = []
    for name, q in new.items():
        b = old.get(name, {})
        p_before, p_after = b.get("p95_ms"), q.get("p95_ms")
        speedup = f"{p_before / p_after:.0f}x" if p_before and p_after else ""
        rows.append(
            [
                name,
                q["budget_ms"],
                p_before,
                b.get("status", "")
                + ("" if b.get("outcome") in (None, "ok") else f" ({b['outcome']})"),
                p_after,
                q["status"],
                speedup,
                ", ".join(q["indexes"]) or "-",
            ]
        )
    print(
        tabulate(
            rows,
            headers=[
                "query",
                "budget ms",
                "p95 before",
                "verdict",
                "p95 after",
                "verdict",
                "speed-up",
                "indexes used after",
            ],
            tablefmt="github",
        )
    )
    print("(p95 of server execution time from EXPLAIN ANALYZE, network excluded)")


def main() -> None:
    """Run the demo end to end."""
    scale = os.environ.get("DBOPT_DEMO_SCALE", DEFAULT_SCALE)
    _banner("Starting a throwaway PostgreSQL")
    server = start_server()
    work = Path(tempfile.mkdtemp(prefix="dbopt-demo-"))
    try:
        print(server.provider)
        dsn = server.create_database("bookedbarber")
        _banner(f"Loading the BookedBarber schema and data (scale {scale})")
        seconds = load_bookedbarber(dsn, scale)
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT count(*) FROM appointments").fetchone()
        print(f"{row[0] if row else 0} appointments loaded in {seconds:.1f}s")
        db = ["--dsn", dsn]
        _banner("1. validate the specs (no database needed)")
        _run(["validate"])
        _banner("2. validate against the database (tables, columns, queries exist)")
        _run(["validate", *db])
        _banner("3. plan: what apply would change")
        _run(["plan", *db, "--format", "plain"])
        _banner("4. verify before: the budgets the missing indexes miss")
        before, after = work / "before.json", work / "after.json"
        _run(["verify", *db, "--format", "plain", "--save", str(before)], expect=(0, 1))
        _banner("5. apply: concurrent builds, timeouts, history")
        _run(["apply", *db, "--format", "plain", "--jobs", "2"])
        _banner("6. verify after: every budget met, by the intended index")
        _run(
            [
                "verify",
                *db,
                "--format",
                "plain",
                "--save",
                str(after),
                "--junit",
                str(work / "verify.xml"),
            ]
        )
        _banner("7. plan again: nothing left to do")
        _run(["plan", *db, "--format", "plain", "--exit-code"])
        _banner("8. refresh-views, as cron runs it (quiet on success; -v says what it did)")
        _run(["refresh-views", *db, "-v"])
        _banner("9. status: managed indexes, views and their refreshes")
        _run(["status", *db, "--format", "plain"])
        _banner("10. rollback --plan: the SQL that would undo the apply")
        _run(["rollback", *db, "--plan", "--last"])
        _banner("Before and after, per budgeted query")
        _before_after(before, after)
        _banner("Done")
    finally:
        server.stop()
        for path in sorted(work.glob("*")):
            path.unlink()
        work.rmdir()
        print("sandbox stopped and removed", flush=True)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("\ninterrupted: sandbox cleaned up", file=sys.stderr)
        sys.exit(130)
