"""What the fleet commands share on the command line: --parallel, --continue-on-error, the
progress lines (one per target event, with a running count), the confirmation of a whole
fleet, the report (a row per target) and its exit code."""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from dbopt.cli.report import LineReporter

if TYPE_CHECKING:
    from dbopt.cli.common import Options
    from dbopt.config import Config, Settings
    from dbopt.fleet import Fleet, FleetReport, Policy, Work
    from dbopt.model import SpecSet
    from dbopt.usecases import ApplyOptions

F = TypeVar("F", bound=Callable[..., Any])

_PARALLEL = click.option(
    "--parallel",
    type=click.IntRange(1, 64),
    metavar="N",
    help="With a fleet environment: targets worked on at a time (default: the environment's "
    "parallel:, else 4; verify: never two of one server).",
)
_CONTINUE = click.option(
    "--continue-on-error",
    is_flag=True,
    help="With a fleet environment: go on with the other targets after one fails (by default "
    "no new target starts; the running ones finish).",
)


def fleet_options(command: F) -> F:
    """--parallel and --continue-on-error."""
    return _PARALLEL(_CONTINUE(command))


class TargetReporter(LineReporter):
    """A target's progress lines in a fleet: each prefixed with the target's name."""

    def __init__(self, name: str, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.name = name

    def event(self, message: str) -> None:
        """One line: time, target, message."""
        super().event(f"{self.name}: {message}")


def _event(line: str) -> None:
    click.echo(f"{time.strftime('%H:%M:%S')} {line}", err=True)


def policy(
    fleet: Fleet,
    parallel: int | None,
    continue_on_error: bool,
    *,
    canary: int = 0,
    wait_on_interrupt: bool = False,
    one_per_server: bool = False,
) -> Policy:
    """The fleet's policy from the flags (and the environment's parallel:)."""
    from dbopt.fleet import Policy

    return Policy(
        parallel or fleet.parallel,
        continue_on_error=continue_on_error,
        canary=canary,
        wait_on_interrupt=wait_on_interrupt,
        one_per_server=one_per_server,
        canaries_one_per_server=canary > 0,
    )


def run(
    fleet: Fleet, work: Work, how: Policy, doing: str = "", *, late_ctrl_c_stops: bool = False
) -> FleetReport:
    """Run the work with progress lines on stderr (``doing``: what the first line says).
    ``late_ctrl_c_stops``: a Ctrl-C that came as the last target finished counts as an
    interruption too (the planning before a confirmation: no prompt after it); otherwise the
    work that finished is reported as it went."""
    from dbopt import fleet as fl

    selected = len(fleet.members)
    at_once = min(how.parallel, selected)
    shared = ""
    if how.one_per_server:
        servers = len({fl.server_of(m) for m in fleet.members})
        if servers < at_once:
            at_once = servers
            shared = f" (one per server: {servers} server{'s' if servers != 1 else ''})"
    _event(
        f"{fleet.env}: {doing + ' ' if doing else ''}{selected} target"
        f"{'s' if selected != 1 else ''}, "
        f"{at_once} at a time{shared}"
        + (f", {how.canary} canar{'ies' if how.canary > 1 else 'y'} first" if how.canary else "")
    )
    stop = threading.Event()
    restore: Callable[[bool], None] | None = None
    if threading.current_thread() is threading.main_thread():
        from dbopt import ctrlc  # fleets only

        # Ctrl-C sets an event the runner polls, instead of raising wherever the main thread
        # happens to be: every running target is then cancelled and cleaned up.
        restore = ctrlc.relay(stop.set, "dbopt-fleet-ctrl-c")
    try:
        report = fl.run(fleet, work, how, _event, interrupt=stop)
        if late_ctrl_c_stops and stop.is_set() and not report.interrupted:
            report = dataclasses.replace(report, interrupted=True)
        return report
    finally:
        if restore is not None:
            restore(stop.is_set())


def confirm(question: str, env: str) -> None:
    """One prompt for the whole fleet; UnsafeActionError unless the environment is typed."""
    from dbopt.errors import UnsafeActionError

    typed = click.prompt(f"{question}\nType the environment name ({env}) to go ahead", default="")
    if typed != env:
        raise UnsafeActionError("not confirmed; nothing was run")


def _seconds(value: float | None) -> str | float:
    return "" if value is None else round(value, 1)


def print_report(report: FleetReport, fmt: str, command: str) -> None:
    """The report: a row per target (name, outcome, changes, duration, failing budgets)."""
    from dbopt import render

    if fmt == "json":
        click.echo(json.dumps(report_dict(report), indent=2))
        return
    render.print_rows(
        ["target", "outcome", "changes", "seconds", "failing budgets", "detail"],
        [
            [
                r.name + (" (canary)" if r.canary else ""),
                r.outcome,
                "" if r.changes is None else r.changes,
                _seconds(r.seconds),
                ", ".join(r.failing),
                # Whole: a detail's first line may end at "...would wait:" (the pids follow).
                " ".join(line.strip() for line in r.detail.splitlines() if line.strip()),
            ]
            for r in report.results
        ],
        fmt,
        sys.stdout,
        title=f"{command} on {report.env}",
    )
    click.echo(summary(report))


def summary(report: FleetReport) -> str:
    """``20 targets: 18 ok, 1 failed, 1 not started; exit 3``."""
    from collections import Counter

    found = Counter(r.outcome for r in report.results)
    parts = ", ".join(f"{n} {outcome}" for outcome, n in found.items())
    total = len(report.results)
    line = f"{total} target{'s' if total != 1 else ''}: {parts or 'none'}"
    if report.stopped:
        line += f"; no new target started after {report.stopped}"
    if report.interrupted:
        line += "; interrupted"
    return line


def report_dict(report: FleetReport) -> dict[str, Any]:
    """The report for machines (snake_case keys, seconds, null where absent)."""
    return {
        "environment": report.env,
        "exit_code": report.exit_code,
        "interrupted": report.interrupted,
        "stopped_after": report.stopped,
        "targets": [
            {
                "target": r.name,
                "outcome": r.outcome,
                "exit_code": r.code,
                "canary": r.canary,
                "changes": r.changes,
                "seconds": None if r.seconds is None else round(r.seconds, 3),
                "failing_budgets": list(r.failing),
                "detail": r.detail or None,
            }
            for r in report.results
        ],
    }


def finish(report: FleetReport) -> None:
    """Exit with the worst code of the targets (130 when interrupted; 0: return)."""
    code = report.exit_code
    if report.interrupted:
        click.echo("interrupted", err=True)
    if code:
        click.get_current_context().exit(code)


def reporter_for(opts: Options) -> Callable[[str], TargetReporter]:
    """Per target, a reporter whose lines carry the target's name."""
    return lambda name: TargetReporter(name, opts.verbose)


def print_sql(report: FleetReport, settings: Settings) -> None:
    """The SQL of each target (plan --sql, apply --dry-run, rollback --plan), one block per
    target under a comment naming it; a target that could not be planned is a comment."""
    from dbopt import render
    from dbopt.db import session_sql
    from dbopt.planner import Plan
    from dbopt.usecases import Outcome

    for r in report.results:
        value = r.value
        if isinstance(value, Plan):
            text = session_sql(settings) + render.plan_sql(value)
        elif isinstance(value, Outcome):
            text = value.sql
        else:
            detail = r.detail.splitlines()[0] if r.detail else ""
            click.echo(f"-- target {r.name}: {r.outcome}" + (f": {detail}" if detail else ""))
            continue
        click.echo(f"-- target {r.name}\n{text}", nl=False)


def apply_fleet(
    opts: Options,
    config: Config,
    specs: SpecSet,
    fleet: Fleet,
    options: ApplyOptions,
    *,
    parallel: int | None,
    continue_on_error: bool,
    canary: int,
) -> None:
    """apply on a fleet: one confirmation for all (confirm: true, unless --yes or --dry-run;
    every target planned first, read-only), then the runs, canaries first."""
    from dbopt import fleet as fl
    from dbopt.fleetwork import CanaryCheck, apply_work, fingerprint, fleet_summary, plan_work
    from dbopt.history import History
    from dbopt.planner import Plan

    history = History(config.history_schema)
    how = policy(fleet, parallel, continue_on_error, canary=canary, wait_on_interrupt=True)
    confirming = any(m.target.settings.confirm for m in fleet.members)
    if confirming and not options.yes and not options.dry_run:
        planning = plan_work(
            specs,
            history,
            replace_drifted=options.replace_drifted,
            prune=options.prune,
            cascade=options.cascade,
            part=options.part,
        )
        ahead = fl.Policy(how.parallel, continue_on_error=True, wait_on_interrupt=False)
        plans = run(
            fleet, planning, ahead, "planning (for the confirmation)", late_ctrl_c_stops=True
        )
        if plans.interrupted:
            finish(plans)
        found = [(r.name, r.value if isinstance(r.value, Plan) else None) for r in plans.results]
        if any(p is not None and p.runnable for _n, p in found):
            confirm(fleet_summary(found, fleet.env, "apply"), fleet.env)
        # Where planning failed, the apply ends as it did (unreachable: exit 3), not refused.
        confirmed = {
            r.name: fingerprint(r.value)
            if isinstance(r.value, Plan)
            else fl.Done(
                r.outcome,
                r.code,
                detail=f"{r.detail} (planning for the confirmation; nothing was run here)".strip(),
                failed=True,
            )
            for r in plans.results
        }
    else:
        confirmed = None
    work = apply_work(
        specs,
        history,
        options,
        reporter_for(opts),
        CanaryCheck() if canary else None,
        confirmed=confirmed,
    )
    report = run(fleet, work, how)
    if options.dry_run:
        print_sql(report, fleet.members[0].target.settings if fleet.members else config.defaults)
    else:
        print_report(report, opts.fmt, "apply")
    finish(report)
