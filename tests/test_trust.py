"""Trust: nothing dbopt does may harm what it does not own.

Each test plays what a demanding DBA tried on a real server, as the non-superuser owner role
(``conn``/``db_dsn``) unless the case needs the superuser (``admin_conn``/``admin_dsn``):
tampered history, namesakes made by hand, other sessions' builds, what a replace must carry
over, a rollback that must check what an apply checks.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import Result
from helpers import (
    cli,
    environments,
    indexdef,
    invalid_indexes,
    oid,
    take_table_as_build_ends,
    temporary_names,
    wait_for,
    waiting_build,
    write_file,
)
from shop import MV, MV_CHANGED, ORDERS

# --- 1. History is data, never code ----------------------------------------------------------


def test_tampered_rollback_sql_is_never_run(
    shop: Path, conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any], admin_dsn: str
) -> None:
    assert cli("apply", "--env", "test").exit_code == 0
    # The owner of dbopt's history writes SQL into every column that ever held SQL.
    evil = "ALTER ROLE dbopt_owner SUPERUSER"
    conn.execute(
        "UPDATE dbopt.changes SET rollback_steps = %s, rollback_sql = %s, forward_sql = %s",
        (
            json.dumps(
                [
                    {
                        "kind": "ddl",
                        "statements": [evil],
                        "table": ["public", "orders"],
                        "index": ["public", "x"],
                    }
                ]
            ),
            evil,
            evil,
        ),
    )
    conn.execute("UPDATE dbopt.runs SET rollback_sql = %s", (evil,))
    # A superuser rolls back: only the derived, guarded drops run.
    result = cli("rollback", "--dsn", admin_dsn, "--last", "--yes")
    assert result.exit_code == 0, result.output
    assert admin_conn.execute(
        "SELECT rolsuper FROM pg_roles WHERE rolname = 'dbopt_owner'"
    ).fetchone() == (False,)
    assert oid(conn, "idx_orders_customer") is None and oid(conn, "idx_orders_status") is None
    assert "ALTER ROLE" not in result.output


def test_tampered_previous_definition_is_refused_not_run(
    shop: Path, conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any], admin_dsn: str
) -> None:
    conn.execute("CREATE INDEX idx_orders_customer ON orders (customer_id, status)")
    assert cli("apply", "--env", "test", "--replace-drifted").exit_code == 0
    # The recorded previous definition (what a rollback of the replace rebuilds) is tampered.
    conn.execute(
        "UPDATE dbopt.changes SET previous_definition = 'CREATE INDEX idx_orders_customer ON "
        "public.orders USING btree (customer_id); ALTER ROLE dbopt_owner SUPERUSER' "
        "WHERE action = 'replace'"
    )
    before = indexdef(conn, "idx_orders_customer")
    result = cli("rollback", "--dsn", admin_dsn, "--index", "idx_orders_customer", "--yes")
    assert result.exit_code == 2, result.output
    assert "must be exactly one CREATE INDEX statement" in result.output
    assert indexdef(conn, "idx_orders_customer") == before
    assert admin_conn.execute(
        "SELECT rolsuper FROM pg_roles WHERE rolname = 'dbopt_owner'"
    ).fetchone() == (False,)


def test_tampered_definition_on_another_table_is_refused(
    shop: Path, conn: psycopg.Connection[Any]
) -> None:
    conn.execute("CREATE TABLE audit (id int, secret text)")
    conn.execute("CREATE INDEX idx_orders_customer ON orders (customer_id, status)")
    assert cli("apply", "--env", "test", "--replace-drifted").exit_code == 0
    conn.execute(
        "UPDATE dbopt.changes SET previous_definition = 'CREATE INDEX idx_orders_customer ON "
        "public.audit USING btree (secret)' WHERE action = 'replace'"
    )
    result = cli("rollback", "--env", "test", "--index", "idx_orders_customer", "--yes")
    assert result.exit_code == 2, result.output
    assert "is an index on public.audit, not on public.orders" in result.output
    assert conn.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 'audit'").fetchone() == (
        0,
    )


def test_tampered_view_query_is_refused(shop: Path, conn: psycopg.Connection[Any]) -> None:
    write_file(
        shop,
        "views/mv_customers.yaml",
        """
        name: mv_customers
        query: SELECT customer_id, count(*) AS n FROM orders GROUP BY customer_id
        indexes:
          - {name: mv_customers_id, columns: [customer_id], unique: true}
        """,
    )
    assert cli("apply", "--env", "test").exit_code == 0
    write_file(
        shop,
        "views/mv_customers.yaml",
        """
        name: mv_customers
        query: SELECT customer_id, count(*) AS n, sum(total) AS total FROM orders GROUP BY 1
        indexes:
          - {name: mv_customers_id, columns: [customer_id], unique: true}
        """,
    )
    assert cli("apply", "--env", "test", "--replace-drifted").exit_code == 0
    conn.execute(
        "UPDATE dbopt.changes SET previous_definition = 'DELETE FROM orders RETURNING 1' "
        "WHERE action = 'replace'"
    )
    result = cli("rollback", "--env", "test", "--last", "--yes")
    assert result.exit_code == 2, result.output
    assert "the recorded previous query is refused" in result.output
    assert conn.execute("SELECT count(*) FROM orders").fetchone() == (3000,)


# --- 2. Identity before every drop -----------------------------------------------------------


def test_another_sessions_build_of_a_spec_name_is_never_dropped(
    shop: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    """Another session builds idx_orders_customer concurrently (slowly: a transaction holds it
    up); dbopt sees an INVALID index of the spec's name and must leave it alone."""
    builder_error: list[BaseException] = []
    # dbopt's own build of the other index waits for the same transaction: bound it.
    write_file(
        shop,
        "dbopt.yaml",
        f'environments:\n  test:\n    dsn: "{db_dsn}"\n    build_wait_timeout: 1s\n'
        "    retries: 0\n",
    )
    with psycopg.connect(db_dsn) as holder:
        # An open writing transaction: the build waits for it.
        holder.execute("INSERT INTO orders (id, customer_id, status) VALUES (-1, 1, 'x')")

        def build() -> None:
            try:
                with psycopg.connect(db_dsn, autocommit=True) as other:
                    other.execute(
                        "CREATE INDEX CONCURRENTLY idx_orders_customer ON orders (customer_id)"
                    )
            except BaseException as exc:  # pragma: no cover - reported below
                builder_error.append(exc)

        thread = threading.Thread(target=build)
        thread.start()
        waiting_build(conn, "CREATE INDEX CONCURRENTLY idx_orders_customer%")
        building = oid(conn, "idx_orders_customer")
        assert building is not None
        result = cli("apply", "--env", "test")
        holder.rollback()  # the other session's build can finish now
        thread.join(30)
    assert not builder_error
    # Refused before anything ran: an INVALID index dbopt did not make is never dropped.
    assert result.exit_code == 2, result.output
    assert "is INVALID and dbopt did not make it" in result.output
    # Theirs, finished and valid, untouched: same OID.
    assert oid(conn, "idx_orders_customer") == building
    assert invalid_indexes(conn) == []


