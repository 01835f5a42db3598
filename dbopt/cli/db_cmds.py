"""Commands that talk to a database: plan, apply, verify, rollback, refresh-views, status."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from dbopt.cli.common import EXIT_CODES_HELP, Options, common_options


def _size(size: int | None) -> str:
    if size is None:
        return ""
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return str(size)  # pragma: no cover


def _age(seconds: float | None) -> str:
    if seconds is None:
        return ""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _print_outcome(outcome: Any, fmt: str) -> None:
    """The summary table of a run; exit 130 when it was interrupted, 1 when it failed."""
    from dbopt import render
    from dbopt.executor import ensure_applied

    render.print_rows(
        ["index", "action", "result", "seconds", "size"],
        [
            [
                str(c.action.name),
                c.action.kind.value,
                c.result,
                round(c.seconds, 2),
                _size(c.size_bytes),
            ]
            for c in outcome.changes
        ],
        fmt,
        sys.stdout,
        title=f"Run {outcome.run_id}: {outcome.outcome}",
    )
    if outcome.outcome == "aborted":
        raise KeyboardInterrupt
    ensure_applied(outcome)


def _confirm(ask: bool, env: str | None) -> None:
    """confirm: true environments: the environment's name must be typed."""
    if not ask:
        return
    from dbopt.errors import UnsafeActionError

    typed = click.prompt(f"Type the environment name ({env}) to go ahead", default="")
    if typed != env:
        raise UnsafeActionError("not confirmed; nothing was run")


