"""A DBA's first week (issue 13): targets named, part of a plan, plans that list changes,
history of runs — on a real server, as the non-superuser owner."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import with_user
from helpers import cli, environments, index_defs
from shop import SETTINGS

MORE = """
table: public.orders
indexes:
  - {name: idx_orders_customer, columns: [customer_id]}
  - {name: idx_orders_status, columns: [status], where: "status <> 'shipped'"}
  - {name: idx_orders_created_at_for_the_monthly_revenue_report_by_cust, columns: [created_at]}
"""


def test_plan_names_the_target_lists_changes_and_counts_the_rest(shop: Path, db_dsn: str) -> None:
    first = cli("plan", "--env", "test")
    assert first.exit_code == 0, first.output
    dbname = db_dsn.rsplit("/", 1)[1]
    assert f"/{dbname}, PostgreSQL " in first.output.splitlines()[0]
    assert first.output.startswith("Plan for dbopt_owner@127.0.0.1:")
    assert "2 to change, 0 need a flag, 0 unchanged" in first.output
    assert cli("apply", "--env", "test").exit_code == 0
    (shop / "indexes/orders.yaml").write_text(MORE)
    second = cli("plan", "--env", "test")
    assert "1 to change, 0 need a flag, 2 unchanged" in second.output
    # A long name is printed whole; unchanged objects are only a count...
    assert "idx_orders_created_at_for_the_monthly_revenue_report_by_cust" in second.output
    assert "idx_orders_customer" not in second.output
    # ...unless --all lists them.
    everything = cli("plan", "--env", "test", "--all")
    assert "idx_orders_customer" in everything.output
    assert "idx_orders_status" in everything.output


def test_the_password_is_never_part_of_the_target(shop: Path, db_dsn: str) -> None:
    secret = "s3cret-Pa55"
    (shop / "dbopt.yaml").write_text(
        environments(test={"dsn": with_user(db_dsn, "dbopt_owner", secret), **SETTINGS})
    )
    plan = cli("plan", "--env", "test", "--format", "json")
    assert plan.exit_code == 0, plan.output
    where = json.loads(plan.output)["where"]
    assert where.startswith("dbopt_owner@127.0.0.1:")
    for args in (("plan",), ("apply", "--dry-run"), ("apply",), ("history",)):
        out = cli(*args, "--env", "test").output
        assert secret not in out
    # The prompt says what will happen where; "n" runs nothing.
    (shop / "dbopt.yaml").write_text(
        environments(
            test={"dsn": with_user(db_dsn, "dbopt_owner", secret), **SETTINGS, "confirm": True}
        )
    )
    cli("rollback", "--env", "test", "--last", "--yes")
    asked = cli("apply", "--env", "test", input="n\n")
    assert asked.exit_code != 0
    assert "apply: 2 creates on test (dbopt_owner@127.0.0.1:" in asked.output
    assert secret not in asked.output
    assert "nothing was run" in asked.output


def test_apply_index_applies_that_index_only(shop: Path, conn: psycopg.Connection[Any]) -> None:
    result = cli("apply", "--env", "test", "--index", "idx_orders_status")
    assert result.exit_code == 0, result.output
    names = set(index_defs(conn))
    assert "idx_orders_status" in names
    assert "idx_orders_customer" not in names
    assert "1 to change" in cli("plan", "--env", "test").output


def test_apply_table_and_unknown_names(shop: Path, conn: psycopg.Connection[Any]) -> None:
    unknown = cli("apply", "--env", "test", "--index", "idx_nope")
    assert unknown.exit_code == 2
    assert "idx_nope" in unknown.output
    assert set(index_defs(conn)) == {"orders_pkey"}
    wrong_table = cli("apply", "--env", "test", "--table", "customers")
    assert wrong_table.exit_code == 2
    assert "customers" in wrong_table.output
    whole = cli("apply", "--env", "test", "--table", "orders")
    assert whole.exit_code == 0, whole.output
    assert {"idx_orders_customer", "idx_orders_status"} <= set(index_defs(conn))


def test_history_lists_runs_and_one_run_has_its_changes(shop: Path) -> None:
    empty = cli("history", "--env", "test")
    assert empty.exit_code == 0
    assert "nothing was applied here yet" in empty.output
    assert cli("apply", "--env", "test").exit_code == 0
    assert cli("rollback", "--env", "test", "--last", "--yes").exit_code == 0
    runs = json.loads(cli("history", "--env", "test", "--format", "json").output)
    assert [r["command"] for r in runs] == ["rollback", "apply"]
    apply_run, rollback_run = runs[1], runs[0]
    assert apply_run["undone_by_run"] == rollback_run["run"]
    assert rollback_run["undoes_run"] == apply_run["run"]
    assert apply_run["changes"] == "2 ok"
    one = json.loads(
        cli("history", "--env", "test", "--run", str(apply_run["run"]), "--format", "json").output
    )
    assert sorted(c["object"] for c in one["changes_list"]) == [
        "public.idx_orders_customer",
        "public.idx_orders_status",
    ]
    assert all(c["result"] == "ok" and c["seconds"] is not None for c in one["changes_list"])
    limited = json.loads(cli("history", "--env", "test", "--limit", "1", "--format", "json").output)
    assert [r["command"] for r in limited] == ["rollback"]
    missing = cli("history", "--env", "test", "--run", "999999")
    assert missing.exit_code == 2
    assert "no run 999999" in missing.output
    table = cli("history", "--env", "test")
    assert "rollback" in table.output and "apply" in table.output


def test_markdown_plan_separates_summary_from_table(shop: Path) -> None:
    out = cli("plan", "--env", "test", "--format", "markdown").output
    lines = out.splitlines()
    first_row = next(i for i, line in enumerate(lines) if line.startswith("|"))
    assert first_row > 0
    assert lines[first_row - 1] == ""
    last_row = max(i for i, line in enumerate(lines) if line.startswith("|"))
    if last_row + 1 < len(lines):
        assert lines[last_row + 1] == ""


YEARLY_MV = """
name: mv_customers
query: SELECT customer_id, count(*) AS n FROM orders GROUP BY customer_id
indexes:
  - {name: mv_customers_id, columns: [customer_id], unique: true}