def test_rollback_never_drops_a_namesake_on_another_table(
    shop: Path, conn: psycopg.Connection[Any]
) -> None:
    assert cli("apply", "--env", "test").exit_code == 0
    conn.execute("DROP INDEX idx_orders_customer")
    conn.execute("CREATE TABLE customers (id int, name text)")
    conn.execute("CREATE INDEX idx_orders_customer ON customers (name)")
    theirs = oid(conn, "idx_orders_customer")
    result = cli("rollback", "--env", "test", "--last", "--yes")
    assert result.exit_code == 0, result.output
    assert "idx_orders_customer" in result.output and "not on public.orders" in result.output
    assert oid(conn, "idx_orders_customer") == theirs
    assert oid(conn, "idx_orders_status") is None  # dbopt's own, undone


@pytest.mark.parametrize(
    "remake",
    [
        "CREATE INDEX idx_orders_customer ON orders (customer_id, status)",  # another definition
        "CREATE INDEX idx_orders_customer ON orders (customer_id)",  # same definition, not dbopt's
    ],
)
def test_rollback_never_drops_a_namesake_on_the_same_table(
    shop: Path, conn: psycopg.Connection[Any], remake: str
) -> None:
    assert cli("apply", "--env", "test").exit_code == 0
    conn.execute("DROP INDEX idx_orders_status")
    conn.execute("DROP INDEX idx_orders_customer")
    conn.execute(remake)
    theirs = oid(conn, "idx_orders_customer")
    result = cli("rollback", "--env", "test", "--last", "--yes")
    assert result.exit_code == 2, result.output
    assert "nothing to roll back" in result.output
    assert "is not the index dbopt made" in result.output
    assert "there is no index public.idx_orders_status any more" in result.output
    assert oid(conn, "idx_orders_customer") == theirs


