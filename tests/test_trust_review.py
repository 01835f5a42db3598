"""Trust, continued: the cases a second engineer's review found, each reproduced first.

Same setting as tests/test_trust.py (its fixture and helpers), on a real server as the owner
role, with the superuser where the case needs one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import (
    cli,
    environments,
    indexdef,
    invalid_indexes,
    oid,
    poll,
    read_until,
    start_dbopt,
    temporary_names,
    wait_for,
    write_file,
)
from shop import MV, MV_CHANGED


def _apply_after_prompt(shop: Path, db_dsn: str, meanwhile: Callable[[], None], *args: str) -> str:
    """Run apply on a confirm: true environment; do ``meanwhile`` while the DBA reads the
    prompt (after the plan, before anything runs); then confirm."""
    write_file(
        shop,
        "dbopt.yaml",
        environments(
            prod={
                "dsn": db_dsn,
                "confirm": True,
                "lock_timeout": "1s",
                "build_wait_timeout": "1s",
                "retries": 0,
                "cleanup_wait": "1s",
            },
            test={"dsn": db_dsn},
        ),
    )
    proc = start_dbopt(shop, "apply", "--env", "prod", "--format", "plain", *args, stdin=True)
    out = read_until(proc, "to go ahead")
    meanwhile()
    rest, _ = proc.communicate("prod\n", timeout=90)
    return out + rest


ONE_INDEX = (
    "table: public.orders\nindexes:\n  - {name: idx_orders_customer, columns: [customer_id]}\n"
)


@pytest.mark.slow
def test_a_failed_build_never_adopts_another_sessions_index(
    shop: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    """dbopt's build times out waiting for its table lock while another session builds an
    index of the same name: dbopt never records that index as its own, so prune leaves it."""
    write_file(shop, "indexes/orders.yaml", ONE_INDEX)
    errors: list[BaseException] = []
    box: dict[str, Any] = {}
    with (
        psycopg.connect(db_dsn) as holder,
        psycopg.connect(db_dsn, autocommit=True) as watcher,
    ):

        def meanwhile() -> None:
            holder.execute("INSERT INTO orders (id, customer_id, status) VALUES (-1, 1, 'x')")

            def build() -> None:
                try:
                    with psycopg.connect(db_dsn, autocommit=True) as other:
                        other.execute(
                            "CREATE INDEX CONCURRENTLY idx_orders_customer ON orders (customer_id)"
                        )
                except BaseException as exc:  # pragma: no cover - reported below
                    errors.append(exc)

            thread = threading.Thread(target=build)
            thread.start()
            wait_for(
                watcher,
                "SELECT 1 FROM pg_stat_activity WHERE query LIKE "
                "'CREATE INDEX CONCURRENTLY idx_orders_customer%%' AND wait_event_type = 'Lock'",
            )
            box["theirs"] = oid(watcher, "idx_orders_customer")

        output = _apply_after_prompt(shop, db_dsn, meanwhile)
        holder.rollback()
        poll(lambda: not invalid_indexes(conn), "no INVALID index left once the holder ended")
    assert not errors
    theirs = box["theirs"]
    assert "Traceback" not in output
    assert oid(conn, "idx_orders_customer") == theirs
    recorded = conn.execute(
        "SELECT object_oid FROM dbopt.changes WHERE object_name = 'idx_orders_customer'"
    ).fetchall()
    assert (theirs,) not in recorded
    write_file(shop, "indexes/orders.yaml", "table: public.orders\nindexes: []\n")
    assert cli("apply", "--env", "test", "--prune").exit_code in (0, 1)
    assert oid(conn, "idx_orders_customer") == theirs


def test_a_tampered_view_query_calling_a_function_is_refused(
    shop: Path, conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any], admin_dsn: str
) -> None:
    write_file(shop, "views/mv_customers.yaml", MV)
    assert cli("apply", "--env", "test").exit_code == 0
    write_file(shop, "views/mv_customers.yaml", MV_CHANGED)
    assert cli("apply", "--env", "test", "--replace-drifted").exit_code == 0
    conn.execute(
        "CREATE FUNCTION public.evil() RETURNS int LANGUAGE plpgsql AS "
        "$$BEGIN EXECUTE 'ALTER ROLE dbopt_owner SUPERUSER'; RETURN 1; END$$"
    )
    conn.execute(
        "UPDATE dbopt.changes SET previous_definition = "
        "'SELECT customer_id, count(*) AS n FROM orders WHERE evil() = 1 GROUP BY customer_id' "
        "WHERE action = 'replace'"
    )
    try:
        result = cli("rollback", "--dsn", admin_dsn, "--last", "--yes")
        assert result.exit_code == 2, result.output
        assert "the recorded previous query is refused" in result.output
        assert "evil" in result.output
        assert admin_conn.execute(
            "SELECT rolsuper FROM pg_roles WHERE rolname = 'dbopt_owner'"
        ).fetchone() == (False,)
    finally:
        admin_conn.execute("ALTER ROLE dbopt_owner NOSUPERUSER")


def test_forged_history_never_makes_a_superuser_drop_what_its_writer_could_not(
    shop: Path, conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any], admin_dsn: str
) -> None:
    assert cli("apply", "--env", "test").exit_code == 0
    admin_conn.execute("DROP ROLE IF EXISTS dbopt_team")
    admin_conn.execute("CREATE ROLE dbopt_team")
    admin_conn.execute("CREATE TABLE payroll (id int, salary int)")
    admin_conn.execute("CREATE INDEX payroll_salary ON payroll (salary)")
    admin_conn.execute("ALTER TABLE payroll OWNER TO dbopt_team")
    row = admin_conn.execute("SELECT 'payroll_salary'::regclass::oid::bigint").fetchone()
    assert row is not None
    try:
        # dbopt_owner owns the history but not payroll: it forges one row.
        conn.execute(
            "INSERT INTO dbopt.runs (command, dbopt_version, outcome) "
            "VALUES ('apply', 'x', 'succeeded')"
        )
        conn.execute(
            "INSERT INTO dbopt.changes (run_id, object_schema, object_name, table_name, action, "
            "existed_before, result, object_oid) SELECT max(id), 'public', 'payroll_salary', "
            "'public.payroll', 'create', false, 'ok', %s FROM dbopt.runs",
            (row[0],),
        )
        result = cli("rollback", "--dsn", admin_dsn, "--last", "--yes")
        assert result.exit_code == 2, result.output
        assert "no credible record" in result.output
        assert admin_conn.execute("SELECT to_regclass('payroll_salary')").fetchone() != (None,)
    finally:
        admin_conn.execute("DROP TABLE IF EXISTS payroll")
        admin_conn.execute("DROP ROLE dbopt_team")


def test_a_build_that_never_got_its_lock_owns_nothing(
    shop: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    write_file(shop, "indexes/orders.yaml", ONE_INDEX)
    write_file(
        shop,
        "dbopt.yaml",
        f'environments:\n  test:\n    dsn: "{db_dsn}"\n    lock_timeout: 500ms\n'
        "    build_wait_timeout: 500ms\n    retries: 0\n    cleanup_wait: 1s\n",
    )
    with psycopg.connect(db_dsn) as holder:
        holder.execute("LOCK TABLE orders IN SHARE MODE")
        failed = cli("apply", "--env", "test", "--wait-for-blockers")
        holder.rollback()
    assert failed.exit_code == 1, failed.output
    # Later, someone's own build of that name fails and leaves an INVALID index.
    with psycopg.connect(db_dsn) as holder:
        holder.execute("INSERT INTO orders (id, customer_id, status) VALUES (-1, 1, 'x')")
        with psycopg.connect(db_dsn, autocommit=True) as other:
            other.execute("SET lock_timeout = '200ms'")
            with pytest.raises(psycopg.errors.LockNotAvailable):
                other.execute(
                    "CREATE INDEX CONCURRENTLY idx_orders_customer ON orders (customer_id, status)"
                )
        holder.rollback()
    theirs = oid(conn, "idx_orders_customer")
    result = cli("apply", "--env", "test")
    assert result.exit_code == 2, result.output
    assert "dbopt did not make it" in result.output
    assert oid(conn, "idx_orders_customer") == theirs


def test_the_view_swap_checks_every_index_it_renames(
    shop: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    write_file(shop, "views/mv_customers.yaml", MV)
    assert cli("apply", "--env", "test").exit_code == 0
    conn.execute("CREATE INDEX mv_customers_n ON mv_customers (n)")
    write_file(shop, "views/mv_customers.yaml", MV_CHANGED)

    def meanwhile() -> None:
        conn.execute("DROP INDEX mv_customers_n")
        conn.execute("CREATE INDEX mv_customers_n ON orders (total)")

    output = _apply_after_prompt(shop, db_dsn, meanwhile, "--replace-drifted")
    assert "there is no index public.mv_customers_n" in output or "not the" in output, output
    rows = conn.execute(
        "SELECT c.relname, t.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_class t ON t.oid = i.indrelid WHERE c.relname LIKE 'mv_customers_n%'"
    ).fetchall()
    assert rows == [("mv_customers_n", "orders")]
    assert temporary_names(conn) == []


@pytest.mark.slow
def test_a_lock_during_the_up_front_check_is_waited_for_and_the_run_is_closed(
    shop: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    assert cli("apply", "--env", "test").exit_code == 0
    write_file(shop, "indexes/orders.yaml", ONE_INDEX)
    holder = psycopg.connect(db_dsn)
    try:
        output = _apply_after_prompt(
            shop,
            db_dsn,
            lambda: holder.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE"),
            "--prune",
        )
    finally:
        holder.rollback()
        holder.close()
    assert "Traceback" not in output
    assert "gave up on" in output
    outcomes = [r[0] for r in conn.execute("SELECT outcome FROM dbopt.runs").fetchall()]
    assert "running" not in outcomes
    assert oid(conn, "idx_orders_status") is not None  # the drop never ran


def test_cascade_keeps_the_options_of_the_views_it_rebinds(
    shop: Path, conn: psycopg.Connection[Any]
) -> None:
    write_file(shop, "views/mv_customers.yaml", MV)
    assert cli("apply", "--env", "test").exit_code == 0
    # security_invoker came in PostgreSQL 15.
    invoker = ", security_invoker = true" if conn.info.server_version >= 150000 else ""
    conn.execute(
        f"CREATE VIEW v_big WITH (security_barrier = true{invoker}) AS "
        "SELECT customer_id, n FROM mv_customers WHERE n > 10"
    )
    before = conn.execute("SELECT reloptions FROM pg_class WHERE relname = 'v_big'").fetchone()
    write_file(shop, "views/mv_customers.yaml", MV_CHANGED)
    result = cli("apply", "--env", "test", "--replace-drifted", "--cascade")
    assert result.exit_code == 0, result.output
    after = conn.execute("SELECT reloptions FROM pg_class WHERE relname = 'v_big'").fetchone()
    assert after == before


def test_a_view_replace_never_widens_access_through_default_privileges(
    shop: Path, conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    write_file(shop, "views/mv_customers.yaml", MV)
    admin_conn.execute("DROP ROLE IF EXISTS dbopt_reader")
    admin_conn.execute("CREATE ROLE dbopt_reader")
    try:
        conn.execute(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO dbopt_reader"
        )
        assert cli("apply", "--env", "test").exit_code == 0
        conn.execute("REVOKE SELECT ON mv_customers FROM dbopt_reader")
        write_file(shop, "views/mv_customers.yaml", MV_CHANGED)
        result = cli("apply", "--env", "test", "--replace-drifted")
        assert result.exit_code == 0, result.output
        assert conn.execute(
            "SELECT has_table_privilege('dbopt_reader', 'mv_customers', 'SELECT')"
        ).fetchone() == (False,)
    finally:
        conn.execute(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE SELECT ON TABLES FROM dbopt_reader"
        )
        conn.execute("DROP MATERIALIZED VIEW IF EXISTS mv_customers")
        admin_conn.execute("DROP OWNED BY dbopt_reader")
        admin_conn.execute("DROP ROLE dbopt_reader")


@pytest.mark.parametrize("reader", ["MATERIALIZED VIEW mv_top", "VIEW v_top"])
def test_cascade_refuses_up_front_a_reader_it_could_not_rebuild(
    shop: Path, conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any], reader: str
) -> None:
    write_file(shop, "views/mv_customers.yaml", MV)
    assert cli("apply", "--env", "test").exit_code == 0
    admin_conn.execute("DROP ROLE IF EXISTS dbopt_analyst")
    admin_conn.execute("CREATE ROLE dbopt_analyst")
    admin_conn.execute("GRANT CREATE, USAGE ON SCHEMA public TO dbopt_analyst")
    conn.execute("GRANT SELECT ON mv_customers TO dbopt_analyst")
    try:
        admin_conn.execute("SET ROLE dbopt_analyst")
        admin_conn.execute(
            f"CREATE {reader} AS SELECT customer_id FROM mv_customers WHERE n > 20"  # type: ignore[call-overload]
        )
        admin_conn.execute("RESET ROLE")
        write_file(shop, "views/mv_customers.yaml", MV_CHANGED)
        result = cli("apply", "--env", "test", "--replace-drifted", "--cascade")
        assert result.exit_code == 2, result.output
        assert "belongs to dbopt_analyst" in result.output
        assert temporary_names(conn) == []
    finally:
        admin_conn.execute("RESET ROLE")
        admin_conn.execute("DROP OWNED BY dbopt_analyst")  # its view goes with it
        admin_conn.execute("DROP ROLE dbopt_analyst")


@pytest.mark.parametrize(
    ("setup", "spec", "says"),
    [
        (
            "CREATE INDEX idx_orders_customer ON orders ((customer_id + 0));"
            "ALTER INDEX idx_orders_customer ALTER COLUMN 1 SET STATISTICS 500",
            "[customer_id]",
            "has no expression there",
        ),
        (
            "CREATE INDEX idx_orders_customer ON orders ((customer_id + 0), lower(status));"
            "ALTER INDEX idx_orders_customer ALTER COLUMN 1 SET STATISTICS 500",
            '[{expr: "lower(status)"}, {expr: "customer_id + 0"}]',
            "has another expression there",
        ),
        (
            "CREATE UNIQUE INDEX idx_orders_customer ON orders (id);"
            "ALTER TABLE orders REPLICA IDENTITY USING INDEX idx_orders_customer",
            "[id, total]\n    unique: true",
            "nullable columns (total)",
        ),
        (
            "CREATE INDEX idx_orders_customer ON orders (customer_id);"
            "ALTER TABLE orders CLUSTER ON idx_orders_customer",
            "[customer_id]\n    where: \"status <> 'x'\"",
            "the new definition is partial",
        ),
    ],
)
def test_what_cannot_be_carried_over_is_refused_before_anything_is_built(
    shop: Path, conn: psycopg.Connection[Any], setup: str, spec: str, says: str
) -> None:
    conn.execute(setup)  # type: ignore[call-overload]
    write_file(
        shop,
        "indexes/orders.yaml",
        f"table: public.orders\nindexes:\n  - name: idx_orders_customer\n    columns: {spec}\n"
        "  - {name: idx_orders_status, columns: [status]}\n",
    )
    before = indexdef(conn, "idx_orders_customer")
    result = cli("apply", "--env", "test", "--replace-drifted")
    assert result.exit_code == 2, result.output
    assert says in result.output
    assert indexdef(conn, "idx_orders_customer") == before
    assert oid(conn, "idx_orders_status") is None  # nothing ran
    assert temporary_names(conn) == []


def test_rolling_back_a_rolled_back_replace_then_its_create(
    shop: Path, conn: psycopg.Connection[Any]
) -> None:
    assert cli("apply", "--env", "test").exit_code == 0
    write_file(
        shop,
        "indexes/orders.yaml",
        "table: public.orders\nindexes:\n"
        "  - {name: idx_orders_customer, columns: [customer_id, status]}\n"
        "  - {name: idx_orders_status, columns: [status], where: \"status <> 'shipped'\"}\n",
    )
    assert cli("apply", "--env", "test", "--replace-drifted").exit_code == 0
    first = cli("rollback", "--env", "test", "--last", "--yes")
    assert first.exit_code == 0, first.output
    assert "(customer_id)" in (indexdef(conn, "idx_orders_customer") or "")
    second = cli("rollback", "--env", "test", "--last", "--yes")
    assert second.exit_code == 0, second.output
    assert oid(conn, "idx_orders_customer") is None
    assert oid(conn, "idx_orders_status") is None


def test_history_without_oids_still_checks_the_definition(
    shop: Path, conn: psycopg.Connection[Any]
) -> None:
    assert cli("apply", "--env", "test").exit_code == 0
    conn.execute("UPDATE dbopt.changes SET object_oid = NULL, built_definition = NULL")
    conn.execute("DROP INDEX idx_orders_customer")
    conn.execute("CREATE INDEX idx_orders_customer ON orders (customer_id, total)")
    theirs = oid(conn, "idx_orders_customer")
    result = cli("rollback", "--env", "test", "--last", "--yes")
    # Names alone prove nothing: neither is dropped, each is listed with the reason.
    assert result.exit_code == 2, result.output
    assert "no credible record" in result.output
    assert oid(conn, "idx_orders_customer") == theirs
    assert oid(conn, "idx_orders_status") is not None


def test_history_without_oids_owns_what_it_created_and_has_not_dropped(
    shop: Path, conn: psycopg.Connection[Any]
) -> None:
    """OID-less history (dbopt 0.1 kept names only): an object dbopt created is its own by
    name; one whose last row is a drop is not; nor are the drops of objects recorded by OID
    (what most rows of a long history are) anything's owner."""
    from dbopt.history import History

    assert cli("apply", "--env", "test").exit_code == 0
    assert cli("rollback", "--env", "test", "--last", "--yes").exit_code == 0
    assert cli("apply", "--env", "test").exit_code == 0
    by_oid = {str(o.name) for o in History().owned(conn) if o.oid is not None}
    assert by_oid == {"public.idx_orders_customer", "public.idx_orders_status"}
    # The latest run's rows lose their OIDs, as 0.1 wrote them; one of its objects then has
    # a later drop (by name) after it.
    conn.execute(
        "UPDATE dbopt.changes SET object_oid = NULL, built_definition = NULL "
        "WHERE run_id = (SELECT max(id) FROM dbopt.runs)"
    )
    conn.execute(
        "INSERT INTO dbopt.changes (run_id, action, object_kind, object_schema, object_name, "
        "table_name, existed_before, result) SELECT max(id), 'drop', 'index', 'public', "
        "'idx_orders_status', 'public.orders', true, 'ok' FROM dbopt.runs"
    )
    # An object recorded by OID, long gone: its drop row (no OID, as drops have) owns nothing.
    conn.execute(
        "INSERT INTO dbopt.changes (run_id, action, object_kind, object_schema, object_name, "
        "table_name, existed_before, result, object_oid) SELECT max(id), a, 'index', "
        "'public', 'idx_orders_gone', 'public.orders', a = 'drop', 'ok', o "
        "FROM dbopt.runs, (VALUES ('create', 4000000000), ('drop', NULL)) v(a, o) GROUP BY a, o"
    )
    owned = History().owned(conn)
    assert [(str(o.name), o.oid) for o in owned] == [("public.idx_orders_customer", None)]


