"""Roles as managed services have them: `dbopt init` creates (or upgrades) the history once
and prints the grants; afterwards a run needs only ownership of its tables (membership in
their owner) and USAGE + SELECT/INSERT/UPDATE on the history, and a read-only role plans,
verifies and reads status, or is told in one line which grant it lacks."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import with_user
from helpers import cli, oid, project
from psycopg import sql

from dbopt.history import HISTORY_VERSION

ORDERS = """
table: public.orders
indexes:
  - {name: idx_orders_customer, columns: [customer_id]}
queries:
  - name: one_customer
    sql: SELECT * FROM orders WHERE customer_id = 42
    budget_ms: 1000
"""

TOTALS = """
name: mv_totals
query: SELECT customer_id, sum(total) AS total FROM orders GROUP BY customer_id
indexes:
  - {name: mv_totals_customer, columns: [customer_id], unique: true}
"""

Roles = Callable[..., str]


@pytest.fixture
def roles(admin_dsn: str) -> Iterator[Roles]:
    """Make login roles (unique names, dropped with what they own at the end); returns
    ``make(prefix, *member_of) -> name``."""
    made: list[str] = []

    def make(prefix: str, *member_of: str) -> str:
        name = f"{prefix}_{secrets.token_hex(3)}"
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
            for role in member_of:
                admin.execute(
                    sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(name))
                )
        made.append(name)
        return name

    yield make
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        for name in made:
            admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


@pytest.fixture
def shop(conn: psycopg.Connection[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    conn.execute(
        "CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL, total numeric);"
        "INSERT INTO orders SELECT g, g % 100, g FROM generate_series(1, 2000) g"
    )
    return project(
        tmp_path, monkeypatch, {"indexes/orders.yaml": ORDERS, "views/totals.yaml": TOTALS}
    )


@pytest.fixture
def split(
    admin_dsn: str, roles: Roles, owner_role: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """The orders table owned by an `app` role that is not the history's owner (the
    database's owner, dbopt_owner, is a member of it and runs `dbopt init`); returns app."""
    app = roles("app")
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL(
                "CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL, total numeric);"
                "ALTER TABLE orders OWNER TO {app}; GRANT {app} TO {owner};"
                # As PostgreSQL 15+ has it (older majors let PUBLIC create in public).
                "REVOKE CREATE ON SCHEMA public FROM PUBLIC"
            ).format(app=sql.Identifier(app), owner=sql.Identifier(owner_role.name))
        )
    project(tmp_path, monkeypatch, {"indexes/orders.yaml": ORDERS})
    return app


def _as(dsn: str, role: str) -> list[str]:
    return ["--dsn", with_user(dsn, role)]


