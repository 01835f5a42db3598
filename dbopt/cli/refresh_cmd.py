"""`dbopt refresh-views`: what cron runs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from dbopt.cli.common import EXIT_CODES_HELP, QUALIFIED_NAME, Options, common_options
from dbopt.cli.completion import complete_view
from dbopt.cli.fleet_output import fleet_options
from dbopt.cli.jsonlog import RefreshEvents, current_log, log_format_option

if TYPE_CHECKING:
    from dbopt.model import QualifiedName
    from dbopt.refresh import RefreshResult


@click.command("refresh-views", epilog=EXIT_CODES_HELP)
@common_options
@click.option(
    "--view",
    "names",
    multiple=True,
    type=QUALIFIED_NAME,
    metavar="[SCHEMA.]NAME",
    help="Only this view; repeatable.",
    shell_complete=complete_view,
)
@click.option(
    "--stale-only", is_flag=True, help="Only views not refreshed since their schedule's last tick."
)
@click.option(
    "--older-than",
    metavar="DURATION",
    help="Only views whose last refresh is older than this (e.g. 30min, 2h).",
)
@click.option(
    "--concurrently-only",
    is_flag=True,
    help="Refuse (fail) a view that cannot be refreshed concurrently, instead of blocking it.",
)
@click.option("--strict", is_flag=True, help="Exit 1 when a view was skipped (already running).")
@click.option("--plan", "show_plan", is_flag=True, help="Print the ordered SQL; run nothing.")
@click.option(
    "--emit",
    type=click.Choice(["crontab", "pg_cron"]),
    help="Print crontab lines or pg_cron calls built from each view's schedule.",
)
@click.option(
    "--env-file",
    metavar="PATH",
    help="With --emit crontab: the NAME=value file each line sources first (the variables "
    "dbopt.yaml's ${VAR} and libpq read; secrets stay out of the crontab). Default: .env in "
    "this directory, read when present.",
)
@click.option("--no-env-file", is_flag=True, help="With --emit crontab: source no env file.")
@click.option(
    "--log",
    "log",
    metavar="PATH|syslog",
    help="With --emit crontab: append each run's output to this file, or 'syslog' (logger -t "
    "dbopt). Default: dbopt-refresh.log in this directory.",
)
@click.option(
    "--dbopt-command",
    metavar="COMMAND",
    help="With --emit crontab: the command cron runs instead of this dbopt's absolute path "
    "(e.g. '/opt/dbopt/bin/dbopt' or '/usr/bin/python3 -m dbopt').",
)
@fleet_options
@log_format_option("refresh-views")
def refresh_views(
    opts: Options,
    names: tuple[QualifiedName, ...],
    stale_only: bool,
    older_than: str | None,
    concurrently_only: bool,
    strict: bool,
    show_plan: bool,
    emit: str | None,
    env_file: str | None,
    no_env_file: bool,
    log: str | None,
    dbopt_command: str | None,
    parallel: int | None,
    continue_on_error: bool,
) -> None:
    """Refresh materialized views in dependency order (what cron runs).

    Each view is refreshed CONCURRENTLY when it is populated and has a valid unique index on
    plain columns (readers never wait); otherwise a blocking refresh with a warning, or a
    failure with --concurrently-only. A refresh already running elsewhere is skipped, never
    queued. Quiet on success unless -v; one line per failure on stderr; exit 1 if any failed.

    --emit crontab prints lines that run under cron as they are: SHELL and PATH set, the
    absolute path of this dbopt, cd to this directory, the env file sourced, flock -n on a
    lock file per view and target (a run still going makes the next exit at once), and the
    output appended to the log file.

    \b
    Examples:
      dbopt refresh-views --env production
      dbopt refresh-views --env production --view mv_daily_revenue_summary --stale-only
      dbopt refresh-views --env production --plan
      dbopt refresh-views --env production --emit crontab > dbopt.cron  # then: crontab -e
      dbopt refresh-views --env production --emit crontab --env-file /etc/dbopt/production.env
      dbopt refresh-views --env production --emit pg_cron | psql -d postgres  # where pg_cron lives
      dbopt refresh-views --env tenants --parallel 8   # a fleet: every target
      dbopt refresh-views --env production --log-format json   # JSON lines for log shippers
    """
    import os
    from datetime import timedelta

    from dbopt import refresh as vw
    from dbopt import usecases
    from dbopt.errors import ConfigError
    from dbopt.history import History
    from dbopt.model import RefreshOutcome
    from dbopt.settingvalues import duration_ms
    from dbopt.spec import load_specs

    config = opts.load_config()
    specs = load_specs(opts.spec_dirs(config))
    if stale_only and older_than:
        raise ConfigError("give --stale-only or --older-than, not both")
    older = timedelta(milliseconds=duration_ms(older_than)) if older_than else None
    options = usecases.RefreshOptions(
        names=names,
        stale_only=stale_only,
        older_than=older,
        concurrently_only=concurrently_only,
        plan_only=show_plan,
    )
    one = "--emit pg_cron" if emit == "pg_cron" else "--plan" if show_plan else None
    events = current_log()
    if events is not None and (emit or show_plan):
        raise ConfigError("--log-format json logs a run: not with --plan or --emit")
    fleet = None if one else opts.fleet(config)
    if events is not None and fleet is not None:
        raise ConfigError(
            "--log-format json logs a run on one database; a fleet's report is --format json "
            "(choose one target with --target to log its run)"
        )
    if fleet is not None and emit is None:
        from dbopt.cli import fleet_output as fo
        from dbopt.fleetwork import refresh_work

        vw.select_views(specs, names)  # an unknown --view is refused once, not per target
        work = refresh_work(specs, History(config.history_schema), options, strict=strict)
        # Ctrl-C cancels the refresh running on each target, which records it as cancelled:
        # waited for (a moment), so that no target's history is left without its record.
        how = fo.policy(fleet, parallel, continue_on_error, wait_on_interrupt=True)
        report = fo.run(fleet, work, how)
        fo.print_report(report, opts.fmt, "refresh-views")
        fo.finish(report)
        return
    # A fleet's crontab lines run the fleet (the same --target/--targets) under cron.
    target = (
        fleet.members[0].target
        if fleet
        else opts.target(config, f"dbopt refresh-views {one}" if one else None)
    )
    if emit == "crontab":
        import shlex

        chosen = vw.select_views(specs, names)
        workdir = os.getcwd()
        if env_file is not None and no_env_file:
            raise ConfigError("give --env-file or --no-env-file, not both")
        if env_file is not None and not os.path.isfile(env_file):
            raise ConfigError(f"--env-file {env_file}: no such file")
        try:
            command = shlex.split(dbopt_command) if dbopt_command else vw.dbopt_command()
        except ValueError as exc:
            raise ConfigError(f"--dbopt-command: {exc}") from None
        if not command:
            raise ConfigError("--dbopt-command is empty")
        if os.sep in command[0]:  # a relative path means nothing once cron has cd'd
            command[0] = os.path.abspath(command[0])
        click.echo(
            vw.crontab_lines(
                chosen,
                env=target.env,
                workdir=workdir,
                dbopt=command,
                target=None if fleet else target,
                selection=[
                    *(a for n in opts.target_names for a in ("--target", n)),
                    *(a for g in opts.target_globs for a in ("--targets", g)),
                ],
                config=str(Path(opts.config).resolve()) if opts.config else None,
                specs=[str(p.resolve()) for p in opts.specs],
                lock_dir=workdir,
                log=log if log == "syslog" else os.path.abspath(log or "dbopt-refresh.log"),
                env_file=None if no_env_file else os.path.abspath(env_file or ".env"),
                env_file_required=env_file is not None,
            ),
            nl=False,
        )
        return
    if emit == "pg_cron":
        click.echo(
            usecases.pg_cron_sql(target, specs, names, History(config.history_schema)),
            nl=False,
        )
        return
    if events is not None:
        events.bind(target)
    watch = None if events is None else RefreshEvents(events)
    results, text = usecases.refresh(
        target, specs, History(config.history_schema), options, watch=watch
    )
    if show_plan:
        click.echo(text, nl=False)
        return
    if events is None:
        _print_results(results, opts)
    if any(r.outcome == RefreshOutcome.FAILED for r in results) or (
        strict and any(r.outcome == RefreshOutcome.SKIPPED for r in results)
    ):
        from dbopt.errors import CheckFailedError

        raise CheckFailedError("some views were not refreshed (see above)")


def _print_results(results: list[RefreshResult], opts: Options) -> None:
    """Quiet on success (unless -v); a line per failure, skip or warning on stderr."""
    import json

    from dbopt.model import RefreshOutcome

    if opts.fmt == "json":
        click.echo(
            json.dumps(
                [
                    {
                        "view": str(r.view),
                        "outcome": r.outcome,
                        "mode": r.mode,
                        "seconds": round(r.seconds, 3),
                        "rows": r.rows,
                        "message": r.message,
                    }
                    for r in results
                ]
            )
        )
    for r in results:
        if r.outcome == RefreshOutcome.FAILED:
            click.echo(f"error: refresh of {r.view} failed: {r.message}", err=True)
        elif r.outcome == RefreshOutcome.SKIPPED:
            click.echo(f"skipped: {r.view}: {r.message}", err=True)
        elif r.message:
            click.echo(f"warning: {r.view}: {r.message}", err=True)
        elif opts.verbose and opts.fmt != "json":
            click.echo(f"refreshed {r.view} ({r.mode}) in {r.seconds:.2f}s, {r.rows} rows")
