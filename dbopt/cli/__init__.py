"""The dbopt command line: thin Click commands over the dbopt library."""

from __future__ import annotations

import click

from dbopt import __version__
from dbopt.cli.common import EXIT_CODES_HELP, DboptGroup
from dbopt.cli.db_cmds import apply, plan, refresh_views, rollback, status
from dbopt.cli.sandbox_cmd import sandbox
from dbopt.cli.spec_cmds import schema, validate
from dbopt.cli.verify_cmd import verify


@click.group(cls=DboptGroup, epilog=EXIT_CODES_HELP, context_settings={"max_content_width": 100})
@click.version_option(__version__, prog_name="dbopt")
def main() -> None:
    """PostgreSQL indexes and materialized views as declarative code.

    Specs live in indexes/*.yaml (one file per table) and views/*.yaml; dbopt plans them
    against the live catalog, applies them without blocking the application, verifies query
    latency budgets in CI and rolls a run back during an incident.

    \b
    Examples:
      dbopt validate
      dbopt plan --env staging
      dbopt apply --env production
      dbopt verify --dsn postgresql://ci@localhost/app --junit verify.xml
    """


for command in (validate, schema, plan, apply, verify, rollback, refresh_views, status, sandbox):
    main.add_command(command)

__all__ = ["main"]