refresh: {schedule: "@yearly", mode: concurrent}
"""


def test_status_after_apply_is_calm_and_exit_code_pages_on_trouble(
    shop: Path, conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    (shop / "views").mkdir()
    (shop / "views/mv_customers.yaml").write_text(YEARLY_MV)
    assert cli("apply", "--env", "test").exit_code == 0
    calm = cli("status", "--env", "test", "--exit-code")
    assert calm.exit_code == 0, calm.output
    assert "OVERDUE" not in calm.output and "never" not in calm.output
    data = json.loads(cli("status", "--env", "test", "--format", "json").output)
    (view,) = data["views"]
    assert view["overdue"] is False and view["populated"] is True
    assert view["last_refresh"] is not None and "T" in view["last_refresh"]
    assert isinstance(view["size_bytes"], int)
    assert data["attention"] == []
    # Created two years ago as far as the history knows: overdue for its yearly schedule.
    admin_conn.execute(
        "UPDATE dbopt.changes SET started_at = now() - interval '2 years' "
        "WHERE object_kind = 'view'"
    )
    overdue = cli("status", "--env", "test", "--exit-code")
    assert overdue.exit_code == 1
    assert "attention: view public.mv_customers: refresh overdue" in overdue.output
    # A refresh makes it current again.
    assert cli("refresh-views", "--env", "test").exit_code == 0
    assert cli("status", "--env", "test", "--exit-code").exit_code == 0
    # A managed index dropped by hand: missing; without --exit-code status still exits 0.
    conn.execute("DROP INDEX idx_orders_status")
    missing = cli("status", "--env", "test", "--exit-code", "--format", "json")
    assert missing.exit_code == 1
    assert json.loads(missing.output)["attention"] == ["index public.idx_orders_status: missing"]
    assert cli("status", "--env", "test").exit_code == 0


def test_status_exit_code_pages_on_an_invalid_index_it_does_not_own(
    shop: Path, conn: psycopg.Connection[Any]
) -> None:
    assert cli("apply", "--env", "test").exit_code == 0
    conn.execute("INSERT INTO orders (id, customer_id, status) VALUES (-1, 1, 'x'), (-2, 1, 'x')")
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute("CREATE UNIQUE INDEX CONCURRENTLY hand_made ON orders (customer_id)")
    result = cli("status", "--env", "test", "--exit-code")
    assert result.exit_code == 1
    assert "attention: index public.hand_made: INVALID (not dbopt's)" in result.output


def test_the_readme_samples_are_true_on_bookedbarber(
    tmp_path: Path, db_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every spec sample in the README validates against BookedBarber's schema."""
    import re

    from tools.demo import load_bookedbarber

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    samples = re.findall(r"```yaml\n# ((?:indexes|views)/\w+\.yaml)\n(.*?)```", readme, re.S)
    assert {path for path, _ in samples} == {
        "indexes/appointments.yaml",
        "views/mv_daily_revenue_summary.yaml",
    }
    for path, text in samples:
        (tmp_path / path).parent.mkdir(exist_ok=True)
        (tmp_path / path).write_text(text)
    load_bookedbarber(db_dsn, "0.001")
    monkeypatch.chdir(tmp_path)
    result = cli("validate", "--dsn", db_dsn)
    assert result.exit_code == 0, result.output