def _run_grants(admin_dsn: str, text: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        for statement in text.split(";\n"):
            lines = [x for x in statement.splitlines() if x.strip() and not x.startswith("--")]
            if lines:
                admin.execute("\n".join(lines))  # type: ignore[call-overload]


def _one_error_line(output: str) -> str:
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert output.strip().count("\n") == 0, output  # the whole message is one line
    return errors[0]


def test_after_init_each_role_needs_only_its_grants(
    shop: Path, db_dsn: str, admin_dsn: str, roles: Roles, owner_role: Any
) -> None:
    deployer, reader = roles("deployer"), roles("reader")
    done = cli("init", "--dsn", db_dsn, "--apply-role", deployer, "--read-role", reader)
    assert done.exit_code == 0, done.output
    assert f"created dbopt's history in schema dbopt (layout {HISTORY_VERSION})" in done.stderr
    assert f'GRANT "{owner_role.name}" TO "{deployer}";' in done.stdout
    assert f'GRANT SELECT ON "public"."orders" TO "{reader}";' in done.stdout
    _run_grants(admin_dsn, done.stdout)
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        row = admin.execute(
            "SELECT has_database_privilege(%s, current_database(), 'CREATE'), "
            "pg_has_role(%s, (SELECT relowner FROM pg_class WHERE oid = 'dbopt.changes'::regclass),"
            " 'USAGE')",
            (reader, reader),
        ).fetchone()
    assert row == (False, False)  # the reader can create nothing and owns nothing

    for command in (["apply"], ["refresh-views"], ["rollback", "--last"], ["apply"]):
        result = cli(*command, *_as(db_dsn, deployer))
        assert result.exit_code == 0, (command, result.output)
    for command in (["plan"], ["status"], ["verify"]):
        result = cli(*command, *_as(db_dsn, reader))
        assert result.exit_code == 0, (command, result.output)
    refused = cli("apply", "--prune", *_as(db_dsn, reader))
    assert refused.exit_code in (0, 2), refused.output  # nothing to do, or not its tables
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute("DROP INDEX idx_orders_customer")
    refused = cli("apply", *_as(db_dsn, reader))
    assert refused.exit_code == 2, refused.output
    assert f"role {reader} may not record runs in dbopt's history" in refused.output
    with psycopg.connect(admin_dsn, autocommit=True) as admin:  # it may record, not own
        admin.execute(f"GRANT INSERT, UPDATE ON dbopt.runs, dbopt.changes TO {reader}")
        admin.execute(f"GRANT UPDATE ON dbopt.refreshes TO {reader}")
        admin.execute(f"GRANT INSERT ON dbopt.refreshes TO {reader}")
        admin.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA dbopt TO {reader}")
    refused = cli("apply", *_as(db_dsn, reader))
    assert refused.exit_code == 2, refused.output
    assert "does not own public.orders" in refused.output

    again = cli("init", "--dsn", db_dsn)
    assert again.exit_code == 0, again.output
    assert f"is current (layout {HISTORY_VERSION})" in again.stderr


def test_a_role_without_history_grants_is_told_which_in_one_line(
    shop: Path, db_dsn: str, admin_dsn: str, roles: Roles, owner_role: Any
) -> None:
    assert cli("init", "--dsn", db_dsn).exit_code == 0
    reader = roles("reader")
    for command in ("plan", "status"):
        result = cli(command, *_as(db_dsn, reader))
        assert result.exit_code == 2, result.output
        line = _one_error_line(result.output)
        assert f"role {reader} may not read dbopt's history" in line
        assert f'GRANT USAGE ON SCHEMA "dbopt" TO "{reader}"' in line
        assert '"dbopt"."runs"' in line
    result = cli("verify", *_as(db_dsn, reader))  # verify reads the tables, not the history
    assert result.exit_code == 2, result.output
    line = _one_error_line(result.output)
    assert 'may not read "public"."orders"' in line
    assert f'GRANT SELECT ON "public"."orders" TO "{reader}"' in line


def test_a_deployer_without_history_grants_is_refused_before_anything_runs(
    split: str, db_dsn: str, admin_dsn: str, roles: Roles
) -> None:
    assert cli("init", "--dsn", db_dsn).exit_code == 0
    deployer = roles("deployer", split)  # owns the table, not the history; no grants on it
    result = cli("apply", *_as(db_dsn, deployer))
    assert result.exit_code == 2, result.output
    line = _one_error_line(result.output)
    assert f"role {deployer} may not record runs in dbopt's history" in line
    assert "INSERT, UPDATE ON TABLE" in line and "ON SEQUENCE" in line
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        assert oid(conn, "idx_orders_customer") is None  # refused before anything ran
        conn.execute(f"GRANT USAGE ON SCHEMA dbopt TO {deployer}")
        conn.execute(f"GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA dbopt TO {deployer}")
        conn.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA dbopt TO {deployer}")
    # CREATE INDEX also needs CREATE on the table's schema (which PostgreSQL 15+ gives only
    # to the database's owner in public): refused before the first statement, with the grant.
    result = cli("apply", *_as(db_dsn, deployer))
    assert result.exit_code == 2, result.output
    assert 'may not create objects in schema "public"' in result.output
    assert 'GRANT CREATE ON SCHEMA "public" TO this role' in result.output
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        assert oid(conn, "idx_orders_customer") is None
        conn.execute(f"GRANT CREATE ON SCHEMA public TO {deployer}")
    result = cli("apply", *_as(db_dsn, deployer))
    assert result.exit_code == 0, result.output


def test_no_history_and_no_right_to_create_it_says_run_init(
    conn: psycopg.Connection[Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    db_dsn: str,
    admin_dsn: str,
    roles: Roles,
) -> None:
    """The tables' owner is not the database's owner (no CREATE on it): the first apply
    cannot create the history and says who should run `dbopt init`."""
    app = roles("app")
    deployer = roles("deployer", app)
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL(
                "CREATE TABLE orders (id int PRIMARY KEY, customer_id int, total numeric);"
                "ALTER TABLE orders OWNER TO {app}; GRANT CREATE ON SCHEMA public TO {app}"
            ).format(app=sql.Identifier(app))
        )
    project(tmp_path, monkeypatch, {"indexes/orders.yaml": ORDERS})
    result = cli("apply", *_as(db_dsn, deployer))
    assert result.exit_code == 2, result.output
    assert "there is no dbopt history (schema dbopt)" in result.output
    assert "run `dbopt init` once" in result.output
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        assert oid(admin, "idx_orders_customer") is None
        row = admin.execute("SELECT to_regnamespace('dbopt')").fetchone()
    assert row == (None,)


def test_an_older_history_is_upgraded_by_init_as_its_owner(
    split: str, db_dsn: str, admin_dsn: str, roles: Roles, owner_role: Any
) -> None:
    deployer, reader = roles("deployer"), roles("reader")
    done = cli("init", "--dsn", db_dsn, "--apply-role", deployer, "--read-role", reader)
    _run_grants(admin_dsn, done.stdout)
    with psycopg.connect(admin_dsn, autocommit=True) as admin:  # back to layout 2 (dbopt 0.2)
        admin.execute("DROP TABLE dbopt.schema_version")
        admin.execute("ALTER TABLE dbopt.runs DROP CONSTRAINT runs_outcome_check")
    plan = cli("plan", *_as(db_dsn, reader))
    assert plan.exit_code == 0, plan.output  # an older layout still reads
    result = cli("apply", *_as(db_dsn, deployer))
    assert result.exit_code == 2, result.output
    assert f"has layout 2; this dbopt records layout {HISTORY_VERSION}" in result.output
    assert f"run `dbopt init` once as {owner_role.name}" in result.output
    upgraded = cli("init", "--dsn", db_dsn)
    assert upgraded.exit_code == 0, upgraded.output
    assert (
        f"upgraded dbopt's history in schema dbopt from layout 2 to {HISTORY_VERSION}"
        in upgraded.stderr
    )
    _run_grants(admin_dsn, done.stdout)  # the new stamp table's grant
    final = cli("apply", *_as(db_dsn, deployer))
    assert final.exit_code == 0, final.output


def test_a_history_made_before_its_read_indexes_works_and_init_adds_them(
    split: str, db_dsn: str, admin_dsn: str, roles: Roles
) -> None:
    """The read indexes keep what a run reads of a long history short; a history made before
    them is of the same layout: runs use it as it is (no DDL), the owner's init adds them and
    another role's init says who may."""
    deployer, reader = roles("deployer"), roles("reader")
    done = cli("init", "--dsn", db_dsn, "--apply-role", deployer, "--read-role", reader)
    assert done.exit_code == 0, done.output
    _run_grants(admin_dsn, done.stdout)
    read_indexes = {"changes_replaced", "changes_running", "runs_running"}
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        assert read_indexes <= _history_indexes(admin)
        for index in sorted(read_indexes):  # as an earlier dbopt made it
            admin.execute(sql.SQL("DROP INDEX dbopt.{}").format(sql.Identifier(index)))
    applied = cli("apply", *_as(db_dsn, deployer))
    assert applied.exit_code == 0, applied.output
    told = cli("init", *_as(db_dsn, deployer), "--apply-role", deployer, "--read-role", reader)
    assert told.exit_code == 0, told.output
    assert "lacks its read indexes (changes_replaced, changes_running, runs_running)" in (
        told.output
    )
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        assert not read_indexes & _history_indexes(admin)
    added = cli("init", "--dsn", db_dsn, "--apply-role", deployer, "--read-role", reader)
    assert added.exit_code == 0, added.output
    assert "added its read indexes (changes_replaced, changes_running, runs_running)" in (
        added.stderr
    )
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        assert read_indexes <= _history_indexes(admin)


def _history_indexes(conn: psycopg.Connection[Any]) -> set[str]:
    rows = conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'dbopt'").fetchall()
    return {r[0] for r in rows}


def test_a_first_apply_by_a_role_that_may_creates_the_history(shop: Path, db_dsn: str) -> None:
    result = cli("apply", "--dsn", db_dsn)
    assert result.exit_code == 0, result.output
    assert f"created dbopt's history in schema dbopt (layout {HISTORY_VERSION})" in result.output
    second = cli("apply", "--dsn", db_dsn)
    assert "created dbopt's history" not in second.output


def test_a_role_that_may_not_open_the_build_session_is_stopped_before_the_plan(
    shop: Path, roles: Roles, owner_role: Any, admin_dsn: str, db_dsn: str, conn: Any
) -> None:
    """apply opens the session that will build (and checks the new builds on it) before it
    shows the plan: a server that will not give dbopt that second session stops the run
    there, exit 3, with nothing built and no run recorded (README)."""
    deployer = roles("deployer", owner_role.name)
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("ALTER ROLE {} CONNECTION LIMIT 1").format(sql.Identifier(deployer)))
    result = cli("apply", "--dsn", with_user(db_dsn, deployer), "--yes", "--format", "plain")
    assert result.exit_code == 3, result.output
    assert "too many connections" in result.output
    assert "Plan for" not in result.output
    assert oid(conn, "idx_orders_customer") is None
    assert oid(conn, "dbopt.runs") is None  # nothing recorded: the history not even made


