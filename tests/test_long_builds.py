"""Long builds on busy databases: never throw away a finished build.

A concurrent build's waits never block the application, so they are bounded by
build_wait_timeout (default: none), not by lock_timeout; what can block the application (the
swap) stays under lock_timeout and is retried without building again; dbopt's own parallel
builds never wait for each other. Everything runs the real CLI against a real server; waits
are observed in pg_stat_activity and pg_stat_progress_create_index, never slept out.
"""

from __future__ import annotations

import gc
import json
import signal
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import Result
from helpers import (
    cli,
    environments,
    project,
    read_until,
    start_dbopt,
    take_table_as_build_ends,
    wait_for,
    write_specs,
)

#: Every test here waits on real builds and lock waits of a second or more.
pytestmark = pytest.mark.slow


def run_rows(output: str) -> list[dict[str, Any]]:
    """The run's summary rows from `--format json` output (its last JSON line)."""
    lines = [line for line in output.splitlines() if line.startswith("[")]
    rows: list[dict[str, Any]] = json.loads(lines[-1])
    return rows


@pytest.fixture
def shop(
    conn: psycopg.Connection[Any], db_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """order_items (200,000 rows) and customers; a `test` environment (this file's shop, not
    the orders of tests/shop.py). No autovacuum on order_items: its lock would hold a build
    up to a second (until the deadlock check cancels it), a wait these tests do not mean."""
    conn.execute(
        "CREATE TABLE customers (id int PRIMARY KEY, name text);"
        "INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 1000) g;"
        "CREATE TABLE order_items (id int PRIMARY KEY, order_id int, sku text, qty int,"
        " price numeric) WITH (autovacuum_enabled = off);"
        "INSERT INTO order_items SELECT g, g / 3, 'sku-' || (g % 500), 1 + g % 7, g % 100"
        " FROM generate_series(1, 200000) g"
    )
    return project(
        tmp_path,
        monkeypatch,
        {
            "indexes/order_items.yaml": (
                "table: order_items\nindexes:\n  - {name: idx_items_order, columns: [order_id]}\n"
            ),
            "dbopt.yaml": environments(
                test={"dsn": db_dsn, "lock_timeout": "1s", "retries": 3, "retry_backoff": "10ms"}
            ),
        },
    )


def _old_snapshot(dsn: str) -> psycopg.Connection[Any]:
    """A REPEATABLE READ transaction on another table: concurrent builds wait for it."""
    holder = psycopg.connect(dsn)
    holder.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    holder.execute("SELECT count(*) FROM customers")
    return holder


_WAITING_LAST_PHASE = (
    "SELECT p.pid FROM pg_stat_progress_create_index p JOIN pg_stat_activity a USING (pid) "
    "WHERE p.phase = 'waiting for old snapshots' AND a.application_name = 'dbopt-apply'"
)


#: dbopt's control session waits for a lock (in this test's database).
_CONTROL_WAITS = (
    "SELECT 1 FROM pg_stat_activity WHERE application_name = 'dbopt-control' "
    "AND wait_event_type = 'Lock' AND datname = current_database()"
)


def _take_the_table_as_the_build_ends(
    conn: psycopg.Connection[Any],
    snapshot: psycopg.Connection[Any],
    locker: psycopg.Connection[Any],
) -> None:
    """While dbopt's build waits for ``snapshot``, ``locker`` asks for order_items in ACCESS
    EXCLUSIVE mode (queued behind the build); ``snapshot`` ends: the lock is granted the
    moment the build ends, before dbopt's next statement on the table. ``locker`` holds it
    until the caller rolls it back."""
    wait_for(conn, _WAITING_LAST_PHASE)
    take_table_as_build_ends(conn, snapshot, locker, "order_items")


class _Quiet:
    """A reporter that keeps nothing (the watcher's findings are read from its watches)."""

    def event(self, message: str) -> None:
        pass

    def progress(self, index: Any, phase: str, done: int, total: int) -> None:
        pass

    def waiting(self, index: Any, phase: str, seconds: float, blockers: Any) -> None:
        pass


def test_a_statement_that_ended_while_the_watcher_read_gets_nothing_of_the_next_one(
    shop: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    """The watcher reads every watched session in one query; a statement that ended while
    that query ran (its session already running the next build) must not take that build's
    OID: for a build the OID is the proof of what it made (recorded as the change's object,
    dropped if it fails). A real build stands for the next statement."""
    from dbopt.config import Settings
    from dbopt.model import QualifiedName
    from dbopt.progress import Watch, Watcher

    snapshot = _old_snapshot(db_dsn)
    builder = psycopg.connect(db_dsn, autocommit=True)
    pid = builder.info.backend_pid
    build = threading.Thread(
        target=lambda: builder.execute(
            "CREATE INDEX CONCURRENTLY idx_items_order ON order_items (order_id)"
        )
    )
    build.start()
    watcher = Watcher(db_dsn, Settings(), _Quiet(), lambda: [])
    heard: list[int] = []
    try:
        (oid,) = wait_for(
            conn,
            "SELECT index_relid::bigint FROM pg_stat_progress_create_index "
            "WHERE pid = %s AND phase = 'waiting for old snapshots'",
            (pid,),
        )
        with psycopg.connect(db_dsn, autocommit=True) as reader:
            # What the watcher had taken to watch before its query: an earlier statement of
            # that session, over (no longer watched) by the time the rows are read.
            ended = Watch(QualifiedName("public", "idx_items_earlier"), on_oid=heard.append)
            watcher._sample(reader, {pid: ended})
            assert (ended.oid, heard, ended.phase) == (None, [], "starting")
            # The statement being watched gets it; the ended one still nothing, though its
            # session is watched again (the next statement's watch under the same pid).
            live = watcher.watch(pid, QualifiedName("public", "idx_items_order"), heard.append)
            watcher._sample(reader, {pid: ended})
            assert (ended.oid, heard, ended.phase) == (None, [], "starting")
            watcher._sample(reader, {pid: live})
            assert live.oid == oid and heard and set(heard) == {oid}
            assert live.phase == "waiting for old snapshots"
            # Closed, it takes no sample any more.
            closed = watcher.unwatch(pid, live)
            seconds = dict(closed.seconds)
            watcher._sample(reader, {pid: closed})
            assert closed.seconds == seconds
    finally:
        watcher.stop()
        snapshot.close()
        build.join(30)
        builder.close()


def test_an_unrelated_long_transaction_holds_the_last_phase_and_the_build_finishes_once(
    shop: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    holder = _old_snapshot(db_dsn)
    pid = holder.info.backend_pid
    frozen = gc.get_freeze_count()
    box: list[Result] = []
    thread = threading.Thread(
        target=lambda: box.append(
            cli("apply", "--env", "test", "--wait-for-blockers", "--format", "json")
        )
    )
    thread.start()
    try:
        wait_for(conn, _WAITING_LAST_PHASE)
        # The collector was paused while the run got ready, not while it waits on builds.
        assert gc.isenabled()
        # Long enough for the watcher to report the wait (it reports waits after 1 s).
        wait_for(
            conn,
            _WAITING_LAST_PHASE.replace(
                "a.application_name",
                "now() - a.state_change > interval '1.6 s' AND a.application_name",
            ),
        )
    finally:
        holder.rollback()
        holder.close()
    thread.join(60)
    assert gc.isenabled() and gc.get_freeze_count() == frozen  # as it was before the command
    result = box[0]
    assert result.exit_code == 0, result.output
    assert "idx_items_order: waiting for old snapshots for" in result.output
    assert f"waiting for: pid {pid}" in result.output
    assert "lock_timeout" not in result.output and "INVALID" not in result.output
    (row,) = run_rows(result.output)
    assert row["result"] == "ok" and row["builds"] == 1
    assert row["waiting_s"] >= 1.0 and row["building_s"] > 0
    assert isinstance(row["size_bytes"], int)


def test_build_wait_timeout_never_throws_a_finished_build_away_while_the_reason_runs(
    shop: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    """The build times out in its last phase: dbopt does not build again while the
    transaction it waited for still runs (exit 1, saying so), and leaves nothing INVALID."""
    holder = _old_snapshot(db_dsn)
    pid = holder.info.backend_pid
    try:
        result = cli("apply", "--env", "test", "--wait-for-blockers", "--build-wait-timeout", "1s")
    finally:
        holder.rollback()
        holder.close()
    assert result.exit_code == 1, result.output
    assert "built (" in result.output and "s of work) but could not be finished" in result.output
    assert "not built again while they do" in result.output
    assert f"pid {pid}" in result.output
    assert conn.execute("SELECT count(*) FROM pg_index WHERE NOT indisvalid").fetchone() == (0,)


def test_once_the_reason_is_gone_a_timed_out_build_is_made_again_and_its_cost_reported(
    shop: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    holder = _old_snapshot(db_dsn)
    proc = start_dbopt(
        shop,
        "apply",
        "--env",
        "test",
        "--wait-for-blockers",
        "--build-wait-timeout",
        "1s",
        "--format",
        "json",
    )
    try:
        seen = read_until(proc, "not building again while they run", timeout=120)
        holder.rollback()  # the reason goes: dbopt builds again
    finally:
        holder.close()
    rest, _ = proc.communicate(timeout=120)
    output = seen + rest
    assert proc.returncode == 0, output
    assert "they ended; building again" in output
    assert "was built 2 times" in output and "s of building were thrown away" in output
    (row,) = run_rows(output)
    assert row["builds"] == 2


def test_jobs_2_builds_expression_and_partial_indexes_without_waiting_for_itself(
    shop: Path, conn: psycopg.Connection[Any]
) -> None:
    """A long expression build on one table and plain builds on another: a plain build's
    last phase would wait for the expression build's transaction (PostgreSQL lets builds
    ignore only builds without expressions or predicate), so dbopt never runs them side by
    side — no wait reported, nothing built twice."""
    # No autovacuum on either table: an autovacuum or autoanalyze of the new rows holds the
    # table's SHARE UPDATE EXCLUSIVE lock, which a concurrent build waits for until the
    # deadlock check cancels the autovacuum (deadlock_timeout, 1 s): a wait not of dbopt's.
    conn.execute(
        "CREATE TABLE events WITH (autovacuum_enabled = off) AS SELECT g AS id, "
        "md5(g::text) AS payload, g % 1000 AS kind FROM generate_series(1, 2000000) g"
    )
    write_specs(
        shop,
        {
            "events.yaml": """
                table: events
                indexes:
                  - {name: idx_events_payload, columns: [{expr: "upper(payload)"}]}
                  - {name: idx_events_kind_big, columns: [kind], where: "kind > 500"}
                """,
            "order_items.yaml": """
                table: order_items
                indexes:
                  - {name: idx_items_order, columns: [order_id]}
                  - {name: idx_items_sku, columns: [sku]}
                """,
        },
    )
    result = cli("apply", "--env", "test", "--jobs", "2", "--format", "json")
    assert result.exit_code == 0, result.output
    assert "waiting for" not in result.output
    assert "dbopt's own session" not in result.output
    assert "lock_timeout" not in result.output
    rows = run_rows(result.output)
    assert len(rows) == 4
    assert all(r["result"] == "ok" and r["builds"] == 1 for r in rows)
    assert all(r["waiting_s"] < 1.0 for r in rows), rows


def test_a_held_swap_is_retried_without_building_again(
    shop: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    """A session takes the table before the swap: the swap waits lock_timeout, backs off and
    tries again; the index built aside is kept and swapped in once the table is free."""
    conn.execute("CREATE INDEX idx_items_order ON order_items (order_id, qty)")
    snapshot = _old_snapshot(db_dsn)
    locker = psycopg.connect(db_dsn)
    box: list[Result] = []
    thread = threading.Thread(
        target=lambda: box.append(
            cli(
                "apply",
                "--env",
                "test",
                "--replace-drifted",
                "--wait-for-blockers",
                "--format",
                "json",
            )
        )
    )
    thread.start()
    try:
        # The build aside waits for the old snapshot; the table is taken the moment it ends,
        # before dbopt asks for the swap's lock.
        _take_the_table_as_the_build_ends(conn, snapshot, locker)
        # The swap's transaction waits (its check needs the table); once a second attempt is
        # seen waiting, the table is released.
        first = wait_for(
            conn,
            "SELECT xact_start FROM pg_stat_activity WHERE application_name = 'dbopt-apply' "
            "AND wait_event_type = 'Lock'",
        )[0]
        wait_for(
            conn,
            "SELECT 1 FROM pg_stat_activity WHERE application_name = 'dbopt-apply' "
            f"AND wait_event_type = 'Lock' AND xact_start > '{first.isoformat()}'",
        )
        locker.rollback()
    finally:
        snapshot.close()
        locker.close()
    thread.join(60)
    result = box[0]
    assert result.exit_code == 0, result.output
    assert "lock_timeout on public.order_items (attempt 1" in result.output
    (row,) = run_rows(result.output)
    assert row["result"] == "ok" and row["builds"] == 1
    definition = conn.execute("SELECT pg_get_indexdef('idx_items_order'::regclass)").fetchone()
    assert definition is not None and "(order_id)" in definition[0]


def test_a_table_taken_right_after_its_build_leaves_only_the_definition_unread(
    shop: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    """A session takes the table the moment the build ends: reading the new index's
    definition waits lock_timeout and gives up (one wait, not one per fact), the index is
    still recorded as dbopt's by its OID, its size is still read (it needs only the index's
    own lock), and the run succeeds while the table is still held."""
    snapshot = _old_snapshot(db_dsn)
    locker = psycopg.connect(db_dsn)
    box: list[Result] = []
    thread = threading.Thread(
        target=lambda: box.append(
            cli("apply", "--env", "test", "--wait-for-blockers", "--format", "json")
        )
    )
    thread.start()
    try:
        _take_the_table_as_the_build_ends(conn, snapshot, locker)
        wait_for(conn, _CONTROL_WAITS)
        thread.join(60)  # the table is still held
        assert not thread.is_alive(), "the run waited for the table instead of going on"
    finally:
        locker.rollback()
        snapshot.close()
        locker.close()
    thread.join(60)
    result = box[0]
    assert result.exit_code == 0, result.output
    (row,) = run_rows(result.output)
    assert row["result"] == "ok" and row["builds"] == 1
    assert isinstance(row["size_bytes"], int) and row["size_bytes"] > 0
    recorded = conn.execute(
        "SELECT object_oid, built_definition FROM dbopt.changes "
        "WHERE object_name = 'idx_items_order' AND result = 'ok'"
    ).fetchall()
    oid = conn.execute("SELECT 'idx_items_order'::regclass::oid::bigint").fetchone()
    assert oid is not None and recorded == [(oid[0], None)]


def test_ctrl_c_while_reading_what_a_build_made_still_cleans_it_up(
    shop: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    """The build is done; reading its definition waits for a table someone took the moment
    it ended; Ctrl-C there: the index is still the run's (dropped once the table is free),
    not left behind unknown."""
    # A lock_timeout long enough for the Ctrl-C to land while that read waits: with this
    # module's 1 s, a loaded machine (CI runs two servers at once) could see the read give
    # up first (then the size alone, and the run goes on), and the Ctrl-C come too late.
    (shop / "dbopt.yaml").write_text(
        environments(
            test={"dsn": db_dsn, "lock_timeout": "60s", "retries": 3, "retry_backoff": "10ms"}
        )
    )
    snapshot = _old_snapshot(db_dsn)
    locker = psycopg.connect(db_dsn)
    proc = start_dbopt(shop, "apply", "--env", "test", "--wait-for-blockers", "--format", "plain")
    try:
        _take_the_table_as_the_build_ends(conn, snapshot, locker)
        wait_for(conn, _CONTROL_WAITS)
        proc.send_signal(signal.SIGINT)
        # Its clean-up now waits for the table too (the guard reads the definition).
        try:
            wait_for(
                conn,
                _CONTROL_WAITS + " AND query NOT LIKE '%What a step that made a relation left%'",
            )
        except AssertionError as exc:
            proc.kill()
            raise AssertionError(f"{exc}\ndbopt said:\n{proc.communicate(timeout=30)[0]}") from None
        locker.rollback()
        out, _ = proc.communicate(timeout=120)
    finally:
        snapshot.close()
        locker.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert "dropped the index it built public.idx_items_order" in out, out
    assert conn.execute("SELECT to_regclass('idx_items_order')").fetchone() == (None,)
