"""Run the test suite on every supported PostgreSQL major: ``make test-matrix``.

The unit tests (``-m "not db"``) run once; the database tests (``-m db``) run once per major,
each in its own pytest process against its own throwaway server (``--pg-major N``: the
machine's own binaries of that major first, else the npm build, fetched once into the cache
of `harness.builds`). Majors the machine has run first; ``--jobs`` runs that many at once
(most of a database test is waiting on the server, so two share two cores well).

Each run's output goes to a log file; a failed run's log is printed whole (and the logs are
kept). A skip is a
failure here unless the test needs an extension that build lacks (`ALLOWED_SKIP`), or a
feature of a later major than the run's (`NEEDS_MAJOR`, allowed only below that major: on the
major that has it the test must run): on every major, everything else runs, except the tests
marked ``one_major`` (a fleet's orchestration, signals, output: nothing of the server's major
in them), which run on the first major only. The last line
names every major and the outcome, e.g.::

    test matrix: PostgreSQL 15.14, 12.22, 13.23, 14.22, 16.13, 17.10, 18.4: all passed
    (unit tests once, database tests on 7 majors) in 7 min 02 s

Usage: ``python -m harness.matrix [--jobs N] [MAJOR ...] [-- PYTEST_ARGS]`` with ``tests/`` on
``sys.path`` (the Makefile sets PYTHONPATH).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from harness import builds

#: The one reason a test may skip in the matrix: an extension this build does not carry
#: (tests/helpers.py `skip_without_extension` words it so).
ALLOWED_SKIP = re.compile(r"^needs the (\w+) extension")
#: A test of a feature PostgreSQL N introduced (tests/helpers.py `skip_before_major`): an
#: allowed skip on the majors before N only.
NEEDS_MAJOR = re.compile(r"^needs PostgreSQL (\d+) or later")
DEFAULT_JOBS = 2
ROOT = Path(__file__).resolve().parents[2]


@dataclass(slots=True)
class Run:
    """One pytest process of the matrix and what came of it."""

    name: str  # "unit" or "PostgreSQL 12"
    args: list[str]
    log: Path
    junit: Path
    major: int | None = None
    returncode: int | None = None
    seconds: float = 0.0
    version: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    skips: list[str] = field(default_factory=list)
    refused_skips: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Whether pytest passed, collected something, and skipped only what it may."""
        return self.returncode == 0 and not self.refused_skips