def test_grants_never_make_the_applier_a_superuser(
    conn: psycopg.Connection[Any],
    admin_dsn: str,
    db_dsn: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A table the superuser owns gets a comment, never `GRANT <superuser> TO ...`."""
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute("CREATE TABLE ledger (id int PRIMARY KEY, amount numeric)")
        row = admin.execute("SELECT current_user").fetchone()
    assert row is not None
    superuser = row[0]
    ledger = "table: public.ledger\nindexes:\n  - {name: idx_ledger_amount, columns: [amount]}\n"
    project(tmp_path, monkeypatch, {"indexes/ledger.yaml": ledger})
    done = cli("init", "--dsn", db_dsn)
    assert done.exit_code == 0, done.output
    assert f'GRANT "{superuser}" TO' not in done.stdout
    assert f"belong to the superuser {superuser}" in done.stdout
    assert f"tables the specs name belong to the superuser {superuser}" in done.stderr


def test_views_the_deployer_creates_count_as_dbopts_own(
    admin_dsn: str, roles: Roles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The history belongs to the tables' owner (app), views are created by a deployer: each
    new view is given to app right after it is made, so rollback and prune may drop it; and
    the read role reads it through the printed default privileges."""
    app = roles("app")
    deployer, reader = roles("deployer"), roles("reader")
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL(
                "CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL, total numeric);"
                "INSERT INTO orders SELECT g, g % 100, g FROM generate_series(1, 500) g;"
                "ALTER TABLE orders OWNER TO {app}; CREATE SCHEMA analytics AUTHORIZATION {app};"
                "GRANT CREATE ON DATABASE {db} TO {app}; GRANT CREATE ON SCHEMA public TO {app}"
            ).format(
                app=sql.Identifier(app),
                db=sql.Identifier(make_conninfo_dbname(admin_dsn)),
            )
        )
    totals = TOTALS.replace("name: mv_totals\n", "name: mv_totals\nschema: analytics\n") + (
        "queries:\n  - name: top_customer\n"
        "    sql: SELECT * FROM analytics.mv_totals ORDER BY total DESC LIMIT 1\n"
        "    budget_ms: 1000\n"
    )
    project(tmp_path, monkeypatch, {"indexes/orders.yaml": ORDERS, "views/totals.yaml": totals})
    done = cli(
        "init", "--dsn", with_user(admin_dsn, app), "--apply-role", deployer, "--read-role", reader
    )
    assert done.exit_code == 0, done.output
    _run_grants(admin_dsn, done.stdout)

    assert cli("apply", *_as(admin_dsn, deployer)).exit_code == 0
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        row = admin.execute(
            "SELECT pg_get_userbyid(relowner) FROM pg_class "
            "WHERE oid = 'analytics.mv_totals'::regclass"
        ).fetchone()
    assert row == (app,)
    verify = cli("verify", *_as(admin_dsn, reader))
    assert verify.exit_code == 0, verify.output  # USAGE on analytics, SELECT by default

    undo = cli("rollback", "--last", *_as(admin_dsn, deployer))
    assert undo.exit_code == 0, undo.output
    assert "left alone" not in undo.output
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        assert oid(admin, "analytics.mv_totals") is None


