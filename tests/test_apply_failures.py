"""apply's failure paths as a person meets them: Ctrl-C, a killed backend, blockers, privileges,
confirmation, parallel jobs. Each runs the real CLI against a real PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from dbopt.cli import main

SPECS = """
table: public.appointments
indexes:
  - {name: idx_appt_barber, columns: [barber_id]}
"""


@pytest.fixture
def project(conn: psycopg.Connection[Any], db_dsn: str, tmp_path: Path, monkeypatch: Any) -> Path:
    """A table, its spec, and a dbopt.yaml with a `test` environment (long lock_timeout)."""
    conn.execute("CREATE TABLE appointments (id int PRIMARY KEY, barber_id int, note text)")
    conn.execute("INSERT INTO appointments SELECT g, g % 30, 'n' FROM generate_series(1, 2000) g")
    (tmp_path / "indexes").mkdir()
    (tmp_path / "indexes" / "appointments.yaml").write_text(SPECS)
    (tmp_path / "dbopt.yaml").write_text(
        textwrap.dedent(
            f"""
            environments:
              test:
                dsn: "{db_dsn}"
                lock_timeout: 30s
                retries: 0
              guarded:
                dsn: "{db_dsn}"
                confirm: true
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _wait_for_waiting_build(conn: psycopg.Connection[Any], timeout: float = 20.0) -> int:
    """The pid of dbopt's build once it waits for the blocking transaction."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'dbopt-apply' "
            "AND query LIKE 'CREATE INDEX CONCURRENTLY%' AND wait_event_type = 'Lock'"
        ).fetchone()
        if row:
            return int(row[0])
        time.sleep(0.1)
    raise AssertionError("the build never started waiting")


def _invalid_indexes(conn: psycopg.Connection[Any]) -> list[str]:
    rows = conn.execute(
        "SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid"
    ).fetchall()
    return [r[0] for r in rows]


def _start_apply(project: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "dbopt", "apply", "--env", "test", "--format", "plain", *args],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_ctrl_c_cancels_the_build_cleans_up_and_exits_130(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str, jobs: str
) -> None:
    with psycopg.connect(db_dsn) as blocker:
        blocker.execute("INSERT INTO appointments VALUES (-1, 1, 'open transaction')")
        proc = _start_apply(project, "--jobs", jobs)
        _wait_for_waiting_build(conn)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        blocker.rollback()  # the cleanup's DROP INDEX CONCURRENTLY may wait for it too
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert _invalid_indexes(conn) == []
    row = conn.execute("SELECT outcome FROM dbopt.runs ORDER BY id DESC LIMIT 1").fetchone()
    assert row == ("aborted",)
    assert conn.execute("SELECT to_regclass('idx_appt_barber')").fetchone() == (None,)


def test_killed_backend_is_reported_and_nothing_invalid_is_left(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    with psycopg.connect(db_dsn) as blocker:
        blocker.execute("INSERT INTO appointments VALUES (-1, 1, 'open transaction')")
        proc = _start_apply(project)
        pid = _wait_for_waiting_build(conn)
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        time.sleep(0.5)
        blocker.rollback()
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, out
    assert "terminating connection" in out or "server closed the connection" in out, out
    assert _invalid_indexes(conn) == []
    # The next apply builds it.
    result = CliRunner().invoke(main, ["apply", "--env", "test"])
    assert result.exit_code == 0, result.output
    assert conn.execute("SELECT to_regclass('idx_appt_barber') IS NOT NULL").fetchone() == (True,)


def test_idle_in_transaction_blocker_refused_unless_wait_for_blockers(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    (project / "dbopt.yaml").write_text(
        f'environments:\n  test:\n    dsn: "{db_dsn}"\n    lock_timeout: 200ms\n'
        "    retries: 1\n    retry_backoff: 10ms\n"
    )
    with psycopg.connect(db_dsn) as blocker:
        # A transaction holding a snapshot: concurrent builds wait for it to end.
        blocker.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        blocker.execute("SELECT count(*) FROM appointments")
        time.sleep(0.4)
        pid = blocker.info.backend_pid
        refused = CliRunner().invoke(main, ["apply", "--env", "test"])
        assert refused.exit_code == 2, refused.output
        assert "would make concurrent builds and drops wait" in refused.output
        assert f"pid {pid}" in refused.output
        assert "idle in transaction" in refused.output

        # With --wait-for-blockers the build starts and waits for the blocker (its wait does
        # not block the application): the blocker ends once the build is seen waiting.
        def release_when_the_build_waits() -> None:
            with psycopg.connect(db_dsn, autocommit=True) as watcher:
                for _ in range(600):
                    # Waiting long enough for the watcher to report it (after 1 s).
                    waiting = watcher.execute(
                        "SELECT 1 FROM pg_stat_progress_create_index p "
                        "JOIN pg_stat_activity a ON a.pid = p.pid "
                        "WHERE p.phase LIKE 'waiting%%' AND a.wait_event_type = 'Lock' "
                        "AND a.query LIKE 'CREATE INDEX CONCURRENTLY%%' "
                        "AND now() - a.state_change > interval '2 s'"
                    ).fetchone()
                    if waiting:
                        break
                    time.sleep(0.05)
            blocker.rollback()

        threading.Thread(target=release_when_the_build_waits).start()
        forced = CliRunner().invoke(
            main, ["apply", "--env", "test", "--wait-for-blockers", "--format", "plain"]
        )
    # It started, waited in the build's wait phase naming the blocker, and built once:
    # no lock_timeout, no INVALID index dropped, no second build.
    assert forced.exit_code == 0, forced.output
    assert f"waiting for: pid {pid}" in forced.output
    assert "waiting for old snapshots" in forced.output
    assert "lock_timeout" not in forced.output
    assert "INVALID" not in forced.output
    assert _invalid_indexes(conn) == []
    assert conn.execute("SELECT to_regclass('idx_appt_barber') IS NOT NULL").fetchone() == (True,)


def test_role_that_does_not_own_the_table_is_refused(
    project: Path, conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    admin_conn.execute("CREATE ROLE dbopt_reader LOGIN")
    conn.execute("GRANT SELECT ON appointments TO dbopt_reader")
    dsn = psycopg.conninfo.make_conninfo(db_dsn, user="dbopt_reader")
    try:
        result = CliRunner().invoke(main, ["apply", "--dsn", dsn])
    finally:
        admin_conn.execute("DROP OWNED BY dbopt_reader")
        admin_conn.execute("DROP ROLE dbopt_reader")
    assert result.exit_code == 2, result.output
    assert "the current role does not own public.appointments" in result.output


def test_confirm_environment_needs_its_name(project: Path, conn: psycopg.Connection[Any]) -> None:
    wrong = CliRunner().invoke(main, ["apply", "--env", "guarded"], input="staging\n")
    assert wrong.exit_code == 2, wrong.output
    assert "Type the environment name (guarded)" in wrong.output
    assert "not confirmed; nothing was run" in wrong.output
    assert conn.execute("SELECT to_regclass('idx_appt_barber')").fetchone() == (None,)
    right = CliRunner().invoke(main, ["apply", "--env", "guarded"], input="guarded\n")
    assert right.exit_code == 0, right.output
    assert conn.execute("SELECT to_regclass('idx_appt_barber') IS NOT NULL").fetchone() == (True,)


def test_jobs_build_tables_in_parallel_and_plans_dir_keeps_the_rollback(
    project: Path, conn: psycopg.Connection[Any]
) -> None:
    conn.execute("CREATE TABLE payments (id int PRIMARY KEY, appointment_id int, amount int)")
    (project / "indexes" / "payments.yaml").write_text(
        "table: payments\nindexes:\n  - {name: idx_pay_appt, columns: [appointment_id]}\n"
        "  - {name: idx_pay_amount, columns: [amount]}\n"
    )
    result = CliRunner().invoke(
        main, ["apply", "--env", "test", "--jobs", "2", "--plans-dir", "plans"]
    )
    assert result.exit_code == 0, result.output
    rollback_sql = (project / "plans" / "run-1-rollback.sql").read_text()
    for name in ("idx_appt_barber", "idx_pay_appt", "idx_pay_amount"):
        assert f'DROP INDEX CONCURRENTLY IF EXISTS "public"."{name}";' in rollback_sql
    status = CliRunner().invoke(main, ["status", "--env", "test", "--format", "json"])
    states = {r["index"]: r["state"] for r in json.loads(status.output)["managed"]}
    assert set(states.values()) == {"ok"}


def test_statement_timeout_stops_a_build_and_says_so(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    conn.execute(
        "INSERT INTO appointments SELECT g, g % 30, 'n' FROM generate_series(3000, 300000) g"
    )
    (project / "dbopt.yaml").write_text(
        f'environments:\n  test:\n    dsn: "{db_dsn}"\n    statement_timeout: 5ms\n'
    )
    result = CliRunner().invoke(main, ["apply", "--env", "test"])
    assert result.exit_code == 1, result.output
    assert "statement_timeout (5 ms) stopped the statement" in result.output
    assert _invalid_indexes(conn) == []
    assert conn.execute("SELECT to_regclass('idx_appt_barber')").fetchone() == (None,)


def test_wait_queues_behind_another_run_instead_of_exiting_3(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    from dbopt.executor import take_run_lock

    with psycopg.connect(db_dsn, autocommit=True) as other:
        take_run_lock(other, wait=False)
        threading.Timer(1.0, other.close).start()  # the other run ends after a second
        started = time.monotonic()
        result = CliRunner().invoke(main, ["apply", "--env", "test", "--wait"])
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started >= 0.9


def test_a_lock_the_catalog_query_cannot_get_exits_3_without_a_traceback(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    (project / "dbopt.yaml").write_text(
        f'environments:\n  test:\n    dsn: "{db_dsn}"\n    lock_timeout: 200ms\n'
    )
    with psycopg.connect(db_dsn) as blocker:
        blocker.execute("LOCK TABLE appointments IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        result = CliRunner().invoke(main, ["plan", "--env", "test"])
        waited = time.monotonic() - started
    assert result.exit_code == 3, result.output
    assert "error: gave up waiting for a lock (lock_timeout): canceling statement due to lock " in (
        result.output
    )
    assert "Traceback" not in result.output
    assert waited < 30  # it gave up instead of queueing behind the lock


def test_a_prompt_without_an_answer_is_not_a_confirmation(
    project: Path, conn: psycopg.Connection[Any]
) -> None:
    result = CliRunner().invoke(main, ["apply", "--env", "guarded"], input="")
    assert result.exit_code == 2, result.output
    assert "not confirmed" in result.output
    assert conn.execute("SELECT to_regclass('idx_appt_barber')").fetchone() == (None,)
