"""BENCHMARKS.md's `dbopt advise` section: its suggestions next to the hand-written specs.

Call :func:`advise_section` from tools/bench.py (the lead wires it):

    from tools.bench_advise import advise_section
    text = advise_section(admin_dsn, ROOT / "indexes", work_dir)

Inputs, all explicit:

- ``admin_dsn``: a database with BookedBarber's schema and data loaded
  (tools.demo.load_bookedbarber) and none of the spec indexes, reached as a role that may
  CREATE EXTENSION (pg_stat_statements and hypopg are created if missing; the server must
  preload pg_stat_statements and have HypoPG installed).
- ``index_dir``: the hand-written index specs (the repository's ``indexes/``), read only.
- ``work``: a scratch directory; the specs advise writes go to ``work/advised/indexes``.
- ``runs``: how often each budgeted query is run to fill pg_stat_statements.

What it does, with the dbopt CLI (subprocesses, as a user would): apply the hand-written
specs, verify (their costs and budgets), roll them back; run each budgeted query ``runs``
times; ``dbopt advise --write`` into a copy of the specs without indexes; apply that; verify
with each budget also capped at twice the hand-written estimated cost (max_cost); roll back.
Returns markdown: one row per hand-written index, the budgeted queries that expect it, the
index advise suggested for the same queries, and whether each side met those budgets. The
database is left as it was given (both applies are rolled back).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
from ruamel.yaml import YAML

from dbopt.spec import load_specs
from dbopt.verify.params import bind, register


def _dbopt(*args: str, check: bool = True) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "dbopt", *args], capture_output=True, text=True, check=False
    )
    if check and done.returncode not in (0, 1):
        raise RuntimeError(f"dbopt {args[0]} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _verify(dsn: str, specs: Path) -> dict[str, dict[str, Any]]:
    out = _dbopt("verify", "--dsn", dsn, "--specs", str(specs), "--format", "json")
    return {q["name"]: q for q in json.loads(out)["queries"]}


def _stripped(src: Path, dst: Path, hand: dict[str, dict[str, Any]]) -> None:
    """The specs without indexes and expectations, each budget capped at 2x the hand cost."""
    dst.mkdir(parents=True, exist_ok=True)
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    for path in sorted(src.glob("*.yaml")):
        doc = yaml.load(path.read_text())
        doc["indexes"] = []
        for query in doc.get("queries") or []:
            query.pop("expect", None)
            cost = hand.get(query["name"], {}).get("cost")
            if cost:
                query["max_cost"] = math.ceil(2 * cost)
        with (dst / path.name).open("w") as out:
            yaml.dump(doc, out)


def advise_section(admin_dsn: str, index_dir: Path, work: Path, runs: int = 5) -> str:
    """The markdown section (see the module doc for the inputs and what it runs)."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute("CREATE EXTENSION IF NOT EXISTS hypopg")
    db = ("--dsn", admin_dsn)
    _dbopt("apply", *db, "--specs", str(index_dir))
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
    hand = _verify(admin_dsn, index_dir)
    _dbopt("rollback", *db, "--specs", str(index_dir), "--last", "--yes")
    advised_dir = work / "advised" / "indexes"
    _stripped(index_dir, advised_dir, hand)
    specs = load_specs([(advised_dir, True)])
    with psycopg.connect(admin_dsn, autocommit=True) as app, app.cursor() as cur:
        register(cur)
        for budget in specs.queries:
            for _ in range(runs):
                cur.execute(budget.sql, bind(app, budget.params) if budget.params else None)
                cur.fetchall()
    report = _dbopt(
        "advise", *db, "--specs", str(advised_dir), "--min-calls", str(runs), "--top", "200",
        "--write", "--format", "json",
    )  # fmt: skip
    advice = json.loads(report)
    _dbopt("apply", *db, "--specs", str(advised_dir))
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
    after = _verify(admin_dsn, advised_dir)
    _dbopt("rollback", *db, "--specs", str(advised_dir), "--last", "--yes")

    suggested: dict[str, list[str]] = {}
    for s in advice["suggestions"]:
        for served in s["serves"]:
            name = served.get("budgeted_as") or served["query"]
            suggested.setdefault(name, []).append(s["name"])
    shipped = load_specs([(index_dir, True)])
    met_hand = sum(1 for q in hand.values() if q["status"] == "pass")
    met_advised = sum(1 for q in after.values() if q["status"] == "pass")
    lines = [
        "## dbopt advise against the hand-written specs",
        "",
        f"`dbopt advise` read {advice['queries']} queries from pg_stat_statements (each "
        f"budgeted query run {runs} times), kept {len(advice['suggestions'])} indexes "
        f"(HypoPG {advice['hypopg']}, cost cut >= {advice['threshold']:.0%}); the hand-written "
        f"specs have {len(shipped.indexes)}. Budgets met: hand-written {met_hand}/{len(hand)}, "
        f"advised {met_advised}/{len(after)} (each budget also capped at 2x the hand-written "
        "estimated cost).",
        "",
        "| hand-written index | budgeted queries | advise suggested | met (hand / advised) |",
        "| --- | --- | --- | --- |",
    ]
    for index in shipped.indexes:
        queries = [b.name for b in shipped.queries if index.name in b.expect.uses_index]
        ideas = sorted({n for q in queries for n in suggested.get(q, [])})
        met = [
            f"{'yes' if hand.get(q, {}).get('status') == 'pass' else 'no'} / "
            f"{'yes' if after.get(q, {}).get('status') == 'pass' else 'no'}"
            for q in queries
        ]
        lines.append(
            f"| {index.name} | {', '.join(queries) or '-'} | {', '.join(ideas) or '-'} | "
            f"{', '.join(met) or '-'} |"
        )
    return "\n".join(lines) + "\n"
