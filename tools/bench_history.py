"""BENCHMARKS.md's history section: what a long history costs a run.

Every run reads what dbopt owns from its history (the objects it may ever drop), and the
changes a stopped run left 'running'. A history only grows: a team that applies and rolls back
every day has tens of thousands of change rows after a few years. This part fills one
database's history with N rows of objects made and dropped long ago (the rows such a team
leaves), beside 20 indexes dbopt made and still owns, and times:

- the ownership read (`History.owned`, in this process: its queries, unprepared as a run sends
  them, and their rows), with the history's read indexes (history_indexes.sql) and without
  them (a history made before them, until `dbopt init` adds them);
- the clean-up of what stopped runs left 'running' (`History.close_orphans`, every apply);
- `dbopt plan` (process start to exit, nothing to change).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from dbopt.history import READ_INDEXES, History
from dbopt.sandbox import Server

ROOT = Path(__file__).resolve().parent.parent
#: N rows of objects made and dropped long ago: a create with the object's OID, then its drop
#: naming that OID as the one it removed (OIDs no relation has now).
_FILL = sql.SQL("""
WITH run AS (
  INSERT INTO dbopt.runs (command, dbopt_version, outcome, finished_at)
  VALUES ('apply', 'bench', 'succeeded', clock_timestamp()) RETURNING id
)
INSERT INTO dbopt.changes (run_id, object_schema, object_name, table_name, action,
                           definition, existed_before, result, object_oid, replaced_oid,
                           built_definition)
SELECT run.id, 'public', 'old_' || (g / 2), 'public.t',
       CASE WHEN g % 2 = 0 THEN 'create' ELSE 'drop' END,
       'CREATE INDEX CONCURRENTLY old ON public.t (a)', g % 2 = 1, 'ok',
       CASE WHEN g % 2 = 0 THEN 3000000000 + g / 2 END,
       CASE WHEN g % 2 = 1 THEN 3000000000 + g / 2 END,
       'CREATE INDEX old ON public.t USING btree (a)'
  FROM run, generate_series({first}, {first} + {rows} - 1) g
""")


@dataclass
class HistoryResults:
    """Milliseconds, by the history's number of change rows (all of them)."""

    owned_ms: dict[int, float] = field(default_factory=dict)
    owned_unindexed_ms: dict[int, float] = field(default_factory=dict)
    orphans_ms: dict[int, float] = field(default_factory=dict)
    orphans_unindexed_ms: dict[int, float] = field(default_factory=dict)
    plan_ms: dict[int, float] = field(default_factory=dict)


def _reads_ms(dsn: str, repeat: int = 15) -> tuple[float, float]:
    """Median milliseconds of the ownership read and of the stopped runs' clean-up (in a
    transaction rolled back), each sent unprepared, as a run sends it once."""
    history = History("dbopt")
    owned: list[float] = []
    orphans: list[float] = []
    with psycopg.connect(dsn, autocommit=True, prepare_threshold=None) as conn:
        found = history.owned(conn)  # the session's first read (catalog caches) not counted
        if len(found) != 20:
            raise SystemExit(f"bench: the history owns {len(found)} objects, not 20")
        for _ in range(repeat):
            started = time.perf_counter()
            history.owned(conn)
            owned.append((time.perf_counter() - started) * 1000)
            with conn.transaction(force_rollback=True):
                started = time.perf_counter()
                history.close_orphans(conn)
                orphans.append((time.perf_counter() - started) * 1000)
    return statistics.median(owned), statistics.median(orphans)


def _plan_ms(dsn: str, specs: Path, repeat: int = 7) -> float:
    times: list[float] = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "dbopt", "plan", "--dsn", dsn, "--specs", str(specs)],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def measure_history(server: Server, work: Path, sizes: list[int]) -> HistoryResults:
    """Time the ownership read and `dbopt plan` as the history grows to each of ``sizes``."""
    dsn = server.create_database("history")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int, a int, b int, c int, d int)")
    specs = work / "history" / "indexes"
    specs.mkdir(parents=True)
    columns = ["a", "b", "c", "d", "id"]
    pairs = [(x, y) for x in columns for y in columns if x != y][:20]
    (specs / "t.yaml").write_text(
        "table: t\nindexes:\n"
        + "".join(f"  - {{name: t_{x}_{y}, columns: [{x}, {y}]}}\n" for x, y in pairs)
    )
    subprocess.run(
        [sys.executable, "-m", "dbopt", "apply", "--dsn", dsn, "--specs", str(specs)],
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    results = HistoryResults()
    history = History("dbopt")
    read_indexes = [sql.Identifier("dbopt", name) for name in READ_INDEXES]
    rows = 0
    for size in sorted(sizes):
        with psycopg.connect(dsn, autocommit=True) as conn:
            if size > rows:
                conn.execute(_FILL.format(first=sql.Literal(rows), rows=sql.Literal(size - rows)))
                rows = size
            conn.execute("VACUUM (ANALYZE) dbopt.changes")
            row = conn.execute("SELECT count(*) FROM dbopt.changes").fetchone()
            if history.missing_indexes(conn):
                raise SystemExit("bench: the history lacks its read indexes")
        total = int(row[0]) if row else 0
        results.owned_ms[total], results.orphans_ms[total] = _reads_ms(dsn)
        results.plan_ms[total] = _plan_ms(dsn, specs)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.SQL(", ").join(read_indexes)))
        unindexed = _reads_ms(dsn)
        results.owned_unindexed_ms[total], results.orphans_unindexed_ms[total] = unindexed
        with psycopg.connect(dsn, autocommit=True) as conn:
            history.add_indexes(conn)
    return results


def history_section(results: HistoryResults) -> list[str]:
    """The section's Markdown lines."""
    out = [
        "## 9. A long history",
        "",
        "Every run reads what dbopt owns from its history, and every apply first closes what "
        "stopped runs left 'running'. One database with 20 indexes dbopt made and owns, its "
        "history filled with change rows of objects made and dropped long ago (a create and "
        "its drop each), nothing to change, no run left 'running' (the usual case). "
        "Milliseconds: the reads are medians of 15 (each query sent unprepared, as a run "
        "sends it once), `dbopt plan` (with the read indexes) a median of 7; without the "
        "read indexes is a history made before them, until `dbopt init` adds them:",
        "",
        "| change rows | ownership read | without the read indexes "
        "| stopped runs' clean-up | without the read indexes | `dbopt plan` |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for size in sorted(results.owned_ms):
        out.append(
            f"| {size:,} | {results.owned_ms[size]:.1f} | "
            f"{results.owned_unindexed_ms[size]:.1f} | {results.orphans_ms[size]:.2f} | "
            f"{results.orphans_unindexed_ms[size]:.2f} | {results.plan_ms[size]:.0f} |"
        )
    out += [
        "",
        "The ownership read starts from the indexes and materialized views there are now and "
        "finds them in the history by OID (and by the OIDs later changes replaced or dropped), "
        "so that part does not grow with the history's length. Part of it still does: the read "
        "of rows without an OID, where dbopt 0.1 recorded objects by name only, passes over "
        "every drop (drops record no OID of their own).",
        "",
    ]
    return out