def test_prune_never_drops_a_namesake(shop: Path, conn: psycopg.Connection[Any]) -> None:
    assert cli("apply", "--env", "test").exit_code == 0
    conn.execute("DROP INDEX idx_orders_status")
    conn.execute("CREATE INDEX idx_orders_status ON orders (status)")
    theirs = oid(conn, "idx_orders_status")
    write_file(
        shop,
        "indexes/orders.yaml",
        """
        table: public.orders
        indexes:
          - {name: idx_orders_customer, columns: [customer_id]}
        """,
    )
    planned = cli("plan", "--env", "test", "--prune", "--format", "json")
    assert planned.exit_code == 0, planned.output
    actions = json.loads(planned.output)["actions"]
    assert [a["object"] for a in actions if a["action"] == "drop"] == []
    assert cli("apply", "--env", "test", "--prune").exit_code == 0
    assert oid(conn, "idx_orders_status") == theirs


# --- 3. A replace keeps what others rely on, or does not start -------------------------------

EXPRESSION = """
table: public.orders
indexes:
  - {name: idx_orders_customer, columns: [customer_id]}
  - {name: idx_orders_status, columns: [status], where: "status <> 'shipped'"}
  - name: idx_orders_day
    columns: [{expr: "(created_at AT TIME ZONE 'UTC')::date"}, customer_id]
"""


def test_replace_carries_comment_statistics_cluster_and_replica_identity(
    shop: Path, conn: psycopg.Connection[Any]
) -> None:
    conn.execute(
        "CREATE INDEX idx_orders_day ON orders (((created_at AT TIME ZONE 'UTC')::date));"
        "COMMENT ON INDEX idx_orders_day IS 'daily reports';"
        "ALTER INDEX idx_orders_day ALTER COLUMN 1 SET STATISTICS 500;"
        "ALTER TABLE orders CLUSTER ON idx_orders_day;"
        "CREATE UNIQUE INDEX idx_orders_customer ON orders (id);"
        "ALTER TABLE orders REPLICA IDENTITY USING INDEX idx_orders_customer;"
        "COMMENT ON INDEX idx_orders_customer IS 'replication'"
    )
    write_file(
        shop,
        "indexes/orders.yaml",
        """
        table: public.orders
        indexes:
          - {name: idx_orders_customer, columns: [id, customer_id], unique: true}
          - name: idx_orders_day
            columns: [{expr: "(created_at AT TIME ZONE 'UTC')::date"}, customer_id]
        """,
    )
    planned = cli("plan", "--env", "test", "--replace-drifted")
    assert "carries over comment, statistics targets, CLUSTER ON" in planned.output
    assert "carries over comment, REPLICA IDENTITY" in planned.output
    result = cli("apply", "--env", "test", "--replace-drifted")
    assert result.exit_code == 0, result.output

    def props() -> dict[str, Any]:
        row = conn.execute(
            "SELECT obj_description('idx_orders_day'::regclass, 'pg_class'), "
            "(SELECT attstattarget FROM pg_attribute WHERE attrelid = 'idx_orders_day'::regclass "
            " AND attnum = 1), "
            "(SELECT indisclustered FROM pg_index WHERE indexrelid = 'idx_orders_day'::regclass), "
            "(SELECT indisreplident FROM pg_index "
            " WHERE indexrelid = 'idx_orders_customer'::regclass), "
            "obj_description('idx_orders_customer'::regclass, 'pg_class'), "
            "(SELECT relreplident FROM pg_class WHERE oid = 'orders'::regclass)"
        ).fetchone()
        assert row is not None
        return dict(
            zip(
                ["comment", "stats", "clustered", "replident", "comment2", "mode"], row, strict=True
            )
        )

    assert props() == {
        "comment": "daily reports",
        "stats": 500,
        "clustered": True,
        "replident": True,
        "comment2": "replication",
        "mode": "i",
    }
    assert "customer_id" in (indexdef(conn, "idx_orders_day") or "")
    assert temporary_names(conn) == []
    # The planner has statistics on the new expression index (ANALYZE before the swap).
    assert conn.execute(
        "SELECT count(*) FROM pg_stats WHERE tablename = 'idx_orders_day'"
    ).fetchone() != (0,)
    # Rollback of the replace restores the old definitions with the same properties.
    rolled = cli("rollback", "--env", "test", "--last", "--yes")
    assert rolled.exit_code == 0, rolled.output
    assert "customer_id" not in (indexdef(conn, "idx_orders_day") or "")
    assert props()["comment"] == "daily reports" and props()["clustered"] is True
    assert props()["replident"] is True and props()["mode"] == "i"
    assert temporary_names(conn) == []


