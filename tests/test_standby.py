"""Hot standbys and replica lag, on a real primary with a real streaming standby
(tests/standby.py: pg_basebackup -R, both local).

On a standby: plan, status and verify work; apply, rollback, refresh-views and init refuse
at once (exit 2). Status counts each index's scans on every node. With max_replica_lag, apply
pauses before each build while the standby replays too far behind (pg_wal_replay_pause()
makes it so), reports who and how far, goes on when it catches up, and stops the run (exit
1, recorded as stopped) when the pause outlasts max_replica_wait.
"""

from __future__ import annotations

import json
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import cli, environments, oid, poll, project, read_until, start_dbopt
from psycopg.conninfo import make_conninfo
from standby import Pair, StandbyUnavailable, primary_with_standby

from dbopt.config import Replica, Settings
from dbopt.replicas import Standbys, replica_lag
from dbopt.sandbox import Probe

OWNER = "app_owner"  # owns the tables; may not see pg_stat_replication's lag columns
DEPLOYER = "app_deployer"  # a member of app_owner that may (pg_read_all_stats)

ORDERS = """
table: public.orders
indexes:
  - name: idx_orders_customer
    columns: [customer_id]
  - name: idx_orders_big
    columns: [total]
    where: "total > 19000"
queries:
  - name: orders_of_one_customer
    sql: SELECT * FROM orders WHERE customer_id = 42
    budget_ms: 500
"""


TOTALS = """
name: mv_totals
query: SELECT customer_id, sum(total) AS total FROM orders GROUP BY customer_id
indexes:
  - {name: mv_totals_customer, columns: [customer_id], unique: true}
"""


@pytest.fixture(scope="module")
def pair(server_probes: tuple[Probe, ...]) -> Iterator[Pair]:
    try:
        with primary_with_standby(server_probes) as found:
            with psycopg.connect(found.primary.dsn, autocommit=True) as admin:
                admin.execute(f"CREATE ROLE {OWNER} LOGIN NOSUPERUSER")
                admin.execute(f"CREATE ROLE {DEPLOYER} LOGIN NOSUPERUSER IN ROLE {OWNER}")
                admin.execute(f"GRANT pg_read_all_stats TO {DEPLOYER}")
            yield found
    except StandbyUnavailable as exc:
        pytest.skip(str(exc))


@dataclass
class Shop:
    pair: Pair
    admin: str  # the test database on the primary, as the superuser
    name: str

    def dsn(self, user: str, *, standby: bool = False) -> str:
        dsn = make_conninfo(self.admin, user=user)
        return self.pair.standby_dsn(dsn) if standby else dsn


@pytest.fixture
def shop(pair: Pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Shop]:
    """An orders table (owned by app_owner) on the primary, replayed on the standby; the
    working directory is a project with a `prod` environment (the primary as the deployer,
    the standby listed) and a `replica` one (the standby itself)."""
    name = f"t_standby_{secrets.token_hex(3)}"
    admin = pair.primary.create_database(name, owner=OWNER)
    found = Shop(pair, admin, name)
    with psycopg.connect(found.dsn(OWNER), autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL, total numeric);"
            "INSERT INTO orders SELECT g, g % 500, g FROM generate_series(1, 20000) g;"
            "ANALYZE orders"
        )
    project(
        tmp_path,
        monkeypatch,
        {
            "indexes/orders.yaml": ORDERS,
            "views/totals.yaml": TOTALS,
            "dbopt.yaml": environments(
                prod={
                    "dsn": found.dsn(DEPLOYER),
                    "lock_timeout": "2s",
                    "replicas": [{"name": "replica-1", "dsn": found.dsn(DEPLOYER, standby=True)}],
                },
                replica={"dsn": found.dsn(DEPLOYER, standby=True)},
                blind={"dsn": found.dsn(OWNER)},
            ),
        },
    )
    pair.caught_up()
    try:
        yield found
    finally:
        with psycopg.connect(pair.standby_dsn(pair.primary.dsn), autocommit=True) as s:
            if s.execute("SELECT pg_is_wal_replay_paused()").fetchone() == (True,):
                s.execute("SELECT pg_wal_replay_resume()")
        pair.primary.drop_database(name)


def _paused_behind(shop: Shop, seconds: float) -> None:
    """Pause replay on the standby, write on the primary, and wait until the primary sees the
    standby at least ``seconds`` behind."""
    shop.pair.on_standby("SELECT pg_wal_replay_pause()")
    with psycopg.connect(shop.dsn(OWNER), autocommit=True) as conn:
        conn.execute("UPDATE orders SET total = total + 1 WHERE id <= 100")

    def behind() -> bool:
        with psycopg.connect(shop.pair.primary.dsn, autocommit=True) as admin:
            row = admin.execute(
                "SELECT extract(epoch FROM replay_lag) FROM pg_stat_replication "
                "WHERE application_name = 'replica-1'"
            ).fetchone()
        return bool(row and row[0] is not None and row[0] > seconds)

    poll(behind, f"the standby {seconds} s behind", timeout=60, every=0.2)