MV_PLUS = """
name: mv_customers
query: SELECT customer_id, count(*) AS n, sum(total) AS total FROM orders GROUP BY customer_id
indexes:
  - {name: mv_customers_id, columns: [customer_id], unique: true}
  - {name: mv_customers_total, columns: [total]}
"""


def test_a_view_replace_that_added_an_index_rolls_back(
    shop: Path, conn: psycopg.Connection[Any]
) -> None:
    write_file(shop, "views/mv_customers.yaml", MV)
    assert cli("apply", "--env", "test").exit_code == 0
    write_file(shop, "views/mv_customers.yaml", MV_PLUS)
    assert cli("apply", "--env", "test", "--replace-drifted").exit_code == 0
    status = cli("status", "--env", "test", "--format", "json")
    assert '"index": "public.mv_customers_id"' in status.output
    assert "pre-existing" not in status.output  # rebuilt with the view: dbopt's
    result = cli("rollback", "--env", "test", "--last", "--yes")
    assert result.exit_code == 0, result.output
    assert oid(conn, "mv_customers_total") is None
    assert oid(conn, "mv_customers_id") is not None
    assert temporary_names(conn) == []


def test_a_view_replace_refuses_a_hand_made_index_on_a_column_that_goes(
    shop: Path, conn: psycopg.Connection[Any]
) -> None:
    write_file(shop, "views/mv_customers.yaml", MV)
    assert cli("apply", "--env", "test").exit_code == 0
    conn.execute("CREATE INDEX mv_customers_n ON mv_customers (n)")
    write_file(shop, "views/mv_customers.yaml", MV.replace("count(*) AS n", "count(*) AS orders"))
    result = cli("apply", "--env", "test", "--replace-drifted")
    assert result.exit_code == 2, result.output
    assert "index mv_customers_n uses n, which the new query has no column for" in result.output
    assert temporary_names(conn) == []


