"""`dbopt doctor` on a real server: one module-scoped database seeded with one problem of each
kind (and the look-alikes that are not problems), many asserts over few doctor runs; and the
BookedBarber database after `apply`, where doctor must report no error."""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import Owner, with_user
from harness.servers import Server
from helpers import cli, wait_for, write_files

pytestmark = pytest.mark.db

SEED = """
CREATE TABLE customers (id bigint PRIMARY KEY, email text NOT NULL, region text);
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customers,
                     status text NOT NULL, created_at timestamptz NOT NULL, total numeric);
CREATE TABLE order_items (order_id bigint NOT NULL REFERENCES orders, product text NOT NULL);
CREATE TABLE junk (id int, other int);
INSERT INTO customers SELECT g, 'c' || g || '@example.com', 'r' || g % 7
  FROM generate_series(1, 2000) g;
INSERT INTO orders SELECT g, 1 + g % 2000, (ARRAY['open','paid','sent'])[1 + g % 3],
       '2024-01-01'::timestamptz + g * interval '1 minute', g % 100
  FROM generate_series(1, 20000) g;
INSERT INTO order_items SELECT 1 + g % 20000, 'p' || g % 50 FROM generate_series(1, 2000) g;
INSERT INTO junk SELECT g, g FROM generate_series(1, 60000) g;
-- duplicate: two identical unmanaged indexes
CREATE INDEX customers_region ON customers (region);
CREATE INDEX customers_region_copy ON customers (region);
-- redundant: a left prefix of a wider unmanaged index
CREATE INDEX orders_created_status ON orders (created_at, status);
CREATE INDEX orders_created ON orders (created_at);
-- not redundant: unique, another operator class, DESC, another predicate, INCLUDE
CREATE UNIQUE INDEX customers_email_key ON customers (email);
CREATE INDEX customers_email_region ON customers (email, region);
CREATE INDEX customers_email_pattern ON customers (email text_pattern_ops);
CREATE INDEX customers_email_desc ON customers (email DESC);
CREATE INDEX orders_status_open ON orders (status) WHERE status = 'open';
CREATE INDEX orders_created_incl ON orders (created_at) INCLUDE (total);
-- spec'd (indexes/orders.yaml), and an unmanaged copy of it
CREATE INDEX orders_status_created ON orders (status, created_at);
CREATE INDEX orders_status_created_old ON orders (status, created_at);
CREATE INDEX orders_total ON orders (total);
-- a foreign key with an index (order_items) and one without (orders.customer_id)
CREATE INDEX order_items_order ON order_items (order_id, product);
-- bloat: most of the rows gone, the index pages stay
CREATE INDEX junk_id ON junk (id);
CREATE INDEX junk_other ON junk (other);  -- bloated too, but unused: a drop, no REINDEX
DELETE FROM junk WHERE id > 3000;
-- views: one never populated, one overdue against a yearly schedule
CREATE MATERIALIZED VIEW mv_empty AS SELECT status, count(*) FROM orders GROUP BY 1 WITH NO DATA;
CREATE MATERIALIZED VIEW mv_yearly AS SELECT region, count(*) FROM customers GROUP BY 1;
-- dots inside names: a duplicate and a foreign key without an index
CREATE SCHEMA "a.b";
CREATE TABLE "a.b"."t.x" (id bigint PRIMARY KEY, "c.id" bigint REFERENCES customers, v int);
INSERT INTO "a.b"."t.x" SELECT g, g, g FROM generate_series(1, 100) g;
CREATE INDEX "i.dup1" ON "a.b"."t.x" (v);
CREATE INDEX "i.dup2" ON "a.b"."t.x" (v);
-- never proposed for dropping: the CLUSTER index; the replica identity (its older twin goes)
CREATE INDEX order_items_product ON order_items (product);
ALTER TABLE order_items CLUSTER ON order_items_product;
CREATE UNIQUE INDEX customers_email_ident ON customers (email);
ALTER TABLE customers REPLICA IDENTITY USING INDEX customers_email_ident;
-- partitioned: identical indexes (the scanned one kept), an unused one, an INVALID one
CREATE TABLE events (id int NOT NULL, kind text) PARTITION BY RANGE (id);
CREATE TABLE events_1 PARTITION OF events FOR VALUES FROM (0) TO (1000);
CREATE TABLE events_2 PARTITION OF events FOR VALUES FROM (1000) TO (2000);
INSERT INTO events SELECT g, 'k' || g % 5 FROM generate_series(0, 1999) g;
CREATE INDEX events_kind ON events (kind);
CREATE INDEX events_id ON events (id);
CREATE INDEX events_kind_id_only ON ONLY events (kind, id);
-- fresh multi-column indexes whose columns need alignment padding: no bloat
CREATE TABLE widths (a int4, b int8, c int4, d int8, e bool, f bool);
INSERT INTO widths SELECT g, g, g, g, g % 2 = 0, g % 3 = 0 FROM generate_series(1, 20000) g;
CREATE INDEX widths_int ON widths (a, b, c, d);
CREATE INDEX widths_bool ON widths (e, b, f, d);
"""