def _index_on_primary(shop: Shop) -> int | None:
    with psycopg.connect(shop.admin, autocommit=True) as conn:
        return oid(conn, "idx_orders_customer")


# --- what runs on a standby -----------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [["apply"], ["rollback", "--last"], ["refresh-views"], ["init"], ["apply", "--dry-run"]],
    ids=lambda c: " ".join(c),
)
def test_writing_commands_refuse_a_standby_at_once(shop: Shop, command: list[str]) -> None:
    result = cli(*command, "--env", "replica")
    assert result.exit_code == 2, result.output
    assert "this is a standby" in result.output
    assert "run against the primary" in result.output
    assert _index_on_primary(shop) is None


def test_plan_status_and_verify_work_on_a_standby(shop: Shop) -> None:
    assert cli("apply", "--env", "prod").exit_code == 0
    shop.pair.caught_up()
    plan = cli("plan", "--env", "replica")
    assert plan.exit_code == 0, plan.output
    assert "0 to change" in plan.output, plan.output
    # The partial index and the view need the server to normalise their specs, which a
    # standby cannot (no temporary objects): present, not compared — never "drift".
    assert plan.output.count("was not compared") == 2, plan.output
    verify = cli("verify", "--env", "replica")
    assert verify.exit_code == 0, verify.output
    assert "orders_of_one_customer" in verify.output
    status = cli("status", "--env", "replica")
    assert status.exit_code == 0, status.output
    assert "this is a standby" in status.output
    assert "public.idx_orders_customer" in status.output
    assert "present (not compared)" in status.output


def test_status_counts_scans_on_every_node(shop: Shop) -> None:
    """An index only the standby's readers use is not unused: status shows where it is read."""
    assert cli("apply", "--env", "prod").exit_code == 0
    shop.pair.caught_up()
    with psycopg.connect(shop.dsn(OWNER, standby=True), autocommit=True) as reader:
        reader.execute("SET enable_seqscan = off")
        for _ in range(3):
            reader.execute("SELECT * FROM orders WHERE customer_id = 7").fetchall()

    def managed() -> dict[str, Any] | None:
        result = cli("status", "--env", "prod", "--format", "json")
        assert result.exit_code == 0, result.output
        rows = json.loads(result.stdout)["managed"]
        row: dict[str, Any] = next(r for r in rows if r["index"] == "public.idx_orders_customer")
        return row if row["scans_by_node"]["replica-1"] >= 3 else None

    row = poll(managed, "the standby's scans in status", timeout=30, every=0.5)
    assert row["index"] == "public.idx_orders_customer"
    nodes = row["scans_by_node"]
    assert nodes["primary"] == 0
    assert row["scans"] == nodes["primary"] + nodes["replica-1"]
    assert row["scans_partial"] is False


def test_status_says_which_replica_it_could_not_read(
    shop: Shop, tmp_path: Path, closed_port: int
) -> None:
    (tmp_path / "dbopt.yaml").write_text(
        environments(
            prod={
                "dsn": shop.dsn(DEPLOYER),
                "replicas": [f"host=127.0.0.1 port={closed_port} dbname={shop.name}"],
            }
        )
    )
    result = cli("status", "--env", "prod")
    assert result.exit_code == 0, result.output
    assert "scans unknown on replica-1" in result.output
    assert "scans (reachable nodes)" in result.output
    report = json.loads(cli("status", "--env", "prod", "--format", "json").stdout)
    assert report["unreachable"][0].startswith("replica-1: ")
    for row in report["managed"]:
        assert row["scans_by_node"]["replica-1"] is None
        assert row["scans_partial"] is True


# --- replica lag ----------------------------------------------------------------------------


def test_apply_waits_for_a_lagging_standby_then_builds(shop: Shop, tmp_path: Path) -> None:
    _paused_behind(shop, 1.5)
    proc = start_dbopt(
        tmp_path, "apply", "--env", "prod", "--max-replica-lag", "1s", "--max-replica-wait", "5min"
    )
    try:
        seen = read_until(proc, "s behind, limit 1 s", timeout=60)
        assert "waiting: replica-1 is" in seen
        time.sleep(1.5)  # still paused: nothing may have been built meanwhile
        assert proc.poll() is None
        assert _index_on_primary(shop) is None
        shop.pair.on_standby("SELECT pg_wal_replay_resume()")
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, seen + out
    assert "standbys within 1 s" in seen + out
    assert _index_on_primary(shop) is not None


