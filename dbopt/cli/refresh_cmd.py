"""`dbopt refresh-views`: what cron runs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from dbopt.cli.common import EXIT_CODES_HELP, QUALIFIED_NAME, Options, common_options

if TYPE_CHECKING:
    from dbopt.model import QualifiedName


@click.command("refresh-views", epilog=EXIT_CODES_HELP)
@common_options
@click.option(
    "--view",
    "names",
    multiple=True,
    type=QUALIFIED_NAME,
    metavar="[SCHEMA.]NAME",
    help="Only this view; repeatable.",
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
def refresh_views(
    opts: Options,
    names: tuple[QualifiedName, ...],
    stale_only: bool,
    older_than: str | None,
    concurrently_only: bool,
    strict: bool,
    show_plan: bool,
    emit: str | None,
) -> None:
    """Refresh materialized views in dependency order (what cron runs).

    Each view is refreshed CONCURRENTLY when it is populated and has a valid unique index on
    plain columns (readers never wait); otherwise a blocking refresh with a warning, or a
    failure with --concurrently-only. A refresh already running elsewhere is skipped, never
    queued. Quiet on success unless -v; one line per failure on stderr; exit 1 if any failed.

    \b
    Examples:
      dbopt refresh-views --env production
      dbopt refresh-views --env production --view mv_daily_revenue_summary --stale-only
      dbopt refresh-views --env production --plan
      dbopt refresh-views --env production --emit crontab | crontab -
      dbopt refresh-views --env production --emit pg_cron | psql -d postgres  # where pg_cron lives
    """
    import json
    import os
    from datetime import timedelta

    from dbopt import refresh as vw
    from dbopt import usecases
    from dbopt.config import duration_ms
    from dbopt.history import History
    from dbopt.model import RefreshOutcome
    from dbopt.spec import load_specs

    config = opts.load_config()
    specs = load_specs(opts.spec_dirs(config))
    if stale_only and older_than:
        from dbopt.errors import ConfigError

        raise ConfigError("give --stale-only or --older-than, not both")
    older = timedelta(milliseconds=duration_ms(older_than)) if older_than else None
    target = opts.target(config)
    if emit == "crontab":
        chosen = vw.select_views(specs, names)
        workdir = os.getcwd()
        click.echo(
            vw.crontab_lines(
                chosen,
                env=target.env,
                workdir=workdir,
                dbopt=vw.dbopt_command(),
                target=target,
                config=str(Path(opts.config).resolve()) if opts.config else None,
                specs=[str(p.resolve()) for p in opts.specs],
                lock_dir=workdir,
                log=os.path.join(workdir, "dbopt-refresh.log"),
            ),
            nl=False,
        )
        return
    if emit == "pg_cron":
        click.echo(usecases.pg_cron_sql(target, specs, names), nl=False)
        return
    results, text = usecases.refresh(
        target,
        specs,
        History(config.history_schema),
        usecases.RefreshOptions(
            names=names,
            stale_only=stale_only,
            older_than=older,
            concurrently_only=concurrently_only,
            plan_only=show_plan,
        ),
    )
    if show_plan:
        click.echo(text, nl=False)
        return
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
    if any(r.outcome == RefreshOutcome.FAILED for r in results) or (
        strict and any(r.outcome == RefreshOutcome.SKIPPED for r in results)
    ):
        from dbopt.errors import CheckFailedError

        raise CheckFailedError("some views were not refreshed (see above)")
