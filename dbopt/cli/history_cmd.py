"""`dbopt history`: the runs dbopt recorded and their changes (the ids rollback takes)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from dbopt.cli.common import EXIT_CODES_HELP, Options, common_options

if TYPE_CHECKING:
    from dbopt.history import ChangeRecord, RunSummary


def _when(value: Any) -> str:
    from dbopt.render import when

    return "" if value is None else when(value)


def _seconds(summary: RunSummary) -> float | None:
    run = summary.run
    if run.finished_at is None:
        return None
    return round((run.finished_at - run.started_at).total_seconds(), 1)


def _changes_text(summary: RunSummary) -> str:
    parts = [
        f"{n} {word}"
        for n, word in (
            (summary.ok, "ok"),
            (summary.failed, "failed"),
            (summary.aborted, "aborted"),
            (summary.skipped, "skipped"),
        )
        if n
    ]
    return ", ".join(parts) or "none"


def _run_row(summary: RunSummary) -> dict[str, Any]:
    run = summary.run
    return {
        "run": run.id,
        "command": run.command,
        "environment": run.environment,
        "outcome": run.outcome,
        "started_at": _when(run.started_at),
        "seconds": _seconds(summary),
        "changes": _changes_text(summary),
        "undoes_run": run.undoes_run,
        "undone_by_run": summary.undone_by_run,
        "role": run.db_role,
        "client_host": run.client_host,
    }


def _change_row(change: ChangeRecord) -> dict[str, Any]:
    return {
        "change": change.id,
        "object": str(change.name),
        "kind": change.object_type,
        "action": change.action,
        "on": str(change.table),
        "result": change.result,
        "seconds": None if change.duration_ms is None else round(change.duration_ms / 1000, 2),
        "undone_by_run": change.undone_by_run,
        "error": change.error,
    }


@click.command(epilog=EXIT_CODES_HELP)
@common_options
@click.option(
    "--limit",
    type=click.IntRange(1, 10_000),
    default=20,
    show_default=True,
    help="How many runs to list, newest first.",
)
@click.option("--run", "run_id", type=int, metavar="ID", help="One run and its changes.")
def history(opts: Options, limit: int, run_id: int | None) -> None:
    """List dbopt's recorded runs, or one run and its changes.

    Every apply, rollback and refresh run dbopt made here: its id (what `rollback --run`
    takes), outcome, when, how long, how its changes ended, and which rollback undid it.
    Read-only: works for a role that may only read the history, and on a standby.

    \b
    Examples:
      dbopt history --env production
      dbopt history --env production --run 42
      dbopt history --env production --limit 100 --format json
    """
    import json

    from dbopt import render
    from dbopt.db import connect
    from dbopt.errors import InputError
    from dbopt.history import History

    config = opts.load_config()
    target = opts.target(config)
    history_ = History(config.history_schema)
    with connect(target.dsn, settings=target.settings, read_only=True) as conn:
        if not history_.readable(conn).exists:
            click.echo(
                f"no dbopt history in schema {history_.schema}: nothing was applied here yet"
            )
            return
        runs = history_.summaries(conn, limit=limit, run_id=run_id)
        if run_id is not None and not runs:
            raise InputError(f"there is no run {run_id} in dbopt's history")
        changes = history_.changes(conn, run_id=run_id) if run_id is not None else []
    rows = [_run_row(s) for s in runs]
    if run_id is not None:
        items = [_change_row(c) for c in sorted(changes, key=lambda c: c.id)]
        if opts.fmt == "json":
            click.echo(json.dumps({**rows[0], "changes_list": items}, default=str))
            return
        render.print_rows(list(rows[0]), [list(rows[0].values())], opts.fmt, sys.stdout)
        headers = ["change", "object", "kind", "action", "on", "result", "seconds"]
        headers += ["undone_by_run", "error"]
        render.print_rows(
            headers,
            [[i[h] for h in headers] for i in items],
            opts.fmt,
            sys.stdout,
            title=f"Changes of run {run_id}",
        )
        return
    if opts.fmt == "json":
        click.echo(json.dumps(rows, default=str))
        return
    headers = ["run", "command", "environment", "outcome", "started_at", "seconds", "changes"]
    headers += ["undoes_run", "undone_by_run"]
    render.print_rows(
        headers, [[r[h] for h in headers] for r in rows], opts.fmt, sys.stdout, title="Runs"
    )
