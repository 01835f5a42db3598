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
def plan(opts: Options) -> None:
    """Show what apply would change: the specs diffed against the live catalog.

    \b
    Examples:
      dbopt plan --env staging
      dbopt plan --dsn postgresql://app@localhost/app --sql
    """
    raise _not_yet("plan")


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