def _blocked_exit(plan: Any) -> None:
    """Drift left in place (no --replace-drifted/--prune) is a failed check: exit 1."""
    if plan.blocked:
        from dbopt.errors import CheckFailedError

        raise CheckFailedError(
            "; ".join(f"{a.kind.value} {a.name} needs {a.needs}" for a in plan.blocked)
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
def plan(
    opts: Options,
    show_sql: bool,
    exit_code: bool,
    replace_drifted: bool,
    prune: bool,
    cascade: bool,
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
    with connect(target.dsn, lock_timeout_ms=target.settings.lock_timeout_ms) as conn:
        result = build_plan(
            conn,
            specs,
            target.settings,
            History(config.history_schema),
            replace_drifted=replace_drifted,
            prune=prune,
            cascade=cascade,
        )
    if show_sql:
        from dbopt.executor import session_sql

        click.echo(session_sql(target.settings) + render.plan_sql(result), nl=False)
    elif opts.fmt == "json":
        click.echo(render.plan_json(result))
    else:
        headers, rows = render.plan_rows(result)
        render.print_rows(headers, rows, opts.fmt, sys.stdout, title="Plan")
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
@click.option("--dry-run", is_flag=True, help="Run nothing; print the SQL apply would run.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (confirm: true envs).")
@click.option("--replace-drifted", is_flag=True, help="Replace drifted indexes (no downtime).")
@click.option("--prune", is_flag=True, help="Drop indexes dbopt created that left the specs.")
@click.option(
    "--cascade",
    is_flag=True,
    help="Replacing a materialized view also rebuilds the views that read it.",
)
@click.option("--wait", is_flag=True, help="Wait for another dbopt run instead of exiting 3.")
@click.option(
    "--wait-for-blockers",
    is_flag=True,
    help="Start even when long transactions will make concurrent builds wait.",
)
@click.option("--jobs", type=click.IntRange(1, 64), help="Tables built in parallel.")
@click.option(
    "--plans-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Also write each run's rollback SQL to DIR/run-<id>-rollback.sql.",
)
def apply(
    opts: Options,
    dry_run: bool,
    yes: bool,
    replace_drifted: bool,
    prune: bool,
    cascade: bool,
    wait: bool,
    wait_for_blockers: bool,
    jobs: int | None,
    plans_dir: Path | None,
) -> None:
    """Build the planned indexes without blocking the application.

    Runs exactly the plan `dbopt plan` shows, with CREATE INDEX CONCURRENTLY on an autocommit
    connection, the environment's lock_timeout and statement_timeout, retries on lock waits
    (naming the blocking sessions), a validity check after every build and no INVALID index
    left behind on failure. Every run is recorded in the history schema, its rollback SQL
    written before the first build.

    \b
    Examples:
      dbopt apply --env staging
      dbopt apply --env production --dry-run
      dbopt apply --env production --replace-drifted --jobs 2 --plans-dir plans/
    """
    from dbopt import executor as ex
    from dbopt import render
    from dbopt.catalog import inspect
    from dbopt.cli.report import make_reporter
    from dbopt.history import History
    from dbopt.lifecycle import build_plan
    from dbopt.spec import load_specs

    config = opts.load_config()
    specs = load_specs(opts.spec_dirs(config))
    target = opts.target(config)
    settings = target.settings
    history = History(config.history_schema)
    reporter = make_reporter(opts.verbose)
    runner = ex.Executor(target.dsn, settings, history, reporter)
    try:
        control = runner.control
        ex.take_run_lock(control, wait=wait)
        catalog = inspect(control)  # once: for the plan and for the privilege check
        result = build_plan(
            control,
            specs,
            settings,
            history,
            replace_drifted=replace_drifted,
            prune=prune,
            cascade=cascade,
            catalog=catalog,
        )
        headers, rows = render.plan_rows(result)
        out = sys.stdout
        if dry_run:
            click.echo(ex.session_sql(settings) + render.plan_sql(result), nl=False)
            return
        if not result.runnable:
            click.echo("nothing to apply: the database matches the specs")
            _blocked_exit(result)
            return
        render.print_rows(headers, rows, opts.fmt, out, title="Plan")
        ex.check_privileges(
            # A relation this run creates (a new view) will be owned by this role.
            result,
            lambda t: catalog.relations[t].owned if t in catalog.relations else True,
        )
        busy = ex.long_running(control, settings.lock_timeout_ms)
        if busy and not wait_for_blockers:
            from dbopt.errors import UnsafeActionError

            raise UnsafeActionError(
                "these transactions are older than lock_timeout and would make concurrent "
                "builds wait:\n  "
                + "\n  ".join(str(b) for b in busy)
                + "\nend them, or run with --wait-for-blockers to retry until they finish"
            )
        _confirm(settings.confirm and not yes, target.env)
        outcome = runner.run_plan(
            result,
            command="apply",
            environment=target.env,
            jobs=jobs or settings.jobs,
            plans_dir=plans_dir,
            rollback_text=ex.session_sql(settings) + render.plan_sql(result, rollback=True),
        )
    finally:
        close = getattr(reporter, "close", None)
        if callable(close):
            close()
        runner.close()
    _print_outcome(outcome, opts.fmt)
    _blocked_exit(result)


@click.command(epilog=EXIT_CODES_HELP)
@common_options
@click.option("--last", is_flag=True, help="Undo the last apply run not yet rolled back.")
@click.option("--run", "run_id", type=int, metavar="ID", help="Undo the run with this id.")
@click.option(
    "--index",
    "indexes",
    multiple=True,
    metavar="NAME",
    help="Undo the last change of this index (schema.name or name); repeatable.",
)
@click.option("--plan", "show_plan", is_flag=True, help="Print the rollback SQL; run nothing.")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="With --plan: write the SQL to this file.",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (confirm: true envs).")
@click.option("--wait", is_flag=True, help="Wait for another dbopt run instead of exiting 3.")
def rollback(
    opts: Options,
    last: bool,
    run_id: int | None,
    indexes: tuple[str, ...],
    show_plan: bool,
    output: Path | None,
    yes: bool,
    wait: bool,
) -> None:
    """Undo a dbopt run: drop what it created, restore what it replaced.

    Only what dbopt created is dropped; a replaced index gets its previous definition back
    (built concurrently, swapped in one short transaction); an index that existed before dbopt
    is never dropped. Runs with the same safety as apply: concurrent drops, timeouts, retries,
    the advisory lock, confirmation, and a history entry of its own.

    \b
    Examples:
      dbopt rollback --env production --plan --last
      dbopt rollback --env production --plan --run 42 -o rollback-42.sql
      dbopt rollback --env production --run 42
      dbopt rollback --env production --index idx_appointments_day_desc
    """
    from dbopt import executor as ex
    from dbopt import render
    from dbopt.cli.report import make_reporter
    from dbopt.history import History
    from dbopt.rollback import rollback_plan
    from dbopt.spec import parse_qualified

    if output is not None and not show_plan:
        from dbopt.errors import ConfigError

        raise ConfigError("-o/--output goes with --plan")
    config = opts.load_config()
    target = opts.target(config)
    history = History(config.history_schema)
    names = [parse_qualified(n) for n in indexes]
    if show_plan:
        from dbopt.db import connect

        with connect(target.dsn, lock_timeout_ms=target.settings.lock_timeout_ms) as conn:
            result, _undoes = rollback_plan(conn, history, run_id=run_id, last=last, indexes=names)
        text = ex.session_sql(target.settings) + render.plan_sql(result)
        if output is not None:
            output.write_text(text, "utf-8")
            click.echo(f"rollback SQL written to {output}")
        else:
            click.echo(text, nl=False)
        return
    reporter = make_reporter(opts.verbose)
    runner = ex.Executor(target.dsn, target.settings, history, reporter)
    try:
        ex.take_run_lock(runner.control, wait=wait)
        result, undoes = rollback_plan(
            runner.control, history, run_id=run_id, last=last, indexes=names
        )
        if not result.runnable:
            click.echo("nothing to roll back")
            return
        headers, rows = render.plan_rows(result)
        render.print_rows(headers, rows, opts.fmt, sys.stdout, title="Rollback plan")
        _confirm(target.settings.confirm and not yes, target.env)
        outcome = runner.run_plan(
            result, command="rollback", environment=target.env, undoes_run=undoes
        )
    finally:
        close = getattr(reporter, "close", None)
        if callable(close):
            close()
        runner.close()
    _print_outcome(outcome, opts.fmt)


@click.command("refresh-views", epilog=EXIT_CODES_HELP)
@common_options
@click.option("--view", "names", multiple=True, metavar="NAME", help="Only this view; repeatable.")
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
    names: tuple[str, ...],
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
      dbopt refresh-views --emit pg_cron | psql
    """
    import json
    import os
    from datetime import datetime, timedelta

    from dbopt import views as vw
    from dbopt.catalog import inspect
    from dbopt.config import duration_ms
    from dbopt.db import connect
    from dbopt.history import History
    from dbopt.spec import load_specs

    config = opts.load_config()
    specs = load_specs(opts.spec_dirs(config))
    chosen = vw.select_views(specs, names)
    if stale_only and older_than:
        from dbopt.errors import ConfigError

        raise ConfigError("give --stale-only or --older-than, not both")
    older = timedelta(milliseconds=duration_ms(older_than)) if older_than else None
    if emit == "crontab":
        click.echo(vw.crontab_lines(chosen, env=opts.env, workdir=os.getcwd()), nl=False)
        return
    target = opts.target(config)
    history = History(config.history_schema)
    with connect(
        target.dsn,
        application_name="dbopt-refresh",
        lock_timeout_ms=target.settings.lock_timeout_ms,
    ) as conn:
        catalog = inspect(conn)
        items = vw.plan_refresh(chosen, catalog, concurrently_only=concurrently_only)
        if emit == "pg_cron":
            click.echo(vw.pg_cron_sql(items), nl=False)
            return
        if stale_only or older is not None:
            last = {k: v["started_at"] for k, v in history.last_refreshes(conn).items()}
            items = vw.filter_stale(items, last, now=datetime.now().astimezone(), older_than=older)
        if show_plan:
            click.echo(vw.refresh_sql(items, target.settings), nl=False)
            return
        results = vw.run_refresh(conn, items, target.settings, history, target.env)
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
        if r.outcome == "failed":
            click.echo(f"error: refresh of {r.view} failed: {r.message}", err=True)
        elif r.outcome == "skipped":
            click.echo(f"skipped: {r.view}: {r.message}", err=True)
        elif r.message:
            click.echo(f"warning: {r.view}: {r.message}", err=True)
        elif opts.verbose and opts.fmt != "json":
            click.echo(f"refreshed {r.view} ({r.mode}) in {r.seconds:.2f}s, {r.rows} rows")
    if any(r.outcome == "failed" for r in results) or (
        strict and any(r.outcome == "skipped" for r in results)
    ):
        raise SystemExit(1)


@click.command(epilog=EXIT_CODES_HELP)
@common_options
def status(opts: Options) -> None:
    """Show managed indexes: validity, size, scans, drift; unmanaged indexes separately.

    Managed indexes are the ones in the specs. Scans count since the last statistics reset.
    Indexes on the same tables that are in no spec are listed apart: dbopt never touches them.

    \b
    Examples:
      dbopt status --env production
      dbopt status --dsn postgresql://app@localhost/app --format json
    """
    from dbopt import render
    from dbopt.db import connect
    from dbopt.history import History
    from dbopt.lifecycle import index_status
    from dbopt.spec import load_specs

    config = opts.load_config()
    specs = load_specs(opts.spec_dirs(config))
    target = opts.target(config)
    with connect(target.dsn, lock_timeout_ms=target.settings.lock_timeout_ms) as conn:
        report = index_status(conn, specs, target.settings, History(config.history_schema))
    headers = ["index", "table", "state", "valid", "size", "scans", "created by"]
    managed = [
        [r.name, r.table, r.state, r.valid, _size(r.size_bytes), r.scans, r.origin]
        for r in report.managed
    ]
    unmanaged = [
        [r.name, r.table, r.state, r.valid, _size(r.size_bytes), r.scans, r.origin]
        for r in report.unmanaged
    ]
    if opts.fmt == "json":
        import json

        click.echo(
            json.dumps(
                {
                    "managed": [dict(zip(headers, row, strict=True)) for row in managed],
                    "unmanaged": [dict(zip(headers, row, strict=True)) for row in unmanaged],
                    "last_run": report.last_run,
                    "views": [
                        {
                            "view": v.name,
                            "state": v.state,
                            "populated": v.populated,
                            "size_bytes": v.size_bytes,
                            "schedule": v.schedule,
                            "last_refresh": v.last_refresh,
                            "age_s": v.age_s,
                            "overdue": v.overdue,
                        }
                        for v in report.views
                    ],
                },
                default=str,
            )
        )
        return
    render.print_rows(headers, managed, opts.fmt, sys.stdout, title="Managed indexes")
    render.print_rows(
        headers, unmanaged, opts.fmt, sys.stdout, title="Unmanaged indexes on the same tables"
    )
    if report.views:
        render.print_rows(
            ["view", "state", "populated", "size", "schedule", "last refresh", "age", "overdue"],
            [
                [
                    v.name,
                    v.state,
                    v.populated,
                    _size(v.size_bytes),
                    v.schedule,
                    v.last_refresh.strftime("%Y-%m-%d %H:%M") if v.last_refresh else "never",
                    _age(v.age_s),
                    "OVERDUE" if v.overdue else "",
                ]
                for v in report.views
            ],
            opts.fmt,
            sys.stdout,
            title="Materialized views",
        )
    last = report.last_run
    click.echo(
        f"last run: #{last['id']} {last['command']} {last['outcome']} at {last['started_at']}"
        if last
        else "last run: none (dbopt has not applied anything here)"
    )