def test_replace_refused_when_the_new_definition_cannot_be_replica_identity(
    shop: Path, conn: psycopg.Connection[Any]
) -> None:
    conn.execute(
        "CREATE UNIQUE INDEX idx_orders_customer ON orders (id);"
        "ALTER TABLE orders REPLICA IDENTITY USING INDEX idx_orders_customer"
    )
    result = cli("apply", "--env", "test", "--replace-drifted")
    assert result.exit_code == 2, result.output
    assert "REPLICA IDENTITY index and the new definition is not unique" in result.output
    assert oid(conn, "idx_orders_status") is None  # nothing ran, not even the creates
    assert temporary_names(conn) == []


def test_replace_refused_when_a_foreign_key_depends_on_the_index(
    shop: Path, conn: psycopg.Connection[Any]
) -> None:
    conn.execute(
        "CREATE UNIQUE INDEX idx_orders_customer ON orders (id);"
        "CREATE TABLE refunds (order_id int REFERENCES orders (id));"
        # the FK depends on the primary key; make it depend on our unique index instead
        "ALTER TABLE refunds DROP CONSTRAINT refunds_order_id_fkey;"
        "ALTER TABLE orders DROP CONSTRAINT orders_pkey;"
        "ALTER TABLE refunds ADD FOREIGN KEY (order_id) REFERENCES orders (id)"
    )
    result = cli("apply", "--env", "test", "--replace-drifted")
    assert result.exit_code == 2, result.output
    assert "refunds_order_id_fkey" in result.output and "depends on it" in result.output
    assert temporary_names(conn) == []
    assert indexdef(conn, "idx_orders_customer") == (
        "CREATE UNIQUE INDEX idx_orders_customer ON public.orders USING btree (id)"
    )


