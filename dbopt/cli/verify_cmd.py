"""`dbopt verify`: parse the flags, call dbopt.verify, render the report, pick the exit code."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import click

from dbopt.cli.common import EXIT_CODES_HELP, Options, common_options
from dbopt.cli.fleet_output import fleet_options
from dbopt.errors import CheckFailedError, ConfigError, InputError
from dbopt.model import QueryBudget

if TYPE_CHECKING:
    from dbopt.config import Target
    from dbopt.fleet import Fleet
    from dbopt.model import SpecSet
from dbopt.verify import (
    DEFAULT_PLAN_MARGIN,
    DEFAULT_REGRESSION,
    DEFAULT_REGRESSION_FLOOR_MS,
    TIMING_NOTE,
    BaselineError,
    BaselineProblem,
    EmptySelectionError,
    FindingKind,
    HypoPGMissingError,
    HypotheticalReport,
    Line,
    QueryResult,
    Role,
    Status,
    UnknownSelectionError,
    VerifyReport,
    explanation,
    explanation_lines,
)


@click.command(epilog=EXIT_CODES_HELP)
@common_options
@click.option(
    "--query",
    "queries",
    multiple=True,
    metavar="NAME",
    help="Only this budgeted query; repeatable.",
)
@click.option(
    "--table",
    "tables",
    multiple=True,
    metavar="NAME",
    help="Only the queries written in this table's (or view's) spec file; repeatable.",
)
@click.option(
    "--baseline",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Compare with a report saved earlier with --save: flag p95 regressions and plan changes.",
)
@click.option(
    "--save",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write this run's report (JSON) to FILE, to serve as a later --baseline.",
)
@click.option(
    "--threshold",
    "threshold_pct",
    type=click.FloatRange(min=0),
    default=DEFAULT_REGRESSION * 100,
    show_default=True,
    metavar="PCT",
    help="p95 growth against --baseline that fails a query, in percent.",
)
@click.option(
    "--regression-floor",
    "floor_ms",
    type=click.FloatRange(min=0),
    default=DEFAULT_REGRESSION_FLOOR_MS,
    show_default=True,
    metavar="MS",
    help="...and the least growth, in ms, that does (sub-millisecond queries jitter).",
)
@click.option(
    "--plan-margin",
    type=click.FloatRange(min=1),
    default=DEFAULT_PLAN_MARGIN,
    show_default=True,
    metavar="RATIO",
    help="A uses_index plan is fragile when a plan without an expected index costs less "
    "than RATIO times it (expect: plan_margin overrides per query).",
)
@click.option(
    "--fail-on-fragile",
    is_flag=True,
    help="Fail (exit 1) on a fragile plan instead of warning.",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0, max=20),
    default=0,
    show_default=True,
    metavar="N",
    help="Measure again, up to N times, the queries whose time verdict is unstable or failed "
    "(their runs pooled); deterministic budgets are never re-measured.",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Exit 1 on an unstable verdict too (a p95 within the measured noise of its budget); "
    "by default unstable exits 0 with a warning.",
)
@click.option(
    "--junit",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write JUnit XML to FILE: one test case per query, for CI test reports.",
)
@click.option(
    "--hypothetical",
    is_flag=True,
    help="Do not measure: with HypoPG, estimate what the spec indexes that do not exist yet "
    "would change (which queries would use them, estimated cost before/after).",
)
@click.option(
    "--create-extension",
    is_flag=True,
    help="With --hypothetical: run CREATE EXTENSION hypopg if the database lacks it.",
)
@fleet_options
def verify(
    opts: Options,
    queries: tuple[str, ...],
    tables: tuple[str, ...],
    baseline: Path | None,
    save: Path | None,
    threshold_pct: float,
    floor_ms: float,
    plan_margin: float,
    fail_on_fragile: bool,
    retries: int,
    strict: bool,
    junit: Path | None,
    hypothetical: bool,
    create_extension: bool,
    parallel: int | None,
    continue_on_error: bool,
) -> None:
    """Measure each budgeted query with EXPLAIN ANALYZE and judge it against its budget.

    verify changes nothing. Before the first query runs, every function, operator, view,
    policy and cast a query can reach is checked in the database's catalog: a query that
    could change data, sequences, statistics, settings, other sessions or server state (a
    side-effecting built-in, a VOLATILE function, or what runs one) is refused at its
    file:line and nothing runs (exit 2).

    Each query runs `warmup` unrecorded and `runs` recorded times, every run in a READ ONLY
    transaction that is rolled back, under a statement_timeout derived from its budget
    (timeout_ms, else budget_ms x verify_timeout_factor, at least 1 s). Its p95 is judged
    against budget_ms (warn_ms warns), and expect: uses_index / no_seq_scan_on against the
    plan. For every failure the plan is printed with the node that hurt marked, next to the
    spec index that was meant to serve the query.

    Times are the server's execution time from EXPLAIN ANALYZE: no network, no client;
    p50/p95 interpolate between ranks (Python's statistics.quantiles, inclusive method).
    Against --baseline, a p95 more than --threshold percent (and --regression-floor ms)
    slower fails; a plan whose shape changed warns. Warnings exit 0.

    A plan that meets expect: uses_index is also planned (plain EXPLAIN, read-only, rolled
    back) without each expected index, hidden with HypoPG 1.4+ when the database has it: when
    that alternative costs less than --plan-margin times the chosen plan, the plan is
    fragile (an ANALYZE can flip it) and warns, or fails with --fail-on-fragile.

    Noise is measured: first a fixed trivial query gives the machine's jitter, then each
    query's p95 gets a noise band (a bootstrap interval of its runs, at least the machine's
    spread, in ms, either side). A budget_ms inside the band is `unstable`: exit 0 with a
    warning, or 1 with --strict; --retries N measures such queries (and time failures)
    again. max_buffers, max_rows_examined and max_cost do not depend on the machine: never
    unstable.

    \b
    Examples:
      dbopt verify --env ci --junit verify.xml
      dbopt verify --env ci --retries 2 --strict
      dbopt verify --query barber_schedule_today -v
      dbopt verify --env staging --save verify-main.json
      dbopt verify --env staging --baseline verify-main.json --threshold 30
      dbopt verify --env staging --hypothetical
      dbopt verify --env tenants --junit verify.xml   # a fleet: one testsuite per target
    """
    from dbopt import usecases
    from dbopt.spec import load_specs
    from dbopt.verify import load_baseline, select_budgets

    if hypothetical and (retries or strict):
        raise ConfigError(
            "--retries and --strict judge measured runs; --hypothetical measures nothing"
        )
    if create_extension and not hypothetical:
        raise ConfigError("--create-extension only applies with --hypothetical")
    if hypothetical and (baseline or save):
        raise ConfigError(
            "--baseline and --save compare measured runs; --hypothetical measures nothing"
        )
    config = opts.load_config()
    specs = load_specs(opts.spec_dirs(config))
    one_only = [
        f
        for f, given in (
            ("--hypothetical", hypothetical),
            ("--baseline", baseline),
            ("--save", save),
        )
        if given
    ]
    fleet = None if one_only else opts.fleet(config)
    if fleet is not None:
        with _in_flag_terms():  # a selection that selects nothing is refused once, not per target
            select_budgets(specs, queries, tables)
        _verify_fleet(
            opts,
            fleet,
            specs,
            queries,
            tables,
            plan_margin,
            fail_on_fragile,
            junit,
            parallel,
            continue_on_error,
            retries=retries,
            strict=strict,
        )
        return
    target = opts.target(config, f"dbopt verify {'/'.join(one_only)}" if one_only else None)
    with _in_flag_terms():
        base = load_baseline(baseline) if baseline else None
    out = sys.stdout
    if hypothetical:
        with _in_flag_terms():
            hypo = _hypothetical(target, specs, queries, tables, create_extension)
        _finish_hypothetical(hypo, opts, junit, out)
        return
    with _in_flag_terms():
        report = usecases.verify(
            target,
            specs,
            queries=queries,
            tables=tables,
            baseline=base,
            threshold=threshold_pct / 100,
            regression_floor_ms=floor_ms,
            progress=_progress if opts.verbose else None,
            plan_margin=plan_margin,
            fail_on_fragile=fail_on_fragile,
            retries=retries,
        )
    _finish(report, opts, save, junit, out, strict=strict)


def _hypothetical(
    target: Target,
    specs: SpecSet,
    queries: tuple[str, ...],
    tables: tuple[str, ...],
    create_extension: bool,
) -> HypotheticalReport:
    from dbopt.db import connect
    from dbopt.errors import PrivilegeError
    from dbopt.privileges import budget_relations, resolve, unreadable_problem
    from dbopt.verify import run_hypothetical

    # verify writes nothing: its session is read-only (but for CREATE EXTENSION when asked).
    with connect(target.dsn, settings=target.settings, read_only=not create_extension) as conn:
        reads = resolve(conn, budget_relations(specs), target.settings.search_path)
        problem = unreadable_problem(conn, reads, "the budgeted queries read")
        if problem:
            raise PrivilegeError(problem)
        return run_hypothetical(
            conn,
            specs,
            target.settings,
            queries=queries,
            tables=tables,
            create_extension=create_extension,
        )


def _verify_fleet(
    opts: Options,
    fleet: Fleet,
    specs: SpecSet,
    queries: tuple[str, ...],
    tables: tuple[str, ...],
    plan_margin: float,
    fail_on_fragile: bool,
    junit: Path | None,
    parallel: int | None,
    continue_on_error: bool,
    *,
    retries: int = 0,
    strict: bool = False,
) -> None:
    """verify on every selected target: the report's rows, each failing query named under
    its target, and with --junit one testsuite per target."""
    from dbopt.cli import fleet_output as fo
    from dbopt.fleetwork import verify_work

    def progress(name: str, budget: QueryBudget) -> None:
        click.echo(f"{name}: measuring {budget.name}", err=True)

    work = verify_work(
        specs,
        queries=queries,
        tables=tables,
        plan_margin=plan_margin,
        fail_on_fragile=fail_on_fragile,
        progress=progress if opts.verbose else None,
        retries=retries,
        strict=strict,
    )
    report = fo.run(fleet, work, fo.policy(fleet, parallel, continue_on_error))
    if junit is not None:
        from dbopt.junit import fleet_suites, write_junit_suites

        write_junit_suites(junit, "dbopt verify", fleet_suites(report, strict=strict))
    fo.print_report(report, opts.fmt, "verify")
    if opts.fmt != "json":
        for row in report.results:
            if isinstance(row.value, VerifyReport):
                for r in row.value.results:
                    if r.verdict.status == Status.FAIL or opts.verbose:
                        click.echo(
                            f"{r.verdict.status.value.upper()} {row.name}: {r.budget.name} "
                            f"({r.budget.location}): {r.verdict.summary}"
                        )
    fo.finish(report)


def _progress(budget: QueryBudget) -> None:
    click.echo(f"measuring {budget.name} ({budget.warmup} warmup + {budget.runs} runs)", err=True)


#: What to add to a baseline error so that it says how to get a good one.
_BASELINE_HINTS = {
    BaselineProblem.MISSING: " (write one with --save)",
    BaselineProblem.NOT_A_REPORT: "; write one with dbopt verify --save FILE",
}


@contextmanager
def _in_flag_terms() -> Iterator[None]:
    """Word the library's errors about what was asked for as the flags that asked for it."""
    try:
        yield
    except UnknownSelectionError as exc:
        raise ConfigError(f"--{exc.selector} {exc.name}: {exc.reason}") from None
    except EmptySelectionError:
        raise ConfigError("--query and --table together select no query") from None
    except BaselineError as exc:
        hint = _BASELINE_HINTS.get(exc.problem, "")
        raise ConfigError(f"--baseline {exc.path}: {exc.detail}{hint}") from None
    except HypoPGMissingError as exc:
        create = ", or pass --create-extension" if exc.available else ""
        raise InputError(
            f"--hypothetical needs the HypoPG extension{exc.detail}{create}; nothing was run"
        ) from None