def _parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """The majors and jobs; what follows ``--`` goes to every pytest run."""
    argv = list(argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(
        prog="make test-matrix",
        description="The unit tests once, the database tests on each PostgreSQL major.",
    )
    parser.add_argument(
        "majors",
        nargs="*",
        type=int,
        metavar="MAJOR",
        help=f"majors to test (default: all of {', '.join(map(str, builds.MAJORS))})",
    )
    parser.add_argument(
        "--jobs",
        "-j",
        type=int,
        default=DEFAULT_JOBS,
        help=f"pytest runs at once (default: {DEFAULT_JOBS})",
    )
    parser.add_argument("--no-unit", action="store_true", help="skip the unit tests' run")
    args = parser.parse_args(argv)
    # Checked here: argparse checks an empty nargs="*" list against choices, and refuses it.
    unknown = [m for m in args.majors if m not in builds.MAJORS]
    if unknown:
        supported = ", ".join(map(str, builds.MAJORS))
        parser.error(f"PostgreSQL {unknown[0]} is not supported (supported: {supported})")
    return args, extra


def _order(majors: Sequence[int]) -> list[int]:
    """The machine's own majors first (they carry HypoPG and pg_cron), then the others."""
    own = set(builds.machine_majors())
    return sorted(dict.fromkeys(majors), key=lambda m: (m not in own, m))


def _pytest(run: Run) -> Run:
    """Run one pytest process, its output in ``run.log``; fill in how it went."""
    # The virtualenv's pytest script, as `make pytest` runs it (`python -m pytest` would make
    # `python -m dbopt` what refresh-views --emit crontab writes, not the dbopt script).
    script = Path(sys.executable).with_name("pytest")
    pytest = [str(script)] if script.exists() else [sys.executable, "-m", "pytest"]
    argv = [*pytest, "-p", "no:cacheprovider", *run.args]
    argv += [f"--junitxml={run.junit}"]
    started = time.monotonic()
    with run.log.open("w", encoding="utf-8") as out:
        done = subprocess.run(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, check=False)
    run.seconds = time.monotonic() - started
    run.returncode = done.returncode
    _read_junit(run)
    return run


def skip_allowed(reason: str, major: int | None) -> bool:
    """Whether a skip with this reason is allowed in the run of ``major`` (None: unit tests):
    a missing extension anywhere, a later major's feature on a major before it."""
    if ALLOWED_SKIP.match(reason):
        return True
    needs = NEEDS_MAJOR.match(reason)
    return needs is not None and major is not None and major < int(needs.group(1))


def _read_junit(run: Run) -> None:
    """Count outcomes and collect skip reasons from the run's JUnit XML."""
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    try:
        tree = ET.parse(run.junit)
    except (OSError, ET.ParseError):
        run.counts = counts
        return
    for case in tree.iter("testcase"):
        kinds = {child.tag for child in case}
        if "skipped" in kinds:
            counts["skipped"] += 1
            for child in case.iter("skipped"):
                reason = (child.get("message") or "").removeprefix("Skipped: ")
                run.skips.append(f"{case.get('classname')}::{case.get('name')}: {reason}")
                if not skip_allowed(reason, run.major):
                    run.refused_skips.append(run.skips[-1])
        elif "failure" in kinds:
            counts["failed"] += 1
        elif "error" in kinds:
            counts["errors"] += 1
        else:
            counts["passed"] += 1
    run.counts = counts


def _server_line(log: Path) -> str:
    """The header line naming the run's server (from tests/conftest.py)."""
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    match = re.search(r"^dbopt test server: (.*?);", text, flags=re.MULTILINE)
    return match.group(1) if match else ""


def _summary(run: Run) -> str:
    """One line: which run, its counts, its time."""
    parts = [f"{n} {kind}" for kind, n in run.counts.items() if n]
    verdict = "ok" if run.passed else "FAILED"
    return f"{run.name}: {verdict}, {', '.join(parts) or 'nothing ran'} in {run.seconds:.0f} s"


def _report(run: Run) -> None:
    """Print how a run went; its whole log when it failed."""
    print(_summary(run), flush=True)
    server = _server_line(run.log)
    if server:
        print(f"  server: {server}")
    for skip in run.skips:
        mark = "  skipped (not allowed)" if skip in run.refused_skips else "  skipped"
        print(f"{mark}: {skip}")
    if not run.passed:
        if run.returncode == 5:
            print("  pytest collected no tests: failing on purpose")
        print(f"----- {run.log} -----")
        print(run.log.read_text(encoding="utf-8", errors="replace").rstrip())
        print(f"----- end of {run.log.name} -----", flush=True)


def _minutes(seconds: float) -> str:
    """``7 min 02 s``."""
    whole = round(seconds)
    return f"{whole // 60} min {whole % 60:02d} s"


def main(argv: Sequence[str] | None = None) -> int:
    """Fetch what is missing, run every major (``--jobs`` at once), summarise; exit 1 on any
    failure or refused skip."""
    args, extra = _parse_args(sys.argv[1:] if argv is None else argv)
    majors = _order(args.majors or builds.MAJORS)
    started = time.monotonic()
    logs = Path(tempfile.mkdtemp(prefix="dbopt-matrix-"))
    print(f"test matrix: PostgreSQL {', '.join(map(str, majors))}; logs in {logs}", flush=True)

    versions: dict[int, str] = {}
    for major in majors:
        try:
            fetch_started = time.monotonic()
            bin_dir = builds.bin_dir_for(major)
        except builds.BuildError as err:
            print(f"PostgreSQL {major}: {err}", file=sys.stderr)
            return 1
        found = builds.server_version(bin_dir)
        versions[major] = found[1] if found else str(major)
        took = time.monotonic() - fetch_started
        fetched = f", fetched in {took:.0f} s" if took > 5 else ""
        print(f"  PostgreSQL {versions[major]}: {bin_dir}{fetched}", flush=True)

    runs: list[Run] = []
    if not args.no_unit:
        runs.append(
            Run("unit tests", ["-m", "not db", *extra], logs / "unit.log", logs / "unit.xml")
        )
    for major in majors:
        name = f"PostgreSQL {versions[major]}"
        # Tests marked one_major (nothing in them depends on the server's major) run on the
        # first major only: deselected elsewhere, never skipped.
        marks = "db" if major == majors[0] else "db and not one_major"
        pytest_args = ["-m", marks, "--pg-major", str(major), *extra]
        runs.append(Run(name, pytest_args, logs / f"pg{major}.log", logs / f"pg{major}.xml", major))

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        # Started in order (the machine's own server first), reported as each one ends.
        for done in as_completed([pool.submit(_pytest, run) for run in runs]):
            _report(done.result())

    failed = [run for run in runs if not run.passed]
    tested = ", ".join(versions[m] for m in majors)
    outcome = "all passed" if not failed else "FAILED: " + ", ".join(r.name for r in failed)
    print(
        f"test matrix: PostgreSQL {tested}: {outcome} "
        f"(database tests on {len(majors)} majors, {args.jobs} at a time) "
        f"in {_minutes(time.monotonic() - started)}",
        flush=True,
    )
    if failed:
        return 1
    shutil.rmtree(logs, ignore_errors=True)  # kept only when something failed
    return 0


if __name__ == "__main__":
    sys.exit(main())