def make_conninfo_dbname(dsn: str) -> str:
    return str(psycopg.conninfo.conninfo_to_dict(dsn)["dbname"])


def test_a_view_that_could_not_count_as_dbopts_own_is_refused_before_anything_runs(
    admin_dsn: str, roles: Roles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The history's owner may not create in the view's schema: the view could never be
    given to it, so never rolled back: apply refuses before the first statement."""
    app = roles("app")
    deployer = roles("deployer", app)
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL(
                "CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL, total numeric);"
                "ALTER TABLE orders OWNER TO {app}; CREATE SCHEMA analytics;"
                "GRANT USAGE, CREATE ON SCHEMA analytics TO {deployer};"
                "GRANT CREATE ON DATABASE {db} TO {app}; GRANT CREATE ON SCHEMA public TO {app}"
            ).format(
                app=sql.Identifier(app),
                deployer=sql.Identifier(deployer),
                db=sql.Identifier(make_conninfo_dbname(admin_dsn)),
            )
        )
    totals = TOTALS.replace("name: mv_totals\n", "name: mv_totals\nschema: analytics\n")
    project(tmp_path, monkeypatch, {"indexes/orders.yaml": ORDERS, "views/totals.yaml": totals})
    init = cli("init", "--dsn", with_user(admin_dsn, app))
    assert init.exit_code == 0, init.output
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL(
                "GRANT USAGE ON SCHEMA dbopt TO {d};"
                "GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA dbopt TO {d};"
                "GRANT USAGE ON ALL SEQUENCES IN SCHEMA dbopt TO {d}"
            ).format(d=sql.Identifier(deployer))
        )
    result = cli("apply", *_as(admin_dsn, deployer))
    assert result.exit_code == 2, result.output
    assert "would not count as dbopt's own" in result.output
    assert f'GRANT CREATE ON SCHEMA "analytics" TO "{app}"' in result.output
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        assert oid(admin, "idx_orders_customer") is None


def test_plan_without_the_temporary_privilege_says_which_grant(
    shop: Path, db_dsn: str, admin_dsn: str, roles: Roles
) -> None:
    deployer, reader = roles("deployer"), roles("reader")
    done = cli("init", "--dsn", db_dsn, "--apply-role", deployer, "--read-role", reader)
    _run_grants(admin_dsn, done.stdout)
    db = make_conninfo_dbname(admin_dsn)
    temporary = sql.SQL("TEMPORARY ON DATABASE {} ").format(sql.Identifier(db))
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("REVOKE {} FROM PUBLIC, {}").format(temporary, sql.Identifier(reader))
        )
        # Before PostgreSQL 15 everyone may create in public, so a reader's plan is refused
        # for the view it would own; this test is about TEMP: a reader as 15+ makes one.
        admin.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    plan = cli("plan", *_as(db_dsn, reader))
    assert plan.exit_code == 2, plan.output
    line = _one_error_line(plan.output)
    assert f'GRANT TEMPORARY ON DATABASE "{db}" TO "{reader}"' in line
    # validate checks what it can and says what it could not: the trial builds of the new
    # indexes need a temporary table (apply runs them).
    checked = cli("validate", *_as(db_dsn, reader))
    assert checked.exit_code == 0, checked.output
    assert "note: 1 new index not built on trial: role" in checked.stderr, checked.stderr
    assert f'GRANT TEMPORARY ON DATABASE "{db}" TO "{reader}"' in checked.stderr
    _run_grants(admin_dsn, done.stdout)  # init printed it
    final = cli("plan", *_as(db_dsn, reader))
    assert final.exit_code == 0, final.output


def test_verify_names_every_relation_a_budget_reads(
    conn: psycopg.Connection[Any],
    db_dsn: str,
    admin_dsn: str,
    roles: Roles,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A budget joining a table no spec is about: the reader is told to be granted it too
    (from the query's parse tree), before any query runs."""
    conn.execute(
        "CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL, total numeric);"
        "CREATE TABLE customers (id int PRIMARY KEY, name text)"
    )
    joined = ORDERS.replace(
        "SELECT * FROM orders WHERE customer_id = 42",
        "WITH o AS (SELECT * FROM orders) SELECT c.name FROM o JOIN customers c "
        "ON c.id = o.customer_id WHERE o.customer_id = 42",
    )
    project(tmp_path, monkeypatch, {"indexes/orders.yaml": joined})
    reader = roles("reader")
    done = cli("init", "--dsn", db_dsn, "--read-role", reader)
    assert f'GRANT SELECT ON "public"."customers", "public"."orders" TO "{reader}";' in done.stdout
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("GRANT SELECT ON orders TO {}").format(sql.Identifier(reader)))
    result = cli("verify", *_as(db_dsn, reader))
    assert result.exit_code == 2, result.output
    line = _one_error_line(result.output)
    assert 'may not read "public"."customers"' in line and '"orders"' not in line


