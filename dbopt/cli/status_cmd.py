"""`dbopt status`: what dbopt manages, and how it is."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from dbopt.cli.common import EXIT_CODES_HELP, Options, common_options
from dbopt.cli.fleet_output import fleet_options
from dbopt.cli.run_output import (
    human_age,
    human_size,
)

if TYPE_CHECKING:
    from dbopt.status import IndexState


def _json_row(r: IndexState, nodes: tuple[str, ...]) -> dict[str, object]:
    """One index for machines: sizes in bytes, snake_case keys, scans per node (null where a
    node could not be read, and then ``scans_partial``)."""
    out: dict[str, object] = {
        "index": r.name,
        "table": r.table,
        "state": r.state,
        "valid": r.valid,
        "size_bytes": r.size_bytes,
        "scans": r.scans,
        "created_by": r.origin,
    }
    if nodes:
        out["scans_by_node"] = dict(zip(nodes, r.node_scans, strict=True))
        out["scans_partial"] = any(n is None for n in r.node_scans)
    return out


@click.command(epilog=EXIT_CODES_HELP)
@common_options
@click.option(
    "--exit-code",
    is_flag=True,
    help="Exit 1 when something needs attention (for monitoring checks).",
)
@fleet_options
def status(opts: Options, exit_code: bool, parallel: int | None, continue_on_error: bool) -> None:
    """Show managed indexes: validity, size, scans, drift; unmanaged indexes separately.

    Managed indexes are the ones in the specs. Scans count since the last statistics reset.
    Indexes on the same tables that are in no spec are listed apart: dbopt never touches them.

    \b
    Examples:
      dbopt status --env production
      dbopt status --dsn postgresql://app@localhost/app --format json
      dbopt status --env production --exit-code   # a Nagios/cron check
      dbopt status --env tenants --exit-code      # a fleet: a row per target

    With --exit-code it exits 1 when something needs attention: a managed index or view
    missing, INVALID, drifted or out of the specs, an INVALID index on a managed table, a view
    overdue or without data, a last run that failed or stopped, a spec that cannot be applied
    to this database (a name taken, a table missing). The reasons are printed (and
    listed under "attention" in JSON). The JSON layout is documented in the README.
    """
    import dataclasses

    from dbopt import render, usecases
    from dbopt.history import History
    from dbopt.spec import load_specs

    config = opts.load_config()
    specs = load_specs(opts.spec_dirs(config))
    fleet = opts.fleet(config)
    if fleet is not None:
        from dbopt.cli import fleet_output as fo
        from dbopt.fleetwork import status_work
        from dbopt.status import StatusReport

        work = status_work(specs, History(config.history_schema), exit_code=exit_code)
        done = fo.run(fleet, work, fo.policy(fleet, parallel, continue_on_error))
        fo.print_report(done, opts.fmt, "status")
        if opts.fmt != "json":
            for each in done.results:
                if isinstance(each.value, StatusReport):
                    for line in each.value.attention():
                        click.echo(f"attention: {each.name}: {line}")
        fo.finish(done)
        return
    target = opts.target(config)
    report = usecases.status(target, specs, History(config.history_schema))
    attention = report.attention()
    scans = (
        ("scans (reachable nodes)" if report.unreachable else "scans (all nodes)")
        if report.nodes
        else "scans"
    )
    headers = ["index", "table", "state", "valid", "size", scans, *report.nodes, "created by"]

    def row(r: IndexState) -> list[object]:
        return [
            r.name,
            r.table,
            r.state,
            r.valid,
            human_size(r.size_bytes),
            r.scans,
            *("?" if n is None else n for n in r.node_scans),
            r.origin,
        ]

    managed = [row(r) for r in report.managed]
    unmanaged = [row(r) for r in report.unmanaged]
    if report.standby:
        click.echo(
            "note: this is a standby: scans are the reads it served, not the primary's", err=True
        )
    for problem in report.unreachable:
        click.echo(f"note: scans unknown on {problem}", err=True)
    if opts.fmt == "json":
        import json

        click.echo(
            json.dumps(
                {
                    "managed": [_json_row(r, report.nodes) for r in report.managed],
                    "unmanaged": [_json_row(r, report.nodes) for r in report.unmanaged],
                    "nodes": list(report.nodes),
                    "unreachable": list(report.unreachable),
                    "attention": list(attention),
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
                default=render.json_value,
            )
        )
        _exit_for(attention, exit_code)
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
                    human_size(v.size_bytes),
                    v.schedule,
                    render.when(v.last_refresh) if v.last_refresh else "never",
                    human_age(v.age_s),
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
        f"last run: #{last.id} {last.command} {last.outcome} at {render.when(last.started_at)}"
        if last
        else "last run: none (dbopt has not applied anything here)"
    )
    for line in attention:
        click.echo(f"attention: {line}")
    _exit_for(attention, exit_code)


def _exit_for(attention: tuple[str, ...], exit_code: bool) -> None:
    if exit_code and attention:
        sys.exit(1)
