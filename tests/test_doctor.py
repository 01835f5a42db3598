"""`dbopt doctor` on a real server: one module-scoped database seeded with one problem of each
kind (and the look-alikes that are not problems), many asserts over few doctor runs; and the
BookedBarber database after `apply`, where doctor must report no error."""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import Owner, with_user
from harness.servers import Server
from helpers import cli, write_files

pytestmark = pytest.mark.db

SEED = """
CREATE TABLE customers (id bigint PRIMARY KEY, email text NOT NULL, region text);
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customers,
                     status text NOT NULL, created_at timestamptz NOT NULL, total numeric);
CREATE TABLE order_items (order_id bigint NOT NULL REFERENCES orders, product text NOT NULL);
CREATE TABLE junk (id int);
INSERT INTO customers SELECT g, 'c' || g || '@example.com', 'r' || g % 7
  FROM generate_series(1, 2000) g;
INSERT INTO orders SELECT g, 1 + g % 2000, (ARRAY['open','paid','sent'])[1 + g % 3],
       '2024-01-01'::timestamptz + g * interval '1 minute', g % 100
  FROM generate_series(1, 20000) g;
INSERT INTO order_items SELECT 1 + g % 20000, 'p' || g % 50 FROM generate_series(1, 2000) g;
INSERT INTO junk SELECT g FROM generate_series(1, 60000) g;
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
DELETE FROM junk WHERE id > 3000;
-- views: one never populated, one overdue against a yearly schedule
CREATE MATERIALIZED VIEW mv_empty AS SELECT status, count(*) FROM orders GROUP BY 1 WITH NO DATA;
CREATE MATERIALIZED VIEW mv_yearly AS SELECT region, count(*) FROM customers GROUP BY 1;
"""

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
        # The failed build stays behind, INVALID.
        with contextlib.suppress(psycopg.errors.UniqueViolation):
            conn.execute(
                "CREATE UNIQUE INDEX CONCURRENTLY orders_customer_unique ON orders (customer_id)"
            )
        conn.execute("VACUUM ANALYZE")
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

    assert objects["invalid-index"] == ["public.orders_customer_unique"]
    invalid = found["invalid-index"][0]
    assert invalid["severity"] == "error"
    assert "not made by dbopt" in invalid["message"]
    assert 'REINDEX INDEX CONCURRENTLY "public"."orders_customer_unique";' in invalid["fix"]

    assert objects["duplicate-index"] == ["public.customers_region_copy"]
    assert found["duplicate-index"][0]["numbers"]["keep"] == "public.customers_region"
    assert (
        (found["duplicate-index"][0]["fix"])
        == 'DROP INDEX CONCURRENTLY "public"."customers_region_copy";'
    )
    # The prefix is covered by both wider ones; named once, keeping the smaller.
    assert objects["redundant-index"] == ["public.orders_created"]
    assert objects["unmanaged-duplicate"] == ["public.orders_status_created_old"]
    assert found["unmanaged-duplicate"][0]["numbers"]["keep"] == "public.orders_status_created"

    assert objects["foreign-key-without-index"] == ["public.orders.orders_customer_id_fkey"]
    fk = found["foreign-key-without-index"][0]
    assert fk["numbers"]["table_rows"] == 20000
    assert 'CREATE INDEX CONCURRENTLY ON "public"."orders" ("customer_id");' in fk["fix"]
    assert "indexes/orders.yaml" in fk["fix"]

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
    enforcing = {
        "public.customers_pkey",
        "public.orders_pkey",
        "public.customers_email_key",
        "public.orders_customer_unique",
        "public.customers_region_copy",
        "public.orders_created",
        "public.orders_status_created_old",
    }
    assert not unused & enforcing
    # Look-alikes that are not duplicates: unique, opclass, DESC, predicate, INCLUDE.
    named = {o for check, objs in objects.items() if check != "unused-index" for o in objs}
    for name in (
        "customers_email_region",
        "customers_email_pattern",
        "customers_email_desc",
        "orders_status_open",
        "orders_created_incl",
        "order_items_order",
    ):
        assert f"public.{name}" not in named
    # Ranked: errors first.
    severities = [f["severity"] for f in report["findings"]]
    assert severities == sorted(severities, key=["error", "warning", "info"].index)
    sizes = {i["index"]: i for i in report["indexes"]}
    assert sizes["public.junk_id"]["size_bytes"] > 1_000_000
    assert sizes["public.orders_status_created"]["managed"] is True
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
    results = {r["properties"]["object"]: r for r in log["runs"][0]["results"]}
    assert results["public.orders_customer_unique"]["level"] == "error"
    assert results["public.orders_customer_unique"]["locations"][0]["logicalLocations"]
    spec_loc = results["public.orders_total"]["locations"][0]["physicalLocation"]
    assert spec_loc["artifactLocation"]["uri"] == "indexes/orders.yaml"
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
    conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    from tools.demo import load_bookedbarber

    project = Path(__file__).resolve().parent.parent
    specs = ("--specs", str(project / "indexes"), "--specs", str(project / "views"))
    load_bookedbarber(db_dsn, "0.005")
    applied = cli("apply", "--dsn", db_dsn, *specs, "--jobs", "2")
    assert applied.exit_code == 0, applied.output
    result = cli("doctor", "--dsn", db_dsn, *specs, "--format", "json", "--fail-on", "error")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["summary"]["error"] == 0
    checks = {f["check"] for f in report["findings"]}
    # What apply made is neither invalid, nor a duplicate of itself, nor a stale view.
    assert not checks & {"invalid-index", "duplicate-index", "view-never-refreshed"}
    from dbopt.spec import load_specs

    shipped = load_specs([(project / "indexes", True), (project / "views", True)])
    managed = {i["index"] for i in report["indexes"] if i["managed"]}
    assert managed == {str(i.qualified_name) for i in shipped.all_indexes}
    assert all(v["populated"] for v in report["views"])