# --- measured runs -------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _verdict_cell(result: QueryResult) -> str:
    v = result.verdict
    if v.status == Status.PASS:
        return v.status.value  # every budget met: no kind to single out
    kinds = sorted(
        {f.kind.value for f in v.findings if f.status == v.status and f.kind != FindingKind.NOTE}
    )
    return f"{v.status.value} ({', '.join(kinds)})" if kinds else v.status.value


def _uses_cell(result: QueryResult) -> str:
    m = result.measurement
    text = ", ".join(m.indexes_used) or ", ".join(dict.fromkeys(m.scans))
    return text if m.analyzed or not text else f"{text} (estimated)"


HEADERS = [
    "query",
    "verdict",
    "p50",
    "p95",
    "noise band",
    "max",
    "budget",
    "runs",
    "planning",
    "buffers hit/read",
    "rows examined",
    "cost",
    "rows",
    "index used / scans",
]
TITLE = "Query budgets (times in ms)"


def _limited(value: str, limit: float | None) -> str:
    """``715 (max 1,000)``: a measured number and the budget it is held to, if any."""
    if limit is None or not value:
        return value
    shown = f"{limit:,.0f}" if float(limit).is_integer() else f"{limit:,.2f}"
    return f"{value} (max {shown})"


def _rows(report: VerifyReport) -> list[list[str | int]]:
    rows = []
    for r in report.results:
        m, b, band = r.measurement, r.budget, r.verdict.p95_band
        buffers = "" if m.shared_hit is None else f"{m.shared_hit}/{m.shared_read}"
        runs = str(len(m.execution_ms))
        if m.measurements > 1:
            runs += f" ({m.measurements}x)"
        rows.append(
            [
                b.name,
                _verdict_cell(r),
                _ms(m.p50_ms),
                _ms(m.p95_ms),
                "" if band is None else f"{band[0]:.3f}-{band[1]:.3f}",
                _ms(m.max_ms),
                _ms(b.budget_ms),
                runs,
                _ms(m.planning_p50_ms),
                _limited(buffers, b.max_buffers),
                _limited(
                    "" if m.rows_examined is None else f"{m.rows_examined:,}", b.max_rows_examined
                ),
                _limited("" if m.cost is None else f"{m.cost:,.2f}", b.max_cost),
                "" if m.rows is None else m.rows,
                _uses_cell(r),
            ]
        )
    return rows


