"""Catalog inspection waits only on what dbopt touches (a real server, another session's DDL).

Another session leaves DDL open on ``audit``, a table no spec names; inspecting the catalog
for the spec'd relations must neither wait for it nor queue behind it. The relevant relations
are still sized and deparsed, so DDL open on one of those is still waited for (and times out).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helpers
import psycopg
import pytest
from helpers import cli
from psycopg.rows import dict_row

from dbopt.catalog import catalog_sql, inspect
from dbopt.model import QualifiedName

#: The session's lock_timeout in these tests: a wait would raise within it.
LOCK_TIMEOUT_MS = 1_000

SETUP = """
    CREATE TABLE appointments (id int PRIMARY KEY, barber_id int, day date, note text);
    CREATE INDEX appt_day ON appointments (day) WHERE day > '2020-01-01';
    CREATE INDEX appt_note ON appointments (lower(note));
    CREATE MATERIALIZED VIEW mv_days AS SELECT day, count(*) AS n FROM appointments GROUP BY day;
    CREATE UNIQUE INDEX mv_days_day ON mv_days (day);
    CREATE VIEW v_days AS SELECT day FROM mv_days;
    CREATE MATERIALIZED VIEW mv_busy AS SELECT day FROM mv_days WHERE n > 10;
    CREATE INDEX mv_busy_day ON mv_busy (day);
    CREATE TABLE events (id int, at date) PARTITION BY RANGE (at);
    CREATE TABLE events_2024 PARTITION OF events
        FOR VALUES FROM ('2024-01-01') TO ('2025-01-01') PARTITION BY RANGE (at);
    CREATE TABLE events_2024_h1 PARTITION OF events_2024
        FOR VALUES FROM ('2024-01-01') TO ('2024-07-01');
    CREATE INDEX events_at ON events (at);

    -- In no spec: another session's DDL on these must never make dbopt wait.
    CREATE TABLE audit (id int PRIMARY KEY, note text CHECK (note <> ''), at date DEFAULT now());
    CREATE INDEX audit_note ON audit (lower(note)) WHERE id > 0;
    CREATE VIEW v_audit AS SELECT id FROM audit WHERE at > '2020-01-01';
    CREATE MATERIALIZED VIEW mv_audit AS SELECT id FROM audit;
    CREATE VIEW v_mixed AS SELECT a.id FROM audit a JOIN appointments p USING (id);
    CREATE TABLE logs (id int, at date) PARTITION BY RANGE (at);
    CREATE TABLE logs_2024 PARTITION OF logs FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
    CREATE INDEX logs_at ON logs (at);
    CREATE SEQUENCE audit_seq;
    CREATE TYPE mood AS ENUM ('calm');
    CREATE TYPE pair AS (a int, b int);
    CREATE DOMAIN positive AS int CHECK (VALUE > 0);
