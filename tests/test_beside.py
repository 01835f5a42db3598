"""A check run beside the control connection's work (dbopt.beside): apply's check of its new
builds runs on the first build's connection while the other checks and the plan run, and the
run must come out exactly as if it had run first."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import write_specs

from dbopt.beside import check_beside
from dbopt.config import Settings
from dbopt.db import SETTLE_TIMEOUT_S, connect
from dbopt.executor import Executor, SilentReporter
from dbopt.history import History
from dbopt.livecheck import check_builds
from dbopt.spec import load_specs


def _sleeping(seconds: float, then: str | None = None) -> Any:
    """A check that keeps the server busy, then fails with ``then`` (a raised SQL error)."""

    def check(conn: psycopg.Connection[Any]) -> None:
        conn.execute("SELECT pg_sleep(%s)", (seconds,))
        if then is not None:
            conn.execute(then)

    return check


def _lender(dsn: str, opened: list[psycopg.Connection[Any]]) -> Any:
    def lend() -> Any:
        conn = connect(dsn, application_name="dbopt-test-beside")
        opened.append(conn)
        return conn  # a psycopg connection is its own context manager (closed at the end)

    return lend


def test_the_check_s_error_comes_first_once_the_block_passed_where_it_used_to_run(
    db_dsn: str, conn: psycopg.Connection[Any]
) -> None:
    opened: list[psycopg.Connection[Any]] = []
    with (
        pytest.raises(psycopg.errors.UndefinedTable),
        check_beside(
            _sleeping(0.3, "SELECT * FROM no_such_table"), conn, _lender(db_dsn, opened)
        ) as beside,
    ):
        beside.reached()
        raise ValueError("the plan's error, which came after the check in the old order")
    assert opened and opened[0].closed


def test_an_error_before_the_check_s_place_comes_first(
    db_dsn: str, conn: psycopg.Connection[Any]
) -> None:
    opened: list[psycopg.Connection[Any]] = []
    with (
        pytest.raises(ValueError, match="the other checks"),
        check_beside(_sleeping(0.3, "SELECT * FROM no_such_table"), conn, _lender(db_dsn, opened)),
    ):
        raise ValueError("the other checks' error, which came first in the old order")
    # The block did not end before the check did: its connection is closed already.
    assert opened and opened[0].closed


def test_the_block_waits_for_a_passing_check_and_a_failing_one_fails_it(
    db_dsn: str, conn: psycopg.Connection[Any]
) -> None:
    started = time.monotonic()
    with check_beside(_sleeping(0.5), conn, _lender(db_dsn, [])) as beside:
        beside.reached()
    assert time.monotonic() - started >= 0.5
    with (
        pytest.raises(psycopg.errors.UndefinedTable),
        check_beside(_sleeping(0, "SELECT * FROM no_such_table"), conn, _lender(db_dsn, [])),
    ):
        pass


def test_without_a_second_connection_the_check_runs_in_the_block_where_it_used_to(
    conn: psycopg.Connection[Any],
) -> None:
    ran: list[int] = []

    def check(c: psycopg.Connection[Any]) -> None:
        ran.append(c.info.backend_pid)

    with check_beside(check, conn, None) as beside:
        assert ran == []
        beside.reached()
        assert ran == [conn.info.backend_pid]


def test_ctrl_c_in_the_block_cancels_the_check_s_statement_and_is_raised(
    db_dsn: str, conn: psycopg.Connection[Any]
) -> None:
    opened: list[psycopg.Connection[Any]] = []
    started = time.monotonic()
    with (
        pytest.raises(KeyboardInterrupt),
        check_beside(_sleeping(60), conn, _lender(db_dsn, opened)) as beside,
    ):
        beside.reached()
        _until_sleeping(conn)  # then Ctrl-C
        raise KeyboardInterrupt
    # Cancelled, not waited for: well before the 60 s sleep would have ended.
    assert time.monotonic() - started < 20
    assert opened and opened[0].closed


def test_the_lent_connection_is_the_first_build_s_and_nothing_else_is_opened(
    db_dsn: str, conn: psycopg.Connection[Any]
) -> None:
    settings = Settings(lock_timeout_ms=300)
    with Executor(db_dsn, settings, History(), SilentReporter()) as runner:
        runner.open_worker()
        with runner.lend_worker() as lent:
            pid = lent.info.backend_pid
            assert lent.execute("SELECT current_setting('application_name')").fetchone() == (
                "dbopt-apply",
            )
        # Given back idle: the first build's thread gets it, not a new session.
        assert runner._worker().info.backend_pid == pid
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dbopt-apply' "
            "AND datname = current_database()"
        ).fetchone()
        assert row == (1,)


def test_a_connection_given_back_after_the_runner_closed_is_closed(db_dsn: str) -> None:
    settings = Settings(lock_timeout_ms=300)
    runner = Executor(db_dsn, settings, History(), SilentReporter())
    lent: list[psycopg.Connection[Any]] = []
    inside = threading.Event()
    go_on = threading.Event()

    def borrow() -> None:
        with runner.lend_worker() as c:
            lent.append(c)
            inside.set()
            go_on.wait(10)

    thread = threading.Thread(target=borrow)
    thread.start()
    assert inside.wait(10)
    runner.close()
    go_on.set()
    thread.join(10)
    assert lent and lent[0].closed


def test_an_error_before_the_check_s_place_cancels_the_check(
    db_dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """The check's outcome no longer matters: its statement is cancelled, not waited for."""
    opened: list[psycopg.Connection[Any]] = []
    started = time.monotonic()
    with (
        pytest.raises(ValueError, match="misspelt"),
        check_beside(_sleeping(60), conn, _lender(db_dsn, opened)),
    ):
        _until_sleeping(conn)
        raise ValueError("a misspelt column")
    # Ended by the cancel: not left to end by itself after SETTLE_TIMEOUT_S.
    assert time.monotonic() - started < SETTLE_TIMEOUT_S - 1
    assert opened and opened[0].closed