def _summary(report: VerifyReport) -> str:
    counts = {s: report.count(s) for s in Status}
    total = len(report.results)
    # "unstable" only when there is one: a quiet run reads as it always did.
    shaky = f"{counts[Status.UNSTABLE]} unstable, " if counts[Status.UNSTABLE] else ""
    return (
        f"{total} quer{'y' if total == 1 else 'ies'}: {counts[Status.PASS]} pass, "
        f"{counts[Status.WARN]} warn, {shaky}{counts[Status.FAIL]} fail"
    )


def _noise_line(report: VerifyReport) -> str | None:
    """The machine's jitter, as measured before the budgets (None when not measured)."""
    if report.noise is None:
        return None
    return "Noise: " + report.noise.describe()


def _to_explain(report: VerifyReport, verbose: int) -> list[QueryResult]:
    return [r for r in report.results if verbose or r.verdict.status != Status.PASS]


#: How a terminal shows each status.
STYLE = {
    Status.FAIL: "bold red",
    Status.UNSTABLE: "bold magenta",
    Status.WARN: "bold yellow",
    Status.PASS: "bold green",
}


def _line_style(line: Line) -> str:
    """The terminal style of one line of an explanation (the words are the same everywhere)."""
    if line.role == Role.FINDING:
        return STYLE[line.status] if line.status is not None else ""
    return {Role.HEADING: "dim", Role.CULPRIT: "bold red"}.get(line.role, "")