#: After SEED: scans that make junk_id and events_kind used (2,000 index scans each; a
#: partitioned index's scans are its partitions').
SCANS = """
SET enable_seqscan = off; SET enable_hashjoin = off; SET enable_mergejoin = off;
SET enable_bitmapscan = off;
SELECT count(*) FROM generate_series(1, 2000) g JOIN junk ON junk.id = g;
SELECT count(*) FROM generate_series(1, 2000) g JOIN events ON events.kind = 'k' || g % 5;
RESET ALL;
"""
#: After SCANS: the copy of a scanned partitioned index (so the scanned one is kept).
AFTER_SCANS = "CREATE INDEX events_kind_copy ON events (kind);"

SPECS = {
    "indexes/orders.yaml": """\
        table: orders
        indexes:
          - name: orders_status_created
            columns: [status, created_at]
            reason: the open orders of a day
          - name: orders_total
            columns: [total]
            reason: big orders
        queries:
          - name: open_today
            sql: SELECT id FROM orders WHERE status = 'open' AND created_at >= '2024-01-02'
            max_cost: 100000
            expect: {uses_index: [orders_status_created]}
        """,
    "views/mv_empty.yaml": """\
        name: mv_empty
        query: SELECT status, count(*) FROM orders GROUP BY 1
        refresh: {schedule: "@hourly", mode: blocking}
        """,
    "views/mv_yearly.yaml": """\
        name: mv_yearly
        query: SELECT region, count(*) FROM customers GROUP BY 1
        refresh: {schedule: "0 0 1 1 *", mode: blocking}
        """,
}


@pytest.fixture(scope="module")
def seeded(
    pg_server: Server, template_db: str, owner_role: Owner, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str, Path]]:
    """(superuser DSN, owner DSN, spec folder) of the seeded database."""
    name = f"t_doctor_{secrets.token_hex(3)}"
    admin = pg_server.create_database(name, template=template_db, owner=owner_role.name)
    dsn = (
        admin if owner_role.name is None else with_user(admin, owner_role.name, owner_role.password)
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SEED)
        conn.execute(SCANS)
        conn.execute(AFTER_SCANS)
        # The failed build stays behind, INVALID.
        with contextlib.suppress(psycopg.errors.UniqueViolation):
            conn.execute(
                "CREATE UNIQUE INDEX CONCURRENTLY orders_customer_unique ON orders (customer_id)"
            )
        # A failed build that duplicates a valid index: it waits for a writer of the table
        # past its lock_timeout.
        with psycopg.connect(dsn) as writer:
            writer.execute("LOCK TABLE customers IN ROW EXCLUSIVE MODE")
            conn.execute("SET lock_timeout = '100ms'")
            with contextlib.suppress(psycopg.errors.LockNotAvailable):
                conn.execute("CREATE INDEX CONCURRENTLY customers_region_bad ON customers (region)")
            conn.execute("RESET lock_timeout")
        conn.execute("VACUUM ANALYZE")
        wait_for(  # the scans reach the statistics views (flushed within a second or so)
            conn,
            "SELECT 1 FROM pg_stat_user_indexes WHERE indexrelname IN ('junk_id', "
            "'events_1_kind_idx') AND idx_scan >= 2000 HAVING count(*) = 2",
        )
    root = tmp_path_factory.mktemp("doctor")
    write_files(root, SPECS)
    try:
        yield admin, dsn, root
    finally:
        pg_server.drop_database(name)