def test_a_drop_only_run_is_held_up_only_by_lockers_of_its_tables(
    shop: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    """A concurrent drop waits only for sessions holding a lock on its table; an old
    transaction elsewhere refuses a build (it waits for old snapshots), not a drop."""
    from helpers import wait_for

    (shop / "dbopt.yaml").write_text(
        environments(test={"dsn": db_dsn, **SETTINGS, "lock_timeout": "200ms"})
    )
    assert cli("apply", "--env", "test").exit_code == 0
    conn.execute("CREATE TABLE audit (id int)")
    elsewhere = (
        "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND xact_start < now() - interval '300 ms'"
    )
    with psycopg.connect(db_dsn) as other:
        other.execute("SELECT count(*) FROM audit")
        wait_for(conn, elsewhere, (other.info.backend_pid,))
        # A build would wait for it: refused up front, naming it.
        (shop / "indexes/orders.yaml").write_text(MORE)
        build = cli("apply", "--env", "test")
        assert build.exit_code == 2, build.output
        assert f"pid {other.info.backend_pid}" in build.output
        # Rolling back the first apply only drops: nothing to wait for on audit.
        undo = cli("rollback", "--env", "test", "--last", "--yes")
        assert undo.exit_code == 0, undo.output
        other.rollback()
    assert "idx_orders_customer" not in index_defs(conn)
    # A session holding a lock on orders itself does hold a drop up: refused.
    assert cli("apply", "--env", "test").exit_code == 0
    with psycopg.connect(db_dsn) as locker:
        locker.execute("SELECT count(*) FROM orders")
        wait_for(conn, elsewhere, (locker.info.backend_pid,))
        refused = cli("rollback", "--env", "test", "--last", "--yes")
        assert refused.exit_code == 2, refused.output
        assert f"pid {locker.info.backend_pid}" in refused.output
        locker.rollback()


UNIQUE_ID = """
table: public.orders
indexes:
  - {name: idx_orders_customer, columns: [customer_id]}
  - {name: idx_orders_id_created, columns: [id, created_at], unique: true}
"""


@pytest.mark.parametrize(
    ("setup", "said"),
    [
        (
            "ALTER TABLE orders REPLICA IDENTITY USING INDEX idx_orders_id_created",
            "REPLICA IDENTITY index",
        ),
        ("ALTER TABLE orders CLUSTER ON idx_orders_id_created", "CLUSTERed on it"),
    ],
)
def test_prune_and_rollback_never_take_what_the_table_relies_on(
    shop: Path, conn: psycopg.Connection[Any], setup: str, said: str
) -> None:
    """An index of dbopt's that a DBA made the table's REPLICA IDENTITY (or CLUSTER index)
    is refused for drop, by prune and by rollback alike: nothing runs."""
    (shop / "indexes/orders.yaml").write_text(UNIQUE_ID)
    assert cli("apply", "--env", "test").exit_code == 0
    conn.execute(setup)  # type: ignore[call-overload]
    (shop / "indexes/orders.yaml").write_text(
        UNIQUE_ID.splitlines()[0] + "\n" + "\n".join(UNIQUE_ID.splitlines()[1:4])
    )
    pruned = cli("apply", "--env", "test", "--prune")
    assert pruned.exit_code == 2, pruned.output
    assert "idx_orders_id_created cannot be dropped" in pruned.output
    assert said in pruned.output
    undone = cli("rollback", "--env", "test", "--last", "--yes")
    assert undone.exit_code == 2, undone.output
    assert said in undone.output
    assert {"idx_orders_customer", "idx_orders_id_created"} <= set(index_defs(conn))


def test_overdue_waits_for_a_refresh_that_may_still_run() -> None:
    from datetime import UTC, datetime, timedelta

    from dbopt.status import overdue

    now = datetime(2026, 11, 29, 10, 3, tzinfo=UTC)
    hour_ago = now - timedelta(hours=1)
    # Hourly: the 10:00 tick is 3 minutes back; a refresh may still be running.
    assert not overdue("0 * * * *", now, hour_ago, 1_000)
    assert overdue("0 * * * *", now + timedelta(minutes=5), hour_ago, 1_000)
    # A refresh that took 20 minutes last time has 40 minutes.
    assert not overdue("0 * * * *", now + timedelta(minutes=30), hour_ago, 20 * 60_000)
    assert overdue("0 * * * *", now + timedelta(minutes=45), hour_ago, 20 * 60_000)
    # Never longer than the interval; refreshed since the tick: never overdue.
    assert overdue("*/10 * * * *", now + timedelta(minutes=19), hour_ago, 60 * 60_000)
    assert not overdue("0 * * * *", now + timedelta(minutes=50), now, 1_000)
    # Day-of-month with a '*' and a day-of-week: ANDed as cron does (Mondays that are even
    # days), not ORed: Sunday 2026-11-29 is no tick.
    assert not overdue("0 0 */2 * 1", now, now - timedelta(hours=11), 1_000)


def test_an_index_being_built_is_building_not_invalid(
    shop: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    """Someone's concurrent build in progress is INVALID in the catalog until it ends:
    status says building and does not page."""
    import threading

    from helpers import wait_for

    assert cli("apply", "--env", "test").exit_code == 0
    with psycopg.connect(db_dsn) as snapshot:
        snapshot.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        snapshot.execute("SELECT count(*) FROM orders")  # the build waits for it to end
        errors: list[BaseException] = []

        def build() -> None:
            try:
                with psycopg.connect(db_dsn, autocommit=True) as other:
                    other.execute("CREATE INDEX CONCURRENTLY theirs ON orders (total)")
            except BaseException as exc:
                errors.append(exc)

        builder = threading.Thread(target=build)
        builder.start()
        wait_for(
            conn,
            "SELECT 1 FROM pg_stat_progress_create_index WHERE phase LIKE 'waiting%%'",
        )
        result = cli("status", "--env", "test", "--exit-code", "--format", "json")
        snapshot.rollback()
    builder.join(60)
    assert errors == []
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    (theirs,) = [r for r in data["unmanaged"] if r["index"] == "public.theirs"]
    assert theirs["state"] == "building" and theirs["valid"] is False
    assert data["attention"] == []


def test_a_drop_on_a_partitioned_table_is_held_up_by_a_reader_of_one_partition(
    shop: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    from helpers import wait_for

    conn.execute(
        "CREATE TABLE m (id int, at date) PARTITION BY RANGE (at);"
        "CREATE TABLE m1 PARTITION OF m FOR VALUES FROM ('2026-01-01') TO ('2026-07-01');"
        "CREATE TABLE m2 PARTITION OF m FOR VALUES FROM ('2026-07-01') TO ('2027-01-01')"
    )
    (shop / "indexes/m.yaml").write_text("table: m\nindexes:\n  - {name: m_at, columns: [at]}\n")
    (shop / "dbopt.yaml").write_text(
        environments(test={"dsn": db_dsn, **SETTINGS, "lock_timeout": "200ms"})
    )
    assert cli("apply", "--env", "test").exit_code == 0
    with psycopg.connect(db_dsn) as reader:
        reader.execute("SELECT count(*) FROM m1")
        wait_for(
            conn,
            "SELECT 1 FROM pg_stat_activity WHERE pid = %s "
            "AND xact_start < now() - interval '300 ms'",
            (reader.info.backend_pid,),
        )
        refused = cli("rollback", "--env", "test", "--last", "--yes")
        assert refused.exit_code == 2, refused.output
        assert f"pid {reader.info.backend_pid}" in refused.output
        reader.rollback()
    assert "m_at" in index_defs(conn)
