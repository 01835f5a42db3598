"""`dbopt rollback`: undo a run, or the last change of some objects."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from dbopt.cli.common import EXIT_CODES_HELP, QUALIFIED_NAME, Options, OutputFile, common_options
from dbopt.cli.completion import complete_index
from dbopt.cli.fleet_output import fleet_options
from dbopt.cli.run_output import (
    WAIT,
    WAIT_FOR_BLOCKERS,
    WAIT_TIMEOUT,
    Terminal,
    closing,
    locking,
    print_outcome,
    waits,
    with_waits,
)

if TYPE_CHECKING:
    from dbopt.model import QualifiedName


@click.command(epilog=EXIT_CODES_HELP)
@common_options
@click.option("--last", is_flag=True, help="Undo the last apply run not yet rolled back.")
@click.option("--run", "run_id", type=int, metavar="ID", help="Undo the run with this id.")
@click.option(
    "--index",
    "indexes",
    multiple=True,
    type=QUALIFIED_NAME,
    metavar="[SCHEMA.]NAME",
    help="Undo the last change of this index or view (schema.name or name); repeatable.",
    shell_complete=complete_index,
)
@click.option("--plan", "show_plan", is_flag=True, help="Print the rollback SQL; run nothing.")
@click.option(
    "-o",
    "--output",
    type=OutputFile(),
    help="With --plan: write the SQL to this file.",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (confirm: true envs).")
@WAIT
@WAIT_TIMEOUT
@WAIT_FOR_BLOCKERS
@waits
@fleet_options
def rollback(
    opts: Options,
    last: bool,
    run_id: int | None,
    indexes: tuple[QualifiedName, ...],
    show_plan: bool,
    output: Path | None,
    yes: bool,
    wait: bool,
    wait_timeout: str | None,
    wait_for_blockers: bool,
    build_wait_timeout: str | None,
    max_replica_lag: str | None,
    max_replica_wait: str | None,
    parallel: int | None,
    continue_on_error: bool,
) -> None:
    """Undo a dbopt run: drop what it created, restore what it replaced.

    The undo is derived from the facts dbopt recorded (what it made, with its OID; what it
    replaced, with the server's definition), never from stored SQL. Only an object that is
    still the one dbopt made (same OID, table and definition) is dropped; anything else is
    left alone and listed with the reason. A replaced index or view gets its previous
    definition back the same way apply replaces (built aside, swapped in one short
    transaction, what the current one carries kept). Same checks as apply: ownership, what a
    drop would break, the advisory lock, confirmation; nothing to undo is exit 2.

    \b
    Examples:
      dbopt rollback --env production --plan --last
      dbopt rollback --env production --plan --run 42 -o rollback-42.sql
      dbopt rollback --env production --run 42
      dbopt rollback --env production --index idx_appointments_day_desc
      dbopt rollback --env tenants --last   # a fleet: each target's last apply
    """
    from dbopt import usecases
    from dbopt.cli.report import make_reporter
    from dbopt.errors import ConfigError
    from dbopt.history import History
    from dbopt.rollback import Selection

    if output is not None and not show_plan:
        raise ConfigError("-o/--output goes with --plan")
    if sum((run_id is not None, last, bool(indexes))) != 1:
        raise ConfigError("choose exactly one of --last, --run ID or --index NAME")
    names = list(indexes)
    config = opts.load_config()
    one = None if last and output is None else "--run/--index" if not last else "-o"
    fleet = None if one else opts.fleet(config)
    if fleet is not None:
        from dbopt.cli import fleet_output as fo
        from dbopt.fleetwork import rollback_work

        fleet = fleet.with_targets(
            lambda t: with_waits(t, build_wait_timeout, max_replica_lag, max_replica_wait)
        )
        history = History(config.history_schema)
        how = fo.policy(fleet, parallel, continue_on_error, wait_on_interrupt=True)
        if not yes and not show_plan and any(m.target.settings.confirm for m in fleet.members):
            count = len(fleet.members)
            fo.confirm(
                f"rollback: the last apply on each of {count} target{'s' if count != 1 else ''} "
                f"of {fleet.env}",
                fleet.env,
            )
        work = rollback_work(
            history,
            Selection(last=True),
            fo.reporter_for(opts),
            locking=locking(wait, wait_timeout),
            wait_for_blockers=wait_for_blockers,
            plan_only=show_plan,
        )
        report = fo.run(fleet, work, how)
        if show_plan:
            fo.print_sql(report, fleet.members[0].target.settings)
        else:
            fo.print_report(report, opts.fmt, "rollback")
        fo.finish(report)
        return
    target = opts.target(config, f"dbopt rollback {one}" if one else None)
    target = with_waits(target, build_wait_timeout, max_replica_lag, max_replica_wait)
    reporter = make_reporter(opts.verbose)
    try:
        outcome = usecases.rollback(
            target,
            History(config.history_schema),
            Selection(run_id=run_id, last=last, names=tuple(names)),
            reporter=reporter,
            hooks=Terminal(opts.fmt, target.env),
            locking=locking(wait, wait_timeout),
            wait_for_blockers=wait_for_blockers,
            plan_only=show_plan,
            yes=yes,
        )
    finally:
        closing(reporter)
    if show_plan:
        text = outcome.sql + "".join(
            f"-- left alone: {s.name}: {s.reason}\n" for s in outcome.skipped
        )
        if output is not None:
            output.write_text(text, "utf-8")
            click.echo(f"rollback SQL written to {output}")
        else:
            click.echo(text, nl=False)
        return
    print_outcome(outcome, opts.fmt, "rollback")