def _indented(text: str) -> str:
    """``text`` indented by two spaces, blank lines left blank."""
    return "\n".join(f"  {line}" if line else "" for line in text.splitlines())


def _print_rich(report: VerifyReport, out: TextIO, verbose: int) -> None:
    from rich.console import Console
    from rich.text import Text

    from dbopt import render

    console = Console(file=out)
    console.print(Text(TIMING_NOTE[0].upper() + TIMING_NOTE[1:], style="dim"))
    noise = _noise_line(report)
    if noise:
        console.print(Text(noise, style="dim"))
    render.print_rows(HEADERS, _rows(report), "table", out, title=TITLE)
    for r in _to_explain(report, verbose):
        status = r.verdict.status
        console.print()
        console.print(Text(f"{status.value.upper()} {r.budget.name}", style=STYLE[status]))
        console.print(Text(f"  {r.budget.location}", style="dim"))
        for line in explanation_lines(r):
            console.print(Text(f"  {line.text}" if line.text else "", style=_line_style(line)))
    console.print()
    console.print(Text(_summary(report), style=STYLE[report.worst]))


def _print_text(report: VerifyReport, fmt: str, out: TextIO, verbose: int) -> None:
    from dbopt import render

    markdown = fmt == "markdown"
    out.write(f"{'_' if markdown else ''}{TIMING_NOTE}{'_' if markdown else ''}\n\n")
    noise = _noise_line(report)
    if noise:
        out.write(f"{'_' if markdown else ''}{noise}{'_' if markdown else ''}\n\n")
    render.print_rows(HEADERS, _rows(report), fmt, out, title=TITLE, exact=True)
    for r in _to_explain(report, verbose):
        head = f"{r.verdict.status.value.upper()} {r.budget.name} ({r.budget.location})"
        _write_explained(out, head, explanation(r), markdown=markdown)
    out.write(f"\n{_summary(report)}\n")