"""

APPOINTMENTS = QualifiedName("public", "appointments")
MV_DAYS = QualifiedName("public", "mv_days")
EVENTS = QualifiedName("public", "events")
RELEVANT = (APPOINTMENTS, MV_DAYS, EVENTS)


def q(name: str) -> QualifiedName:
    return QualifiedName("public", name)


@pytest.fixture
def catalog_db(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    conn.execute(SETUP)
    conn.execute(f"SET lock_timeout = {LOCK_TIMEOUT_MS}")
    return conn


@pytest.fixture
def holder(db_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """Another session, in a transaction the test leaves open (rolled back at the end)."""
    with psycopg.connect(db_dsn) as other:
        yield other
        other.rollback()


#: DDL on relations no spec names, each holding ACCESS EXCLUSIVE until its transaction ends.
UNRELATED_DDL = [
    "ALTER TABLE audit ADD COLUMN x int",
    "LOCK TABLE audit IN ACCESS EXCLUSIVE MODE",
    "TRUNCATE audit",
    "DROP INDEX audit_note",
    "REINDEX INDEX audit_note",
    "ALTER INDEX audit_note RENAME TO audit_note2",
    "CREATE OR REPLACE VIEW v_audit AS SELECT id, note FROM audit",
    "ALTER MATERIALIZED VIEW mv_audit RENAME TO mv_audit2",
    "ALTER TABLE logs_2024 ADD CONSTRAINT logs_2024_id CHECK (id > 0)",
    "ALTER VIEW v_mixed RENAME TO v_mixed2",
    "ALTER TABLE logs DETACH PARTITION logs_2024",
    "ALTER SEQUENCE audit_seq RESTART",
    "DROP TABLE audit CASCADE",
]


def timed_inspect(conn: psycopg.Connection[Any], relevant: Any) -> tuple[Any, float]:
    started = time.monotonic()
    catalog = inspect(conn, relevant, sizes=True)  # sizes take locks too: status's path
    return catalog, time.monotonic() - started


@pytest.mark.parametrize("ddl", UNRELATED_DDL)
def test_inspect_never_waits_on_ddl_outside_the_specs(
    catalog_db: psycopg.Connection[Any], holder: psycopg.Connection[Any], ddl: str
) -> None:
    holder.execute(ddl)
    catalog, seconds = timed_inspect(catalog_db, RELEVANT)
    assert seconds < LOCK_TIMEOUT_MS / 1000 / 2
    # The relevant relations are complete: sized, deparsed, with their indexes.
    appointments = catalog.relations[APPOINTMENTS]
    assert appointments.inspected and appointments.total_bytes is not None
    assert {i.name.name for i in catalog.indexes_on(APPOINTMENTS)} == {
        "appointments_pkey",
        "appt_day",
        "appt_note",
    }
    assert catalog.indexes[q("appt_day")].predicate == "(day > '2020-01-01'::date)"
    assert "FROM appointments" in (catalog.relations[MV_DAYS].view_definition or "")
    # The open DDL is not visible: plain catalog reads show the last committed state.
    audit = catalog.relations[q("audit")]
    assert audit.columns == ("id", "note", "at")
    assert not audit.inspected
    assert audit.total_bytes is None and audit.estimated_rows >= 0
    # What plan inspects: no sizes at all (each is a file-system read per index).
    unsized = inspect(catalog_db, RELEVANT)
    assert unsized.relations[APPOINTMENTS].total_bytes is None
    assert all(i.size_bytes is None for i in unsized.indexes.values())
    assert unsized.indexes[q("appt_day")].definition == catalog.indexes[q("appt_day")].definition


def test_what_is_outside_the_specs_is_listed_without_locks(
    catalog_db: psycopg.Connection[Any], holder: psycopg.Connection[Any]
) -> None:
    # (LOCK on a view also locks what it reads: v_mixed reads appointments, so it is renamed.)
    holder.execute("LOCK TABLE audit, v_audit, logs IN ACCESS EXCLUSIVE MODE")
    holder.execute("ALTER MATERIALIZED VIEW mv_audit RENAME TO mv_audit2")
    holder.execute("ALTER VIEW v_mixed RENAME TO v_mixed2")
    catalog, _ = timed_inspect(catalog_db, RELEVANT)
    for name in ("audit", "v_audit", "mv_audit", "v_mixed", "logs", "logs_2024"):
        relation = catalog.relations[q(name)]
        assert not relation.inspected, name
        assert relation.total_bytes is None and relation.view_definition is None, name
    assert catalog.relations[q("mv_audit")].populated is True  # a plain pg_class column
    assert catalog.relations[q("logs")].partitions == (q("logs_2024"),)
    # Their indexes are known by name only (pg_get_indexdef would lock the table).
    assert q("audit_note") not in catalog.indexes
    assert q("logs_at") not in catalog.indexes
    assert catalog.names[q("audit_note")] == "index"
    assert catalog.names[q("logs_at")] == "partitioned index"


def test_the_relevant_set_covers_partitions_indexes_and_readers(
    catalog_db: psycopg.Connection[Any],
) -> None:
    catalog = inspect(catalog_db, RELEVANT)
    inspected = {str(n) for n, r in catalog.relations.items() if r.inspected}
    assert inspected == {
        "public.appointments",
        "public.events",  # the spec'd partitioned table,
        "public.events_2024",  # its partitions, recursively,
        "public.events_2024_h1",
        "public.mv_days",  # the spec'd materialized view,
        "public.v_days",  # and what reads it (a replace rebuilds or re-binds them)
        "public.mv_busy",
    }
    assert catalog.relevant == frozenset(RELEVANT)
    assert "FROM mv_days" in (catalog.relations[q("v_days")].view_definition or "")
    assert q("mv_busy_day") in catalog.indexes  # a reader's indexes are rebuilt with it
    assert q("events_at") in catalog.indexes
    assert {str(i.name) for i in catalog.indexes_on(q("events_2024_h1"))} == {
        "public.events_2024_h1_at_idx"
    }
    assert catalog.dependents[MV_DAYS] == (q("mv_busy"), q("v_days"))


def test_an_index_named_stands_for_its_table(catalog_db: psycopg.Connection[Any]) -> None:
    # What history.managed() returns (indexes dbopt created) can be passed as it is.
    catalog = inspect(catalog_db, [q("appt_day"), q("mv_busy_day")])
    inspected = {str(n) for n, r in catalog.relations.items() if r.inspected}
    assert inspected == {"public.appointments", "public.mv_busy"}
    assert q("appt_note") in catalog.indexes


@pytest.mark.slow
def test_ddl_on_a_relevant_relation_is_still_waited_for(
    catalog_db: psycopg.Connection[Any], holder: psycopg.Connection[Any]
) -> None:
    # dbopt touches what the specs name: a lock there is a reason to wait (up to lock_timeout).
    holder.execute("ALTER TABLE appointments ADD COLUMN x int")
    with pytest.raises(psycopg.errors.LockNotAvailable):
        inspect(catalog_db, RELEVANT)
    holder.rollback()
    # A view that reads a spec'd materialized view (a replace rebuilds it) may read any other
    # table too: its definition is read only if its locks come at once, else left unread (a
    # replace needing it refuses, saying so), never waited for...
    holder.execute("ALTER VIEW v_days RENAME TO v_days2")
    held = inspect(catalog_db, RELEVANT)
    assert held.relations[q("v_days")].inspected
    assert held.relations[q("v_days")].view_definition is None
    holder.rollback()
    assert inspect(catalog_db, RELEVANT).relations[q("v_days")].view_definition
    # ...nor on a view that merely reads a spec'd table: dbopt never touches it.
    holder.execute("ALTER VIEW v_mixed RENAME TO v_mixed2")
    inspect(catalog_db, RELEVANT)


def test_a_readers_locks_do_not_outlive_its_read_in_a_callers_transaction(
    catalog_db: psycopg.Connection[Any], holder: psycopg.Connection[Any]
) -> None:
    """Seen in a third review: reading a reader's definition inside a caller's transaction
    left the locks it took (on every table the reader reads, which may be any) held until
    that transaction ended."""
    catalog_db.execute(
        "CREATE VIEW v_days_audit AS SELECT d.day FROM mv_days d JOIN audit a ON a.id = d.n"
    )
    with catalog_db.transaction():
        catalog = inspect(catalog_db, RELEVANT)
        assert catalog.relations[q("v_days_audit")].view_definition
        held = catalog_db.execute(
            "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() "
            "AND relation = 'audit'::regclass"
        ).fetchone()
    assert held == (0,)
    # DDL on that table left open: the reader is left unread, nothing waits.
    holder.execute("ALTER TABLE audit ADD COLUMN y int")
    assert inspect(catalog_db, RELEVANT).relations[q("v_days_audit")].view_definition is None


@pytest.mark.slow
def test_without_relevant_everything_is_inspected_and_may_wait(
    catalog_db: psycopg.Connection[Any], holder: psycopg.Connection[Any]
) -> None:
    catalog = inspect(catalog_db, sizes=True)
    assert catalog.relevant is None
    assert all(r.inspected for r in catalog.relations.values())
    assert catalog.relations[q("audit")].total_bytes is not None
    assert q("audit_note") in catalog.indexes
    assert catalog.queries == 4
    holder.execute("ALTER TABLE audit ADD COLUMN x int")
    with pytest.raises(psycopg.errors.LockNotAvailable):
        inspect(catalog_db)


def test_names_cover_every_relation_kind_and_types(
    catalog_db: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    # A foreign table needs a foreign-data wrapper (superuser); no handler is needed to list it.
    admin_conn.execute(
        "CREATE FOREIGN DATA WRAPPER dbopt_dummy; "
        "CREATE SERVER dbopt_nowhere FOREIGN DATA WRAPPER dbopt_dummy; "
        "CREATE FOREIGN TABLE remote_audit (id int) SERVER dbopt_nowhere"
    )
    try:
        catalog_db.execute("CREATE SCHEMA other; CREATE TABLE other.appointments (id int)")
        catalog = inspect(catalog_db, RELEVANT)
        kinds = {str(n): k for n, k in catalog.names.items()}
        assert kinds["public.appointments"] == "table"
        assert kinds["public.appt_day"] == "index"
        assert kinds["public.audit_seq"] == "sequence"
        assert kinds["public.v_audit"] == "view"
        assert kinds["public.mv_audit"] == "materialized view"
        assert kinds["public.events"] == "partitioned table"
        assert kinds["public.events_at"] == "partitioned index"
        assert kinds["public.pair"] == "composite type"
        assert kinds["public.remote_audit"] == "foreign table"
        assert kinds["other.appointments"] == "table"
        assert not any(k.startswith(("pg_catalog.", "information_schema.")) for k in kinds)
        types = {str(n): k for n, k in catalog.type_names.items()}
        assert types == {"public.mood": "enum type", "public.positive": "domain"}
        # An index name clashes with relations only; a materialized view's with types too.
        assert catalog.name_taken(q("audit_seq")) == "sequence"
        assert catalog.name_taken(q("mood")) is None
        assert catalog.name_taken(q("mood"), by_types=True) == "enum type"
        assert catalog.name_taken(q("free")) is None
    finally:
        admin_conn.execute(
            "DROP SERVER dbopt_nowhere CASCADE; DROP FOREIGN DATA WRAPPER dbopt_dummy"
        )


def test_the_number_of_queries_does_not_grow_with_the_specs(
    catalog_db: psycopg.Connection[Any],
) -> None:
    for row in catalog_db.execute(
        "SELECT format('CREATE TABLE t%s (id int PRIMARY KEY)', g) FROM generate_series(1, 60) g"
    ).fetchall():
        catalog_db.execute(row[0])
    one = inspect(catalog_db, [APPOINTMENTS])
    many = inspect(catalog_db, [q(f"t{i}") for i in range(1, 61)])
    assert one.queries == many.queries == 5
    assert sum(r.inspected for r in many.relations.values()) == 60
    # A name that does not exist is simply not found.
    assert inspect(catalog_db, [q("nope")]).relevant == frozenset({q("nope")})


def test_inside_a_transaction_of_the_caller(catalog_db: psycopg.Connection[Any]) -> None:
    with catalog_db.transaction():
        catalog_db.execute("CREATE TABLE fresh (id int)")
        catalog = inspect(catalog_db, [q("fresh")])
        assert catalog.relations[q("fresh")].inspected  # the caller's own uncommitted table


# --- the commands (once the use cases pass relevant=) -----------------------------------

SPEC = """\
    table: public.appointments
    indexes:
      - name: appt_day
        columns: [day]
        where: "day > '2020-01-01'"
    queries:
      - name: recent
        sql: "SELECT count(*) FROM appointments WHERE day > '2024-01-01'"
        budget_ms: 10000
        runs: 1
        warmup: 0
    """


@pytest.fixture
def project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, catalog_db: psycopg.Connection[Any]
) -> Path:
    return helpers.project(
        tmp_path,
        monkeypatch,
        {
            "indexes/appointments.yaml": SPEC,
            "dbopt.yaml": f"defaults: {{lock_timeout: {LOCK_TIMEOUT_MS}ms}}\n",
        },
    )


@pytest.mark.parametrize("command", ["plan", "status", "validate", "apply", "verify"])
def test_commands_never_wait_on_ddl_outside_the_specs(
    project: Path, holder: psycopg.Connection[Any], db_dsn: str, command: str
) -> None:
    holder.execute("ALTER TABLE audit ADD COLUMN x int")
    started = time.monotonic()
    result = cli(command, "--dsn", db_dsn)
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started < LOCK_TIMEOUT_MS / 1000


def test_plain_definitions_are_written_as_the_server_prints_them(
    admin_conn: psycopg.Connection[Any],
) -> None:
    """Plain-column indexes get their definition from the catalog (no pg_get_indexdef):
    for every shape, what inspect says must be exactly what the server prints."""
    admin_conn.execute(
        '''
        CREATE DOMAIN code AS text;
        CREATE SCHEMA "Odd Schema";
        CREATE TABLE "Odd Schema"."Mixed Case" (
            id int, "order" int, "Weird ""Name""" text, v varchar(20), c code,
            t text COLLATE "C", n numeric, arr int[], ts tsvector, b bool);
        CREATE INDEX plain_one ON "Odd Schema"."Mixed Case" (id);
        CREATE INDEX "Plain Two" ON "Odd Schema"."Mixed Case" ("order", "Weird ""Name""");
        CREATE INDEX "select" ON "Odd Schema"."Mixed Case" (id) INCLUDE (n, "order");
        CREATE INDEX on_varchar ON "Odd Schema"."Mixed Case" (v);
        CREATE INDEX on_domain ON "Odd Schema"."Mixed Case" (c);
        CREATE INDEX on_c_collation ON "Odd Schema"."Mixed Case" (t);
        CREATE INDEX other_collation ON "Odd Schema"."Mixed Case" (t COLLATE "POSIX");
        CREATE INDEX other_opclass ON "Odd Schema"."Mixed Case" (t text_pattern_ops);
        CREATE INDEX descending ON "Odd Schema"."Mixed Case" (id DESC, n NULLS FIRST);
        CREATE UNIQUE INDEX uniq ON "Odd Schema"."Mixed Case" (id, n);
        CREATE INDEX partial ON "Odd Schema"."Mixed Case" (id) WHERE b;
        CREATE INDEX expr ON "Odd Schema"."Mixed Case" (lower(t));
        CREATE INDEX with_options ON "Odd Schema"."Mixed Case" (id) WITH (fillfactor = 70);
        CREATE INDEX hashed ON "Odd Schema"."Mixed Case" USING hash (id);
        CREATE INDEX gin_arr ON "Odd Schema"."Mixed Case" USING gin (arr);
        CREATE INDEX gin_ts ON "Odd Schema"."Mixed Case" USING gin (ts);
        CREATE INDEX brin_id ON "Odd Schema"."Mixed Case" USING brin (id, n);
        CREATE TABLE parted (id int, k int) PARTITION BY RANGE (id);
        CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (10);
        CREATE INDEX parted_k ON parted (k);
        '''
    )
    if admin_conn.info.server_version >= 130000:
        admin_conn.execute(
            'CREATE INDEX opclass_options ON "Odd Schema"."Mixed Case" '
            "USING gist (ts tsvector_ops (siglen = 100))"
        )
    catalog = inspect(admin_conn)
    server = dict(
        admin_conn.execute(
            "SELECT n.nspname || '.' || c.relname, pg_get_indexdef(c.oid) FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname IN ('Odd Schema', 'public')"
        ).fetchall()
    )
    assert len(server) >= 19
    for name, definition in server.items():
        schema, _, index = name.partition(".")
        assert catalog.indexes[QualifiedName(schema, index)].definition == definition, name
    # ...and the fast path is taken where it should be (else this test would prove nothing).
    rows = (
        admin_conn.cursor(row_factory=dict_row)
        .execute(catalog_sql("indexes"), {"everything": True, "relevant": [], "sizes": False})
        .fetchall()
    )
    written = {r["name"] for r in rows if r["written_from_catalog"]}
    assert {"plain_one", "Plain Two", "select", "on_c_collation", "hashed", "parted_1_k_idx"} <= (
        written
    ), written
    assert not written & {
        "on_domain",
        "other_collation",
        "other_opclass",
        "descending",
        "uniq",
        "partial",
        "expr",
        "with_options",
        "parted_k",
        "opclass_options",
    }, written
