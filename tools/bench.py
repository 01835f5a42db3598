"""`make bench`: dbopt's numbers on the BookedBarber workload, written to BENCHMARKS.md.

Every figure is the median of several runs made in this one session, and every comparison is
a ratio of two things measured side by side on the same machine and data (dbopt against the
same SQL through psql, --jobs 2 against --jobs 1), because absolute times on a shared machine
mean little. Runs for about a quarter of an hour at scale 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from dbopt import __version__
from dbopt.sandbox import Server, start_server
from tools.bench_advise import advise_section
from tools.bench_fleet import FleetResults, fleet_section, measure_fleet
from tools.bench_history import HistoryResults, history_section, measure_history
from tools.demo import ROOT, load_bookedbarber

SPECS = ["--specs", str(ROOT / "indexes"), "--specs", str(ROOT / "views")]


@dataclass
class Results:
    """Everything measured, for the report."""

    scale: str
    repeat: int
    pg_version: str = ""
    load_s: float = 0.0
    appointments: int = 0
    before: dict[str, list[float | None]] = field(default_factory=dict)
    after: dict[str, list[float | None]] = field(default_factory=dict)
    budgets: dict[str, float] = field(default_factory=dict)
    apply_j1: list[float] = field(default_factory=list)
    apply_j2: list[float] = field(default_factory=list)
    psql: list[float] = field(default_factory=list)
    statements: int = 0
    planning: dict[int, tuple[list[float], int, float]] = field(default_factory=dict)
    #: The same runs without the parse cache (DBOPT_NO_CACHE=1): every file parsed.
    planning_cold: dict[int, list[float]] = field(default_factory=dict)
    startup_dbopt: list[float] = field(default_factory=list)
    startup_python: list[float] = field(default_factory=list)
    verify_wall: list[float] = field(default_factory=list)
    verify_exec: list[float] = field(default_factory=list)
    verify_runs: int = 0
    plain_j1: list[float] = field(default_factory=list)
    plain_j2: list[float] = field(default_factory=list)
    plain_shape: str = ""
    unsafe_builds: int = 0
    safe_builds: int = 0
    apply_repeat: int = 7
    #: Per timed apply run, the server's execution time of its build statements
    #: (pg_stat_statements), by kind ("psql", "j1"); empty where that view is not there.
    builds: dict[str, list[float]] = field(default_factory=dict)
    #: Where one more --jobs 1 run spent its time (from its --log-format json events).
    apply_phases: dict[str, float] = field(default_factory=dict)
    fleet: FleetResults | None = None
    history: HistoryResults | None = None
    advise: str = ""

    def apply_ratio(self) -> float:
        """--jobs 1 against psql: the median of each round's ratio (the two ran side by side,
        so a slower moment of the machine weighs on both)."""
        return statistics.median(j / p for j, p in zip(self.apply_j1, self.psql, strict=True))

    def outside_builds(self, kind: str) -> float | None:
        """Median seconds of a run spent outside its build statements (wall minus the
        server's execution time of the builds): start-up, checks, history, waits between."""
        walls = self.psql if kind == "psql" else self.apply_j1
        builds = self.builds.get(kind, [])
        if len(builds) != len(walls) or not walls:
            return None
        return statistics.median(w - b for w, b in zip(walls, builds, strict=True))


def _dbopt(
    *args: str, check: bool = True, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> tuple[float, str]:
    """Run dbopt as a process; wall seconds and stdout."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "dbopt", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=None if env is None else {**os.environ, **env},
    )
    wall = time.perf_counter() - started
    if check and proc.returncode != 0:
        raise SystemExit(
            f"bench: dbopt {' '.join(args)} exited {proc.returncode}:\n"
            f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        )
    return wall, proc.stdout


def _say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def _verify(dsn: str, path: Path) -> dict[str, Any]:
    wall, _out = _dbopt("verify", "--dsn", dsn, *SPECS, "--save", str(path), check=False)
    report: dict[str, Any] = json.loads(path.read_text())
    report["_wall"] = wall
    return report


def measure_queries(dsn: str, results: Results, work: Path, label: str) -> None:
    """p95 per budgeted query, ``repeat`` times (each itself 20 runs by default)."""
    target = results.before if label == "before" else results.after
    for i in range(results.repeat):
        _say(f"verify {label} {i + 1}/{results.repeat}")
        report = _verify(dsn, work / f"{label}-{i}.json")
        for q in report["queries"]:
            target.setdefault(q["name"], []).append(q["p95_ms"])
            results.budgets[q["name"]] = q["budget_ms"]
        if label == "after":
            results.verify_wall.append(report["_wall"])
            total = sum(sum(q["execution_ms"]) for q in report["queries"])
            results.verify_exec.append(total / 1000.0)
            results.verify_runs = sum(len(q["execution_ms"]) for q in report["queries"])


def measure_apply(server: Server, dsn: str, results: Results, work: Path) -> None:
    """dbopt apply (--jobs 1 and 2) against the same statements through psql -f."""
    plan_file = work / "plan.sql"
    plan_file.write_text(_dbopt("plan", "--dsn", dsn, *SPECS, "--sql")[1])
    results.statements = sum(
        1 for line in plan_file.read_text().splitlines() if line.startswith("CREATE")
    )
    undo_file = work / "undo.sql"
    psql = shutil.which("psql", path=str(server.bin_dir)) if server.bin_dir else None
    psql = psql or shutil.which("psql")
    if psql is None:
        raise SystemExit("bench: psql not found")
    for i in range(results.apply_repeat):
        order = ["j1", "psql", "j2"] if i % 2 == 0 else ["psql", "j1", "j2"]
        for kind in order:
            _say(f"apply {kind} {i + 1}/{results.apply_repeat}")
            # Each timed run starts from the same state: no checkpoint of the previous run's
            # writes left to land in the middle of this one (on either side).
            _checkpoint(dsn)
            tracked = kind != "j2" and _statements_reset(dsn)
            if kind == "psql":
                started = time.perf_counter()
                subprocess.run(
                    [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-f", str(plan_file)],
                    check=True,
                    capture_output=True,
                )
                results.psql.append(time.perf_counter() - started)
                if tracked:
                    results.builds.setdefault("psql", []).append(_build_seconds(dsn))
                # Same clean-up as a dbopt rollback, through psql too.
                subprocess.run(
                    [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-f", str(undo_file)],
                    check=True,
                    capture_output=True,
                )
                continue
            jobs = "1" if kind == "j1" else "2"
            wall, _ = _dbopt("apply", "--dsn", dsn, *SPECS, "--jobs", jobs, "--format", "plain")
            (results.apply_j1 if kind == "j1" else results.apply_j2).append(wall)
            if tracked:
                results.builds.setdefault(kind, []).append(_build_seconds(dsn))
            if not undo_file.exists():
                undo_file.write_text(_dbopt("rollback", "--dsn", dsn, "--plan", "--last")[1])
            _dbopt("rollback", "--dsn", dsn, "--last", "--yes")
    _checkpoint(dsn)
    results.apply_phases = apply_phases(dsn)
    _dbopt("rollback", "--dsn", dsn, "--last", "--yes")


#: The plan's build statements in pg_stat_statements (not the checks' WITH NO DATA copies).
_BUILD_SECONDS = sql.SQL(
    r"""SELECT coalesce(sum(s.total_exec_time), 0) / 1000
  FROM pg_stat_statements s
 WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
   AND (s.query ~* 'create\s+(unique\s+)?index\s+concurrently'
        OR (s.query ~* 'create\s+materialized\s+view' AND s.query !~* 'with\s+no\s+data'))"""
)


def _statements_reset(dsn: str) -> bool:
    """Empty pg_stat_statements; False where it cannot be read (not preloaded, no right)."""
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            conn.execute("SELECT pg_stat_statements_reset()")
    except psycopg.Error:
        return False
    return True


def _build_seconds(dsn: str) -> float:
    """The server's execution time of the build statements since the last reset."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(_BUILD_SECONDS).fetchone()
    return float(row[0]) if row else 0.0


def _checkpoint(dsn: str) -> None:
    """CHECKPOINT, where the role may (a superuser or pg_checkpoint: the bench's own server)."""
    with (
        psycopg.connect(dsn, autocommit=True) as conn,
        contextlib.suppress(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("CHECKPOINT")


def apply_phases(dsn: str) -> dict[str, float]:
    """One more --jobs 1 run (not in the ratios), timed phase by phase from its own
    --log-format json events: process start to the command's start (interpreter, imports),
    from there to the first action (configuration, spec loading, connection, the checks, the
    plan, the history run row), the actions (each with its identity checks and history rows),
    the time between actions, and the end to the process's exit."""
    started = time.time()
    wall, out = _dbopt("apply", "--dsn", dsn, *SPECS, "--jobs", "1", "--log-format", "json")
    ended = started + wall
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def at(event: dict[str, Any]) -> float:
        return datetime.fromisoformat(event["ts"].replace("Z", "+00:00")).timestamp()

    actions = [e for e in events if e["event"] == "action_finish"]
    first = next(e for e in events if e["event"] == "action_start")
    in_actions = sum(float(e["seconds"]) for e in actions)
    span = at(actions[-1]) - at(first)
    return {
        "wall": wall,
        "start-up": at(events[0]) - started,
        "checks and plan": at(first) - at(events[0]),
        "actions": in_actions,
        "between actions": max(0.0, span - in_actions),
        "end": ended - at(actions[-1]),
        "count": float(len(actions)),
    }


def measure_plain_jobs(server: Server, results: Results, work: Path) -> None:
    """--jobs 2 against --jobs 1 where PostgreSQL 14+ lets concurrent builds overlap:
    plain-column indexes (no expression, no WHERE) on four tables."""
    dsn = server.create_database("plainjobs")
    tables, rows = 4, 1_500_000
    with psycopg.connect(dsn, autocommit=True) as conn:
        for t in range(tables):
            conn.execute(
                sql.SQL(
                    "CREATE TABLE {} AS SELECT g AS id, g % 1000 AS a, md5(g::text) AS b "
                    "FROM generate_series(1, {}) g"
                ).format(sql.Identifier(f"t{t}"), sql.Literal(rows))
            )
        conn.execute("VACUUM (ANALYZE)")
    specs = work / "plain" / "indexes"
    specs.mkdir(parents=True)
    for t in range(tables):
        (specs / f"t{t}.yaml").write_text(
            f"table: t{t}\nindexes:\n  - {{name: t{t}_a, columns: [a]}}\n"
            f"  - {{name: t{t}_b, columns: [b]}}\n"
        )
    results.plain_shape = f"{tables} tables of {rows:,} rows, 2 plain-column indexes each"
    for i in range(results.repeat):
        for jobs in ("1", "2") if i % 2 == 0 else ("2", "1"):
            _say(f"plain jobs {jobs} {i + 1}/{results.repeat}")
            wall, _ = _dbopt(
                "apply", "--dsn", dsn, "--specs", str(specs), "--jobs", jobs, "--format", "plain"
            )
            (results.plain_j1 if jobs == "1" else results.plain_j2).append(wall)
            _dbopt("rollback", "--dsn", dsn, "--last", "--yes")


def _count_builds(results: Results) -> None:
    """How many of BookedBarber's builds PostgreSQL lets other builds ignore (14+)."""
    from dbopt.spec import load_specs

    specs = load_specs([(ROOT / "indexes", True), (ROOT / "views", True)])
    for spec in specs.all_indexes:
        if spec.plain_columns and spec.where is None:
            results.safe_builds += 1
        else:
            results.unsafe_builds += 1


def measure_planning(server: Server, results: Results, work: Path, sizes: list[int]) -> None:
    """dbopt plan for N synthetic specs against a catalog holding as many indexes."""
    tables = 100
    for size in sizes:
        name = f"plan{size}"
        dsn = server.create_database(name)
        specs = work / name / "indexes"
        specs.mkdir(parents=True)
        per_table = size // tables
        combos: list[tuple[int, ...]] = [
            (a, b) for a in range(1, 11) for b in range(1, 11) if a != b
        ]
        combos += [
            (a, b, c) for a in range(1, 6) for b in range(6, 11) for c in (1, 2) if c not in (a, b)
        ]
        _say(f"planning: creating {size} indexes")
        with psycopg.connect(dsn, autocommit=True) as conn:
            for t in range(tables):
                table = f"t{t:03d}"
                conn.execute(
                    sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, {})").format(
                        sql.Identifier(table),
                        sql.SQL(", ").join(
                            sql.SQL("{} int").format(sql.Identifier(f"c{i}")) for i in range(1, 11)
                        ),
                    )
                )
                lines = [f"table: {table}", "indexes:"]
                with conn.transaction():
                    for k in range(per_table):
                        names = [f"c{c}" for c in combos[k]]
                        index = f"{table}_i{k:03d}"
                        conn.execute(
                            sql.SQL("CREATE INDEX {} ON {} ({})").format(
                                sql.Identifier(index),
                                sql.Identifier(table),
                                sql.SQL(", ").join(sql.Identifier(n) for n in names),
                            )
                        )
                        lines.append(
                            f"  - {{name: {index}, columns: [{', '.join(names)}], "
                            "reason: synthetic}"
                        )
                (specs / f"{table}.yaml").write_text("\n".join(lines) + "\n")
        # A database's catalog, as dbopt meets it: settled, not still being written out. Ten
        # thousand fresh indexes leave the disk busy for a while; that is the machine's time.
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE) pg_catalog.pg_class")
            conn.execute("VACUUM (ANALYZE) pg_catalog.pg_index")
            conn.execute("VACUUM (ANALYZE) pg_catalog.pg_attribute")
            conn.execute("CHECKPOINT")
        os.sync()
        walls: list[float] = []
        cold: list[float] = []
        queries = 0
        changes = -1.0
        plan = ("plan", "--dsn", dsn, "--specs", str(specs), "--format", "json")
        cache = {"DBOPT_CACHE_DIR": str(work / "cache")}
        _dbopt(*plan, cwd=work, env=cache)  # fills the parse cache: the runs below are warm
        for i in range(results.repeat):
            _say(f"planning {size}: run {i + 1}/{results.repeat}")
            wall, out = _dbopt(*plan, cwd=work, env=cache)
            walls.append(wall)
            cold.append(_dbopt(*plan, cwd=work, env={"DBOPT_NO_CACHE": "1"})[0])
            data = json.loads(out)
            queries = data["catalog_queries"]
            changes = data["changes"]
        results.planning_cold[size] = cold
        results.planning[size] = (walls, queries, changes)
        server.drop_database(name)


def measure_startup(results: Results, runs: int = 15) -> None:
    """`dbopt --help` against `python -c pass`, interleaved."""
    for _ in range(runs):
        for target, argv in (
            (results.startup_python, [sys.executable, "-c", "pass"]),
            (results.startup_dbopt, [sys.executable, "-m", "dbopt", "--help"]),
        ):
            started = time.perf_counter()
            subprocess.run(argv, check=True, capture_output=True)
            target.append(time.perf_counter() - started)


def _median(values: list[float | None]) -> float | None:
    real = [v for v in values if v is not None]
    return statistics.median(real) if real else None


def _runs(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def report(results: Results) -> str:
    """BENCHMARKS.md."""
    from tabulate import tabulate

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown CPU",
    )
    mem_kb = next(
        (
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        0,
    )
    out = [
        "# dbopt benchmarks",
        "",
        f"Written by `make bench` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. "
        f"Machine: {os.cpu_count()} cores ({cpu}), {mem_kb / 1024 / 1024:.0f} GiB, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}. "
        f"PostgreSQL {results.pg_version} (a throwaway local server, fsync off). "
        f"dbopt {__version__}.",
        "",
        f"Data: the BookedBarber reference schema at scale {results.scale} "
        f"({results.appointments:,} appointments), loaded in {results.load_s:.0f} s. "
        f"Each figure is the median of {results.repeat} runs.",
        "",
        "## 1. Budgeted queries before and after `dbopt apply`",
        "",
        "p95 of the server's execution time (EXPLAIN ANALYZE, network excluded), each p95 over "
        "the query's own runs (20 by default).",
        "",
    ]
    rows = []
    for name, budget in results.budgets.items():
        before = _median(results.before.get(name, []))
        after = _median(results.after.get(name, []))
        speedup = f"{before / after:,.0f}x" if before and after else "n/a (view not built yet)"
        met = "yes" if after is not None and after <= budget else "NO"
        rows.append([name, budget, _fmt(before), _fmt(after, 3), speedup, met])
    out.append(
        tabulate(
            rows,
            headers=["query", "budget ms", "p95 before ms", "p95 after ms", "speed-up", "met"],
            tablefmt="github",
        )
    )
    j1, j2, psql = (
        statistics.median(x) for x in (results.apply_j1, results.apply_j2, results.psql)
    )
    plain_j1 = statistics.median(results.plain_j1)
    plain_j2 = statistics.median(results.plain_j2)
    out += [
        "",
        "## 2. Apply overhead",
        "",
        f"The same {results.statements} statements (`dbopt plan --sql`), on the same data, "
        "each run followed by the same clean-up:",
        "",
        tabulate(
            [
                ["`psql -f plan.sql`", _fmt(psql), "1.00", _runs(results.psql)],
                ["`dbopt apply --jobs 1`", _fmt(j1), f"{j1 / psql:.2f}", _runs(results.apply_j1)],
                ["`dbopt apply --jobs 2`", _fmt(j2), f"{j2 / psql:.2f}", _runs(results.apply_j2)],
            ],
            headers=["how", "median s", "ratio to psql", "every run, s"],
            tablefmt="github",
        ),
        "",
        f"Target: dbopt apply within 1.03 × psql. Measured: {results.apply_ratio():.3f} "
        f"with --jobs 1 (the median of {results.apply_repeat} rounds' ratios, each round "
        f"running both side by side; medians {j1 - psql:+.2f} s). " + _apply_verdict(results, psql),
        "",
        *_outside_builds_text(results, psql),
        "",
        *_phases_text(results.apply_phases),
        "",
        "## 3. Planning scale",
        "",
        "`dbopt plan --format json` (process start, spec loading and validation, catalog "
        "inspection, diff, JSON output) for N synthetic plain-column index specs over 100 "
        "tables, against "
        "a catalog holding the same N indexes (so every spec is compared):",
        "",
    ]
    plan_rows = [
        [
            f"{size:,}",
            _fmt(statistics.median(walls)),
            _fmt(statistics.median(results.planning_cold.get(size, [0.0]))),
            queries,
            int(changes),
        ]
        for size, (walls, queries, changes) in sorted(results.planning.items())
    ]
    out.append(
        tabulate(
            plan_rows,
            headers=["specs", "wall s", "without the parse cache, s", "catalog queries", "changes"],
            tablefmt="github",
        )
    )
    big = results.planning.get(10_000)
    if big:
        seconds = statistics.median(big[0])
        out += [
            "",
            f"Target: catalog queries constant, 10,000 specs under 1 s. Measured: "
            f"{_fmt(seconds)} s ({'met' if seconds < 1 else 'missed'}) with the parse cache "
            "warm (the spec files unchanged since the last command: the usual case), "
            f"{_fmt(statistics.median(results.planning_cold[10_000]))} s with every file "
            f"parsed and the schema checks compiled (DBOPT_NO_CACHE=1, a first run); {big[1]} "
            "catalog "
            "queries (the same for 1,000: constant). Where the time goes (a profile of the "
            "same run): the interpreter and imports (about a quarter: psycopg alone is a "
            "tenth of a second), reading and validating the YAML, the catalog query, the "
            "diff and the JSON. What was cut (from 4.4 s): spec files parsed once per content (the "
            "parse cache), plan reads no sizes, plain-column "
            "definitions are written from the catalog (pg_get_indexdef only for the rest), "
            "the cyclic garbage collector is paused while big graphs are built, jsonschema "
            "is imported only to explain an invalid file, nothing plan does not run is "
            "imported, the schema checks' bytecode is kept with the parse cache, the catalog "
            "query sorts in memory (work_mem for its own transaction), and the process ends "
            "without freeing its 300,000 objects one by one (os._exit once the output is "
            "flushed). dbopt's modules are byte-compiled before the benchmark, as an installed "
            "package is: a checkout run with PYTHONDONTWRITEBYTECODE set compiles every module "
            "on every run (~0.1 s, the gap between earlier runs of this benchmark and the same "
            "commands by hand).",
        ]
    dbopt_s = statistics.median(results.startup_dbopt) * 1000
    python_s = statistics.median(results.startup_python) * 1000
    wall = statistics.median(results.verify_wall)
    executed = statistics.median(results.verify_exec)
    out += [
        "",
        "## 4. CLI start-up",
        "",
        tabulate(
            [["`python -c pass`", f"{python_s:.0f}"], ["`dbopt --help`", f"{dbopt_s:.0f}"]],
            headers=["command", "wall ms"],
            tablefmt="github",
        ),
        "",
        f"Target: under 250 ms. Measured: {dbopt_s:.0f} ms ({dbopt_s - python_s:.0f} ms over "
        "the interpreter's own start). Commands are imported only when used.",
        "",
        "## 5. Verify overhead",
        "",
        f"`dbopt verify` after apply: {wall:.2f} s wall for {results.verify_runs} recorded "
        f"EXPLAIN ANALYZE runs whose reported execution times add up to {executed:.2f} s "
        f"(ratio {wall / executed:.1f}). The rest is process start, spec loading, warm-up "
        "runs, planning, EXPLAIN's own instrumentation, one transaction per run and the "
        "round trips.",
        "",
        "## 6. --jobs 2 against --jobs 1",
        "",
        "dbopt never runs two builds that would wait for each other: PostgreSQL 14+ lets a "
        "concurrent build ignore builds of indexes without expressions or WHERE, so those run "
        "side by side, and every other build runs alone.",
        "",
        tabulate(
            [
                [
                    f"BookedBarber ({results.unsafe_builds} of "
                    f"{results.unsafe_builds + results.safe_builds} builds partial or "
                    "expression: built alone)",
                    _fmt(j1),
                    _fmt(j2),
                    f"{j1 / j2:.2f}",
                ],
                [
                    results.plain_shape,
                    _fmt(plain_j1),
                    _fmt(plain_j2),
                    f"{plain_j1 / plain_j2:.2f}",
                ],
            ],
            headers=["workload", "--jobs 1 s", "--jobs 2 s", "speed-up"],
            tablefmt="github",
        ),
        "",
        f"Medians of {results.repeat} runs on {os.cpu_count()} cores (PostgreSQL also builds "
        "one btree with parallel workers, max_parallel_maintenance_workers = 2). --jobs pays "
        "where plain builds dominate; where partial and expression indexes dominate, building "
        "them one at a time costs nothing against --jobs 1 and spares the application and "
        "dbopt the waits a parallel schedule would cause.",
        "",
    ]
    if results.fleet is not None:
        out += fleet_section(results.fleet)
    if results.advise:
        out += ["## 8. `dbopt advise` against the hand-written specs", "", results.advise, ""]
    if results.history is not None:
        out += history_section(results.history)
    return "\n".join(out)


def _phases_text(phases: dict[str, float]) -> list[str]:
    """Where one --jobs 1 run's time went (apply_phases), as a table and a sentence."""
    from tabulate import tabulate

    if not phases:
        return []
    count = int(phases["count"])
    rows = [
        ["start-up: interpreter, imports (to the command's start)", _fmt(phases["start-up"])],
        [
            "spec loading, connection, checks against the database (as validate --dsn), "
            "inspection, plan, history run row",
            _fmt(phases["checks and plan"]),
        ],
        [
            f"the {count} actions (statements + each one's identity checks and history)",
            _fmt(phases["actions"]),
        ],
        ["between actions", _fmt(phases["between actions"])],
        ["end: last history rows, summary, exit", _fmt(phases["end"])],
        ["wall", _fmt(phases["wall"])],
    ]
    fixed = phases["start-up"] + phases["checks and plan"] + phases["end"]
    return [
        "Where the time of one more `--jobs 1` run went (its own `--log-format json` events, "
        "not part of the ratios above):",
        "",
        tabulate(rows, headers=["phase", "s"], tablefmt="github"),
        "",
        f"dbopt's fixed cost is {fixed:.2f} s a run (start-up, checks, end). Each action's "
        "time holds, besides its statement, three short queries of dbopt's: its history row, "
        "whether its name is free right before the build, and the new object's state, "
        "definition and size read right after it and recorded with its result in the same "
        "statement (Citus: two, the shards checked between them).",
    ]


def _split(results: Results) -> tuple[float, float, float, float] | str:
    """The apply runs split by the server's clock, medians in seconds: the builds through
    psql and through dbopt, the rest of a run through psql and through dbopt; or why the
    runs are not split."""
    own, theirs = results.outside_builds("j1"), results.outside_builds("psql")
    if own is None or theirs is None or not all(results.builds.get(k) for k in ("psql", "j1")):
        return "(pg_stat_statements was not readable: the runs are not split further.)"
    built = {k: statistics.median(results.builds[k]) for k in ("psql", "j1")}
    if not built["psql"] or not built["j1"]:  # track_utility off: no build was counted
        return "(pg_stat_statements counted no build statement: the runs are not split.)"
    return built["psql"], built["j1"], theirs, own


def _split_ratio(results: Results, psql: float) -> float | None:
    """psql's median run plus dbopt's extra time outside the builds, over psql's median run
    (None: the runs are not split)."""
    split = _split(results)
    return None if isinstance(split, str) else _ratio(split, psql)


def _ratio(split: tuple[float, float, float, float], psql: float) -> float:
    """:func:`_split_ratio` of a split."""
    _, _, theirs, own = split
    return (psql + own - theirs) / psql


def _apply_verdict(results: Results, psql: float) -> str:
    """Met only when the split agrees: the builds' spread from run to run is larger than the
    3 % at stake, so a wall ratio alone can meet it by luck."""
    wall, split = results.apply_ratio(), _split_ratio(results, psql)
    if wall > 1.03:
        return "Target missed."
    if split is None or split <= 1.03:
        return "Target met."
    return (
        f"Not counted as met: split by the server's clock below, dbopt's own time makes it "
        f"{split:.3f} (this run's builds happened to favour dbopt)."
    )


def _outside_builds_text(results: Results, psql: float) -> list[str]:
    """The same runs with the builds' own time taken out (pg_stat_statements): what dbopt
    adds around the statements, without the run-to-run spread of the builds themselves."""
    split = _split(results)
    if isinstance(split, str):
        return [split]
    built_psql, built_dbopt, theirs, own = split
    ratio = _ratio(split, psql)
    return [
        "The same runs split by the server's own clock (pg_stat_statements, reset before each "
        "run: the execution time of the CREATE INDEX CONCURRENTLY and CREATE MATERIALIZED VIEW "
        f"statements): the builds took a median {built_psql:.2f} s through psql and "
        f"{built_dbopt:.2f} s through dbopt; the rest of a run (start-up, checks, history, the "
        f"time between statements) {theirs:.2f} s for psql and {own:.2f} s for dbopt. Added "
        f"to psql's median run, dbopt's extra {own - theirs:.2f} s outside the builds is a "
        f"ratio of {ratio:.3f}. That is a lower bound of dbopt's cost: whatever dbopt makes a "
        "build itself spend (its watcher's queries beside it, a wait for one of its own "
        "sessions) counts as build time here, and shows only in the builds' medians above, "
        "which also carry the builds' spread from run to run (psql's own runs: "
        f"{min(results.psql):.2f}-{max(results.psql):.2f} s).",
    ]


def main() -> None:
    """Run every benchmark and write BENCHMARKS.md."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", default=os.environ.get("DBOPT_BENCH_SCALE", "1"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--apply-repeat", type=int, default=7)
    parser.add_argument("--fleet-sizes", default="20,50,100,200")
    parser.add_argument("--history-sizes", default="0,20000,100000")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument(
        "--only",
        choices=["apply", "planning", "fleet", "advise", "history"],
        help="Run one part and print its figures (to check a change); writes no report.",
    )
    args = parser.parse_args()
    results = Results(scale=args.scale, repeat=args.repeat, apply_repeat=args.apply_repeat)
    server = start_server()
    work = Path(tempfile.mkdtemp(prefix="dbopt-bench-"))
    try:
        results.pg_version = server.provider.split("PostgreSQL")[-1].strip(" )") or "?"
        if args.only == "planning":
            measure_planning(server, results, work, [int(x) for x in args.sizes.split(",")])
            print({k: (v[0], v[1]) for k, v in results.planning.items()}, results.planning_cold)
            return
        history_sizes = [int(x) for x in args.history_sizes.split(",")]
        if args.only == "history":
            print("\n".join(history_section(measure_history(server, work, history_sizes))))
            return
        if args.only == "fleet":
            fleet = measure_fleet(server, work, [int(x) for x in args.fleet_sizes.split(",")], 1)
            print("\n".join(fleet_section(fleet)))
            return
        dsn = server.create_database("bookedbarber")
        _say(f"loading scale {args.scale}")
        results.load_s = load_bookedbarber(dsn, args.scale)
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT count(*) FROM appointments").fetchone()
            results.appointments = int(row[0]) if row else 0
        if args.only == "apply":
            measure_apply(server, dsn, results, work)
            j1, j2, psql = (
                statistics.median(x) for x in (results.apply_j1, results.apply_j2, results.psql)
            )
            print(
                f"psql {psql:.2f} s, --jobs 1 {j1:.2f} s ({j1 / psql:.2f}), "
                f"--jobs 2 {j2:.2f} s ({j2 / psql:.2f})"
            )
            print(f"runs: psql {results.psql}, j1 {results.apply_j1}, j2 {results.apply_j2}")
            print(f"median of the rounds' ratios (--jobs 1): {results.apply_ratio():.3f}")
            print("\n".join(_outside_builds_text(results, psql)))
            print("\n".join(_phases_text(results.apply_phases)))
            return
        if args.only == "advise":
            print(advise_section(dsn, ROOT / "indexes", work))
            return
        measure_startup(results)
        measure_queries(dsn, results, work, "before")
        measure_apply(server, dsn, results, work)
        _say("advise")
        results.advise = advise_section(dsn, ROOT / "indexes", work)
        _dbopt("apply", "--dsn", dsn, *SPECS, "--format", "plain")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE)")
        measure_queries(dsn, results, work, "after")
        measure_planning(server, results, work, [int(s) for s in args.sizes.split(",")])
        measure_plain_jobs(server, results, work)
        _say("fleet")
        results.fleet = measure_fleet(
            server, work, [int(x) for x in args.fleet_sizes.split(",")], args.repeat
        )
        _say("history")
        results.history = measure_history(server, work, history_sizes)
        _count_builds(results)
        args.output.write_text(report(results))
        _say(f"wrote {args.output}")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
