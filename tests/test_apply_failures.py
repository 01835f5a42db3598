"""apply's failure paths as a person meets them: Ctrl-C, a killed backend, blockers, privileges,
confirmation, parallel jobs. Each runs the real CLI against a real PostgreSQL."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import helpers
import psycopg
import pytest
from helpers import (
    cli,
    environments,
    gone,
    invalid_indexes,
    read_until,
    start_dbopt,
    wait_for,
    waiting_build,
)

SPECS = """
table: public.appointments
indexes:
  - {name: idx_appt_barber, columns: [barber_id]}
"""


@pytest.fixture
def project(
    conn: psycopg.Connection[Any], db_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A table, its spec, and a dbopt.yaml with a `test` environment (long lock_timeout)."""
    conn.execute("CREATE TABLE appointments (id int PRIMARY KEY, barber_id int, note text)")
    conn.execute("INSERT INTO appointments SELECT g, g % 30, 'n' FROM generate_series(1, 2000) g")
    return helpers.project(
        tmp_path,
        monkeypatch,
        {
            "indexes/appointments.yaml": SPECS,
            "dbopt.yaml": environments(
                test={"dsn": db_dsn, "lock_timeout": "30s", "retries": 0},
                guarded={"dsn": db_dsn, "confirm": True},
            ),
        },
    )


#: dbopt's concurrent build, waiting for the blocking transaction.
BUILD = "CREATE INDEX CONCURRENTLY%"


def _start_apply(project: Path, *args: str) -> subprocess.Popen[str]:
    return start_dbopt(project, "apply", "--env", "test", "--format", "plain", *args)


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_ctrl_c_cancels_the_build_cleans_up_and_exits_130(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str, jobs: str
) -> None:
    with psycopg.connect(db_dsn) as blocker:
        blocker.execute("INSERT INTO appointments VALUES (-1, 1, 'open transaction')")
        proc = _start_apply(project, "--jobs", jobs)
        pid = waiting_build(conn, BUILD)
        proc.send_signal(signal.SIGINT)
        # The build is cancelled while the blocker still holds it up.
        wait_for(
            conn,
            "SELECT 1 WHERE NOT EXISTS (SELECT FROM pg_stat_activity WHERE pid = %s "
            "AND state = 'active' AND query LIKE 'CREATE INDEX CONCURRENTLY%%')",
            (pid,),
        )
        blocker.rollback()  # the cleanup's DROP INDEX CONCURRENTLY may wait for it too
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert invalid_indexes(conn) == []
    row = conn.execute("SELECT outcome FROM dbopt.runs ORDER BY id DESC LIMIT 1").fetchone()
    assert row == ("aborted",)
    assert conn.execute("SELECT to_regclass('idx_appt_barber')").fetchone() == (None,)


