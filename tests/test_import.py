"""`dbopt import` (issue 13, "Adopt an existing database"): spec files written from what the
database has, exactly as the server defines it, so that a plan right after has nothing to
change; what the spec format cannot say left out with a note; --adopt handing the objects to
dbopt (prune may drop them, rollback never does) — on a real server, as the non-superuser
owner."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from helpers import cli, environments, index_defs, oid, project
from shop import SETTINGS
from standby import Pair, StandbyUnavailable, primary_with_standby

from dbopt.importer import without_twins
from dbopt.model import IndexColumn, IndexSpec, Location, QualifiedName
from dbopt.specfiles import file_names


#: A schema with many kinds of indexes, as a database grown by hand has them.
def _nnd(conn: psycopg.Connection[Any]) -> int:
    """1 where the schema has its NULLS NOT DISTINCT index (15+), else 0."""
    return 1 if conn.info.server_version >= 150000 else 0


#: Only on PostgreSQL 13+ (operator class parameters).
SIGLEN = """CREATE INDEX users_body_siglen ON users USING gist (to_tsvector('english', body)
    tsvector_ops (siglen = 100));
"""

#: Only on PostgreSQL 15+ (the fixture leaves it out before).
NND = "CREATE UNIQUE INDEX users_tags_nnd ON users (id, email) NULLS NOT DISTINCT;\n"

SCHEMA = """
CREATE SCHEMA billing;
CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL, name text,
                    created_at timestamptz NOT NULL DEFAULT now(), deleted_at timestamptz,
                    tags text[], profile jsonb, body text, UNIQUE (name));
INSERT INTO users (id, email, name, tags, profile, body)
SELECT g, 'u' || g || '@example.com', 'user ' || g, ARRAY['t' || g % 5], '{"a": 1}', 'hello'
  FROM generate_series(1, 200) g;
CREATE UNIQUE INDEX users_email_lower ON users (lower(email));
CREATE INDEX users_created_desc ON users (created_at DESC NULLS LAST, id);
CREATE INDEX users_deleted_nulls_first ON users (deleted_at NULLS FIRST);
CREATE INDEX users_deleted_desc ON users (deleted_at DESC NULLS FIRST, email);
CREATE INDEX users_active ON users (id) WHERE deleted_at IS NULL AND email <> '';
CREATE INDEX users_email_include ON users (email) INCLUDE (name, created_at);
CREATE INDEX users_tags ON users USING gin (tags);
CREATE INDEX users_profile ON users USING gin (profile jsonb_path_ops)
    WITH (fastupdate = off);
CREATE INDEX users_created_brin ON users USING brin (created_at) WITH (pages_per_range = 32);
CREATE INDEX users_email_hash ON users USING hash (email);
CREATE INDEX users_name_pattern ON users (name text_pattern_ops);
CREATE INDEX users_name_c ON users (name COLLATE "C" DESC);
CREATE INDEX users_fill ON users (deleted_at, created_at) WITH (fillfactor = 70);
CREATE UNIQUE INDEX users_tags_nnd ON users (id, email) NULLS NOT DISTINCT;
COMMENT ON INDEX users_tags IS 'tag filters on the admin page';

CREATE TABLE "Events" ("EventId" bigint PRIMARY KEY, "Kind" text, user_id bigint,
                       at timestamptz);
CREATE INDEX "Events_Kind_At" ON "Events" ("Kind", at DESC);
CREATE INDEX events_user ON "Events" (user_id);
CREATE INDEX events_user_at ON "Events" (user_id, at);

CREATE TABLE billing.invoices (id int PRIMARY KEY, user_id bigint, total numeric,
                               status text, issued_on date);
INSERT INTO billing.invoices SELECT g, g % 200 + 1, g, 'open', current_date FROM
    generate_series(1, 500) g;
CREATE INDEX invoices_open ON billing.invoices (user_id, issued_on)
    WHERE status IN ('open', 'overdue');
CREATE INDEX invoices_month ON billing.invoices (date_trunc('month', issued_on::timestamp));

CREATE TABLE bookings (id int PRIMARY KEY, room int, during tsrange,
                       EXCLUDE USING gist (during WITH &&));

CREATE TABLE measurements (device_id int NOT NULL, taken_at timestamptz NOT NULL, value float8)
    PARTITION BY RANGE (taken_at);
CREATE TABLE measurements_2025 PARTITION OF measurements
    FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE measurements_2026 PARTITION OF measurements
    FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE INDEX measurements_device ON measurements (device_id, taken_at);
