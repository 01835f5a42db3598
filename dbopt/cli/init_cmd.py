"""`dbopt init`: create (or upgrade) the history once, and print the two roles' grants."""

from __future__ import annotations

from pathlib import Path

import click

from dbopt.cli.common import EXIT_CODES_HELP, Options, OutputFile, common_options


@click.command(epilog=EXIT_CODES_HELP)
@common_options
@click.option(
    "--apply-role",
    default="dbopt_apply",
    show_default=True,
    metavar="ROLE",
    help="The role the grants make able to apply, roll back and refresh views.",
)
@click.option(
    "--read-role",
    default="dbopt_read",
    show_default=True,
    metavar="ROLE",
    help="The role the grants make able to plan, verify and read status.",
)
@click.option(
    "-o",
    "--output",
    type=OutputFile(),
    help="Write the GRANT statements to this file instead of printing them.",
)
def init(opts: Options, apply_role: str, read_role: str, output: Path | None) -> None:
    """Create dbopt's history schema (or upgrade it), then print the grants two roles need.

    Run it once per database, as a role that may create a schema there: best the owner of
    the application's tables (dbopt counts what it made as its own only where the history's
    owner could act itself). After it, apply, rollback and refresh-views run no DDL on the
    history: they need ownership of the tables and views they change (membership in their
    owner) and USAGE plus SELECT/INSERT/UPDATE on the history; plan, status and verify need
    only to read. The grants are printed, never run: read them, then run them as a role that
    may. Running init again is safe; on a standby it refuses (exit 2).

    \b
    Examples:
      dbopt init --env production
      dbopt init --env production --apply-role deployer --read-role ci -o grants.sql
    """
    from dbopt.grants import Roles
    from dbopt.history import History
    from dbopt.initialize import init as run_init
    from dbopt.spec import load_specs

    config = opts.load_config()
    specs = load_specs(opts.spec_dirs(config))
    target = opts.target(config)
    roles = Roles(apply=apply_role, read=read_role)
    outcome = run_init(target, specs, History(config.history_schema), roles)
    click.echo(outcome.done, err=True)
    for note in outcome.notes:
        click.echo(f"note: {note}", err=True)
    if output is not None:
        output.write_text(outcome.grants, "utf-8")
        click.echo(f"grants for {apply_role} and {read_role} written to {output}", err=True)
    else:
        click.echo(outcome.grants, nl=False)
