"""dbopt on a real Citus cluster: a coordinator and two workers on loopback (tests/citus.py).

One cluster for the module; each test makes its own tables (and drops them). As on managed
Citus, there is no superuser: the tables belong to ``dbopt_owner`` (created on the coordinator,
propagated by Citus to the workers) and every dbopt command runs as it; only what needs a
superuser (the extension, the nodes, breaking a placement on purpose) runs as one.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from citus import OWNER, CitusUnavailable, Cluster, citus_cluster, drop_tables, skip_without_citus
from helpers import cli, environments, project

from dbopt.ddl import reindex_leftover_of
from dbopt.sandbox import Server
from dbopt.verify.plan import index_uses, parse_plan

SETTINGS = {"lock_timeout": "5s", "retries": 1, "retry_backoff": "10ms", "cleanup_wait": "20s"}


@pytest.fixture(scope="module")
def cluster(pg_server: Server) -> Iterator[Cluster]:
    """A coordinator and two workers for this module (skipped where the build has no Citus)."""
    skip_without_citus(pg_server)
    try:
        with citus_cluster(pg_server) as started:
            yield started
    except CitusUnavailable as err:
        pytest.skip(str(err))


@pytest.fixture
def shop(cluster: Cluster) -> Iterator[Cluster]:
    """orders, hash-distributed on tenant_id (4 shards on 2 workers), plans, a reference
    table, and notes, a plain table of the coordinator's own, all made by ``OWNER`` (not a
    superuser); all dropped afterwards."""
    cluster.run(
        "CREATE TABLE orders (tenant_id int NOT NULL, id int NOT NULL, code int NOT NULL, "
        "status text NOT NULL, PRIMARY KEY (tenant_id, id))"
    )
    cluster.run("SELECT create_distributed_table('orders', 'tenant_id')")
    cluster.run(
        "INSERT INTO orders SELECT g % 40, g, g, (ARRAY['new','paid','shipped'])[1 + g % 3] "
        "FROM generate_series(1, 20000) g"
    )
    cluster.run("CREATE TABLE plans (id int PRIMARY KEY, name text NOT NULL, price int)")
    cluster.run("SELECT create_reference_table('plans')")
    cluster.run("INSERT INTO plans SELECT g, 'plan ' || g, g % 97 FROM generate_series(1, 5000) g")
    cluster.run("CREATE TABLE notes (id int PRIMARY KEY, body text, author int)")
    cluster.run("INSERT INTO notes SELECT g, 'note', g % 300 FROM generate_series(1, 5000) g")
    cluster.run("ANALYZE orders")
    cluster.run("ANALYZE plans")
    cluster.run("ANALYZE notes")
    try:
        yield cluster
    finally:
        drop_tables(cluster, "mv_paid", "orders", "plans", "notes", "clustered")
        cluster.run("DROP SCHEMA IF EXISTS dbopt CASCADE")


ORDERS = """\
    table: orders
    indexes:
      - {name: orders_code, columns: [code]}
    queries:
      - name: order_by_code
        sql: SELECT id, status FROM orders WHERE code = 4242
        budget_ms: 500
        runs: 3
        warmup: 1
        expect:
          uses_index: [orders_code]
          no_seq_scan_on: [orders]
    """
PLANS = """\
    table: plans
    indexes:
      - {name: plans_price, columns: [price]}
    """
NOTES = """\
    table: notes
    indexes:
      - {name: notes_author, columns: [author]}
    """


def _project(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    dsn: str,
    settings: dict[str, Any] | None = None,
    **specs: str,
) -> Path:
    """A project with exactly these spec files (earlier ones removed) and a `test` env (with
    ``settings`` over the module's)."""
    shutil.rmtree(tmp_path / "indexes", ignore_errors=True)
    files = {f"indexes/{name}.yaml": text for name, text in specs.items()}
    files["dbopt.yaml"] = environments(test={"dsn": dsn, **SETTINGS, **(settings or {})})
    return project(tmp_path, monkeypatch, files)


def _json(output: str) -> str:
    """The JSON document of a command's output (CliRunner mixes in what went to stderr)."""
    return output[output.index("{") :]


def _placements(cluster: Cluster, index: str) -> list[tuple[str, bool]]:
    """Every shard copy of ``index`` on the workers (name, valid), read on the workers."""
    rows = cluster.on_workers(
        "SELECT c.relname::text, i.indisvalid FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid "
        f"WHERE c.relname ~ '^{index}_[0-9]+$' ORDER BY 1"
    )
    return sorted(r for node in rows for r in node)


def _invalid_anywhere(cluster: Cluster) -> list[str]:
    """INVALID indexes on the coordinator and on every worker."""
    query = "SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid"
    found = [f"coordinator: {r[0]}" for r in cluster.run(query)]
    for port, rows in zip(cluster.ports(), cluster.on_workers(query), strict=True):
        found += [f"worker {port}: {r[0]}" for r in rows]
    return found


def _shard_sizes(cluster: Cluster, index: str) -> int:
    """The size of ``index`` summed over its shards, read on the workers themselves."""
    rows = cluster.on_workers(
        "SELECT coalesce(sum(pg_relation_size(c.oid)), 0)::bigint FROM pg_class c "
        f"WHERE c.relkind = 'i' AND c.relname ~ '^{index}_[0-9]+$'"
    )
    return sum(int(node[0][0]) for node in rows)


@pytest.mark.slow
def test_apply_status_verify_rollback_on_distributed_reference_and_local_tables(
    shop: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # dbopt runs as a role that is no superuser, on every node (Citus propagated it), and
    # owns the tables and their shards.
    me = "SELECT rolname::text, rolsuper FROM pg_roles WHERE rolname = current_user"
    assert shop.run(me) == [(OWNER, False)]
    assert shop.on_workers(
        "SELECT r.rolsuper, pg_get_userbyid(d.datdba)::text FROM pg_roles r, pg_database d "
        f"WHERE r.rolname = '{OWNER}' AND d.datname = current_database()"
    ) == [[(False, OWNER)], [(False, OWNER)]]
    assert shop.on_workers(
        "SELECT DISTINCT tableowner::text FROM pg_tables WHERE tablename ~ '^orders_[0-9]+$'"
    ) == [[(OWNER,)], [(OWNER,)]]
    _project(tmp_path, monkeypatch, shop.dsn, orders=ORDERS, plans=PLANS, notes=NOTES)
    planned = cli("plan", "--env", "test")
    assert planned.exit_code == 0, planned.output
    applied = cli("apply", "--env", "test")
    assert applied.exit_code == 0, applied.output

    # Every shard placement has the index, valid: 4 shards of orders; plans is a reference
    # table (one shard, a placement on each worker and on the coordinator).
    assert _placements(shop, "orders_code") == [(f"orders_code_{s}", True) for s in _shards(shop)]
    assert [v for _, v in _placements(shop, "plans_price")] == [True, True]
    assert _invalid_anywhere(shop) == []
    again = cli("plan", "--env", "test", "--format", "json")
    assert again.exit_code == 0, again.output
    assert all(a["action"] == "skip" for a in json.loads(_json(again.output))["actions"]), (
        again.output
    )

    # status: each index's size summed over its shards, as Citus counts it.
    status = cli("status", "--env", "test", "--format", "json")
    assert status.exit_code == 0, status.output
    rows = {r["index"]: r for r in json.loads(_json(status.output))["managed"]}
    coordinator_shell = shop.run("SELECT pg_relation_size('orders_code')")[0][0]
    assert rows["public.orders_code"]["size_bytes"] == _shard_sizes(shop, "orders_code")
    assert (
        rows["public.orders_code"]["size_bytes"]
        == shop.run("SELECT citus_relation_size('orders_code')")[0][0]
    )
    assert rows["public.orders_code"]["size_bytes"] > 10 * coordinator_shell
    # A reference table's index on every placement: the workers' and the coordinator's.
    assert (
        rows["public.plans_price"]["size_bytes"]
        == shop.run("SELECT citus_relation_size('plans_price')")[0][0]
    )
    local = shop.run("SELECT pg_relation_size('notes_author')")[0][0]
    assert rows["public.notes_author"]["size_bytes"] == local
    assert all(r["state"] == "ok" for r in rows.values()), rows

    # verify sees the index inside every task's plan (explain_all_tasks).
    verified = cli("verify", "--env", "test", "--format", "json")
    assert verified.exit_code == 0, verified.output
    query = json.loads(_json(verified.output))["queries"][0]
    assert query["status"] == "pass", query
    assert query["indexes"] == ["orders_code"]
    assert len([s for s in query["scans"] if "orders_code" in s]) == 4, query["scans"]
    assert any(" in shard " in s for s in query["scans"]), query["scans"]
    # The scans count on the workers: status sums them over the shards.
    status = cli("status", "--env", "test", "--format", "json")
    rows = {r["index"]: r for r in json.loads(_json(status.output))["managed"]}
    assert rows["public.orders_code"]["scans"] >= 4

    rolled = cli("rollback", "--env", "test", "--last", "--yes")
    assert rolled.exit_code == 0, rolled.output
    assert shop.run("SELECT to_regclass('orders_code'), to_regclass('plans_price')") == [
        (None, None)
    ]
    assert _placements(shop, "orders_code") == []
    assert _placements(shop, "plans_price") == []
    assert shop.run("SELECT to_regclass('notes_author')") == [(None,)]


def _shards(cluster: Cluster, table: str = "orders") -> list[int]:
    rows = cluster.run(
        "SELECT shardid FROM pg_dist_shard WHERE logicalrelid = %s::regclass ORDER BY 1", (table,)
    )
    return [int(r[0]) for r in rows]


@pytest.mark.slow
def test_verify_names_the_shard_of_a_sequential_scan(
    shop: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No index yet: each shard scans its part of orders sequentially.
    _project(tmp_path, monkeypatch, shop.dsn, orders=ORDERS)
    verified = cli("verify", "--env", "test", "--format", "json")
    assert verified.exit_code == 1, verified.output
    query = json.loads(_json(verified.output))["queries"][0]
    kinds = {f["kind"] for f in query["findings"]}
    assert {"uses_index", "no_seq_scan_on"} <= kinds, query["findings"]
    assert query["culprit"].startswith("Seq Scan on public.orders in shard "), query["culprit"]
    port = query["culprit"].rsplit(":", 1)[1]
    assert int(port) in shop.ports()
    shard = int(query["culprit"].split(" in shard ")[1].split()[0])
    assert shard in _shards(shop)
    # Buffers and cost: the coordinator's node counts none of the shards' work, so those
    # budgets fail as not judgeable; rows examined counts every task's scans.
    _project(
        tmp_path,
        monkeypatch,
        shop.dsn,
        orders=ORDERS.replace(
            "        budget_ms: 500\n",
            "        budget_ms: 500\n        max_buffers: 5\n        max_cost: 5\n"
            "        max_rows_examined: 5\n",
        ),
    )
    judged = json.loads(_json(cli("verify", "--env", "test", "--format", "json").output))
    found = {f["kind"]: f for f in judged["queries"][0]["findings"]}
    for kind in ("max_buffers", "max_cost"):
        assert found[kind]["status"] == "fail"
        assert "cannot be judged on a distributed (Citus) plan" in found[kind]["message"]
    assert found["max_rows_examined"]["status"] == "fail"
    assert "rows examined" in found["max_rows_examined"]["message"]


@pytest.mark.slow
def test_a_unique_index_that_fails_on_one_shard_leaves_nothing_invalid(
    shop: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two rows of tenant 7 with the same code: they live in the same shard, so the unique
    # index (tenant_id, code) fails there and only there.
    shop.run("INSERT INTO orders VALUES (7, 900001, 1, 'new'), (7, 900002, 1, 'new')")
    bad_shard = shop.run("SELECT get_shard_id_for_distribution_column('orders', 7)")[0][0]
    spec = """\
        table: orders
        indexes:
          - {name: orders_tenant_code, columns: [tenant_id, code], unique: true}
        """
    _project(tmp_path, monkeypatch, shop.dsn, orders=spec)
    applied = cli("apply", "--env", "test")
    assert applied.exit_code != 0, applied.output
    out = applied.output
    assert "could not create unique index" in out, out
    assert f"orders_tenant_code_{bad_shard}" in out, out
    assert f"INVALID on shard {bad_shard} on 127.0.0.1:" in out, out
    assert "dropped the INVALID index public.orders_tenant_code" in out, out
    # Nothing INVALID is left anywhere: not on the coordinator, not on any placement.
    assert _invalid_anywhere(shop) == []
    assert shop.run("SELECT to_regclass('orders_tenant_code')") == [(None,)]
    assert _placements(shop, "orders_tenant_code") == []

    # Once the duplicate is gone, the same apply builds it on every shard.
    shop.run("DELETE FROM orders WHERE id = 900002")
    again = cli("apply", "--env", "test")
    assert again.exit_code == 0, again.output
    assert [v for _, v in _placements(shop, "orders_tenant_code")] == [True] * 4


def _plan_json(*args: str) -> list[dict[str, Any]]:
    """The actions of ``dbopt plan --format json`` (it must succeed)."""
    planned = cli("plan", "--env", "test", "--format", "json", *args)
    assert planned.exit_code == 0, planned.output
    actions: list[dict[str, Any]] = json.loads(_json(planned.output))["actions"]
    return actions


def _state(*, exit_code: int = 0) -> dict[str, Any]:
    """The first managed index of ``dbopt status --exit-code`` (with that exit code)."""
    status = cli("status", "--env", "test", "--format", "json", "--exit-code")
    assert status.exit_code == exit_code, status.output
    row: dict[str, Any] = json.loads(_json(status.output))["managed"][0]
    return row


def _hold(dsn: str, statement: str, *, seconds: float = 60.0) -> Callable[[], None]:
    """Run ``statement`` in a transaction kept open (by a thread) for ``seconds`` or until the
    returned function is called, which waits for it to end; returns once it has run."""
    ran = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with psycopg.connect(dsn) as conn:  # a transaction, committed at the end
            conn.execute("SET citus.show_shards_for_app_name_prefixes = '*'")
            conn.execute(statement)  # type: ignore[arg-type]
            ran.set()
            release.wait(seconds)

    thread = threading.Thread(target=hold)
    thread.start()
    assert ran.wait(10)

    def end() -> None:
        release.set()
        thread.join()

    return end


def _invalidate(shard_index: str) -> str:
    """The statement that marks an index INVALID (as a failed REINDEX leaves it): superuser."""
    return f"UPDATE pg_index SET indisvalid = false WHERE indexrelid = to_regclass('{shard_index}')"


@pytest.mark.slow
def test_an_invalid_index_on_the_shards_is_reported_and_repaired(
    shop: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = """\
        table: orders
        indexes:
          - {name: orders_tc, columns: [tenant_id, code], unique: true}
        """
    _project(tmp_path, monkeypatch, shop.dsn, orders=spec)
    assert cli("apply", "--env", "test").exit_code == 0
    # One shard's copy goes INVALID (as a failed REINDEX there leaves it): the coordinator's
    # index still looks fine, status reads the placements and says which one is not.
    shard = _shards(shop)[1]
    shop.on_workers(_invalidate(f"orders_tc_{shard}"))
    row = _state(exit_code=1)
    assert row["state"].startswith(f"ok, but INVALID on shard {shard} on 127.0.0.1:"), row
    assert row["valid"] is False

    # plan names the shard and repairs it as Citus does: REINDEX INDEX CONCURRENTLY on the
    # coordinator, which Citus runs on every placement; apply leaves every placement valid.
    (repair,) = _plan_json()
    assert repair["action"] == "repair", repair
    assert f"INVALID on shard {shard} on 127.0.0.1:" in repair["reason"], repair
    assert repair["sql"] == ['REINDEX INDEX CONCURRENTLY "public"."orders_tc";'], repair
    before = shop.run("SELECT 'orders_tc'::regclass::oid")[0][0]
    applied = cli("apply", "--env", "test")
    assert applied.exit_code == 0, applied.output
    assert _placements(shop, "orders_tc") == [(f"orders_tc_{s}", True) for s in _shards(shop)]
    assert _invalid_anywhere(shop) == []
    row = _state()
    assert (row["state"], row["valid"], row["created_by"]) == ("ok", True, "dbopt"), row
    # REINDEX CONCURRENTLY swapped in a new index (a new OID): still dbopt's, nothing to do.
    assert shop.run("SELECT 'orders_tc'::regclass::oid")[0][0] != before
    assert [a["action"] for a in _plan_json()] == ["skip"]
    # Rolling that run back leaves the index: it worked before the run, which only rebuilt it.
    undo = cli("rollback", "--env", "test", "--last", "--yes")
    assert "a repair has no way back" in undo.output, undo.output
    assert _placements(shop, "orders_tc") == [(f"orders_tc_{s}", True) for s in _shards(shop)]

    # A REINDEX that fails on a shard (rows came in while its copy was not maintained) fails
    # naming the shard. The coordinator's part had already swapped in a new index (a new
    # OID): it stays dbopt's. PostgreSQL leaves the shard's half-built <index>_ccnew behind
    # (and so may the tasks Citus cancelled on other shards): dbopt drops them on their nodes.
    shop.on_workers(
        _invalidate(f"orders_tc_{shard}").replace("= false", "= false, indisready = false")
    )
    tenant = shop.run(
        "SELECT t FROM generate_series(0, 39) t "
        "WHERE get_shard_id_for_distribution_column('orders', t) = %s LIMIT 1",
        (shard,),
    )[0][0]
    shop.run(
        "INSERT INTO orders VALUES (%s, 900001, -1, 'new'), (%s, 900002, -1, 'new')",
        (tenant, tenant),
    )
    failed = cli("apply", "--env", "test")
    assert failed.exit_code == 1, failed.output
    said = " ".join(failed.output.split())
    assert f'could not create unique index "orders_tc_{shard}_ccnew"' in said, said
    assert f"(on the shards: INVALID on shard {shard} on 127.0.0.1:" in said, said
    dropped = rf"the INVALID index public\.orders_tc_{shard}_ccnew on shard {shard} on [0-9.:]+ "
    assert re.search(dropped + "was dropped", said), said
    assert "could NOT be dropped" not in said, said
    # Nothing INVALID is left but the shard's own copy the REINDEX could not repair.
    assert [x.split(": ")[1] for x in _invalid_anywhere(shop)] == [f"orders_tc_{shard}"]
    assert _state(exit_code=1)["created_by"] == "dbopt"

    # A leftover that cannot be dropped within cleanup_wait (a transaction on its worker still
    # reads the shard) is named, with the statement that drops it and where; the run fails.
    worker = shop.worker_of(shard)
    reader = _hold(worker, f"SELECT count(*) FROM orders_{shard}")
    _project(tmp_path, monkeypatch, shop.dsn, orders=spec, settings={"cleanup_wait": "1s"})
    failed = cli("apply", "--env", "test")
    reader()
    assert failed.exit_code == 1, failed.output
    said = " ".join(failed.output.split())
    assert re.search(dropped + "could NOT be dropped: not done within", said), said
    by_hand = re.search(
        r'drop it by hand on ([0-9.]+):([0-9]+): (DROP INDEX [^"]+"[^"]+"\."[^"]+")', said
    )
    assert by_hand is not None, said
    assert f":{by_hand[2]}/" in worker, (by_hand[0], worker)
    assert by_hand[3] == f'DROP INDEX CONCURRENTLY IF EXISTS "public"."orders_tc_{shard}_ccnew"'
    assert re.search(r"Run [0-9]+ \(apply\): failed", said), said
    shop.on_worker(worker, by_hand[3])
    assert [x.split(": ")[1] for x in _invalid_anywhere(shop)] == [f"orders_tc_{shard}"]
    _project(tmp_path, monkeypatch, shop.dsn, orders=spec)
    shop.run("DELETE FROM orders WHERE id = 900002")
    applied = cli("apply", "--env", "test")
    assert applied.exit_code == 0, applied.output
    assert _placements(shop, "orders_tc") == [(f"orders_tc_{s}", True) for s in _shards(shop)]
    assert _invalid_anywhere(shop) == []

    # A REINDEX whose coordinator part waited build_wait_timeout (a writer's transaction on
    # the coordinator) leaves its <index>_ccnew there: dbopt drops it (guarded, once that
    # transaction has ended) before trying again, and the retry leaves nothing INVALID.
    shop.on_workers(_invalidate(f"orders_tc_{shard}"))
    writer = _hold(shop.dsn, "LOCK TABLE orders IN ROW EXCLUSIVE MODE", seconds=2.0)
    applied = cli("apply", "--env", "test", "--build-wait-timeout", "1s")
    writer()
    assert applied.exit_code == 0, applied.output
    said = " ".join(applied.output.split())
    assert "dropped the INVALID index public.orders_tc_ccnew the stopped REINDEX left" in said
    assert _invalid_anywhere(shop) == []

    # A shard that lost its copy cannot be reindexed (Citus's task for it fails): dropped
    # concurrently on every shard (IF EXISTS) and built again.
    shop.on_workers(
        f"SET citus.enable_manual_changes_to_shards = on; DROP INDEX IF EXISTS orders_tc_{shard}"
    )
    (repair,) = _plan_json()
    assert f"missing on shard {shard} on 127.0.0.1:" in repair["reason"], repair
    assert [s.split()[:2] for s in repair["sql"]] == [["DROP", "INDEX"], ["CREATE", "UNIQUE"]]
    applied = cli("apply", "--env", "test")
    assert applied.exit_code == 0, applied.output
    assert _placements(shop, "orders_tc") == [(f"orders_tc_{s}", True) for s in _shards(shop)]
    assert _state()["created_by"] == "dbopt"
    assert [a["action"] for a in _plan_json()] == ["skip"]

    # A build that failed on a shard: Citus leaves the coordinator's index INVALID too
    # (PostprocessIndexStmt marks it so before the shards are built). dbopt's own index is
    # repaired as Citus's hint says: DROP INDEX CONCURRENTLY (on every shard), build again.
    shop.run(_invalidate("orders_tc"), admin=True)
    assert _state(exit_code=1)["state"] == "invalid"
    applied = cli("apply", "--env", "test")
    assert applied.exit_code == 0, applied.output
    assert _invalid_anywhere(shop) == []
    assert [v for _, v in _placements(shop, "orders_tc")] == [True] * 4

    # An index dbopt did not make is never rebuilt, on the shards either: refused, with the
    # statement that repairs it.
    shop.run("CREATE INDEX CONCURRENTLY orders_hand ON orders (status)")
    shop.on_workers(_invalidate(f"orders_hand_{shard}"))
    hand = spec.replace(
        "{name: orders_tc, columns: [tenant_id, code], unique: true}",
        "{name: orders_hand, columns: [status]}",
    )
    _project(tmp_path, monkeypatch, shop.dsn, orders=hand)
    refused = cli("apply", "--env", "test")
    assert refused.exit_code == 2, refused.output
    said = " ".join(refused.output.split())
    assert f"INVALID on shard {shard} on 127.0.0.1:" in said, said
    assert 'REINDEX INDEX CONCURRENTLY "public"."orders_hand"' in said, said
    assert [v for _, v in _placements(shop, "orders_hand")].count(False) == 1
    shop.run('REINDEX INDEX CONCURRENTLY "public"."orders_hand"')
    assert _invalid_anywhere(shop) == []

    # Another session's failed build is never dbopt's to drop: refused, with the statement
    # that repairs it; on Citus that statement clears every shard too.
    with pytest.raises(psycopg.errors.UniqueViolation):
        shop.run("CREATE UNIQUE INDEX CONCURRENTLY orders_ts ON orders (tenant_id, status)")
    assert "coordinator: orders_ts" in _invalid_anywhere(shop)
    spec_ts = spec.replace(
        "{name: orders_tc, columns: [tenant_id, code]",
        "{name: orders_ts, columns: [tenant_id, status]",
    )
    _project(tmp_path, monkeypatch, shop.dsn, orders=spec_ts)
    refused = cli("apply", "--env", "test")
    assert refused.exit_code == 2, refused.output
    assert 'DROP INDEX CONCURRENTLY IF EXISTS "public"."orders_ts"' in refused.output
    # IF EXISTS: without it the drop fails on any shard the failed build never reached.
    shop.run("DROP INDEX CONCURRENTLY IF EXISTS public.orders_ts")
    assert _invalid_anywhere(shop) == []
    assert _placements(shop, "orders_ts") == []


@pytest.mark.slow
def test_a_replace_on_a_distributed_table_swaps_every_shard(
    shop: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _project(tmp_path, monkeypatch, shop.dsn, orders=ORDERS)
    assert cli("apply", "--env", "test").exit_code == 0
    before = shop.run("SELECT 'orders_code'::regclass::oid")[0][0]
    _project(tmp_path, monkeypatch, shop.dsn, orders=ORDERS.replace("[code]", "[code, status]"))
    replaced = cli("apply", "--env", "test", "--replace-drifted")
    assert replaced.exit_code == 0, replaced.output
    assert shop.run("SELECT 'orders_code'::regclass::oid")[0][0] != before
    # Citus renamed every shard's copy with the coordinator's: nothing left under dbopt's
    # temporary names, and each shard's orders_code is the new definition, valid.
    assert _placements(shop, "orders_code") == [(f"orders_code_{s}", True) for s in _shards(shop)]
    leftovers = shop.on_workers(
        "SELECT relname FROM pg_class WHERE relname LIKE '%dbopt\\_new%' "
        "OR relname LIKE '%dbopt\\_old%'"
    )
    assert leftovers == [[], []]
    defs = shop.on_workers(
        "SELECT pg_get_indexdef(indexrelid) FROM pg_index "
        "WHERE indexrelid::regclass::text ~ '^orders_code_[0-9]+$'"
    )
    assert all("(code, status)" in d for node in defs for (d,) in node), defs
    assert _invalid_anywhere(shop) == []


@pytest.mark.slow
def test_what_citus_refuses_is_refused_before_anything_runs(
    shop: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = """\
        table: orders
        indexes:
          - {name: orders_code_unique, columns: [code], unique: true}
        """
    _project(tmp_path, monkeypatch, shop.dsn, orders=spec)
    for command in ("plan", "apply"):
        result = cli(command, "--env", "test")
        assert result.exit_code == 2, result.output
        assert (
            "indexes/orders.yaml:3:5: unique index orders_code_unique does not include "
            "public.orders's distribution column tenant_id as a key column: Citus refuses it"
        ) in result.output, result.output
    assert shop.run("SELECT to_regclass('orders_code_unique')") == [(None,)]
    # On a reference table (no distribution column) a unique index is fine.
    plans = """\
        table: plans
        indexes:
          - {name: plans_name, columns: [name], unique: true}
        """
    _project(tmp_path, monkeypatch, shop.dsn, plans=plans)
    assert cli("apply", "--env", "test").exit_code == 0

    # A table CLUSTERed before it was distributed keeps the mark, and Citus refuses ALTER
    # TABLE ... CLUSTER ON: a replace could not carry it over, so it is refused up front.
    shop.run("CREATE TABLE clustered (tenant_id int, v int)")
    shop.run("CREATE INDEX clustered_v ON clustered (v)")
    shop.run("ALTER TABLE clustered CLUSTER ON clustered_v")
    shop.run("SELECT create_distributed_table('clustered', 'tenant_id')")
    drifted = """\
        table: clustered
        indexes:
          - {name: clustered_v, columns: [v, tenant_id]}
        """
    _project(tmp_path, monkeypatch, shop.dsn, clustered=drifted)
    result = cli("apply", "--env", "test", "--replace-drifted")
    assert result.exit_code == 2, result.output
    assert (
        "public.clustered is CLUSTERed on index public.clustered_v, which its replacement "
        "would keep, and Citus refuses ALTER TABLE ... CLUSTER ON on the distributed table "
        "public.clustered"
    ) in " ".join(result.output.split()), result.output
    assert "(v, tenant_id)" not in shop.run("SELECT pg_get_indexdef('clustered_v'::regclass)")[0][0]


@pytest.mark.slow
def test_a_materialized_view_over_a_distributed_table_stays_on_the_coordinator(
    shop: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    view = """\
        name: mv_paid
        query: SELECT tenant_id, count(*) AS n FROM orders WHERE status = 'paid' GROUP BY tenant_id
        indexes:
          - {name: mv_paid_tenant, columns: [tenant_id], unique: true}
        """
    files = {"views/mv_paid.yaml": view, "dbopt.yaml": environments(test={"dsn": shop.dsn})}
    project(tmp_path, monkeypatch, files)
    applied = cli("apply", "--env", "test")
    assert applied.exit_code == 0, applied.output
    # A plain materialized view of the coordinator: Citus does not distribute it.
    assert shop.run(
        "SELECT count(*) FROM pg_dist_partition WHERE logicalrelid = 'mv_paid'::regclass"
    ) == [(0,)]
    assert (
        shop.run("SELECT sum(n) FROM mv_paid")[0][0]
        == shop.run("SELECT count(*) FROM orders WHERE status = 'paid'")[0][0]
    )
    shop.run("INSERT INTO orders VALUES (3, 900021, 77, 'paid')")
    refreshed = cli("refresh-views", "--env", "test")
    assert refreshed.exit_code == 0, refreshed.output
    assert (
        shop.run("SELECT sum(n) FROM mv_paid")[0][0]
        == shop.run("SELECT count(*) FROM orders WHERE status = 'paid'")[0][0]
    )
    status = cli("status", "--env", "test", "--format", "json")
    views = json.loads(_json(status.output))["views"]
    assert views[0]["state"] == "ok" and views[0]["populated"] is True, views


def test_task_plans_are_children_of_the_distributed_scan() -> None:
    """The shape Citus 13 gives EXPLAIN (FORMAT JSON) with citus.explain_all_tasks (unit)."""

    def task(shard: int, port: int, node: dict[str, Any]) -> dict[str, Any]:
        return {
            "Node": f"host=10.0.0.1 port={port} dbname=app",
            "Remote Plan": [[{"Plan": node, "Planning Time": 0.1, "Execution Time": 0.2}]],
        }

    def bitmap(shard: int) -> dict[str, Any]:
        return {
            "Node Type": "Bitmap Heap Scan",
            "Relation Name": f"orders_{shard}",
            "Schema": "app",
            "Plans": [{"Node Type": "Bitmap Index Scan", "Index Name": f"orders_code_{shard}"}],
        }

    def seq(shard: int) -> dict[str, Any]:
        return {"Node Type": "Seq Scan", "Relation Name": f"orders_{shard}", "Schema": "app"}

    raw = {
        "Node Type": "Custom Scan",
        "Custom Plan Provider": "Citus Adaptive",
        "Distributed Query": {
            "Job": {
                "Task Count": 2,
                "Tasks Shown": "All",
                "Tasks": [
                    task(102008, 5433, bitmap(102008)),
                    task(
                        102009,
                        5434,
                        {
                            "Node Type": "Seq Scan",
                            "Relation Name": "orders_102009",
                            "Schema": "app",
                        },
                    ),
                ],
            }
        },
    }
    plan = parse_plan(raw)
    labels = [n.label for n in plan.walk()]
    assert labels == [
        "Custom Scan",
        "Bitmap Heap Scan on app.orders in shard 102008 on 10.0.0.1:5433",
        "Bitmap Index Scan using orders_code in shard 102008 on 10.0.0.1:5433",
        "Seq Scan on app.orders in shard 102009 on 10.0.0.1:5434",
    ]
    assert [str(u.index) for u in index_uses(plan)] == ["app.orders_code"]


def test_reindex_leftovers_are_told_by_the_names_postgresql_gives_them() -> None:
    """ChooseRelationName's names for a REINDEX CONCURRENTLY's copies (unit): the index's name
    clipped to 63 bytes with the suffix (at a character's edge), a number when taken. The long
    multibyte case is what PostgreSQL 15 named them (tried)."""
    assert reindex_leftover_of("orders_tc_ccnew", "orders_tc")
    assert reindex_leftover_of("orders_tc_102009_ccnew12", "orders_tc_102009")
    assert reindex_leftover_of("orders_tc_102009_ccold", "orders_tc_102009")
    assert not reindex_leftover_of("orders_tc_102009_ccnew", "orders_tc")
    assert not reindex_leftover_of("orders_tcx_ccnew", "orders_tc")
    assert not reindex_leftover_of("orders_tc_ccnewer", "orders_tc")
    assert not reindex_leftover_of("orders_tc", "orders_tc")
    long = "ä" * 25 + "x" * 13  # 63 bytes
    assert reindex_leftover_of("ä" * 25 + "x" * 7 + "_ccnew", long)
    assert reindex_leftover_of("ä" * 25 + "x" * 6 + "_ccnew1", long)
    assert not reindex_leftover_of("ä" * 25 + "x" * 6 + "_ccnew", long)
    assert reindex_leftover_of("ä" * 28 + "_ccnew", "ä" * 31)  # no half a character
