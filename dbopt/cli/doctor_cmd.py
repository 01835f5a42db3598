"""`dbopt doctor`: unused, duplicate, redundant, INVALID and bloated indexes, foreign keys
without an index, and the specs against the database; read-only."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import click

from dbopt.cli.common import EXIT_CODES_HELP, Options, OutputFile, common_options
from dbopt.cli.run_output import human_age, human_size
from dbopt.errors import EXIT_CHECK_FAILED

if TYPE_CHECKING:
    from dbopt.doctor import DoctorReport


def parse_size(text: str) -> int:
    """``10MB``, ``512kB``, ``1GB`` or a number of bytes (click.BadParameter otherwise)."""
    lowered = text.strip().lower()
    factor = 1
    for unit, size in (("kb", 1024), ("mb", 1024**2), ("gb", 1024**3), ("b", 1)):
        if lowered.endswith(unit):
            lowered, factor = lowered[: -len(unit)].strip(), size
            break
    try:
        value = int(float(lowered) * factor)
    except ValueError:
        value = -1
    if value < 0:
        raise click.BadParameter(f"{text!r}: write a size such as 10MB, 512kB or 1GB")
    return value


def render(report: DoctorReport, fmt: str, out: TextIO) -> None:
    """The findings in ``fmt`` (table, plain, markdown, json), then a summary line."""
    from dbopt import render as rd
    from dbopt.doctor import Severity, report_dict

    if fmt == "json":
        out.write(json.dumps(report_dict(report), indent=2, default=rd.json_value) + "\n")
        return
    rows = [
        [
            f.severity.value,
            f.check.value,
            f.object,
            f.message,
            f.why,
            f.fix + (f" [{f.location.file}:{f.location.line}]" if f.location else ""),
        ]
        for f in report.findings
    ]
    rd.print_rows(
        ["severity", "check", "object", "finding", "why", "fix"],
        rows,
        fmt,
        out,
        title=f"dbopt doctor: {report.database} (PostgreSQL {report.server_version})",
    )
    age = "never reset" if report.stats_age_s is None else f"{human_age(report.stats_age_s)} old"
    nodes = f"; scans summed over {', '.join(report.nodes)}" if report.nodes else ""
    wasted = sum(int(v) for f in report.findings for k, v in f.numbers if k == "wasted_bytes" and v)
    out.write(
        f"{report.count(Severity.ERROR)} errors, {report.count(Severity.WARNING)} warnings, "
        f"{report.count(Severity.INFO)} info; statistics {age}{nodes}; bloat by "
        f"{report.bloat_source}" + (f" ({human_size(wasted)} to win back)" if wasted else "") + "\n"
    )


@click.command(epilog=EXIT_CODES_HELP)
@common_options
@click.option(
    "--exact",
    is_flag=True,
    help="Measure btree bloat with pgstattuple's pgstatindex (reads each large index in "
    "full; needs the extension and pg_stat_scan_tables) instead of estimating it.",
)
@click.option(
    "--fail-on",
    type=click.Choice(["warning", "error"]),
    default=None,
    help="Exit 1 when a finding is at least this severe (for CI).",
)
@click.option(
    "--sarif",
    "sarif_path",
    type=OutputFile(),
    help="Also write the findings as SARIF 2.1.0 to this file (code-scanning UIs).",
)
@click.option(
    "-o",
    "--output",
    type=OutputFile(),
    help="Write the report (in --format) to this file instead of stdout.",
)
@click.option(
    "--bloat-min-size",
    default="10MB",
    show_default=True,
    metavar="SIZE",
    help="Report bloat only when at least this much would come back.",
)
@click.option(
    "--bloat-min-ratio",
    type=click.FloatRange(0, 1),
    default=0.3,
    show_default=True,
    help="... and at least this share of the index.",
)
def doctor(
    opts: Options,
    exact: bool,
    fail_on: str | None,
    sarif_path: Path | None,
    output: Path | None,
    bloat_min_size: str,
    bloat_min_ratio: float,
) -> None:
    """Find what is wrong with the indexes and materialized views, and say how to fix it.

    Unused indexes (scans summed over the environment's replicas), duplicate and redundant
    ones, INVALID ones (and whether dbopt made them), btree bloat, foreign keys without an
    index, spec'd indexes no budget expects, views that hold no data or are overdue. Each
    finding has a severity (error, warning, info), the numbers, why it matters and the fix.
    Read-only: it never writes and never waits more than a second for a lock.

    \b
    Examples:
      dbopt doctor --env production
      dbopt doctor --dsn postgresql://app@localhost/app --format json -o doctor.json
      dbopt doctor --env staging --fail-on error --sarif doctor.sarif   # in CI
      dbopt doctor --env production --exact    # bloat measured by pgstattuple
    """
    from dbopt.doctor import DoctorOptions, Severity, diagnose
    from dbopt.history import History
    from dbopt.spec import load_specs

    config = opts.load_config()
    specs = load_specs(opts.spec_dirs(config))
    target = opts.target(config)
    options = DoctorOptions(
        exact=exact,
        bloat_min_bytes=parse_size(bloat_min_size),
        bloat_min_ratio=bloat_min_ratio,
    )
    report = diagnose(target, specs, History(config.history_schema), options)
    for note in report.notes:
        click.echo(f"note: {note}", err=True)
    if output is not None:
        with output.open("w", encoding="utf-8") as out:
            render(report, opts.fmt if opts.fmt != "table" else "plain", out)
    else:
        render(report, opts.fmt, sys.stdout)
    if sarif_path is not None:
        from dbopt.sarif import sarif

        # A finding with no spec file of its own points at dbopt.yaml, else the first spec.
        fallback = config.path or (specs.files[0] if specs.files else "dbopt.yaml")
        log = sarif(report, fallback=fallback)
        sarif_path.write_text(json.dumps(log, indent=2) + "\n", encoding="utf-8")
    if report.fails(None if fail_on is None else Severity(fail_on)):
        sys.exit(EXIT_CHECK_FAILED)