def test_an_index_spec_on_a_plain_view_is_refused_by_plan(
    shop: Path, conn: psycopg.Connection[Any]
) -> None:
    conn.execute("CREATE VIEW v_orders AS SELECT * FROM orders")
    write_file(
        shop,
        "indexes/v_orders.yaml",
        "table: public.v_orders\nindexes:\n"
        "  - {name: idx_v_orders_customer, columns: [customer_id]}\n",
    )
    result = cli("plan", "--env", "test")
    assert result.exit_code == 2, result.output
    assert "public.v_orders is a view: indexes go on tables and materialized views" in result.output


def test_plan_says_when_this_role_could_not_apply(
    shop: Path, conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    admin_conn.execute("DROP ROLE IF EXISTS dbopt_ops")
    admin_conn.execute("CREATE ROLE dbopt_ops LOGIN")
    conn.execute("GRANT SELECT ON orders TO dbopt_ops")
    try:
        dsn = psycopg.conninfo.make_conninfo(db_dsn, user="dbopt_ops")
        result = cli("plan", "--dsn", dsn)
        assert result.exit_code == 0, result.output
        assert "this role does not own public.orders" in result.output
    finally:
        admin_conn.execute("DROP OWNED BY dbopt_ops")
        admin_conn.execute("DROP ROLE dbopt_ops")


def test_rollback_of_one_index_never_waits_on_another_table(
    shop: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    conn.execute("CREATE TABLE customers (id int, name text)")
    write_file(
        shop,
        "indexes/customers.yaml",
        "table: public.customers\nindexes:\n  - {name: idx_customers_name, columns: [name]}\n",
    )
    assert cli("apply", "--env", "test").exit_code == 0
    with psycopg.connect(db_dsn) as holder:
        holder.execute("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        result = cli("rollback", "--env", "test", "--index", "idx_orders_customer", "--plan")
        took = time.monotonic() - started
        holder.rollback()
    assert result.exit_code == 0, result.output
    assert took < 2  # lock_timeout is 2s: it never waited


def test_rollback_plan_with_nothing_to_undo_exits_2(
    shop: Path, conn: psycopg.Connection[Any]
) -> None:
    assert cli("apply", "--env", "test").exit_code == 0
    assert (
        cli("rollback", "--env", "test", "--index", "idx_orders_customer", "--yes").exit_code == 0
    )
    result = cli("rollback", "--env", "test", "--index", "idx_orders_customer", "--plan")
    assert result.exit_code == 2, result.output
    assert "nothing to roll back" in result.output