CREATE INDEX measurements_2026_value ON measurements_2026 (value);

CREATE MATERIALIZED VIEW mv_user_invoices AS
SELECT user_id, count(*) AS n, sum(total) AS total FROM billing.invoices GROUP BY user_id;
CREATE UNIQUE INDEX mv_user_invoices_user ON mv_user_invoices (user_id);
CREATE INDEX mv_user_invoices_total ON mv_user_invoices (total DESC);
"""

#: What the spec format cannot say, and a duplicate.
UNSUPPORTED = """
CREATE INDEX users_body_siglen ON users USING gist (to_tsvector('english', body)
    tsvector_ops (siglen = 100));
CREATE INDEX users_email_twin ON users (email) INCLUDE (name, created_at);
CREATE INDEX users_two_params ON users (email, name)
    WITH (fillfactor = 80, deduplicate_items = off);
"""


@pytest.fixture
def grown(
    conn: psycopg.Connection[Any], db_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """The schema above, no spec file yet; the working directory is the project (NULLS NOT
    DISTINCT only where the server has it: 15+)."""
    schema = SCHEMA if conn.info.server_version >= 150000 else SCHEMA.replace(NND, "")
    conn.execute(schema)  # type: ignore[call-overload]
    return project(tmp_path, monkeypatch, {"dbopt.yaml": environments(test={"dsn": db_dsn})})


def _files(root: Path) -> dict[str, Any]:
    return {
        str(p.relative_to(root)): yaml.safe_load(p.read_text())
        for p in sorted([*root.glob("indexes/*.yaml"), *root.glob("views/*.yaml")])
    }


def _indexes(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {i["name"]: i for i in doc.get("indexes", [])}


def test_import_writes_what_the_database_has_and_a_replan_is_empty(
    grown: Path, conn: psycopg.Connection[Any]
) -> None:
    before = index_defs(conn)
    result = cli("import", "--env", "test")
    assert result.exit_code == 0, result.output
    files = _files(grown)
    assert sorted(files) == [
        "indexes/Events.yaml",
        "indexes/billing.invoices.yaml",
        "indexes/measurements.yaml",
        "indexes/measurements_2026.yaml",
        "indexes/users.yaml",
        "views/mv_user_invoices.yaml",
    ]
    for path in files:
        assert f"wrote {path}" in result.output
    # The round trip: dbopt's own validator accepts the files, the plan has nothing to do.
    assert cli("validate").exit_code == 0
    plan = cli("plan", "--env", "test")
    assert plan.exit_code == 0, plan.output
    assert "nothing to change" in plan.output
    assert f"0 to change, 0 need a flag, {23 + _nnd(conn)} unchanged" in plan.output
    assert index_defs(conn) == before  # import only reads

    users = _indexes(files["indexes/users.yaml"])
    assert files["indexes/users.yaml"]["table"] == "public.users"
    assert "users_pkey" not in users and "users_name_key" not in users  # constraints
    assert users["users_email_lower"] == {
        "name": "users_email_lower",
        "columns": [{"expr": "lower(email)"}],
        "unique": True,
    }
    assert users["users_created_desc"]["columns"] == [
        {"name": "created_at", "order": "desc", "nulls": "last"},
        "id",
    ]
    # DESC NULLS FIRST is DESC: the server prints it so, and so does the spec.
    assert users["users_deleted_desc"]["columns"] == [
        {"name": "deleted_at", "order": "desc"},
        "email",
    ]
    assert users["users_deleted_nulls_first"]["columns"] == [
        {"name": "deleted_at", "nulls": "first"}
    ]
    assert users["users_active"]["where"] == "deleted_at IS NULL AND email <> ''::text"
    assert users["users_email_include"]["include"] == ["name", "created_at"]
    assert users["users_tags"] == {
        "name": "users_tags",
        "columns": ["tags"],
        "method": "gin",
        "reason": "tag filters on the admin page",
    }
    assert users["users_profile"]["columns"] == [{"name": "profile", "opclass": "jsonb_path_ops"}]
    assert users["users_profile"]["with"] == {"fastupdate": "off"}
    assert users["users_created_brin"]["with"] == {"pages_per_range": 32}
    assert users["users_email_hash"]["method"] == "hash"
    assert users["users_name_pattern"]["columns"] == [
        {"name": "name", "opclass": "text_pattern_ops"}
    ]
    assert users["users_name_c"]["columns"] == [{"name": "name", "order": "desc", "collation": "C"}]
    assert users["users_fill"]["with"] == {"fillfactor": 70}
    if conn.info.server_version >= 150000:
        assert users["users_tags_nnd"]["nulls_not_distinct"] is True

    events = files["indexes/Events.yaml"]
    assert events["table"] == "public.Events"
    assert _indexes(events)["Events_Kind_At"]["columns"] == [
        "Kind",
        {"name": "at", "order": "desc"},
    ]
    # A left prefix of another index is kept, with the reason the specs ask for.
    assert "left prefix of events_user_at" in _indexes(events)["events_user"]["reason"]

    invoices = files["indexes/billing.invoices.yaml"]
    assert invoices["table"] == "billing.invoices"
    assert set(_indexes(invoices)) == {"invoices_open", "invoices_month"}

    # Partitioned: the parent's index (the planner builds it on every partition), and the
    # index a partition has of its own; never the partitions' copies of the parent's.
    assert set(_indexes(files["indexes/measurements.yaml"])) == {"measurements_device"}
    assert set(_indexes(files["indexes/measurements_2026.yaml"])) == {"measurements_2026_value"}
    assert "not imported: 2 indexes of partitions" in result.output
    assert "not imported: 6 constraint indexes" in result.output
    assert not (grown / "indexes/bookings.yaml").exists()  # an exclusion constraint only

    view = files["views/mv_user_invoices.yaml"]
    row = conn.execute("SELECT pg_get_viewdef('mv_user_invoices'::regclass)").fetchone()
    assert row is not None
    assert view["query"].strip() == row[0].strip().rstrip(";")
    assert view["schema"] == "public"
    assert _indexes(view)["mv_user_invoices_user"]["unique"] is True

    text = (grown / "indexes/users.yaml").read_text()
    dbname = conn.info.dbname
    first, second = text.splitlines()[:2]
    assert first.startswith("# Imported by `dbopt import` on 20")
    assert second.startswith("# from dbopt_owner@127.0.0.1:")
    assert f"/{dbname}, PostgreSQL " in second
    assert "(environment test)." in " ".join(text.splitlines()[1:3])
    assert "\ntable: public.users\nindexes:\n  - name: " in text  # laid out as people write it


def test_what_a_spec_cannot_say_is_left_out_with_a_note(
    grown: Path, conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    unsupported = UNSUPPORTED
    if conn.info.server_version < 130000:  # operator class parameters came in 13, and
        unsupported = unsupported.replace(SIGLEN, "")  # deduplicate_items
        unsupported = unsupported.replace(", deduplicate_items = off", "")
    conn.execute(unsupported)  # type: ignore[call-overload]
    admin_conn.execute("CREATE EXTENSION bloom")
    conn.execute("CREATE INDEX users_bloom ON users USING bloom (email)")
    with pytest.raises(psycopg.errors.UniqueViolation):  # every body is 'hello'
        conn.execute("CREATE UNIQUE INDEX CONCURRENTLY users_broken ON users (body)")
    result = cli("import", "--env", "test", "--table", "users")
    assert result.exit_code == 0, result.output
    assert list(grown.glob("*/*.yaml")) == [grown / "indexes/users.yaml"]
    text = (grown / "indexes/users.yaml").read_text()
    users = _indexes(yaml.safe_load(text))
    expected = {
        "public.users_bloom": "(uses index method bloom, which dbopt does not build)",
        "public.users_broken": "it is INVALID",
        "public.users_email_twin": "the same definition as users_email_include",
    }
    if conn.info.server_version >= 130000:
        expected["public.users_body_siglen"] = (
            "(an operator class with parameters cannot be expressed"
        )
    for name, why in expected.items():
        assert name.split(".")[1] not in users
        line = next(x for x in result.output.splitlines() if x.startswith(f"left out {name}:"))
        assert why in line
        assert f"#   {name}: " in text  # said in the file too
    assert "users_email_include" in users
    # Storage parameters given in another order than the spec's (name order) are the same
    # index: imported, and planned as unchanged.
    assert "users_two_params" in users, result.output
    two = {"fillfactor": 80, "deduplicate_items": "off"}
    if conn.info.server_version < 130000:
        two = {"fillfactor": 80}
    assert users["users_two_params"]["with"] == two
    plan = cli("plan", "--env", "test")
    assert "0 to change, 0 need a flag" in plan.output, plan.output


def test_table_limits_the_import_and_an_unknown_table_writes_nothing(grown: Path) -> None:
    unknown = cli("import", "--env", "test", "--table", "users", "--table", "nope")
    assert unknown.exit_code == 2
    assert "no table or materialized view public.nope" in unknown.output
    assert not (grown / "indexes").exists()
    some = cli("import", "--env", "test", "--table", "billing.invoices", "--table", "Events")
    assert some.exit_code == 0, some.output
    assert sorted(_files(grown)) == ["indexes/Events.yaml", "indexes/billing.invoices.yaml"]
    nothing = cli("import", "--env", "test", "--table", "bookings")  # its constraint's only
    assert nothing.exit_code == 0, nothing.output
    assert "nothing to import from dbopt_owner@" in nothing.output
    assert "not imported: 2 constraint indexes" in nothing.output
    view = cli("import", "--env", "test", "--table", "mv_user_invoices")
    assert view.exit_code == 0, view.output
    assert "views/mv_user_invoices.yaml" in _files(grown)


KEEP = """
table: users
indexes:
  - {name: users_tags, columns: [tags], method: gin, reason: the admin page filters by tag}
