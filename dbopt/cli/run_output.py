"""What the database commands share: the run's summary, the terminal's hooks (plan shown,
confirmation asked), the waiting options, sizes and ages in words."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

if TYPE_CHECKING:
    from collections.abc import Sequence

    from dbopt.config import Target
    from dbopt.planner import Plan
    from dbopt.rollback import Skipped
    from dbopt.usecases import Locking, Outcome


def human_size(size: int | None) -> str:
    if size is None:
        return ""
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return str(size)  # pragma: no cover


def human_age(seconds: float | None) -> str:
    if seconds is None:
        return ""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def print_outcome(outcome: Outcome, fmt: str, command: str) -> None:
    """The summary table of a run; exit 130 when it was interrupted, 1 when it failed."""
    from dbopt import render
    from dbopt.model import ChangeOutcome

    run = outcome.run
    if run is None:
        return
    machine = fmt == "json"  # sizes in bytes, durations named with their unit
    render.print_rows(
        [
            "object",
            "action",
            "result",
            "seconds",
            "building_s" if machine else "building",
            "waiting_s" if machine else "waiting",
            "builds",
            "size_bytes" if machine else "size",
        ],
        [
            [
                str(c.action.name),
                c.action.kind.value,
                c.result,
                round(c.seconds, 2),
                round(c.cost.worked_s, 1),
                round(c.cost.waited_s, 1),
                c.cost.builds,
                c.size_bytes if machine else human_size(c.size_bytes),
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
    raise_for_outcome(outcome, command)


def raise_for_outcome(outcome: Outcome, command: str) -> None:
    """Exit 130 when the run was interrupted, 1 when it failed, stopped or left changes
    undone (what print_outcome ends with; ``--log-format json`` prints no table)."""
    from dbopt.errors import CheckFailedError
    from dbopt.model import ChangeOutcome, RunOutcome

    run = outcome.run
    if run is None:
        return
    if run.outcome == RunOutcome.ABORTED:
        raise KeyboardInterrupt
    if run.outcome == RunOutcome.STOPPED:
        left = ", ".join(str(n) for n in run.not_started)
        raise CheckFailedError(
            f"{command} {run.stopped}; what it built is whole and recorded (run "
            f"{run.run_id}, stopped); not started: {left or 'nothing'}. Run {command} again "
            "once the standbys catch up"
        )
    if run.outcome == RunOutcome.FAILED:
        failures = [c for c in run.changes if c.result == ChangeOutcome.FAILED]
        raise CheckFailedError(
            f"{command} failed: " + "; ".join(c.error or str(c.action.name) for c in failures)
        )
    if any(c.result == ChangeOutcome.SKIPPED for c in run.changes) and command == "apply":
        raise CheckFailedError("apply left some changes undone (skipped, see above)")


class Terminal:
    """The use cases' hooks on a terminal: print the plan, ask for the environment's name."""

    def __init__(self, fmt: str, env: str | None) -> None:
        self.fmt = fmt
        self.env = env

    def planned(self, plan: Plan, title: str, skipped: Sequence[Skipped]) -> None:
        from dbopt import render

        headers, rows = render.plan_rows(plan)
        # Names and words, never numbers: printed as they are (and tabulate skips its number
        # detection, ~5 ms a run).
        render.print_rows(
            headers, rows, self.fmt, sys.stdout, title=f"{title} for {plan.where}", exact=True
        )
        click.echo(render.plan_counts(plan))
        for item in skipped:
            click.echo(f"left alone: {item.name}: {item.reason}")

    def confirm(self, question: str) -> bool:
        typed = click.prompt(
            f"{question}\nType the environment name ({self.env}) to go ahead", default=""
        )
        return bool(typed == self.env)


def closing(reporter: object) -> None:
    close = getattr(reporter, "close", None)
    if callable(close):
        close()


def blocked_exit(plan: Plan) -> None:
    """Drift left in place (no --replace-drifted/--prune) is a failed check: exit 1."""
    if plan.blocked:
        from dbopt.errors import CheckFailedError
        from dbopt.render import flag

        raise CheckFailedError(
            "; ".join(f"{a.kind.value} {a.name} needs {flag(a.needs or '')}" for a in plan.blocked)
        )


WAIT = click.option(
    "--wait", is_flag=True, help="Wait for another dbopt run to finish instead of exiting 3."
)
WAIT_TIMEOUT = click.option(
    "--wait-timeout",
    metavar="DURATION",
    help="With --wait: give up (exit 3) after this long (e.g. 10min; 0: no limit, the default).",
)
WAIT_FOR_BLOCKERS = click.option(
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
_REPLICA_LAG = click.option(
    "--max-replica-lag",
    metavar="DURATION",
    help="Pause before each build while a standby replays further behind than this (e.g. "
    "30s); overrides max_replica_lag. Default: do not wait for standbys.",
)
_REPLICA_WAIT = click.option(
    "--max-replica-wait",
    metavar="DURATION",
    help="Stop the run (exit 1, recorded as stopped) after pausing this long in all for "
    "lagging standbys; overrides max_replica_wait (default 30min; 0 = no limit).",
)


def waits(command: F) -> F:
    """--build-wait-timeout, --max-replica-lag and --max-replica-wait."""
    return _BUILD_WAIT(_REPLICA_LAG(_REPLICA_WAIT(command)))


def with_waits(
    target: Target,
    build_wait_timeout: str | None,
    max_replica_lag: str | None,
    max_replica_wait: str | None,
) -> Target:
    """The target with the waiting flags applied over its environment's settings."""
    from dataclasses import replace

    from dbopt.settingvalues import duration_ms

    settings = target.settings
    if build_wait_timeout is not None:
        settings = replace(settings, build_wait_timeout_ms=duration_ms(build_wait_timeout))
    if max_replica_lag is not None:
        settings = replace(settings, max_replica_lag_ms=duration_ms(max_replica_lag))
    if max_replica_wait is not None:
        settings = replace(settings, max_replica_wait_ms=duration_ms(max_replica_wait))
    return replace(target, settings=settings)


def locking(wait: bool, wait_timeout: str | None) -> Locking:
    from dbopt.errors import ConfigError
    from dbopt.settingvalues import duration_ms
    from dbopt.usecases import Locking

    if wait_timeout is not None and not wait:
        raise ConfigError("--wait-timeout goes with --wait")
    return Locking(wait, duration_ms(wait_timeout) if wait_timeout else None)
