"""`dbopt plan` and `dbopt apply`: what would change, and changing it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from dbopt.cli.common import EXIT_CODES_HELP, QUALIFIED_NAME, Options, OutputDir, common_options
from dbopt.cli.completion import complete_index
from dbopt.cli.fleet_output import fleet_options
from dbopt.cli.jsonlog import JsonHooks, JsonReporter, current_log, log_format_option
from dbopt.cli.run_output import (
    WAIT,
    WAIT_FOR_BLOCKERS,
    WAIT_TIMEOUT,
    Terminal,
    blocked_exit,
    closing,
    locking,
    print_outcome,
    raise_for_outcome,
    waits,
    with_waits,
)

if TYPE_CHECKING:
    from dbopt.model import QualifiedName
    from dbopt.progress import Reporter

PART_INDEX = click.option(
    "--index",
    "indexes",
    multiple=True,
    type=QUALIFIED_NAME,
    metavar="[SCHEMA.]NAME",
    help="Only this index or materialized view (repeatable).",
    shell_complete=complete_index,
)
PART_TABLE = click.option(
    "--table",
    "tables",
    multiple=True,
    type=QUALIFIED_NAME,
    metavar="[SCHEMA.]NAME",
    help="Only the indexes of this table (or this view; repeatable).",
)


@click.command(epilog=EXIT_CODES_HELP)
@common_options
@click.option("--sql", "show_sql", is_flag=True, help="Print the exact SQL apply would run.")
@click.option("--exit-code", is_flag=True, help="Exit 1 when the plan has changes (for CI gates).")
@click.option("--replace-drifted", is_flag=True, help="Plan replacing drifted indexes.")
@click.option(
    "--prune", is_flag=True, help="Plan dropping indexes dbopt created that left the specs."
)
@click.option(
    "--cascade",
    is_flag=True,
    help="Replacing a materialized view also rebuilds the views that read it (listed).",
)
@click.option("--all", "show_all", is_flag=True, help="List unchanged objects too.")
@PART_INDEX
@PART_TABLE
@fleet_options
def plan(
    opts: Options,
    show_sql: bool,
    exit_code: bool,
    replace_drifted: bool,
    prune: bool,
    cascade: bool,
    show_all: bool,
    indexes: tuple[QualifiedName, ...],
    tables: tuple[QualifiedName, ...],
    parallel: int | None,
    continue_on_error: bool,
) -> None:
    """Show what apply would change: the specs diffed against the live catalog.

    Each action is create, skip, repair (an INVALID index), replace (drift; runs only with
    --replace-drifted) or drop (an index dbopt created that left the specs; only with --prune).
    Indexes dbopt did not create are never dropped.

    \b
    Examples:
      dbopt plan --env staging
      dbopt plan --dsn postgresql://app@localhost/app --sql
      dbopt plan --env production --format json --exit-code
      dbopt plan --env tenants --targets 'eu-*' --parallel 8   # a fleet: a row per target
    """
    from dbopt import render, usecases
    from dbopt.history import History
    from dbopt.spec import load_specs

    config = opts.load_config()
    specs = load_specs(opts.spec_dirs(config))
    fleet = opts.fleet(config)
    if fleet is not None:
        from dbopt.cli import fleet_output as fo
        from dbopt.fleetwork import plan_work

        work = plan_work(
            specs,
            History(config.history_schema),
            replace_drifted=replace_drifted,
            prune=prune,
            cascade=cascade,
            part=usecases.Part(indexes, tables),
            exit_code=exit_code,
        )
        report = fo.run(fleet, work, fo.policy(fleet, parallel, continue_on_error))
        if show_sql:
            settings = fleet.members[0].target.settings if fleet.members else config.defaults
            fo.print_sql(report, settings)
        else:
            fo.print_report(report, opts.fmt, "plan")
        fo.finish(report)
        return
    target = opts.target(config)
    result = usecases.plan(
        target,
        specs,
        History(config.history_schema),
        replace_drifted=replace_drifted,
        prune=prune,
        cascade=cascade,
        part=usecases.Part(indexes, tables),
    )
    if show_sql:
        from dbopt.db import session_sql

        click.echo(session_sql(target.settings) + render.plan_sql(result), nl=False)
    elif opts.fmt == "json":
        click.echo(render.plan_json(result))
    else:
        headers, rows = render.plan_rows(result, unchanged=show_all)
        title = f"Plan for {result.where}"
        if rows:
            render.print_rows(headers, rows, opts.fmt, sys.stdout, title=title, exact=True)
        else:
            click.echo(f"{title}: nothing to change")
        for action in result.changes:
            if action.kind.value == "replace":
                click.echo(f"drift in {action.name}:\n{action.diff()}")
        for note in result.notes:
            click.echo(f"note: {note}")
        summary = render.plan_counts(result)
        click.echo(f"\n{summary}\n" if opts.fmt == "markdown" else summary)
    if result.refused:
        raise usecases.refusal_error(result, "apply would refuse this plan")
    if exit_code and result.changes:
        from dbopt.errors import CheckFailedError

        raise CheckFailedError(f"{len(result.changes)} change(s) planned")


@click.command(epilog=EXIT_CODES_HELP)
@common_options
@click.option("--dry-run", is_flag=True, help="Run nothing; print the SQL apply would run.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (confirm: true envs).")
@click.option("--replace-drifted", is_flag=True, help="Replace drifted indexes (no downtime).")
@click.option("--prune", is_flag=True, help="Drop indexes dbopt created that left the specs.")
@click.option(
    "--cascade",
    is_flag=True,
    help="Replacing a materialized view also rebuilds the views that read it.",
)
@WAIT
@WAIT_TIMEOUT
@WAIT_FOR_BLOCKERS
@waits
@click.option("--jobs", type=click.IntRange(1, 64), help="Tables built in parallel.")
@PART_INDEX
@PART_TABLE
@click.option(
    "--plans-dir",
    type=OutputDir(),
    help="Also write each run's rollback SQL to DIR/run-<id>-rollback.sql (a fleet: "
    "DIR/<target>/run-<id>-rollback.sql).",
)
@fleet_options
@log_format_option("apply")
@click.option(
    "--canary",
    type=click.IntRange(1),
    metavar="K",
    help="With a fleet environment: apply on the first K targets and verify their budgets; "
    "go on with the rest only if all K succeed.",
)
def apply(
    opts: Options,
    dry_run: bool,
    yes: bool,
    replace_drifted: bool,
    prune: bool,
    cascade: bool,
    wait: bool,
    wait_timeout: str | None,
    wait_for_blockers: bool,
    build_wait_timeout: str | None,
    max_replica_lag: str | None,
    max_replica_wait: str | None,
    jobs: int | None,
    plans_dir: Path | None,
    indexes: tuple[QualifiedName, ...],
    tables: tuple[QualifiedName, ...],
    parallel: int | None,
    continue_on_error: bool,
    canary: int | None,
) -> None:
    """Build the planned indexes without blocking the application.

    Runs exactly the plan `dbopt plan` shows, with CREATE INDEX CONCURRENTLY on an autocommit
    connection, the environment's lock_timeout and statement_timeout, retries on lock waits
    (naming the blocking sessions), a validity check after every build and no INVALID index
    left behind on failure. Before the first statement it refuses (exit 2) what it could not
    finish: a replace that would lose what the old object carries, a drop something depends
    on, a table the role does not own. Every run is recorded in the history schema.

    \b
    Examples:
      dbopt apply --env staging
      dbopt apply --env production --dry-run
      dbopt apply --env production --replace-drifted --jobs 2 --plans-dir plans/
      dbopt apply --env tenants --canary 2 --parallel 8   # a fleet: 2 first, then the rest
      dbopt apply --env production --yes --log-format json >> apply.log  # JSON lines
    """
    from dbopt import usecases
    from dbopt.cli.report import make_reporter
    from dbopt.history import History
    from dbopt.spec import load_specs

    config = opts.load_config()
    specs = load_specs(opts.spec_dirs(config))
    fleet = opts.fleet(config)
    if fleet is None and canary is not None:
        from dbopt.errors import ConfigError

        raise ConfigError("--canary goes with a fleet environment (targets: in dbopt.yaml)")
    options = usecases.ApplyOptions(
        replace_drifted=replace_drifted,
        prune=prune,
        cascade=cascade,
        jobs=jobs,
        locking=locking(wait, wait_timeout),
        wait_for_blockers=wait_for_blockers,
        dry_run=dry_run,
        plans_dir=plans_dir,
        yes=yes,
        part=usecases.Part(indexes, tables),
    )
    if fleet is not None:
        from dbopt.cli.fleet_output import apply_fleet

        if current_log() is not None:
            from dbopt.errors import ConfigError

            raise ConfigError(
                "--log-format json logs a run on one database; a fleet's report is "
                "--format json (choose one target with --target to log its run)"
            )

        apply_fleet(
            opts,
            config,
            specs,
            fleet.with_targets(
                lambda t: with_waits(t, build_wait_timeout, max_replica_lag, max_replica_wait)
            ),
            options,
            parallel=parallel,
            continue_on_error=continue_on_error,
            canary=canary or 0,
        )
        return
    target = with_waits(opts.target(config), build_wait_timeout, max_replica_lag, max_replica_wait)
    log = current_log()
    reporter: Reporter = make_reporter(opts.verbose)
    hooks: usecases.Hooks = Terminal(opts.fmt, target.env)
    if log is not None:
        if dry_run:
            from dbopt.errors import ConfigError

            raise ConfigError("--log-format json logs a run: not with --dry-run")
        log.bind(target)
        reporter = JsonReporter(log)
        hooks = JsonHooks(reporter, target.env)
    try:
        outcome = usecases.apply(
            target, specs, History(config.history_schema), options, reporter=reporter, hooks=hooks
        )
    finally:
        closing(reporter)
    if dry_run:
        click.echo(outcome.sql, nl=False)
        return
    if log is not None:  # the events told it all; run_end carries the exit code
        run = outcome.run
        log.end.update(
            run_id=run and run.run_id,
            run_outcome=str(run.outcome) if run else "nothing to apply",
        )
        raise_for_outcome(outcome, "apply")
    elif outcome.run is None:
        click.echo("nothing to apply: the database matches the specs")
    else:
        print_outcome(outcome, opts.fmt, "apply")
    blocked_exit(outcome.plan)