def test_killed_backend_is_reported_and_nothing_invalid_is_left(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    with psycopg.connect(db_dsn) as blocker:
        blocker.execute("INSERT INTO appointments VALUES (-1, 1, 'open transaction')")
        proc = _start_apply(project)
        pid = waiting_build(conn, BUILD)
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        gone(conn, pid)
        blocker.rollback()
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, out
    assert "terminating connection" in out or "server closed the connection" in out, out
    assert invalid_indexes(conn) == []
    # The next apply builds it.
    result = cli("apply", "--env", "test")
    assert result.exit_code == 0, result.output
    assert conn.execute("SELECT to_regclass('idx_appt_barber') IS NOT NULL").fetchone() == (True,)


@pytest.mark.slow
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
        # Its last statement spells out a password: what dbopt shows of another session's
        # query never does (seen: printed verbatim). A statement that only reads, so that no
        # way out of this block changes a role.
        blocker.execute(
            "SELECT 'ALTER ROLE app PASSWORD ''S3cr3t-of-theirs''' AS statement, "
            "'postgresql://app:S3cr3t-of-theirs@db/app' AS url"
        )
        pid = blocker.info.backend_pid
        # Older than lock_timeout: what the up-front check refuses.
        wait_for(
            conn,
            "SELECT 1 FROM pg_stat_activity WHERE pid = %s "
            "AND xact_start < now() - interval '200 ms'",
            (pid,),
        )
        refused = cli("apply", "--env", "test")
        assert refused.exit_code == 2, refused.output
        assert "would make concurrent builds and drops wait" in refused.output
        assert f"pid {pid}" in refused.output
        assert "idle in transaction" in refused.output
        assert "PASSWORD ***" in refused.output and "S3cr3t" not in refused.output

        # With --wait-for-blockers the build starts and waits for the blocker (its wait does
        # not block the application): the blocker ends once the build is seen waiting.
        def release_when_the_build_waits() -> None:
            try:
                with psycopg.connect(db_dsn, autocommit=True) as watcher:
                    # Waiting long enough for the watcher to report it (after 1 s).
                    wait_for(
                        watcher,
                        "SELECT 1 FROM pg_stat_progress_create_index p "
                        "JOIN pg_stat_activity a ON a.pid = p.pid "
                        "WHERE p.phase LIKE 'waiting%%' AND a.wait_event_type = 'Lock' "
                        "AND a.query LIKE 'CREATE INDEX CONCURRENTLY%%' "
                        "AND now() - a.state_change > interval '2 s'",
                        timeout=30,
                    )
            finally:
                blocker.rollback()

        threading.Thread(target=release_when_the_build_waits).start()
        forced = cli("apply", "--env", "test", "--wait-for-blockers", "--format", "plain")
    # It started, waited in the build's wait phase naming the blocker, and built once:
    # no lock_timeout, no INVALID index dropped, no second build.
    assert forced.exit_code == 0, forced.output
    assert f"waiting for: pid {pid}" in forced.output
    assert "S3cr3t" not in forced.output
    assert "waiting for old snapshots" in forced.output
    assert "lock_timeout" not in forced.output
    assert "INVALID" not in forced.output
    assert invalid_indexes(conn) == []
    assert conn.execute("SELECT to_regclass('idx_appt_barber') IS NOT NULL").fetchone() == (True,)


def test_role_that_does_not_own_the_table_is_refused(
    project: Path, conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    admin_conn.execute("CREATE ROLE dbopt_reader LOGIN")
    conn.execute("GRANT SELECT ON appointments TO dbopt_reader")
    dsn = psycopg.conninfo.make_conninfo(db_dsn, user="dbopt_reader")
    try:
        result = cli("apply", "--dsn", dsn)
    finally:
        admin_conn.execute("DROP OWNED BY dbopt_reader")
        admin_conn.execute("DROP ROLE dbopt_reader")
    assert result.exit_code == 2, result.output
    assert "the current role does not own public.appointments" in result.output


def test_confirm_environment_needs_its_name(project: Path, conn: psycopg.Connection[Any]) -> None:
    wrong = cli("apply", "--env", "guarded", input="staging\n")
    assert wrong.exit_code == 2, wrong.output
    assert "Type the environment name (guarded)" in wrong.output
    assert "not confirmed; nothing was run" in wrong.output
    assert conn.execute("SELECT to_regclass('idx_appt_barber')").fetchone() == (None,)
    right = cli("apply", "--env", "guarded", input="guarded\n")
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
    result = cli("apply", "--env", "test", "--jobs", "2", "--plans-dir", "plans")
    assert result.exit_code == 0, result.output
    rollback_sql = (project / "plans" / "run-1-rollback.sql").read_text()
    for name in ("idx_appt_barber", "idx_pay_appt", "idx_pay_amount"):
        assert f"DROP INDEX CONCURRENTLY IF EXISTS public.{name};" in rollback_sql
    status = cli("status", "--env", "test", "--format", "json")
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
    result = cli("apply", "--env", "test")
    assert result.exit_code == 1, result.output
    assert "statement_timeout (5 ms) stopped the statement" in result.output
    assert invalid_indexes(conn) == []
    assert conn.execute("SELECT to_regclass('idx_appt_barber')").fetchone() == (None,)


# The run lock is an advisory lock on every major: one is enough (harness.matrix).
@pytest.mark.slow
@pytest.mark.one_major
def test_wait_queues_behind_another_run_instead_of_exiting_3(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    from dbopt.executor import take_run_lock

    with psycopg.connect(db_dsn, autocommit=True) as other:
        take_run_lock(other, wait=False)

        def end_the_other_run() -> None:
            # Once this apply has queued for the run lock for a second.
            with psycopg.connect(db_dsn, autocommit=True) as watcher:
                try:
                    wait_for(
                        watcher,
                        "SELECT 1 FROM pg_stat_activity WHERE wait_event = 'advisory' "
                        "AND state = 'active' AND now() - query_start > interval '1 s'",
                        timeout=30,
                    )
                finally:
                    other.close()

        threading.Thread(target=end_the_other_run).start()
        started = time.monotonic()
        result = cli("apply", "--env", "test", "--wait")
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
        result = cli("plan", "--env", "test")
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
    result = cli("apply", "--env", "guarded", input="")
    assert result.exit_code == 2, result.output
    assert "not confirmed" in result.output
    assert conn.execute("SELECT to_regclass('idx_appt_barber')").fetchone() == (None,)


def test_the_build_session_opens_beside_the_prompt_and_a_no_builds_nothing(
    project: Path, conn: psycopg.Connection[Any]
) -> None:
    """The build session is opened while the checks run and the prompt waits (its start-up
    is off the first build's path); declined, nothing is built and the run exits 2."""
    proc = start_dbopt(project, "apply", "--env", "guarded", stdin=True)
    try:
        read_until(proc, "Type the environment name (guarded)")
        wait_for(
            conn,
            "SELECT 1 FROM pg_stat_activity WHERE application_name = 'dbopt-apply' "
            "AND datname = current_database()",
        )
        out, _ = proc.communicate("staging\n", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, out
    assert "not confirmed; nothing was run" in out
    assert conn.execute("SELECT to_regclass('idx_appt_barber')").fetchone() == (None,)


def _rollback_drop_made_invalid(
    project: Path, conn: psycopg.Connection[Any]
) -> subprocess.Popen[str]:
    """`rollback --last` started, its DROP INDEX CONCURRENTLY waiting for a reader of the
    table (the caller's open transaction) after it marked idx_appt_barber INVALID."""
    proc = start_dbopt(project, "rollback", "--env", "test", "--last", "--yes")
    wait_for(
        conn,
        "SELECT 1 FROM pg_stat_activity WHERE state = 'active' "
        "AND query LIKE 'DROP INDEX CONCURRENTLY%%' AND wait_event_type = 'Lock'",
    )
    wait_for(
        conn,
        "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE c.relname = 'idx_appt_barber' AND NOT i.indisvalid",
    )
    return proc


def test_ctrl_c_during_a_rollback_drop_leaves_no_invalid_index(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    """DROP INDEX CONCURRENTLY marks the index INVALID before it waits for the table's
    lockers: stopped there, it would leave an index no query can use. dbopt finishes the
    drop it was asked for (guarded like every drop)."""
    assert cli("apply", "--env", "test").exit_code == 0
    with psycopg.connect(db_dsn) as reader:
        reader.execute("SELECT count(*) FROM appointments")  # holds ACCESS SHARE
        proc = _rollback_drop_made_invalid(project, conn)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        reader.rollback()  # the finishing drop waits for it too
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert invalid_indexes(conn) == [], out
    assert conn.execute("SELECT to_regclass('idx_appt_barber')").fetchone() == (None,), out


def test_a_drop_that_timed_out_after_marking_the_index_invalid_says_so(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    """DROP INDEX CONCURRENTLY marks the index INVALID, then waits for the table's lockers:
    stopped there by build_wait_timeout, it leaves an index no query uses. dbopt tries to
    finish the drop, and the report says what is left and how to drop it."""
    assert cli("apply", "--env", "test").exit_code == 0
    (project / "dbopt.yaml").write_text(
        environments(
            test={"dsn": db_dsn, "lock_timeout": "30s", "retries": 0},
            short={
                "dsn": db_dsn,
                "build_wait_timeout": "300ms",
                "cleanup_wait": "300ms",
                "retries": 0,
            },
        )
    )
    with psycopg.connect(db_dsn) as reader:
        reader.execute("SELECT count(*) FROM appointments")  # holds ACCESS SHARE
        result = cli("rollback", "--env", "short", "--last", "--yes")
    assert result.exit_code == 1, result.output
    assert invalid_indexes(conn) == ["idx_appt_barber"]
    assert (
        "the index its stopped drop had made INVALID public.idx_appt_barber could NOT be "
        'dropped within 300 ms: drop it by hand (DROP INDEX CONCURRENTLY IF EXISTS "public".'
        '"idx_appt_barber")'
    ) in " ".join(result.output.split()), result.output
    again = cli("rollback", "--env", "test", "--last", "--yes")  # the reader is gone
    assert again.exit_code == 0, again.output
    assert conn.execute("SELECT to_regclass('idx_appt_barber')").fetchone() == (None,)


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_ctrl_c_again_and_again_stops_the_clean_up_and_records_it(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str, jobs: str
) -> None:
    """More Ctrl-C while a worker cleans up after the first (its DROP INDEX CONCURRENTLY
    waits for the blocker) cancel that drop too, but never leave the worker running
    unattended while the run ends and closes its connections: its change is recorded, the
    report lists it, and the INVALID index it could not drop is reported, then dropped by
    rollback --last or repaired by the next apply. Ctrl-C pressed on through the report and
    the exit changes none of it (exit code 130, no traceback)."""
    with psycopg.connect(db_dsn) as blocker:
        blocker.execute("INSERT INTO appointments VALUES (-1, 1, 'open transaction')")
        proc = _start_apply(project, "--jobs", jobs)
        waiting_build(conn, BUILD)
        # The watcher saw the build's index: the history knows it is dbopt's.
        wait_for(
            conn,
            "SELECT 1 FROM dbopt.changes WHERE object_name = 'idx_appt_barber' "
            "AND object_oid IS NOT NULL",
        )
        proc.send_signal(signal.SIGINT)
        waiting_build(conn, "DROP INDEX CONCURRENTLY%")
        # Ctrl-C again and again, to the end: through the report and the exit too. (As fast
        # as a person presses it: psycopg runs Python's handler only after 0.1 s without a
        # signal while it waits for the server.)
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            proc.send_signal(signal.SIGINT)
            time.sleep(0.12)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "Traceback" not in out, out
    row = conn.execute(
        "SELECT result FROM dbopt.changes WHERE object_name = 'idx_appt_barber' "
        "ORDER BY id DESC LIMIT 1"
    ).fetchone()
    assert row == ("aborted",), out
    assert "could NOT be dropped (Ctrl-C again): the next apply repairs or prunes it" in out, out
    assert invalid_indexes(conn) == ["idx_appt_barber"]
    if jobs == "1":
        # rollback --last is about this run too: it drops what the stopped build left (seen
        # in a review: "its change aborted: nothing was made", the INVALID index left).
        rolled = cli("rollback", "--env", "test", "--last", "--yes")
        assert rolled.exit_code == 0, rolled.output
        assert "the INVALID index its aborted build left" in rolled.output, rolled.output
        assert conn.execute("SELECT to_regclass('idx_appt_barber')").fetchone() == (None,)
    result = cli("apply", "--env", "test")
    assert result.exit_code == 0, result.output
    assert invalid_indexes(conn) == []


def test_ctrl_c_again_during_a_stopped_rollback_drop_says_what_to_drop(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    """The first Ctrl-C stops a rollback's DROP INDEX CONCURRENTLY after it made the index
    INVALID, and dbopt finishes that drop; Ctrl-C again stops the finishing drop too. The
    report then names the INVALID index and the statement that drops it, and the change is
    recorded aborted."""
    assert cli("apply", "--env", "test").exit_code == 0
    with psycopg.connect(db_dsn) as reader:
        reader.execute("SELECT count(*) FROM appointments")  # holds ACCESS SHARE
        proc = _rollback_drop_made_invalid(project, conn)
        (since,) = conn.execute("SELECT clock_timestamp()").fetchone()
        proc.send_signal(signal.SIGINT)
        wait_for(  # the finishing drop, waiting for the reader in its turn
            conn,
            "SELECT 1 FROM pg_stat_activity WHERE state = 'active' AND wait_event_type = "
            "'Lock' AND query LIKE 'DROP INDEX CONCURRENTLY%%' AND query_start > %s",
            (since,),
        )
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "Traceback" not in out, out
    assert (
        "the index its stopped drop had made INVALID public.idx_appt_barber could NOT be "
        'dropped (Ctrl-C again): drop it by hand (DROP INDEX CONCURRENTLY IF EXISTS "public".'
        '"idx_appt_barber")'
    ) in " ".join(out.split()), out
    assert invalid_indexes(conn) == ["idx_appt_barber"]
    row = conn.execute(
        "SELECT result FROM dbopt.changes WHERE object_name = 'idx_appt_barber' "
        "ORDER BY id DESC LIMIT 1"
    ).fetchone()
    assert row == ("aborted",), out
