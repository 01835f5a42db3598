"""Plan stability: verify flags a uses_index plan that an alternative without the expected
index comes within the plan margin of, and changes nothing while it looks.

With HypoPG 1.4+ (hypopg_hide_index) the expected index is hidden in this backend only; the
tests that need it skip, in the matrix's one allowed way, on builds that lack it or carry an
older HypoPG (Debian bookworm's is 1.3.1). Without it verify falls back to costing the best
plan with no index at all, which those tests check on every major.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import Result
from helpers import cli, server_label, skip_without_extension, write_specs

from dbopt.config import Settings
from dbopt.errors import SpecError
from dbopt.model import Expectation, Location, QueryBudget, SpecSet
from dbopt.spec import load_specs
from dbopt.verify import FindingKind, QueryResult, Stability, Status, run_verify
from dbopt.verify.fragility import Method

AT = Location("indexes/t.yaml", 1, 1)

#: Two near-equal indexes: (a) and (a, b) serve ``a = 42`` at almost the same cost.
PAIR = [
    "CREATE TABLE t (a int, b int, c text)",
    "INSERT INTO t SELECT g % 5000, g, repeat('x', 50) FROM generate_series(1, 200000) g",
    "CREATE INDEX t_a ON t (a)",
    "CREATE INDEX t_ab ON t (a, b)",
    # A clear winner: the only other way to find one key of 200,000 is to read them all.
    "CREATE TABLE big (k int PRIMARY KEY, v text)",
    "INSERT INTO big SELECT g, 'v' FROM generate_series(1, 200000) g",
    # One index, and a range that reads 3 % of the table: its bitmap scan costs about half
    # a seq scan (a margin of 3 calls that fragile, the default 1.1 does not).
    "CREATE TABLE u (a int, pad text)",
    "INSERT INTO u SELECT g % 10000, repeat('x', 50) FROM generate_series(1, 100000) g",
    "CREATE INDEX u_a ON u (a)",
    "ANALYZE",
]


def budget(
    name: str, query: str, relation: str, index: str, margin: float | None = None
) -> QueryBudget:
    return QueryBudget(
        name=name,
        sql=query,
        budget_ms=10_000,
        location=AT,
        relation=relation,
        runs=1,
        warmup=0,
        expect=Expectation(uses_index=(index,), plan_margin=margin),
    )


NEAR_SQL = "SELECT * FROM t WHERE a = 42"
CLEAR = budget("clear", "SELECT * FROM big WHERE k = 42", "public.big", "big_pkey")
RANGE = budget("range", "SELECT * FROM u WHERE a < 300", "public.u", "u_a")


@pytest.fixture
def pair(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    for statement in PAIR:
        conn.execute(statement)
    return conn


def hide_capable(conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]) -> str:
    """Create HypoPG (as the superuser: it is not trusted) when the server's can hide an
    index; skip, naming what is missing, when it cannot."""
    row = conn.execute(
        "SELECT default_version FROM pg_available_extensions WHERE name = 'hypopg'"
    ).fetchone()
    version = str(row[0]) if row else None
    if version is None or tuple(int(p) for p in version.split(".")[:2]) < (1, 4):
        has = f"has {version}" if version else "lacks it"
        pytest.skip(
            f"needs the hypopg extension at 1.4+ (hypopg_hide_index), which "
            f"{server_label(conn)} here {has} (HypoPG 1.4+ built for this server)"
        )
    admin_conn.execute("CREATE EXTENSION hypopg")
    return version


def near_pair(conn: psycopg.Connection[Any]) -> tuple[QueryBudget, str, str]:
    """The near-equal budget, expecting the index of the pair the planner takes (its
    tie-break: t_a from PostgreSQL 13 on, whose deduplication makes it smaller; t_ab on 12),
    and the other one."""
    plan = " ".join(row[0] for row in conn.execute(f"EXPLAIN {NEAR_SQL}").fetchall()) + " "
    chosen, other = ("t_ab", "t_a") if "t_ab " in plan else ("t_a", "t_ab")
    return budget("near", NEAR_SQL, "public.t", chosen), chosen, other


def verify_one(conn: psycopg.Connection[Any], *budgets: QueryBudget) -> list[QueryResult]:
    return list(run_verify(conn, SpecSet(index_queries=budgets), Settings()).results)


def catalog_state(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """The indexes of the test tables as the catalog holds them (xmin: any write shows)."""
    return conn.execute(
        "SELECT indexrelid::regclass::text, xmin::text, indisvalid, indisready, indislive "
        "FROM pg_index WHERE indrelid IN ('t'::regclass, 'big'::regclass, 'u'::regclass) "
        "ORDER BY 1"
    ).fetchall()


def run(*args: str) -> Result:
    return cli("verify", *args)


# --- with HypoPG 1.4+: the expected index hidden in this backend ---------------------------


def test_near_equal_indexes_are_fragile_and_nothing_changes(
    pair: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    hide_capable(pair, admin_conn)
    before = catalog_state(pair)
    # An index the caller hid is theirs: verify leaves it hidden.
    pair.execute("SELECT hypopg_hide_index('u_a'::regclass)")
    near_budget, chosen, other = near_pair(pair)
    near, clear = verify_one(pair, near_budget, CLEAR)

    s = near.stability
    assert s is not None and s.stability == Stability.FRAGILE, near.verdict.findings
    assert s.method == Method.HIDE_INDEX
    assert s.ratio is not None and 1.0 <= s.ratio < 1.10
    assert s.alternative_cost is not None and s.chosen_cost > 0
    assert f"using {other}" in s.instead
    (finding,) = [f for f in near.verdict.findings if f.kind == FindingKind.FRAGILE]
    assert finding.status == Status.WARN and near.verdict.status == Status.WARN
    assert f"costs {s.alternative_cost:,.2f}, {s.ratio:.3f}x the chosen plan's " in finding.message
    assert f"{s.chosen_cost:,.2f} (plan_margin 1.1)" in finding.message
    assert (
        f"fragile plan: the best plan without {chosen} (Bitmap Index Scan using {other}"
        in finding.message
        or f"fragile plan: the best plan without {chosen} (Index Scan using {other}"
        in finding.message
    )

    c = clear.stability
    assert c is not None and c.stability == Stability.STABLE, clear.verdict.findings
    assert c.ratio is not None and c.ratio > 100
    assert "Seq Scan on public.big" in c.instead
    assert clear.verdict.status == Status.PASS
    assert any(f.message.startswith("stable plan: ") for f in clear.verdict.findings)

    # Undone: this session's planner sees the expected index again, the caller's hidden
    # index stays hidden, and the catalog is as it was.
    hidden = pair.execute("SELECT indexid::regclass::text FROM hypopg_hidden_indexes()")
    assert hidden.fetchall() == [("u_a",)]
    plan = pair.execute("EXPLAIN SELECT * FROM t WHERE a = 42").fetchall()
    assert f"{chosen} " in " ".join(r[0] for r in plan) + " "
    pair.execute("SELECT hypopg_unhide_all_indexes()")
    assert catalog_state(pair) == before


def test_a_partitioned_index_is_hidden_in_every_partition(
    conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    hide_capable(conn, admin_conn)
    for statement in (
        "CREATE TABLE ev (id int, at date NOT NULL, pad text) PARTITION BY RANGE (at)",
        "CREATE TABLE ev_2025 PARTITION OF ev FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')",
        "CREATE TABLE ev_2026 PARTITION OF ev FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')",
        "INSERT INTO ev SELECT g, DATE '2025-01-01' + g % 700, repeat('x', 40) "
        "FROM generate_series(1, 100000) g",
        "CREATE INDEX ev_at ON ev (at)",
        "CREATE INDEX ev_at_id ON ev (at, id)",
        "ANALYZE",
    ):
        conn.execute(statement)
    query = "SELECT * FROM ev WHERE at IN ('2025-03-01', '2026-03-01')"
    # The two are so close that which one the planner takes is its tie-break: expect that one.
    plan = " ".join(row[0] for row in conn.execute(f"EXPLAIN {query}").fetchall())
    chosen, other = ("at_id", "at") if "_at_id_idx" in plan else ("at", "at_id")
    (result,) = verify_one(conn, budget("ev", query, "public.ev", f"ev_{chosen}"))
    s = result.stability
    # The plan scans both partitions' indexes of the expected one: both are hidden, and the
    # partitions' indexes of the other serve instead.
    assert s is not None and s.stability == Stability.FRAGILE, result.verdict.findings
    assert f"ev_2025_{other}_idx" in s.instead and f"ev_2026_{other}_idx" in s.instead
    assert f"ev_2025_{chosen}_idx" not in s.instead
    assert conn.execute("SELECT count(*) FROM hypopg_hidden_indexes()").fetchone() == (0,)


def test_the_check_takes_no_lock_the_application_would_wait_for(
    pair: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    hide_capable(pair, admin_conn)
    # The application's writes hold ROW EXCLUSIVE; an EXCLUSIVE lock admits only readers:
    # DROP INDEX (ACCESS EXCLUSIVE) would wait here, an EXPLAIN does not.
    with psycopg.connect(db_dsn) as app:
        app.execute("LOCK TABLE t IN EXCLUSIVE MODE")
        pair.execute("SET lock_timeout = '2s'")
        (near,) = verify_one(pair, near_pair(pair)[0])
        app.rollback()
    assert near.stability is not None and near.stability.stability == Stability.FRAGILE


def test_fragile_warns_fails_on_request_and_is_in_the_json(
    pair: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any], db_dsn: str, tmp_path: Path
) -> None:
    hide_capable(pair, admin_conn)
    _, chosen, _ = near_pair(pair)
    specs = write_specs(
        tmp_path,
        {
            "t.yaml": """\
                table: t
                queries:
                  - name: near
                    sql: SELECT * FROM t WHERE a = 42
                    budget_ms: 10000
                    runs: 1
                    warmup: 0
                    expect: {uses_index: [EXPECTED]}
                """.replace("EXPECTED", chosen),
            "big.yaml": """\
                table: big
                queries:
                  - name: clear
                    sql: SELECT * FROM big WHERE k = 42
                    budget_ms: 10000
                    runs: 1
                    warmup: 0
                    expect: {uses_index: [big_pkey], plan_margin: 1000}
                """,
        },
    )
    args = ["--dsn", db_dsn, "--specs", str(specs)]
    result = run(*args, "--format", "plain")
    assert result.exit_code == 0, result.output
    assert "warn (fragile)" in result.output
    assert f"fragile plan: the best plan without {chosen}" in result.output
    # plan_margin 1000 in the spec: a 400x seq scan is not enough of a margin there.
    assert "fragile plan: the best plan without big_pkey (Seq Scan on public.big)" in (
        result.output
    )

    result = run(*args, "--format", "json", "--fail-on-fragile")
    assert result.exit_code == 1, result.output
    report = json.loads(result.output[result.output.index("{") :])
    by_name = {q["name"]: q for q in report["queries"]}
    near = by_name["near"]
    assert near["status"] == "fail"
    stability = near["plan_stability"]
    assert stability["stability"] == "fragile" and stability["method"] == "hypopg_hide_index"
    assert stability["margin"] == 1.1 and stability["without"] == chosen
    assert stability["chosen_cost"] < stability["alternative_cost"] < 1.1 * stability["chosen_cost"]
    assert by_name["clear"]["plan_stability"]["margin"] == 1000

    # --plan-margin 1: only an alternative cheaper than the chosen plan would be fragile.
    result = run(*args, "--format", "plain", "--plan-margin", "1", "--query", "near")
    assert result.exit_code == 0, result.output
    assert (
        f"stable plan: the best plan without {chosen}"
        in run(*args, "--format", "plain", "--plan-margin", "1", "--query", "near", "-v").output
    )


# --- without HypoPG 1.4+: the best plan with no index at all ------------------------------


def test_without_hypopg_says_not_checked_or_concludes_soundly(
    pair: psycopg.Connection[Any],
) -> None:
    # The extension is not created in this database (the owner could not create it anyway).
    near_budget, _, other = near_pair(pair)
    near, clear, wide, loose = verify_one(
        pair,
        near_budget,
        CLEAR,
        budget("wide", RANGE.sql, "public.u", "u_a", margin=3),
        RANGE,
    )

    # The other index of the pair could take over: only HypoPG 1.4+ can say how cheaply.
    s = near.stability
    assert s is not None and s.stability == Stability.NOT_CHECKED, near.verdict.findings
    assert near.verdict.status == Status.PASS
    (note,) = [f for f in near.verdict.findings if f.kind == FindingKind.NOTE]
    assert note.message.startswith(
        "fragility not checked: needs HypoPG 1.4+ (this database does not have it); without it "
        "only plans with no index at all were costed (the best, Seq Scan on public.t, costs "
    )
    assert note.message.endswith(f"and public.{other} might serve nearly as cheaply")

    # big has no other index: the seq scan is the best plan without big_pkey.
    c = clear.stability
    assert c is not None and c.stability == Stability.STABLE and c.ratio and c.ratio > 100
    assert c.method == Method.NO_INDEX_SCANS

    # A plan with no index within the margin is fragile whatever other indexes exist.
    w = wide.stability
    assert w is not None and w.stability == Stability.FRAGILE, wide.verdict.findings
    assert w.ratio is not None and 1.0 < w.ratio < 3
    assert wide.verdict.status == Status.WARN
    assert w.note == (
        "costed with every index path off: hiding only u_a needs HypoPG 1.4+ "
        "(this database does not have it)"
    )
    assert loose.stability is not None and loose.stability.stability == Stability.STABLE


def test_old_hypopg_is_named(
    pair: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    """A database whose HypoPG extension is at 1.3.1 (Debian bookworm's; the script ships
    beside 1.4's, whatever the library): the note names the version it has."""
    versions = {
        str(r[0])
        for r in pair.execute(
            "SELECT version FROM pg_available_extension_versions WHERE name = 'hypopg'"
        ).fetchall()
    }
    if "1.3.1" not in versions:
        skip_without_extension(pair, "hypopg", "HypoPG 1.3.1 install script")
    admin_conn.execute("CREATE EXTENSION hypopg VERSION '1.3.1'")
    (near,) = verify_one(pair, near_pair(pair)[0])
    assert near.stability is not None and near.stability.note is not None
    assert "needs HypoPG 1.4+ (this database has 1.3.1)" in near.stability.note


def test_not_checked_when_the_plan_already_breaks_the_expectation(
    pair: psycopg.Connection[Any],
) -> None:
    (wrong,) = verify_one(pair, budget("wrong", NEAR_SQL, "public.t", "u_a"))
    assert wrong.verdict.status == Status.FAIL and wrong.stability is None


def test_plan_margin_needs_uses_index(tmp_path: Path) -> None:
    specs = write_specs(
        tmp_path,
        {
            "t.yaml": """\
                table: t
                queries:
                  - name: q
                    sql: SELECT 1
                    budget_ms: 5
                    expect: {plan_margin: 1.2}
                """
        },
    )
    with pytest.raises(SpecError) as err:
        load_specs([(specs, True)])
    assert "plan_margin: applies to expect.uses_index" in str(err.value)
