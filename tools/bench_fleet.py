"""BENCHMARKS.md's fleet section: `dbopt plan --env fleet` over 20 to 200 databases.

Every database is a copy (CREATE DATABASE ... TEMPLATE) of one holding the BookedBarber schema
with every spec applied and no data, so the plan of each target is "nothing to change": the
figure is dbopt's own cost per target (connect, lock-free catalog reads, the server's
normalisation of the specs, the diff), not the builds'. One process loads and validates the
specs once, then plans up to `parallel` targets at a time (the default, 4).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from dbopt.sandbox import Server

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "bookedbarber"


@dataclass
class FleetResults:
    """Wall seconds of each run, by number of targets."""

    walls: dict[int, list[float]] = field(default_factory=dict)

    def median(self, size: int) -> float:
        """The median wall time for ``size`` targets."""
        return statistics.median(self.walls[size])


def measure_fleet(server: Server, work: Path, sizes: list[int], repeat: int) -> FleetResults:
    """Create max(sizes) databases, then time `dbopt plan --env fleet` on the first N."""
    results = FleetResults()
    template = server.create_database("fleet_template")
    server.load_sql("fleet_template", FIXTURES / "schema.sql")
    specs = ["--specs", str(ROOT / "indexes"), "--specs", str(ROOT / "views")]
    _run(["apply", "--dsn", template, *specs, "--format", "plain"], work)
    names = [f"fleet_{i:03d}" for i in range(1, max(sizes) + 1)]
    dsns = [server.create_database(n, template="fleet_template") for n in names]
    try:
        for size in sizes:
            targets = list(zip(names, dsns, strict=True))[:size]
            (work / "dbopt.yaml").write_text(
                "environments:\n  fleet:\n    targets:\n"
                + "".join(f"      - {{name: {n}, dsn: '{d}'}}\n" for n, d in targets)
            )
            for _ in range(repeat):
                started = time.perf_counter()
                out = _run(["plan", "--env", "fleet", *specs, "--format", "json"], work)
                results.walls.setdefault(size, []).append(time.perf_counter() - started)
                report = json.loads(out)
                outcomes = {t["outcome"] for t in report["targets"]}
                if len(report["targets"]) != size or outcomes != {"unchanged"}:
                    raise SystemExit(f"bench: fleet plan of {size} targets: {outcomes}")
    finally:
        for name in names:
            server.drop_database(name)
        server.drop_database("fleet_template")
    return results


def _run(args: list[str], cwd: Path) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "dbopt", *args], cwd=cwd, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"bench: dbopt {args[0]} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc.stdout


def fleet_section(results: FleetResults) -> list[str]:
    """The markdown lines of the section."""
    from tabulate import tabulate

    sizes = sorted(results.walls)
    rows = [
        [
            size,
            f"{results.median(size):.2f}",
            f"{1000 * results.median(size) / size:.0f}",
            ", ".join(f"{w:.2f}" for w in results.walls[size]),
        ]
        for size in sizes
    ]
    largest, smallest = sizes[-1], sizes[0]
    growth = results.median(largest) / results.median(smallest)
    wall = results.median(largest)
    return [
        "## 7. Fleets: plan over many databases",
        "",
        "`dbopt plan --env fleet --format json` over N databases of one local server, each the "
        "BookedBarber schema with every spec already applied and no data (nothing to change), "
        "4 targets at a time (the default `parallel`):",
        "",
        tabulate(
            rows,
            headers=["targets", "wall s", "ms per target", "every run, s"],
            tablefmt="github",
        ),
        "",
        f"Target: {largest} databases under 10 s on {_cores()} cores. Measured: {wall:.2f} s "
        f"({'met' if wall < 10 else 'missed'}). From {smallest} to {largest} targets the time "
        f"grows {growth:.1f}x for {largest / smallest:.0f}x the targets: the specs are loaded "
        "once, then each target costs its connection, its catalog reads and the server's "
        "normalisation of the specs on temporary copies of the tables.",
        "",
    ]


def _cores() -> int:
    import os

    return os.cpu_count() or 1