def _write_explained(out: TextIO, head: str, text: str, *, markdown: bool) -> None:
    """One query's explanation under its head: in Markdown a heading and a fenced block
    (GitHub renders the plan as written), else indented text."""
    if markdown:
        out.write(f"\n#### {head}\n\n```text\n{text}\n```\n")
    else:
        out.write(f"\n{head}\n{_indented(text)}\n")


def _finish(
    report: VerifyReport,
    opts: Options,
    save: Path | None,
    junit: Path | None,
    out: TextIO,
    *,
    strict: bool = False,
) -> None:
    from dbopt.verify import report_dict, save_report

    if save is not None:
        save_report(report, save)
    if junit is not None:
        from dbopt.junit import verify_cases, write_junit

        write_junit(junit, "dbopt verify", verify_cases(report, strict=strict))
    if opts.fmt == "json":
        out.write(json.dumps(report_dict(report), indent=2) + "\n")
    elif opts.fmt == "table":
        _print_rich(report, out, opts.verbose)
    else:
        _print_text(report, opts.fmt, out, opts.verbose)
    failed, unstable = report.failed, report.unstable
    shaky = ""
    if unstable:
        names = ", ".join(r.budget.name for r in unstable)
        shaky = (
            f"{len(unstable)} of {len(report.results)} budgeted queries are unstable (p95 "
            f"within the measured noise of budget_ms): {names}"
        )
        if not strict:
            hint = (
                f"still so after up to {report.retries} retries"
                if report.retries
                else "--retries N measures them again"
            )
            click.echo(f"warning: {shaky}; exit 0 without --strict ({hint})", err=True)
    if failed:
        names = ", ".join(r.budget.name for r in failed)
        also = f"; {shaky}" if strict and shaky else ""
        raise CheckFailedError(
            f"{len(failed)} of {len(report.results)} budgeted queries failed: {names}{also}"
        )
    if strict and unstable:
        raise CheckFailedError(f"{shaky} (--strict)")


# --- hypothetical indexes ------------------------------------------------------------------


def _finish_hypothetical(
    report: HypotheticalReport, opts: Options, junit: Path | None, out: TextIO
) -> None:
    from dbopt import render
    from dbopt.verify import hypothetical_dict

    if junit is not None:
        from dbopt.junit import hypothetical_cases, write_junit

        write_junit(junit, "dbopt verify --hypothetical", hypothetical_cases(report))
    if opts.fmt == "json":
        out.write(json.dumps(hypothetical_dict(report), indent=2) + "\n")
    else:
        note = (
            f"Estimated by the planner with HypoPG {report.hypopg_version} (EXPLAIN without "
            "ANALYZE): nothing was built or run."
        )
        # Markdown: a blank line after each paragraph, or GitHub runs it into the table.
        gap = "\n\n" if opts.fmt == "markdown" else "\n"
        out.write(note + gap)
        if not report.indexes:
            out.write("Every index in the specs exists already: nothing to simulate." + gap)
        else:
            render.print_rows(
                ["index", "table", "simulated"],
                [
                    [h.spec.name, str(h.spec.table), h.hypo_name or f"no: {h.error}"]
                    for h in report.indexes
                ],
                opts.fmt,
                out,
                title="Hypothetical indexes (in the specs, not in the database)",
            )
        rows = [
            [
                q.budget.name,
                q.status.value,
                "" if q.cost_before is None else f"{q.cost_before:,.2f}",
                "" if q.cost_after is None else f"{q.cost_after:,.2f}",
                "" if q.change is None else f"{q.change:+.0%}",
                ", ".join(q.would_use) or "none of them",
            ]
            for q in report.queries
        ]
        render.print_rows(
            ["query", "verdict", "cost before", "cost after", "change", "would use"],
            rows,
            opts.fmt,
            out,
            title="Queries",
        )
        for q in report.queries:
            if q.status == Status.PASS and not opts.verbose:
                continue
            head = f"{q.status.value.upper()} {q.budget.name} ({q.budget.location})"
            _write_explained(out, head, explanation(q), markdown=opts.fmt == "markdown")
    if report.failed:
        names = ", ".join(q.budget.name for q in report.failed)
        raise CheckFailedError(
            f"{len(report.failed)} of {len(report.queries)} queries would still miss their "
            f"expectations with every spec index built: {names}"
        )