def doctor(root: Path, dsn: str, *args: str) -> Any:
    return cli(
        "doctor",
        "--dsn",
        dsn,
        "--specs",
        str(root / "indexes"),
        "--specs",
        str(root / "views"),
        "--bloat-min-size",
        "300kB",
        *args,
    )


def test_doctor_finds_each_seeded_problem_once(
    seeded: tuple[str, str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _admin, dsn, root = seeded
    monkeypatch.chdir(root)
    result = doctor(root, dsn, "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    found: dict[str, list[dict[str, Any]]] = {}
    for f in report["findings"]:
        found.setdefault(f["check"], []).append(f)
    objects = {check: sorted(f["object"] for f in fs) for check, fs in found.items()}

    by_object = {(f["check"], f["object"]): f for f in report["findings"]}
    # Each index problem is reported once: an INVALID duplicate is not also a duplicate, an
    # unused or redundant index gets no bloat advice too.
    index_checks = {
        "invalid-index",
        "duplicate-index",
        "redundant-index",
        "unmanaged-duplicate",
        "unused-index",
        "index-bloat",
    }
    named_once = [f["object"] for f in report["findings"] if f["check"] in index_checks]
    assert sorted(named_once) == sorted(set(named_once))

    assert objects["invalid-index"] == [
        "public.customers_region_bad",
        "public.events_kind_id_only",
        "public.orders_customer_unique",
    ]
    invalid = by_object["invalid-index", "public.orders_customer_unique"]
    assert invalid["severity"] == "error"
    assert "not made by dbopt" in invalid["message"]
    assert 'REINDEX INDEX CONCURRENTLY "public"."orders_customer_unique";' in invalid["fix"]
    # An INVALID copy of a valid index: only to drop, said once.
    bad = by_object["invalid-index", "public.customers_region_bad"]
    assert "a duplicate of public.customers_region" in bad["fix"]
    assert bad["fix"].endswith('DROP INDEX CONCURRENTLY "public"."customers_region_bad";')
    # A partitioned index INVALID for want of its partitions' indexes: attach them, or a
    # plain DROP (neither REINDEX nor DROP ... CONCURRENTLY works on it).
    only = by_object["invalid-index", "public.events_kind_id_only"]["fix"]
    assert 'ALTER INDEX "public"."events_kind_id_only" ATTACH PARTITION "public"."events_1_' in only
    assert '"public"."events_2"' in only and 'DROP INDEX "public"."events_kind_id_only";' in only
    assert "ACCESS EXCLUSIVE" in only and "REINDEX INDEX" not in only

    assert objects["duplicate-index"] == [
        "a.b.i.dup2",
        "public.customers_email_key",
        "public.customers_region_copy",
        "public.events_kind_copy",
    ]
    assert by_object["duplicate-index", "public.customers_region_copy"]["numbers"]["keep"] == (
        "public.customers_region"
    )
    assert (
        by_object["duplicate-index", "public.customers_region_copy"]["fix"]
        == 'DROP INDEX CONCURRENTLY "public"."customers_region_copy";'
    )
    # Dots inside names: schema and name stay apart from the catalog to the fix.
    assert by_object["duplicate-index", "a.b.i.dup2"]["fix"] == (
        'DROP INDEX CONCURRENTLY "a.b"."i.dup2";'
    )
    # The replica identity is kept over its older twin.
    ident = by_object["duplicate-index", "public.customers_email_key"]
    assert ident["numbers"]["keep"] == "public.customers_email_ident"
    # Partitioned: the scanned one (its partitions' scans) kept, a plain DROP for the copy.
    events_copy = by_object["duplicate-index", "public.events_kind_copy"]
    assert events_copy["numbers"]["keep"] == "public.events_kind"
    assert events_copy["fix"].startswith('DROP INDEX "public"."events_kind_copy";')
    assert "ACCESS EXCLUSIVE" in events_copy["fix"]
    # The prefix is covered by both wider ones; named once, keeping the smaller.
    assert objects["redundant-index"] == ["public.orders_created"]
    assert objects["unmanaged-duplicate"] == ["public.orders_status_created_old"]
    assert found["unmanaged-duplicate"][0]["numbers"]["keep"] == "public.orders_status_created"

    assert objects["foreign-key-without-index"] == [
        "a.b.t.x.t.x_c.id_fkey",
        "public.orders.orders_customer_id_fkey",
    ]
    fk = by_object["foreign-key-without-index", "public.orders.orders_customer_id_fkey"]
    assert fk["numbers"]["table_rows"] == 20000
    assert (
        'CREATE INDEX CONCURRENTLY "orders_customer_id_idx" ON "public"."orders" ("customer_id");'
        in fk["fix"]
    )
    assert "indexes/orders.yaml" in fk["fix"]
    dotted_fk = by_object["foreign-key-without-index", "a.b.t.x.t.x_c.id_fkey"]["fix"]
    assert 'ON "a.b"."t.x" ("c.id");' in dotted_fk

    assert objects["index-bloat"] == ["public.junk_id"]
    bloat = found["index-bloat"][0]["numbers"]
    assert bloat["source"] == "estimate" and bloat["wasted_ratio"] > 0.8

    assert objects["spec-index-unbudgeted"] == ["public.orders_total"]
    assert found["spec-index-unbudgeted"][0]["location"]["line"] == 6
    assert objects["view-never-refreshed"] == ["public.mv_empty"]
    assert found["view-never-refreshed"][0]["severity"] == "error"
    assert objects["view-overdue"] == ["public.mv_yearly"]

    # Unused: no index that enforces something, nothing reported under another check.
    unused = set(objects["unused-index"])
    assert "public.customers_region" in unused and "public.orders_total" in unused
    assert "public.events_id" in unused and "public.events_kind" not in unused
    assert "public.junk_other" in unused
    assert by_object["unused-index", "public.events_id"]["fix"].startswith(
        'DROP INDEX "public"."events_id";'
    )
    assert not {"public.events_1_id_idx", "public.events_1_kind_idx"} & unused
    enforcing = {
        "public.customers_pkey",
        "public.orders_pkey",
        "public.customers_email_ident",
        "public.orders_customer_unique",
        "public.customers_region_copy",
        "public.orders_created",
        "public.orders_status_created_old",
        "public.junk_id",
    }
    assert not unused & enforcing
    # Statistics never reset (a fresh database): how long scans counted is unknown, info.
    if report["stats_reset"] is None:
        assert {found_["severity"] for found_ in found["unused-index"]} == {"info"}
    # Kept, saying why: the only index of a foreign key, the CLUSTER index.
    for name, why in (
        ("public.order_items_order", "only index serving foreign key order_items_order_id_fkey"),
        ("public.order_items_product", "CLUSTER index"),
    ):
        kept = by_object["unused-index", name]
        assert kept["severity"] == "info" and why in kept["why"] and "DROP" not in kept["fix"]
    # Look-alikes that are not duplicates: unique, opclass, DESC, predicate, INCLUDE.
    named = {o for check, objs in objects.items() if check != "unused-index" for o in objs}
    for name in (
        "customers_email_region",
        "customers_email_pattern",
        "customers_email_desc",
        "orders_status_open",
        "orders_created_incl",
        "order_items_order",
        "widths_int",
        "widths_bool",
    ):
        assert f"public.{name}" not in named
    # Ranked: errors first.
    severities = [f["severity"] for f in report["findings"]]
    assert severities == sorted(severities, key=["error", "warning", "info"].index)
    sizes = {i["index"]: i for i in report["indexes"]}
    assert sizes["public.junk_id"]["size_bytes"] > 1_000_000
    assert sizes["public.orders_status_created"]["managed"] is True
    assert sizes["public.events_kind"]["scans"] >= 4000  # 2,000 on each partition
    assert sizes["public.events_kind"]["size_bytes"] > 0
    assert {v["view"]: v["populated"] for v in report["views"]} == {
        "public.mv_empty": False,
        "public.mv_yearly": True,
    }

    # --fail-on, SARIF, plain output; and exact bloat refused to a role without the grant.
    sarif_file = root / "doctor.sarif"
    failed = doctor(
        root, dsn, "--fail-on", "error", "--sarif", str(sarif_file), "--format", "plain"
    )
    assert failed.exit_code == 1, failed.output
    assert "orders_customer_unique is INVALID" in failed.stdout
    assert doctor(root, dsn, "--fail-on", "warning", "--format", "json").exit_code == 1
    log = json.loads(sarif_file.read_text())
    assert log["version"] == "2.1.0" and log["$schema"].endswith("sarif-2.1.0.json")
    results = {(r["ruleId"], r["properties"]["object"]): r for r in log["runs"][0]["results"]}
    invalid_result = results["dbopt/invalid-index", "public.orders_customer_unique"]
    assert invalid_result["level"] == "error"
    assert invalid_result["locations"][0]["logicalLocations"]
    # Every result has a file and line (GitHub code scanning rejects one without): its spec,
    # its table's spec file, or the first spec file.
    for r in log["runs"][0]["results"]:
        where = r["locations"][0]["physicalLocation"]
        assert where["artifactLocation"]["uri"] and where["region"]["startLine"] >= 1, r
        assert not where["artifactLocation"]["uri"].startswith(("/", "file:")), r
        assert r["partialFingerprints"]
    uri = "indexes/orders.yaml"
    spec_loc = results["dbopt/unused-index", "public.orders_total"]["locations"][0]
    assert spec_loc["physicalLocation"]["artifactLocation"]["uri"] == uri
    assert spec_loc["physicalLocation"]["region"]["startLine"] == 6
    table_loc = results["dbopt/invalid-index", "public.orders_customer_unique"]["locations"][0]
    assert table_loc["physicalLocation"] == {
        "artifactLocation": {"uri": uri},
        "region": {"startLine": 1, "startColumn": 1},
    }
    rule_ids = {r["id"] for r in log["runs"][0]["tool"]["driver"]["rules"]}
    assert {r["ruleId"] for r in log["runs"][0]["results"]} <= rule_ids
    # Read-only and lock-free: DDL left open on a table does not hold doctor up (its catalog
    # reads take no lock on a relation), and doctor writes nothing, not even a temp table.
    with psycopg.connect(dsn) as ddl:
        ddl.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        blocked = doctor(root, dsn, "--format", "json")
        assert blocked.exit_code == 0, blocked.output
        assert time.monotonic() - started < 5
        assert json.loads(blocked.stdout)["summary"] == report["summary"]
        ddl.rollback()
    bad = doctor(root, dsn, "--bloat-min-size", "lots")
    assert bad.exit_code == 2 and "write a size" in bad.output


def test_doctor_exact_bloat_with_pgstattuple(seeded: tuple[str, str, Path]) -> None:
    admin, dsn, root = seeded
    with psycopg.connect(admin, autocommit=True) as conn:
        if (
            conn.execute(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'pgstattuple'"
            ).fetchone()
            is None
        ):
            pytest.skip("needs the pgstattuple extension")
        conn.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
    as_owner = doctor(root, dsn, "--exact", "--format", "json")
    assert as_owner.exit_code == 0
    assert "GRANT pg_stat_scan_tables" in as_owner.stderr
    assert json.loads(as_owner.stdout)["bloat_source"] == "estimate"
    measured = doctor(root, admin, "--exact", "--format", "json")
    report = json.loads(measured.stdout)
    assert report["bloat_source"] == "pgstattuple"
    [junk] = [f for f in report["findings"] if f["check"] == "index-bloat"]
    assert junk["object"] == "public.junk_id" and junk["numbers"]["source"] == "pgstattuple"
    assert junk["numbers"]["wasted_ratio"] > 0.8
    # Another session holds junk_id's table and the index ACCESS EXCLUSIVE (an open DROP
    # INDEX): pgstatindex cannot read it within the lock timeout; that index falls back to
    # the estimate, the others are still measured, the run does not abort.
    with psycopg.connect(admin) as ddl:
        ddl.execute("DROP INDEX junk_id")
        locked = doctor(root, admin, "--exact", "--format", "json")
        ddl.rollback()
    assert locked.exit_code == 0, locked.output
    report = json.loads(locked.stdout)
    assert report["bloat_source"] == "pgstattuple"
    assert any("public.junk_id is locked" in n for n in report["notes"]), report["notes"]
    [junk] = [f for f in report["findings"] if f["check"] == "index-bloat"]
    assert junk["object"] == "public.junk_id" and junk["numbers"]["source"] == "estimate"


def test_invalid_index_beside_a_build_in_progress(
    seeded: tuple[str, str, Path], owner_role: Owner
) -> None:
    """Another role's CREATE INDEX CONCURRENTLY is in flight on orders, where a failed build
    (orders_customer_unique) lies: to a role that reads the build's progress, the building
    index is no finding and the failed one is still an error; to one that cannot (another
    role's progress shows no relation), both are warnings that say why."""
    admin, dsn, root = seeded
    failure: list[BaseException] = []

    def build() -> None:
        try:
            with psycopg.connect(admin, autocommit=True) as b:
                b.execute("CREATE INDEX CONCURRENTLY orders_building ON orders (total)")
        except BaseException as exc:  # reported by the test
            failure.append(exc)

    with psycopg.connect(admin, autocommit=True) as watch, psycopg.connect(admin) as writer:
        writer.execute("LOCK TABLE orders IN ROW EXCLUSIVE MODE")  # the build waits for it
        thread = threading.Thread(target=build)
        thread.start()
        try:
            wait_for(
                watch,
                "SELECT 1 FROM pg_stat_progress_create_index p "
                "JOIN pg_class c ON c.oid = p.index_relid WHERE c.relname = 'orders_building'",
            )
            as_admin = json.loads(doctor(root, admin, "--format", "json").stdout)
            as_owner = json.loads(doctor(root, dsn, "--format", "json").stdout)
        finally:
            writer.rollback()
            thread.join(60)
        assert not failure, failure
        watch.execute("DROP INDEX CONCURRENTLY orders_building")

    def invalid(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {f["object"]: f for f in report["findings"] if f["check"] == "invalid-index"}

    seen = invalid(as_admin)
    assert "public.orders_building" not in seen
    assert seen["public.orders_customer_unique"]["severity"] == "error"
    if owner_role.name is None:
        return  # one role only: no other role's build to be blind to
    blind = invalid(as_owner)
    for name in ("public.orders_building", "public.orders_customer_unique"):
        assert blind[name]["severity"] == "warning", blind[name]
        assert "may be a build in progress by another role" in blind[name]["message"]
    assert blind["public.customers_region_bad"]["severity"] == "warning"


def test_bloat_estimate_of_fresh_indexes_with_padding(seeded: tuple[str, str, Path]) -> None:
    """(int4, int8, int4, int8) and (bool, int8, bool, int8) entries need 32 bytes of data,
    not the 24 their average widths sum to: a fresh index is estimated without waste."""
    from dbopt.doctor.bloat import estimate
    from dbopt.doctor.facts import read_btree_widths

    _admin, dsn, _root = seeded
    with psycopg.connect(dsn, autocommit=True) as conn:
        oids = dict(
            conn.execute(
                "SELECT relname, oid::bigint FROM pg_class "
                "WHERE relname IN ('widths_int', 'widths_bool')"
            ).fetchall()
        )
        widths = {w.oid: w for w in read_btree_widths(conn, "dbopt")}
    for name, oid in oids.items():
        bloat = estimate(widths[oid])
        assert bloat is not None and bloat.ratio < 0.05, (name, bloat)


def test_report_html_runs_doctor_beside_verify_json(
    seeded: tuple[str, str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _admin, dsn, root = seeded
    monkeypatch.chdir(root)
    specs = ("--specs", str(root / "indexes"), "--specs", str(root / "views"))
    verified = cli("verify", "--dsn", dsn, *specs, "--format", "json", "--query", "open_today")
    assert verified.exit_code in (0, 1), verified.output
    (root / "verify.json").write_text(verified.stdout)
    page = root / "report.html"
    done = cli(
        "report",
        "--html",
        str(page),
        "--verify-json",
        str(root / "verify.json"),
        "--dsn",
        dsn,
        *specs,
    )
    assert done.exit_code == 0, done.output
    text = page.read_text()
    p95 = json.loads(verified.stdout)["queries"][0]["p95_ms"]
    assert f'data-query="open_today" data-p95="{p95:.3f}"' in text
    assert "public.orders_customer_unique is INVALID" in text
    assert "<td>public.mv_empty</td><td>NO DATA</td>" in text.replace(' class=""', "")


@pytest.mark.slow
def test_doctor_finds_no_error_on_bookedbarber_after_apply(
    conn: psycopg.Connection[Any], db_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tools.demo import load_bookedbarber

    project = Path(__file__).resolve().parent.parent
    specs = ("--specs", str(project / "indexes"), "--specs", str(project / "views"))
    load_bookedbarber(db_dsn, "0.005")
    applied = cli("apply", "--dsn", db_dsn, *specs, "--jobs", "2")
    assert applied.exit_code == 0, applied.output
    # Right after apply no index apply built warns: they had no time to be used (and a
    # fresh database's statistics were never reset on PostgreSQL 15+: their window is
    # unknown; 12-14 date a new database's statistics from its creation). The shipped
    # specs leave one foreign key served only by a partial index: that warning is real.
    # At this scale every index is under the 1 MB below which unused is info anyway: count
    # every size, so only the window decides.
    monkeypatch.setattr("dbopt.doctor.usage.UNUSED_WARN_BYTES", 0)
    result = cli("doctor", "--dsn", db_dsn, *specs, "--format", "json", "--fail-on", "warning")
    report = json.loads(result.stdout)
    assert report["summary"]["error"] == 0
    warned = {f["check"] for f in report["findings"] if f["severity"] == "warning"}
    assert warned <= {"foreign-key-without-index"}, warned
    assert result.exit_code == (1 if warned else 0), result.output
    # The window of an index apply built starts at its build (from dbopt's history).
    managed_names = {i["index"] for i in report["indexes"] if i["managed"]}
    fresh = [
        f
        for f in report["findings"]
        if f["check"] == "unused-index" and f["object"] in managed_names
    ]
    assert fresh and all("since it was built" in f["message"] for f in fresh)
    assert {f["severity"] for f in fresh} == {"info"}
    checks = {f["check"] for f in report["findings"]}
    # What apply made is neither invalid, nor a duplicate of itself, nor a stale view.
    assert not checks & {"invalid-index", "duplicate-index", "view-never-refreshed"}
    from dbopt.spec import load_specs

    shipped = load_specs([(project / "indexes", True), (project / "views", True)])
    managed = {i["index"] for i in report["indexes"] if i["managed"]}
    assert managed == {str(i.qualified_name) for i in shipped.all_indexes}
    assert all(v["populated"] for v in report["views"])