def test_a_history_from_a_newer_dbopt_is_refused(shop: Path, db_dsn: str, admin_dsn: str) -> None:
    assert cli("init", "--dsn", db_dsn).exit_code == 0
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(
            "INSERT INTO dbopt.schema_version (version, dbopt_version) VALUES (%s, '9')",
            (HISTORY_VERSION + 1,),
        )
    for command in (["plan"], ["status"], ["apply"]):
        result = cli(*command, "--dsn", db_dsn)
        assert result.exit_code == 2, result.output
        assert f"has layout {HISTORY_VERSION + 1}, written by a newer dbopt" in result.output


def test_plan_and_validate_note_what_the_read_role_cannot_try(
    shop: Path, db_dsn: str, admin_dsn: str, roles: Roles
) -> None:
    """Seen in a review: once plan and validate --dsn built new indexes on trial, `dbopt
    init`'s read role (TEMPORARY, the history; no SELECT on the tables) got 'permission
    denied for table orders' (exit 1), and a build needing USAGE on another schema was
    blamed on the spec (exit 2). What the role cannot try is a note; the plan is printed."""
    # Index specs only, no budget: init grants the read role no SELECT on the table.
    (shop / "views" / "totals.yaml").unlink()
    only_indexes = ORDERS.split("queries:")[0]
    (shop / "indexes" / "orders.yaml").write_text(only_indexes)
    deployer, reader = roles("deployer"), roles("reader")
    done = cli("init", "--dsn", db_dsn, "--apply-role", deployer, "--read-role", reader)
    _run_grants(admin_dsn, done.stdout)
    for command in ("plan", "validate"):
        said = cli(command, *_as(db_dsn, reader))
        assert said.exit_code == 0, said.output
        assert "1 new index not built on trial: this role may not read public.orders" in (
            " ".join(said.output.split())
        ), said.output
    # A CI job reading the plan's JSON is told too (seen in a second review: it was not).
    planned = cli("plan", *_as(db_dsn, reader), "--format", "json")
    notes = json.loads(planned.stdout)["notes"]
    assert any("not built on trial: this role may not read public.orders" in n for n in notes)
    # With SELECT, a build that needs USAGE on a schema the role lacks (its operator class's)
    # is a note too.
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute("CREATE SCHEMA locked")
        admin.execute(
            "CREATE OPERATOR CLASS locked.int4_plain FOR TYPE int4 USING btree AS "
            "OPERATOR 1 <, OPERATOR 2 <=, OPERATOR 3 =, OPERATOR 4 >=, OPERATOR 5 >, "
            "FUNCTION 1 btint4cmp(int4, int4)"
        )
        admin.execute(sql.SQL("GRANT SELECT ON orders TO {}").format(sql.Identifier(reader)))
    (shop / "indexes" / "orders.yaml").write_text(
        only_indexes + "  - {name: idx_orders_plain, columns: [{name: customer_id, opclass: "
        "locked.int4_plain}]}\n"
    )
    try:
        _plan_and_validate_say(
            db_dsn,
            reader,
            "not built on trial, for want of a privilege: index idx_orders_plain",
            "permission denied for schema locked",
        )
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute("DROP SCHEMA locked CASCADE")


