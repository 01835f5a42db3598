"""Commands that talk to a database: plan, apply, verify, rollback, refresh-views, status."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from dbopt.cli.common import EXIT_CODES_HELP, QUALIFIED_NAME, Options, common_options

if TYPE_CHECKING:
    from collections.abc import Sequence

    from dbopt.config import Target
    from dbopt.model import QualifiedName
    from dbopt.planner import Plan
    from dbopt.rollback import Skipped
    from dbopt.usecases import Locking, Outcome


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


def _print_outcome(outcome: Outcome, fmt: str, command: str) -> None:
    """The summary table of a run; exit 130 when it was interrupted, 1 when it failed."""
    from dbopt import render
    from dbopt.errors import CheckFailedError
    from dbopt.model import ChangeOutcome, RunOutcome

    run = outcome.run
    if run is None:
        return
    render.print_rows(
        ["object", "action", "result", "seconds", "building", "waiting", "builds", "size"],
        [
            [
                str(c.action.name),
                c.action.kind.value,
                c.result,
                round(c.seconds, 2),
                round(c.cost.worked_s, 1),
                round(c.cost.waited_s, 1),
                c.cost.builds,
                _size(c.size_bytes),
            ]
            for c in run.changes
        ],
        fmt,
        sys.stdout,
        title=f"Run {run.run_id} ({command}): {run.outcome}",
    )
    for change in run.changes:
        if change.result == ChangeOutcome.SKIPPED:
            click.echo(f"skipped {change.action.name}: {change.error}", err=True)
        if change.cost.lost_s:
            click.echo(
                f"note: {change.action.name} was built {change.cost.builds} times: "
                f"{change.cost.lost_s:.1f} s of building were thrown away",
                err=True,
            )
    if run.outcome == RunOutcome.ABORTED:
        raise KeyboardInterrupt
    if run.outcome == RunOutcome.FAILED:
        failures = [c for c in run.changes if c.result == ChangeOutcome.FAILED]
        raise CheckFailedError(
            f"{command} failed: " + "; ".join(c.error or str(c.action.name) for c in failures)
        )
    if any(c.result == ChangeOutcome.SKIPPED for c in run.changes) and command == "apply":
        raise CheckFailedError("apply left some changes undone (skipped, see above)")


class _Terminal:
    """The use cases' hooks on a terminal: print the plan, ask for the environment's name."""

    def __init__(self, fmt: str, env: str | None) -> None:
        self.fmt = fmt
        self.env = env

    def planned(self, plan: Plan, title: str, skipped: Sequence[Skipped]) -> None:
        from dbopt import render

        headers, rows = render.plan_rows(plan)
        render.print_rows(headers, rows, self.fmt, sys.stdout, title=title)
        for item in skipped:
            click.echo(f"left alone: {item.name}: {item.reason}")

    def confirm(self, question: str) -> bool:
        typed = click.prompt(
            f"{question}\nType the environment name ({self.env}) to go ahead", default=""
        )
        return bool(typed == self.env)


def _closing(reporter: object) -> None:
    close = getattr(reporter, "close", None)
    if callable(close):
        close()


def _blocked_exit(plan: Plan) -> None:
    """Drift left in place (no --replace-drifted/--prune) is a failed check: exit 1."""
    if plan.blocked:
        from dbopt.errors import CheckFailedError
        from dbopt.render import flag

        raise CheckFailedError(
            "; ".join(f"{a.kind.value} {a.name} needs {flag(a.needs or '')}" for a in plan.blocked)
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
    from dbopt import render, usecases
    from dbopt.history import History
    from dbopt.spec import load_specs

    config = opts.load_config()
    specs = load_specs(opts.spec_dirs(config))
    target = opts.target(config)
    result = usecases.plan(
        target,
        specs,
        History(config.history_schema),
        replace_drifted=replace_drifted,
        prune=prune,
        cascade=cascade,
    )
    if show_sql:
        from dbopt.db import session_sql

        click.echo(session_sql(target.settings) + render.plan_sql(result), nl=False)
    elif opts.fmt == "json":
        click.echo(render.plan_json(result))
    else:
        headers, rows = render.plan_rows(result)
        render.print_rows(headers, rows, opts.fmt, sys.stdout, title="Plan")
        for action in result.changes:
            if action.kind.value == "replace":
                click.echo(f"drift in {action.name}:\n{action.diff()}")
        for note in result.notes:
            click.echo(f"note: {note}")
        click.echo(
            f"{len(result.runnable)} to change, {len(result.blocked)} need a flag, "
            f"{len(result.actions) - len(result.changes)} unchanged"
        )
    if result.refused:
        from dbopt.errors import UnsafeActionError

        raise UnsafeActionError(
            "apply would refuse this plan:\n  "
            + "\n  ".join(a.refusal or "" for a in result.refused)
        )
    if exit_code and result.changes:
        from dbopt.errors import CheckFailedError

        raise CheckFailedError(f"{len(result.changes)} change(s) planned")


_WAIT = click.option(
    "--wait", is_flag=True, help="Wait for another dbopt run to finish instead of exiting 3."
)
_WAIT_TIMEOUT = click.option(
    "--wait-timeout",
    metavar="DURATION",
    help="With --wait: give up (exit 3) after this long (e.g. 10min). Default: no limit.",
)
_WAIT_FOR_BLOCKERS = click.option(
    "--wait-for-blockers",
    is_flag=True,
    help="Start even when transactions older than lock_timeout are open, and wait for them "
    "to finish instead of refusing.",
)


_BUILD_WAIT = click.option(
    "--build-wait-timeout",
    metavar="DURATION",
    help="How long a concurrent build or drop may wait for other transactions (its wait "
    "never blocks the application); overrides build_wait_timeout. Default: no limit.",
)


def _with_build_wait(target: Target, value: str | None) -> Target:
    """The target with --build-wait-timeout applied."""
    if value is None:
        return target
    from dataclasses import replace

    from dbopt.config import duration_ms

    settings = replace(target.settings, build_wait_timeout_ms=duration_ms(value))
    return replace(target, settings=settings)


def _locking(wait: bool, wait_timeout: str | None) -> Locking:
    from dbopt.config import duration_ms
    from dbopt.errors import ConfigError
    from dbopt.usecases import Locking

    if wait_timeout is not None and not wait:
        raise ConfigError("--wait-timeout goes with --wait")
    return Locking(wait, duration_ms(wait_timeout) if wait_timeout else None)


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
@_WAIT
@_WAIT_TIMEOUT
@_WAIT_FOR_BLOCKERS
@_BUILD_WAIT
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
    wait_timeout: str | None,
    wait_for_blockers: bool,
    build_wait_timeout: str | None,
    jobs: int | None,
    plans_dir: Path | None,
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
    """
    from dbopt import usecases
    from dbopt.cli.report import make_reporter
    from dbopt.history import History
    from dbopt.spec import load_specs

    config = opts.load_config()
    specs = load_specs(opts.spec_dirs(config))
    target = _with_build_wait(opts.target(config), build_wait_timeout)
    options = usecases.ApplyOptions(
        replace_drifted=replace_drifted,
        prune=prune,
        cascade=cascade,
        jobs=jobs,
        locking=_locking(wait, wait_timeout),
        wait_for_blockers=wait_for_blockers,
        dry_run=dry_run,
        plans_dir=plans_dir,
        yes=yes,
    )
    reporter = make_reporter(opts.verbose)
    try:
        outcome = usecases.apply(
            target,
            specs,
            History(config.history_schema),
            options,
            reporter=reporter,
            hooks=_Terminal(opts.fmt, target.env),
        )
    finally:
        _closing(reporter)
    if dry_run:
        click.echo(outcome.sql, nl=False)
        return
    if outcome.run is None:
        click.echo("nothing to apply: the database matches the specs")
    else:
        _print_outcome(outcome, opts.fmt, "apply")
    _blocked_exit(outcome.plan)


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
)
@click.option("--plan", "show_plan", is_flag=True, help="Print the rollback SQL; run nothing.")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="With --plan: write the SQL to this file.",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (confirm: true envs).")
@_WAIT
@_WAIT_TIMEOUT
@_WAIT_FOR_BLOCKERS
@_BUILD_WAIT
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
    target = _with_build_wait(opts.target(config), build_wait_timeout)
    reporter = make_reporter(opts.verbose)
    try:
        outcome = usecases.rollback(
            target,
            History(config.history_schema),
            Selection(run_id=run_id, last=last, names=tuple(names)),
            reporter=reporter,
            hooks=_Terminal(opts.fmt, target.env),
            locking=_locking(wait, wait_timeout),
            wait_for_blockers=wait_for_blockers,
            plan_only=show_plan,
            yes=yes,
        )
    finally:
        _closing(reporter)
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
    _print_outcome(outcome, opts.fmt, "rollback")


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
      dbopt refresh-views --emit pg_cron | psql
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
    import dataclasses

    from dbopt import render
    from dbopt.db import connect
    from dbopt.history import History
    from dbopt.spec import load_specs
    from dbopt.status import index_status

    config = opts.load_config()
    specs = load_specs(opts.spec_dirs(config))
    target = opts.target(config)
    with connect(target.dsn, settings=target.settings) as conn:
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
                    "last_run": None
                    if report.last_run is None
                    else dataclasses.asdict(report.last_run),
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
        f"last run: #{last.id} {last.command} {last.outcome} at {last.started_at}"
        if last
        else "last run: none (dbopt has not applied anything here)"
    )
