"""`make demo`: dbopt's main job on a throwaway database, each step's real output shown.

Starts a sandbox PostgreSQL, loads the BookedBarber reference schema and data, then runs the
dbopt commands a DBA would run, as separate processes, exactly as typed. Cleans up on exit,
also on Ctrl-C.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from dbopt.sandbox import start_server

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "bookedbarber"


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


def main() -> None:
    """Run the demo end to end."""
    scale = os.environ.get("DBOPT_DEMO_SCALE", "0.05")
    _banner("Starting a throwaway PostgreSQL")
    server = start_server()
    try:
        print(server.provider)
        dsn = server.create_database("bookedbarber")
        _banner(f"Loading the BookedBarber schema and data (scale {scale})")
        started = time.monotonic()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute((FIXTURES / "schema.sql").read_text())
            conn.execute("SELECT set_config('dbopt.scale', %s, false)", (scale,))
            conn.execute((FIXTURES / "data.sql").read_text())
            rows = conn.execute("SELECT count(*) FROM appointments").fetchone()
        print(f"{rows[0] if rows else 0} appointments loaded in {time.monotonic() - started:.1f}s")
        _banner("1. validate the specs (no database needed)")
        _run(["validate"])
        _banner("2. validate against the database (tables, columns, queries exist)")
        _run(["validate", "--dsn", dsn])
        _banner("3. plan: what apply would change")
        _run(["plan", "--dsn", dsn, "--format", "plain"])
        _banner("4. the exact SQL apply would run")
        _run(["plan", "--dsn", dsn, "--sql"])
        _banner("5. apply: concurrent builds, timeouts, history")
        _run(["apply", "--dsn", dsn, "--format", "plain"])
        _banner("6. plan again: nothing left to do")
        _run(["plan", "--dsn", dsn, "--format", "plain", "--exit-code"])
        _banner("7. status: managed indexes, their size and use; unmanaged ones apart")
        _run(["status", "--dsn", dsn, "--format", "plain"])
        _banner("Done")
    finally:
        server.stop()
        print("sandbox stopped and removed", flush=True)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("\ninterrupted: sandbox cleaned up", file=sys.stderr)
        sys.exit(130)