def test_apply_stops_when_the_standby_stays_behind(shop: Shop) -> None:
    _paused_behind(shop, 1.5)
    result = cli("apply", "--env", "prod", "--max-replica-lag", "1s", "--max-replica-wait", "2s")
    assert result.exit_code == 1, result.output
    assert "stopped before create public.idx_orders_" in result.output
    assert "replica-1 is" in result.output
    assert "not started: public.idx_orders_big, public.idx_orders_customer" in result.output
    assert _index_on_primary(shop) is None
    with psycopg.connect(shop.admin, autocommit=True) as conn:
        row = conn.execute("SELECT outcome FROM dbopt.runs ORDER BY id DESC LIMIT 1").fetchone()
    assert row == ("stopped",)
    # Caught up, the same apply finishes what the stopped one did not start.
    shop.pair.on_standby("SELECT pg_wal_replay_resume()")
    shop.pair.caught_up()
    again = cli("apply", "--env", "prod", "--max-replica-lag", "1s")
    assert again.exit_code == 0, again.output
    assert _index_on_primary(shop) is not None


def test_a_lag_limit_it_cannot_see_is_refused_before_anything_runs(shop: Shop) -> None:
    result = cli("apply", "--env", "blind", "--max-replica-lag", "30s")
    assert result.exit_code == 2, result.output
    assert "GRANT pg_read_all_stats" in result.output
    assert _index_on_primary(shop) is None
    # Without a limit, the same role applies (lag is not its business then).
    assert cli("apply", "--env", "blind").exit_code == 0


def test_a_listed_replica_reports_its_own_lag(shop: Shop, closed_port: int) -> None:
    _paused_behind(shop, 1.0)
    unreachable = f"host=127.0.0.1 port={closed_port} dbname={shop.name} user={OWNER}"
    replicas = (
        Replica("replica-1", shop.dsn(OWNER, standby=True)),
        Replica("replica-2", unreachable),
    )
    with psycopg.connect(shop.dsn(DEPLOYER), autocommit=True) as primary:
        lock = threading.Lock()

        def on_primary(fn: Any) -> Any:
            with lock:
                return fn(primary)

        standbys = Standbys(on_primary, replicas, Settings())
        try:
            lags = {(g.name, g.source): g for g in standbys.lags()}
        finally:
            standbys.close()
    seen_by_primary = lags[("replica-1", "primary")]
    assert seen_by_primary.seconds is not None and seen_by_primary.seconds > 1.0
    itself = lags[("replica-1", "replica")]
    assert itself.seconds is not None and itself.seconds > 1.0
    assert itself.note == "replay paused"
    assert lags[("replica-2", "replica")].seconds is None
    assert "unreachable" in lags[("replica-2", "replica")].note
    with psycopg.connect(shop.dsn(OWNER, standby=True), autocommit=True) as conn:
        assert replica_lag(conn, "x", "0/0").seconds == 0  # nothing to replay up to 0/0


def test_ctrl_c_during_a_lag_pause_stops_at_once_with_parallel_jobs(
    shop: Shop, tmp_path: Path
) -> None:
    _paused_behind(shop, 1.5)
    proc = start_dbopt(
        tmp_path,
        "apply",
        "--env",
        "prod",
        "--jobs",
        "2",
        "--max-replica-lag",
        "1s",
        "--max-replica-wait",
        "0",
    )
    try:
        read_until(proc, "s behind, limit 1 s", timeout=60)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert _index_on_primary(shop) is None
    with psycopg.connect(shop.admin, autocommit=True) as conn:
        row = conn.execute("SELECT outcome FROM dbopt.runs ORDER BY id DESC LIMIT 1").fetchone()
    assert row == ("aborted",)


def test_a_disconnected_standby_is_behind_not_caught_up(shop: Shop, closed_port: int) -> None:
    """A standby that stopped receiving has replayed all it received, yet it is behind the
    primary: measured against the primary's WAL position, never "0 s"."""
    shop.pair.restart_standby(primary_port=closed_port)
    try:
        time.sleep(1.1)  # so the last replayed transaction is visibly old
        with psycopg.connect(shop.dsn(OWNER), autocommit=True) as conn:
            conn.execute("UPDATE orders SET total = total + 1 WHERE id <= 100")
        replicas = (Replica("replica-1", shop.dsn(OWNER, standby=True)),)
        with psycopg.connect(shop.dsn(DEPLOYER), autocommit=True) as primary:
            lock = threading.Lock()

            def on_primary(fn: Any) -> Any:
                with lock:
                    return fn(primary)

            standbys = Standbys(on_primary, replicas, Settings())
            try:
                lags = standbys.lags()
            finally:
                standbys.close()
        assert [g.source for g in lags] == ["replica"]  # the primary sees it no more
        lag = lags[0]
        assert lag.seconds is not None and lag.seconds > 1.0, lag
        assert "not streaming" in lag.note
    finally:
        shop.pair.restart_standby()
        shop.pair.caught_up()