def test_a_table_the_role_cannot_copy_is_a_note_of_the_trial(
    shop: Path, db_dsn: str, admin_dsn: str, roles: Roles
) -> None:
    """Seen in a second review: a role with SELECT on a table in a schema it has no USAGE of
    got 'permission denied for schema' from plan and validate (exit 1): the trial's copy of
    the table is what it cannot make. A note; apply, as the owner, checks it."""
    reader = roles("reader")
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute("CREATE SCHEMA sealed")
        admin.execute("CREATE TABLE sealed.items (id int, kind text)")
        admin.execute(sql.SQL("GRANT SELECT ON sealed.items TO {}").format(sql.Identifier(reader)))
        admin.execute(
            sql.SQL("GRANT TEMPORARY ON DATABASE {} TO {}").format(
                sql.Identifier(make_conninfo_dbname(admin_dsn)), sql.Identifier(reader)
            )
        )
    (shop / "views" / "totals.yaml").unlink()
    (shop / "indexes" / "orders.yaml").unlink()
    (shop / "indexes" / "items.yaml").write_text(
        "table: sealed.items\nindexes:\n  - {name: idx_items_kind, columns: [kind]}\n"
    )
    try:
        _plan_and_validate_say(
            db_dsn,
            reader,
            "not built on trial, for want of a privilege: index idx_items_kind",
            "its table cannot be copied: permission denied for schema sealed",
        )
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute("DROP SCHEMA sealed CASCADE")


def _plan_and_validate_say(db_dsn: str, role: str, *phrases: str) -> None:
    """plan and validate, as ``role``, both pass (exit 0) and say each of ``phrases``."""
    for command in ("plan", "validate"):
        said = cli(command, *_as(db_dsn, role))
        assert said.exit_code == 0, said.output
        flat = " ".join(said.output.split())
        for phrase in phrases:
            assert phrase in flat, flat
