"""`dbopt verify`: parse the flags, call dbopt.verify, render the report, pick the exit code."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from dbopt.cli.common import EXIT_CODES_HELP, Options, OutputFile, common_options
from dbopt.cli.fleet_output import fleet_options
from dbopt.cli.verify_output import UNSTABLE_WHY, finish, finish_hypothetical
from dbopt.errors import ConfigError, InputError
from dbopt.model import QueryBudget

if TYPE_CHECKING:
    from dbopt.config import Target
    from dbopt.fleet import Fleet
    from dbopt.model import SpecSet
from dbopt.verify import (
    DEFAULT_PLAN_MARGIN,
    DEFAULT_REGRESSION,
    DEFAULT_REGRESSION_FLOOR_MS,
    BaselineError,
    BaselineProblem,
    EmptySelectionError,
    HypoPGMissingError,
    HypotheticalReport,
    Status,
    UnknownSelectionError,
    VerifyReport,
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
    type=OutputFile(),
    help="Write this run's report (JSON) to FILE, to serve as a later --baseline.",
)
@click.option(
    "--threshold",
    "threshold_pct",
    type=click.FloatRange(min=0),
    default=DEFAULT_REGRESSION * 100,
    show_default=True,
    metavar="PCT",
    help="p95 growth against --baseline that fails a query, in percent (unstable when "
    "within the p95's noise band).",
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
    help="Exit 1 on an unstable verdict too (a p95 within the measured noise of its budget "
    "or of the baseline's regression line); "
    "by default unstable exits 0 with a warning.",
)
@click.option(
    "--junit",
    type=OutputFile(),
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
    slower fails, or is unstable when that line is within its noise band; a plan whose
    shape changed warns. Warnings exit 0.

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
        finish_hypothetical(hypo, opts, junit, out)
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
    finish(report, opts, save, junit, out, strict=strict)


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
    # Timings taken beside another target of the same server would measure both.
    how = fo.policy(fleet, parallel, continue_on_error, one_per_server=True)
    report = fo.run(fleet, work, how)
    if junit is not None:
        from dbopt.junit import fleet_suites, write_junit_suites

        write_junit_suites(junit, "dbopt verify", fleet_suites(report, strict=strict))
    fo.print_report(report, opts.fmt, "verify")
    unstable = [
        f"{row.name}: {r.budget.name}"
        for row in report.results
        if isinstance(row.value, VerifyReport)
        for r in row.value.unstable
    ]
    if opts.fmt != "json":
        for row in report.results:
            if isinstance(row.value, VerifyReport):
                for r in row.value.results:
                    if r.verdict.status in (Status.FAIL, Status.UNSTABLE) or opts.verbose:
                        click.echo(
                            f"{r.verdict.status.value.upper()} {row.name}: {r.budget.name} "
                            f"({r.budget.location}): {r.verdict.summary}"
                        )
    if unstable and not strict:
        # As for one database: said on stderr, not only as a target's outcome.
        click.echo(
            f"warning: {len(unstable)} budgeted quer{'y is' if len(unstable) == 1 else 'ies are'} "
            f"unstable ({UNSTABLE_WHY}): {', '.join(unstable)}; exit 0 without --strict",
            err=True,
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
