"""Commands that talk to a database: plan, apply, verify, rollback, refresh-views, status."""

from __future__ import annotations

import click

from dbopt.cli.common import EXIT_CODES_HELP, Options, common_options
from dbopt.errors import NotImplementedYetError


def _not_yet(command: str) -> NotImplementedYetError:
    return NotImplementedYetError(
        f"'dbopt {command}' is not implemented yet in this version; nothing was run"
    )


@click.command(epilog=EXIT_CODES_HELP)
@common_options
@click.option("--sql", "show_sql", is_flag=True, help="Print the exact SQL apply would run.")
@click.option(
    "--exit-code", is_flag=True, help="Exit 1 when the plan has changes (for CI gates)."
)
@click.option("--replace-drifted", is_flag=True, help="Plan replacing drifted indexes.")
@click.option("--prune", is_flag=True, help="Plan dropping indexes dbopt created that left the specs.")
def plan(
    opts: Options, show_sql: bool, exit_code: bool, replace_drifted: bool, prune: bool
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
    """
    from dbopt import render
    from dbopt.db import connect
    from dbopt.history import History
    from dbopt.lifecycle import build_plan
    from dbopt.spec import load_specs

    config = opts.load_config()
    specs = load_specs(opts.spec_dirs(config))
    target = opts.target(config)
    with connect(target.dsn) as conn:
        result = build_plan(
            conn,
            specs,
            target.settings,
            History(config.history_schema),
            replace_drifted=replace_drifted,
            prune=prune,
        )
    if show_sql:
        click.echo(render.plan_sql(result), nl=False)
    elif opts.fmt == "json":
        click.echo(render.plan_json(result))
    else:
        headers, rows = render.plan_rows(result)
        render.print_rows(headers, rows, opts.fmt, click.get_text_stream("stdout"), title="Plan")
        for action in result.changes:
            if action.kind.value == "replace":
                click.echo(f"drift in {action.name}:\n{action.diff()}")
        click.echo(
            f"{len(result.runnable)} to change, {len(result.blocked)} need a flag, "
            f"{len(result.actions) - len(result.changes)} unchanged"
        )
    if exit_code and result.changes:
        raise SystemExit(1)


@click.command(epilog=EXIT_CODES_HELP)
@common_options
def apply(opts: Options) -> None:
    """Build the planned indexes and views without blocking the application.

    \b
    Examples:
      dbopt apply --env staging
      dbopt apply --env production --dry-run
    """
    raise _not_yet("apply")


@click.command(epilog=EXIT_CODES_HELP)
@common_options
def verify(opts: Options) -> None:
    """Run EXPLAIN (ANALYZE, BUFFERS) on each budgeted query and judge it against its budget.

    \b
    Examples:
      dbopt verify --env ci --junit verify.xml
      dbopt verify --query barber_schedule_today -v
    """
    raise _not_yet("verify")


@click.command(epilog=EXIT_CODES_HELP)
@common_options
def rollback(opts: Options) -> None:
    """Undo a dbopt run: drop what it created, restore what it replaced.

    \b
    Examples:
      dbopt rollback --env production --plan --last
      dbopt rollback --env production --run 42
    """
    raise _not_yet("rollback")


@click.command("refresh-views", epilog=EXIT_CODES_HELP)
@common_options
def refresh_views(opts: Options) -> None:
    """Refresh materialized views in dependency order (what cron runs).

    \b
    Examples:
      dbopt refresh-views --env production
      dbopt refresh-views --env production --view mv_daily_revenue_summary
    """
    raise _not_yet("refresh-views")


@click.command(epilog=EXIT_CODES_HELP)
@common_options
def status(opts: Options) -> None:
    """Show managed indexes and views: validity, size, usage, last run, drift.

    \b
    Examples:
      dbopt status --env production
    """
    raise _not_yet("status")