queries:
  - name: user_by_email
    sql: |
      SELECT id FROM users
      WHERE lower(email) = %(email)s
    params: {email: u1@example.com}
    budget_ms: 50
"""


def test_existing_files_are_never_overwritten_without_force(grown: Path) -> None:
    (grown / "indexes").mkdir()
    mine = grown / "indexes/users.yaml"
    mine.write_text("table: users\nindexes: []\n")
    refused = cli("import", "--env", "test")
    assert refused.exit_code == 2
    assert "indexes/users.yaml" in refused.output and "--force" in refused.output
    assert mine.read_text() == "table: users\nindexes: []\n"
    assert sorted(_files(grown)) == ["indexes/users.yaml"]  # nothing else written either
    # Another file declaring the same table is refused even with --force.
    mine.rename(grown / "indexes/people.yaml")
    clash = cli("import", "--env", "test", "--force", "--table", "users")
    assert clash.exit_code == 2
    assert "indexes/people.yaml already declares public.users" in clash.output
    (grown / "indexes/people.yaml").unlink()
    # --force overwrites, keeping what no database can say: budgets, and the reasons of the
    # indexes (over the database's comment).
    mine.write_text(KEEP)
    forced = cli("import", "--env", "test", "--force", "--table", "users")
    assert forced.exit_code == 0, forced.output
    assert "(kept from the file it replaced: queries, reasons)" in forced.output
    doc = yaml.safe_load(mine.read_text())
    assert "users_email_lower" in _indexes(doc)
    assert _indexes(doc)["users_tags"]["reason"] == "the admin page filters by tag"
    assert doc["queries"] == yaml.safe_load(KEEP)["queries"]
    assert cli("validate").exit_code == 0
    assert "0 to change, 0 need a flag" in cli("plan", "--env", "test").output
    assert not list(grown.glob("indexes/.*"))  # no temporary file left behind


def test_without_adopt_objects_stay_pre_existing_and_prune_leaves_them(
    grown: Path, conn: psycopg.Connection[Any]
) -> None:
    assert cli("import", "--env", "test", "--table", "users").exit_code == 0
    status = json.loads(cli("status", "--env", "test", "--format", "json").output)
    origins = {r["index"]: r["created_by"] for r in status["managed"]}
    assert origins["public.users_tags"] == "pre-existing"
    _remove_index(grown / "indexes/users.yaml", "users_tags")
    pruned = cli("apply", "--env", "test", "--prune")
    assert pruned.exit_code == 0, pruned.output
    assert "users_tags" in index_defs(conn)


def _remove_index(path: Path, name: str) -> None:
    doc = yaml.safe_load(path.read_text())
    doc["indexes"] = [i for i in doc["indexes"] if i["name"] != name]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def test_adopt_hands_the_objects_to_dbopt_prune_drops_them_rollback_never(
    grown: Path, conn: psycopg.Connection[Any]
) -> None:
    tags = oid(conn, "users_tags")
    result = cli("import", "--env", "test", "--adopt")
    assert result.exit_code == 0, result.output
    assert f"adopted {23 + _nnd(conn)} object(s) in run 1" in result.output
    status = json.loads(cli("status", "--env", "test", "--format", "json").output)
    assert {r["created_by"] for r in status["managed"]} == {"dbopt"}
    # The history holds exactly the facts an apply records of what it made.
    row = conn.execute(
        "SELECT r.command, c.action, c.existed_before, c.result, c.object_oid, "
        "c.built_definition, c.definition FROM dbopt.changes c JOIN dbopt.runs r "
        "ON r.id = c.run_id WHERE c.object_name = 'users_tags'"
    ).fetchone()
    assert row is not None
    assert row[:5] == ("import", "adopt", True, "ok", tags)
    assert row[5] == index_defs(conn)["users_tags"][0]
    assert row[6] == "USING gin (tags)"
    view = conn.execute(
        "SELECT object_kind, object_oid FROM dbopt.changes WHERE object_name = 'mv_user_invoices'"
    ).fetchone()
    assert view == ("view", oid(conn, "mv_user_invoices"))
    assert "0 to change" in cli("plan", "--env", "test").output

    # An import run has no undo: rollback refuses and drops nothing.
    before = index_defs(conn)
    by_run = cli("rollback", "--env", "test", "--run", "1", "--yes")
    assert by_run.exit_code == 2
    assert "run 1 is an import" in by_run.output and "never drops" in by_run.output
    by_name = cli("rollback", "--env", "test", "--index", "users_tags", "--yes")
    assert by_name.exit_code == 2
    assert "public.users_tags existed before dbopt (adopted by import run 1)" in by_name.output
    last = cli("rollback", "--env", "test", "--last", "--yes")
    assert last.exit_code == 2
    assert index_defs(conn) == before

    # Out of the specs: a plan says prune would drop it, apply --prune does.
    _remove_index(grown / "indexes/users.yaml", "users_tags")
    plan = cli("plan", "--env", "test")
    assert "1 needs a flag" in plan.output, plan.output
    assert "adopted by dbopt run" in plan.output and "existed before" in plan.output
    pruned = cli("apply", "--env", "test", "--prune")
    assert pruned.exit_code == 0, pruned.output
    assert "users_tags" not in index_defs(conn)
    # And the rollback of that apply builds it again, as it was.
    back = cli("rollback", "--env", "test", "--last", "--yes")
    assert back.exit_code == 0, back.output
    assert index_defs(conn)["users_tags"] == before["users_tags"]
    # An adopted materialized view that leaves the specs is dbopt's to drop too.
    (grown / "views/mv_user_invoices.yaml").unlink()
    plan = cli("plan", "--env", "test", "--prune", "--format", "json")
    drops = [a["object"] for a in json.loads(plan.output)["actions"] if a["action"] == "drop"]
    # (users_tags too: the rollback made it again, and it is still out of the specs.)
    assert drops == ["public.users_tags", "public.mv_user_invoices"], plan.output


def test_adopt_needs_a_writable_history_and_owned_tables(
    grown: Path,
    conn: psycopg.Connection[Any],
    admin_conn: psycopg.Connection[Any],
    db_dsn: str,
) -> None:
    admin_conn.execute("CREATE TABLE audit (id int, at timestamptz)")
    admin_conn.execute("CREATE INDEX audit_at ON audit (at)")
    refused = cli("import", "--env", "test", "--adopt", "--table", "audit", "--table", "users")
    assert refused.exit_code == 2
    assert "does not own public.audit" in refused.output
    assert not (grown / "indexes").exists()
    assert conn.execute("SELECT to_regnamespace('dbopt')").fetchone() == (None,)
    # Without --adopt nothing is written to the database, so owning is not needed.
    assert cli("import", "--env", "test", "--table", "audit").exit_code == 0
    # A history this role may not write: refused before any file.
    assert cli("init", "--env", "test").exit_code == 0
    admin_conn.execute("ALTER TABLE dbopt.runs OWNER TO CURRENT_USER")
    no_history = cli("import", "--env", "test", "--adopt", "--table", "users")
    assert no_history.exit_code == 2, no_history.output
    assert "may not record runs in dbopt's history" in no_history.output
    assert not (grown / "indexes/users.yaml").exists()


def test_adopt_takes_the_run_lock(grown: Path, db_dsn: str) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s, hashtext(current_database()))", (0x64626F70,))
        busy = cli("import", "--env", "test", "--adopt")
        assert busy.exit_code == 3
        assert "another dbopt run holds this database's lock" in busy.output
        assert not (grown / "indexes").exists()
        # Import alone only reads: it does not need the lock.
        assert cli("import", "--env", "test", "--table", "users").exit_code == 0


def test_the_password_is_never_written_or_printed(grown: Path, db_dsn: str) -> None:
    from conftest import with_user

    secret = "s3cret-Pa55"
    (grown / "dbopt.yaml").write_text(
        environments(test={"dsn": with_user(db_dsn, "dbopt_owner", secret), **SETTINGS})
    )
    result = cli("import", "--env", "test", "--adopt")
    assert result.exit_code == 0, result.output
    assert secret not in result.output
    for path in grown.glob("*/*.yaml"):
        assert secret not in path.read_text()


# --- no database -----------------------------------------------------------------------------


def _spec(name: str, *columns: str, unique: bool = False) -> IndexSpec:
    return IndexSpec(
        name=name,
        table=QualifiedName("public", "t"),
        columns=tuple(IndexColumn(name=c) for c in columns),
        location=Location("<test>", 0, 0),
        unique=unique,
    )


def test_twins_are_left_out_and_left_prefixes_get_a_reason() -> None:
    kept, left = without_twins(
        [
            _spec("b_dup", "a"),
            _spec("a_one", "a"),
            _spec("c_two", "a", "b"),
            _spec("u", "a", unique=True),
        ]
    )
    assert [s.name for s in kept] == ["a_one", "c_two", "u"]
    assert [str(x.name) for x in left] == ["public.b_dup"]
    assert "same definition as a_one" in left[0].reason
    assert kept[0].reason is not None and "left prefix of c_two" in kept[0].reason
    assert kept[2].reason is None  # a unique index is no mere prefix


def test_file_names_are_safe_and_distinct() -> None:
    names = file_names(
        [
            QualifiedName("public", "orders"),
            QualifiedName("billing", "orders"),
            QualifiedName("public", "Orders"),
            QualifiedName("public", "a/b"),
            QualifiedName("public", ".hidden"),
        ]
    )
    assert names[QualifiedName("billing", "orders")] == "billing.orders.yaml"
    assert names[QualifiedName("public", "orders")].startswith("orders-")
    assert names[QualifiedName("public", "Orders")].startswith("Orders-")
    assert "/" not in names[QualifiedName("public", "a/b")]
    assert not names[QualifiedName("public", ".hidden")].startswith(".")
    assert len(set(names.values())) == len(names)


def test_adopt_asks_in_a_confirm_environment(
    grown: Path, db_dsn: str, conn: psycopg.Connection[Any]
) -> None:
    (grown / "dbopt.yaml").write_text(environments(test={"dsn": db_dsn, "confirm": True}))
    refused = cli("import", "--env", "test", "--adopt", "--table", "users", input="n\n")
    assert refused.exit_code == 2
    count = 13 + _nnd(conn)
    assert f"import --adopt: hand {count} existing object(s) to dbopt on test" in refused.output
    assert "not confirmed; nothing was written" in refused.output
    assert not (grown / "indexes").exists()
    typed = cli("import", "--env", "test", "--adopt", "--table", "users", input="test\n")
    assert typed.exit_code == 0, typed.output
    assert f"adopted {count} object(s)" in typed.output
    data = json.loads(
        cli("import", "--env", "test", "--adopt", "--force", "--yes", "--format", "json").output
    )
    assert len(data["adopted"]) == 10  # the users' 14 were dbopt's already
    assert {f["path"] for f in data["files"]} >= {
        "indexes/users.yaml",
        "views/mv_user_invoices.yaml",
    }


# --- a hot standby ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    try:
        with primary_with_standby() as found:
            yield found
    except StandbyUnavailable as exc:
        pytest.skip(str(exc))


def test_on_a_standby_import_reads_and_adopt_refuses(
    pair: Pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"t_import_standby_{secrets.token_hex(3)}"
    primary = pair.primary.create_database(name)
    try:
        with psycopg.connect(primary, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE orders (id int PRIMARY KEY, customer_id int, status text);"
                "CREATE INDEX orders_open ON orders (customer_id) WHERE status <> 'done'"
            )
        pair.caught_up()
        standby = pair.standby_dsn(primary)
        project(tmp_path, monkeypatch, {"dbopt.yaml": environments(replica={"dsn": standby})})
        adopt = cli("import", "--env", "replica", "--adopt")
        assert adopt.exit_code == 2
        assert "this is a standby" in adopt.output and "run against the primary" in adopt.output
        assert not (tmp_path / "indexes").exists()
        read = cli("import", "--env", "replica")
        assert read.exit_code == 0, read.output
        assert "the specs were not planned against it" in read.output
        doc = yaml.safe_load((tmp_path / "indexes/orders.yaml").read_text())
        assert doc["indexes"] == [
            {"name": "orders_open", "columns": ["customer_id"], "where": "status <> 'done'::text"}
        ]
    finally:
        pair.primary.drop_database(name)