def _view_properties(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    row = conn.execute(
        "SELECT pg_get_userbyid(c.relowner), "
        "has_table_privilege('dbopt_reader', c.oid, 'SELECT'), "
        "has_column_privilege('dbopt_reader', c.oid, 'n', 'SELECT'), "
        "obj_description(c.oid, 'pg_class'), col_description(c.oid, 1), c.reloptions, "
        "(SELECT array_agg(i.relname::text ORDER BY i.relname) FROM pg_index x "
        " JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = c.oid), "
        "(SELECT i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
        " WHERE x.indrelid = c.oid AND x.indisclustered) "
        "FROM pg_class c WHERE c.oid = 'mv_customers'::regclass"
    ).fetchone()
    assert row is not None
    keys = ["owner", "select", "column", "comment", "col_comment", "options", "indexes", "cluster"]
    return dict(zip(keys, row, strict=True))


def test_view_replace_carries_owner_grants_comments_options_and_hand_made_indexes(
    shop: Path, conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    write_file(shop, "views/mv_customers.yaml", MV)
    assert cli("apply", "--env", "test").exit_code == 0
    admin_conn.execute("DROP ROLE IF EXISTS dbopt_reader")
    admin_conn.execute("CREATE ROLE dbopt_reader")
    admin_conn.execute("DROP ROLE IF EXISTS dbopt_reports")
    admin_conn.execute("CREATE ROLE dbopt_reports")
    admin_conn.execute("GRANT dbopt_reports TO dbopt_owner")
    admin_conn.execute("GRANT CREATE ON SCHEMA public TO dbopt_reports")
    try:
        conn.execute(
            "ALTER MATERIALIZED VIEW mv_customers OWNER TO dbopt_reports;"
            "GRANT SELECT ON mv_customers TO dbopt_reader;"
            "COMMENT ON MATERIALIZED VIEW mv_customers IS 'per customer';"
            "COMMENT ON COLUMN mv_customers.customer_id IS 'the customer';"
            "ALTER MATERIALIZED VIEW mv_customers SET (autovacuum_enabled = false);"
            "CREATE INDEX mv_customers_n ON mv_customers (n);"
            "ALTER MATERIALIZED VIEW mv_customers CLUSTER ON mv_customers_n"
        )
        before = _view_properties(conn)
        write_file(shop, "views/mv_customers.yaml", MV_CHANGED)
        result = cli("apply", "--env", "test", "--replace-drifted")
        assert result.exit_code == 0, result.output
        after = _view_properties(conn)
        assert after == before
        assert conn.execute("SELECT sum(total) FROM mv_customers").fetchone() is not None
        assert temporary_names(conn) == []
        rolled = cli("rollback", "--env", "test", "--last", "--yes")
        assert rolled.exit_code == 0, rolled.output
        assert _view_properties(conn) == before
        assert (
            "total"
            not in conn.execute("SELECT pg_get_viewdef('mv_customers'::regclass)").fetchone()[0]
        )
    finally:
        conn.execute("DROP MATERIALIZED VIEW IF EXISTS mv_customers")
        admin_conn.execute("REVOKE CREATE ON SCHEMA public FROM dbopt_reports")
        admin_conn.execute("DROP ROLE dbopt_reports")
        admin_conn.execute("DROP ROLE dbopt_reader")


@pytest.mark.parametrize(
    ("dependent", "named"),
    [
        (
            "CREATE FUNCTION top_customers() RETURNS SETOF mv_customers LANGUAGE sql "
            "AS 'SELECT * FROM mv_customers'",
            "function top_customers()",
        ),
        (
            "CREATE STATISTICS mv_customers_stats ON customer_id, n FROM mv_customers",
            "mv_customers_stats",
        ),
        ("CREATE TABLE snapshots (row_value mv_customers)", "snapshots"),
    ],
)
def test_view_replace_refused_when_something_else_depends_on_it(
    shop: Path, conn: psycopg.Connection[Any], dependent: str, named: str
) -> None:
    write_file(shop, "views/mv_customers.yaml", MV)
    assert cli("apply", "--env", "test").exit_code == 0
    conn.execute(dependent)  # type: ignore[call-overload]
    write_file(shop, "views/mv_customers.yaml", MV_CHANGED)
    result = cli("apply", "--env", "test", "--replace-drifted")
    assert result.exit_code == 2, result.output
    assert named in result.output
    assert temporary_names(conn) == []
    assert (
        "total" not in conn.execute("SELECT pg_get_viewdef('mv_customers'::regclass)").fetchone()[0]
    )


def test_view_replace_refused_when_a_column_grant_has_no_column_left(
    shop: Path, conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    write_file(shop, "views/mv_customers.yaml", MV)
    assert cli("apply", "--env", "test").exit_code == 0
    admin_conn.execute("DROP ROLE IF EXISTS dbopt_reader")
    admin_conn.execute("CREATE ROLE dbopt_reader")
    try:
        conn.execute("GRANT SELECT (n) ON mv_customers TO dbopt_reader")
        write_file(
            shop,
            "views/mv_customers.yaml",
            MV.replace("count(*) AS n", "count(*) AS orders"),
        )
        result = cli("apply", "--env", "test", "--replace-drifted")
        assert result.exit_code == 2, result.output
        assert "column n has a SELECT grant, but the new query has no such column" in result.output
    finally:
        conn.execute("DROP MATERIALIZED VIEW mv_customers")
        admin_conn.execute("DROP ROLE dbopt_reader")


@pytest.mark.slow
def test_a_swap_that_cannot_happen_leaves_nothing_half_done(
    shop: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    """The build aside finishes, then a session holds the table past every retry of the swap:
    the build aside is dropped again, the old index is untouched, no temporary name stays.

    Deterministic: an old snapshot holds the build in its last phase while a strong lock
    request queues behind it; when the snapshot ends, the build finishes and the queued lock
    is granted before dbopt can ask for the swap's."""
    conn.execute("CREATE INDEX idx_orders_customer ON orders (customer_id, status)")
    write_file(
        shop,
        "indexes/orders.yaml",
        "table: public.orders\nindexes:\n  - {name: idx_orders_customer, columns: [customer_id]}\n",
    )
    before = oid(conn, "idx_orders_customer")
    box: list[Result] = []
    thread = threading.Thread(
        target=lambda: box.append(cli("apply", "--env", "test", "--replace-drifted"))
    )
    with (
        psycopg.connect(db_dsn) as snapshot,
        psycopg.connect(db_dsn) as locker,
        psycopg.connect(db_dsn, autocommit=True) as watcher,
    ):
        snapshot.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        snapshot.execute("SELECT 1")
        thread.start()
        wait_for(
            watcher,
            "SELECT 1 FROM pg_stat_progress_create_index p JOIN pg_stat_activity a USING (pid) "
            "WHERE p.phase = 'waiting for old snapshots' "
            "AND a.query LIKE '%%idx_orders_customer_dbopt_new%%'",
        )
        # The build finishes; the queued lock is granted first.
        take_table_as_build_ends(watcher, snapshot, locker, "orders")
        # The swap gives up; the clean-up of the build aside then waits for the same lock
        # (its identity check reads the definition, which needs the table).
        wait_for(
            watcher,
            "SELECT 1 FROM pg_stat_activity WHERE application_name = 'dbopt-control' "
            "AND wait_event_type = 'Lock' AND query LIKE '%%the guard checks%%'",
            timeout=60,
        )
        locker.rollback()
        thread.join(60)
    result = box[0]
    assert result.exit_code == 1, result.output
    assert "gave up on public.idx_orders_customer after 2 lock waits" in result.output
    assert "the index it built public.idx_orders_customer_dbopt_new was dropped" in result.output
    assert oid(conn, "idx_orders_customer") == before
    assert temporary_names(conn) == []
    assert invalid_indexes(conn) == []


# --- 4. Rollback is an apply -----------------------------------------------------------------


def test_rollback_refuses_up_front_when_a_drop_would_fail(
    shop: Path, conn: psycopg.Connection[Any]
) -> None:
    write_file(
        shop,
        "indexes/orders.yaml",
        """
        table: public.orders
        indexes:
          - {name: idx_orders_customer, columns: [customer_id]}
          - {name: uq_orders_id_customer, columns: [id, customer_id], unique: true}
        """,
    )
    assert cli("apply", "--env", "test").exit_code == 0
    conn.execute(
        "CREATE TABLE refunds (order_id int, customer_id int, "
        "FOREIGN KEY (order_id, customer_id) REFERENCES orders (id, customer_id))"
    )
    result = cli("rollback", "--env", "test", "--last", "--yes")
    assert result.exit_code == 2, result.output
    assert "rollback refused before anything ran" in result.output
    assert "refunds_order_id_customer_id_fkey" in result.output
    # Nothing was dropped: not even the index nothing depends on.
    assert oid(conn, "idx_orders_customer") is not None
    assert oid(conn, "uq_orders_id_customer") is not None


def test_rollback_refuses_a_role_that_does_not_own_the_table(
    shop: Path, conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    assert cli("apply", "--env", "test").exit_code == 0
    admin_conn.execute("DROP ROLE IF EXISTS dbopt_ops")
    admin_conn.execute("CREATE ROLE dbopt_ops LOGIN")
    conn.execute("GRANT USAGE ON SCHEMA dbopt TO dbopt_ops")
    conn.execute("GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA dbopt TO dbopt_ops")
    conn.execute("GRANT USAGE ON ALL SEQUENCES IN SCHEMA dbopt TO dbopt_ops")
    try:
        dsn = psycopg.conninfo.make_conninfo(db_dsn, user="dbopt_ops")
        result = cli("rollback", "--dsn", dsn, "--last", "--yes")
        assert result.exit_code == 2, result.output
        assert "rollback refused: the current role does not own public.orders" in result.output
        assert oid(conn, "idx_orders_customer") is not None
    finally:
        admin_conn.execute("DROP OWNED BY dbopt_ops")
        admin_conn.execute("DROP ROLE dbopt_ops")


def test_rollback_waits_its_turn_and_asks_for_confirmation(
    shop: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    assert cli("apply", "--env", "test").exit_code == 0
    from dbopt.executor import take_run_lock

    with psycopg.connect(db_dsn, autocommit=True) as other:
        take_run_lock(other, wait=False)
        busy = cli("rollback", "--env", "test", "--last", "--yes")
        # Released now: a closed session's backend may still hold it for a moment.
        other.execute("SELECT pg_advisory_unlock_all()")
    assert busy.exit_code == 3, busy.output
    assert "another dbopt run holds this database's lock" in busy.output
    write_file(
        shop,
        "dbopt.yaml",
        f'environments:\n  prod:\n    dsn: "{db_dsn}"\n    confirm: true\n',
    )
    refused = cli("rollback", "--env", "prod", "--last", input="nope\n")
    assert refused.exit_code == 2, refused.output
    assert "rollback: 2 drops on prod" in refused.output
    assert oid(conn, "idx_orders_customer") is not None
    done = cli("rollback", "--env", "prod", "--last", input="prod\n")
    assert done.exit_code == 0, done.output
    assert oid(conn, "idx_orders_customer") is None


def test_after_a_repair_rollback_still_undoes_the_creation(
    shop: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    """dbopt's build fails and leaves an INVALID index it could not clean up; the next apply
    repairs it; rollback --index and --last undo the creation of dbopt's index."""
    with psycopg.connect(db_dsn) as holder:
        holder.execute("SELECT count(*) FROM orders")
        holder.execute("INSERT INTO orders (id, customer_id, status) VALUES (-1, 1, 'x')")
        write_file(
            shop,
            "dbopt.yaml",
            f'environments:\n  test:\n    dsn: "{db_dsn}"\n    lock_timeout: 300ms\n'
            "    retries: 0\n    cleanup_wait: 100ms\n    build_wait_timeout: 300ms\n",
        )
        failed = cli("apply", "--env", "test", "--wait-for-blockers")
        holder.rollback()
    assert failed.exit_code == 1, failed.output
    assert "could NOT be dropped" in failed.output
    assert sorted(invalid_indexes(conn)) != []
    repaired = cli("apply", "--env", "test")
    assert repaired.exit_code == 0, repaired.output
    assert "repair" in repaired.output
    one = cli("rollback", "--env", "test", "--index", "idx_orders_customer", "--yes")
    assert one.exit_code == 0, one.output
    assert oid(conn, "idx_orders_customer") is None
    rest = cli("rollback", "--env", "test", "--last", "--yes")
    assert rest.exit_code == 0, rest.output
    assert oid(conn, "idx_orders_status") is None
    nothing = cli("rollback", "--env", "test", "--last", "--yes")
    assert nothing.exit_code == 2, nothing.output
    assert "no apply run left to roll back" in nothing.output


def test_an_invalid_index_dbopt_did_not_make_is_never_repaired(
    shop: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    """Another session's failed build left an INVALID index under a spec's name, even with
    the spec's very definition: dbopt refuses (exit 2) and says how to proceed."""
    with psycopg.connect(db_dsn) as holder:
        holder.execute("INSERT INTO orders (id, customer_id, status) VALUES (-1, 1, 'x')")
        with psycopg.connect(db_dsn, autocommit=True) as other:
            other.execute("SET lock_timeout = '200ms'")
            with pytest.raises(psycopg.errors.LockNotAvailable):
                other.execute(
                    "CREATE INDEX CONCURRENTLY idx_orders_customer ON orders (customer_id)"
                )
        holder.rollback()
    theirs = oid(conn, "idx_orders_customer")
    assert invalid_indexes(conn) == ["idx_orders_customer"]
    result = cli("apply", "--env", "test")
    assert result.exit_code == 2, result.output
    assert 'DROP INDEX CONCURRENTLY IF EXISTS "public"."idx_orders_customer"' in result.output
    assert oid(conn, "idx_orders_customer") == theirs
    assert oid(conn, "idx_orders_status") is None  # nothing ran


# --- 5. dbopt waits only on what it touches --------------------------------------------------


@pytest.mark.slow
def test_wait_waits_for_the_other_run_beyond_lock_timeout(
    shop: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    from dbopt.executor import take_run_lock

    write_file(
        shop,
        "dbopt.yaml",
        environments(test={"dsn": db_dsn, "lock_timeout": "200ms"}),
    )
    with psycopg.connect(db_dsn, autocommit=True) as other:
        take_run_lock(other, wait=False)
        bounded = cli("apply", "--env", "test", "--wait", "--wait-timeout", "500ms")
        assert bounded.exit_code == 3, bounded.output
        assert "waited 500 ms" in bounded.output
        box: list[Result] = []
        thread = threading.Thread(
            target=lambda: box.append(cli("apply", "--env", "test", "--wait"))
        )
        thread.start()
        # Still waiting for the run lock after three times lock_timeout.
        wait_for(
            conn,
            "SELECT 1 FROM pg_stat_activity WHERE wait_event = 'advisory' "
            "AND state = 'active' AND now() - query_start > interval '600 ms'",
        )
    thread.join(30)
    assert box[0].exit_code == 0, box[0].output
    assert oid(conn, "idx_orders_customer") is not None


def test_no_command_waits_on_ddl_outside_the_specs(
    shop: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    """An open ALTER TABLE on a table no spec names: every command still runs at once."""
    conn.execute("CREATE TABLE audit (id int, note text)")
    conn.execute("CREATE INDEX audit_note ON audit (note)")
    conn.execute("CREATE MATERIALIZED VIEW audit_mv AS SELECT id FROM audit")
    write_file(shop, "views/mv_customers.yaml", MV)
    write_file(
        shop,
        "indexes/orders.yaml",
        ORDERS
        + """
queries:
  - name: by_customer
    sql: SELECT count(*) FROM orders WHERE customer_id = 7
    budget_ms: 10000
    runs: 1
    warmup: 0
""",
    )
    write_file(
        shop, "dbopt.yaml", f'environments:\n  test:\n    dsn: "{db_dsn}"\n    lock_timeout: 5s\n'
    )
    assert cli("apply", "--env", "test").exit_code == 0
    with psycopg.connect(db_dsn) as holder:
        holder.execute("ALTER TABLE audit ADD COLUMN x int")
        holder.execute("ALTER MATERIALIZED VIEW audit_mv SET (fillfactor = 90)")
        for args in (
            ("plan",),
            ("status",),
            ("validate",),
            ("verify",),
            ("apply",),
            ("refresh-views",),
            ("rollback", "--plan", "--last"),
            ("rollback", "--last", "--yes"),
        ):
            started = time.monotonic()
            result = cli(*args, "--env", "test")
            assert result.exit_code == 0, (args, result.output)
            # Never waited for lock_timeout (a loaded machine may be slow, never 5 s slow).
            assert time.monotonic() - started < 4.0, args
        holder.rollback()
    assert oid(conn, "idx_orders_customer") is None  # the rollback ran


# --- 8. A plan never says create for what apply cannot create --------------------------------


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        ("CREATE TABLE idx_orders_customer (id int)", "table"),
        ("CREATE SEQUENCE idx_orders_customer", "sequence"),
        ("CREATE VIEW idx_orders_customer AS SELECT 1 AS one", "view"),
    ],
)
def test_plan_refuses_a_name_taken_by_another_relation(
    shop: Path, conn: psycopg.Connection[Any], make: str, kind: str
) -> None:
    conn.execute(make)  # type: ignore[call-overload]
    result = cli("plan", "--env", "test")
    assert result.exit_code == 2, result.output
    assert (
        "orders.yaml:4:5: index idx_orders_customer: the name public.idx_orders_customer "
        f"is taken by a {kind}" in result.output
    )


def test_plan_refuses_a_view_over_a_missing_table_and_accepts_a_view_over_a_new_view(
    shop: Path, conn: psycopg.Connection[Any]
) -> None:
    write_file(shop, "views/mv_customers.yaml", MV)
    write_file(
        shop,
        "views/mv_top.yaml",
        """
        name: mv_top
        query: SELECT customer_id FROM mv_customers WHERE n > 20
        depends_on: [mv_customers]
        """,
    )
    ok = cli("plan", "--env", "test")
    assert ok.exit_code == 0, ok.output
    write_file(
        shop,
        "views/mv_missing.yaml",
        "name: mv_missing\nquery: SELECT id FROM no_such_table\n",
    )
    refused = cli("plan", "--env", "test")
    assert refused.exit_code == 2, refused.output
    assert (
        "mv_missing.yaml:1:1: view public.mv_missing: PostgreSQL refuses its query"
        in refused.output
    )
    assert 'relation "no_such_table" does not exist' in refused.output
    assert conn.execute("SELECT to_regclass('mv_customers')").fetchone() == (None,)