def test_a_cancel_landing_before_the_check_s_statement_is_sent_again(
    db_dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """A cancel between two of the check's statements is lost: it is sent again."""
    opened: list[psycopg.Connection[Any]] = []
    running = threading.Event()

    def check(c: psycopg.Connection[Any]) -> None:
        running.set()
        time.sleep(0.3)  # the first cancel lands here, before the statement
        c.execute("SELECT pg_sleep(60)")

    started = time.monotonic()
    with (
        pytest.raises(ValueError, match="misspelt"),
        check_beside(check, conn, _lender(db_dsn, opened)),
    ):
        assert running.wait(10)
        raise ValueError("a misspelt column")
    assert time.monotonic() - started < SETTLE_TIMEOUT_S - 1
    assert opened and opened[0].closed


@pytest.mark.slow
def test_a_check_that_ignores_its_cancel_is_left_to_end_by_itself_after_a_while(
    db_dsn: str, conn: psycopg.Connection[Any]
) -> None:
    stubborn = _Stubborn()
    started = time.monotonic()
    try:
        with (
            pytest.raises(ValueError, match="misspelt"),
            check_beside(stubborn, conn, _lender(db_dsn, [])),
        ):
            assert stubborn.running.wait(10)
            raise ValueError("a misspelt column")
        assert SETTLE_TIMEOUT_S <= time.monotonic() - started < SETTLE_TIMEOUT_S + 10
    finally:
        stubborn.ended.set()


@pytest.mark.one_major
def test_ctrl_c_again_while_a_cancelled_check_is_waited_for_stops_waiting(
    db_dsn: str, conn: psycopg.Connection[Any]
) -> None:
    stubborn = _Stubborn()
    # Ctrl-C again, half a second into the wait for the cancelled check (a real SIGINT,
    # raised as KeyboardInterrupt even where the suite runs with SIGINT ignored).
    again = threading.Timer(
        0.5, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT)
    )
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt), check_beside(stubborn, conn, _lender(db_dsn, [])):
            assert stubborn.running.wait(10)
            again.start()
            raise KeyboardInterrupt  # the first Ctrl-C, in the block
        # Well before the 5 s a cancelled check is otherwise waited for.
        assert time.monotonic() - started < SETTLE_TIMEOUT_S - 1
    finally:
        again.cancel()
        again.join()
        signal.signal(signal.SIGINT, handler)
        stubborn.ended.set()


@pytest.mark.slow
def test_the_check_runs_unbounded_by_the_build_session_s_statement_timeout(
    tmp_path: Path, db_dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """The lent connection is a build session (statement_timeout: the environment's bound);
    the check was run, and runs, unbounded as on the control connection: a lock it waits for
    stops it after lock_timeout (LockNotAvailable), never after statement_timeout."""
    conn.execute("CREATE TABLE wide (a int, b int)")
    spec = "table: public.wide\nindexes:\n  - {name: idx_wide_a, columns: [a]}\n"
    specs = load_specs([(write_specs(tmp_path, {"wide.yaml": spec}), True)])
    with (
        psycopg.connect(db_dsn) as holder,
        connect(db_dsn, settings=Settings(statement_timeout_ms=50)) as bounded,
    ):
        holder.execute("LOCK TABLE wide IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(psycopg.errors.QueryCanceled):
            check_builds(specs.indexes, bounded, 1000)
        with pytest.raises(psycopg.errors.LockNotAvailable):
            check_builds(specs.indexes, bounded, 1000, statement_timeout_ms=0)


def test_a_lent_connection_given_back_in_a_transaction_is_closed_not_kept(db_dsn: str) -> None:
    with Executor(db_dsn, Settings(lock_timeout_ms=300), History(), SilentReporter()) as runner:
        with runner.lend_worker() as lent:
            lent.execute("BEGIN")
            pid = lent.info.backend_pid
        assert lent.closed
        assert runner._worker().info.backend_pid != pid


class _Stubborn:
    """A check with no statement to cancel: it runs (``running``) until ``ended``."""

    def __init__(self) -> None:
        self.running = threading.Event()
        self.ended = threading.Event()

    def __call__(self, _conn: psycopg.Connection[Any]) -> None:
        self.running.set()
        self.ended.wait(30)


def _until_sleeping(conn: psycopg.Connection[Any]) -> None:
    """Until the check's pg_sleep runs on the server."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
            "'dbopt-test-beside' AND state = 'active' AND query LIKE '%pg_sleep%'"
        ).fetchone()
        if row and row[0]:
            return
        time.sleep(0.02)
