"""What the database commands share: the run's summary, the terminal's hooks (plan shown,
confirmation asked), the waiting options, sizes and ages in words."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

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
                human_size(c.size_bytes),
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


class Terminal:
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
    help="With --wait: give up (exit 3) after this long (e.g. 10min). Default: no limit.",
)
WAIT_FOR_BLOCKERS = click.option(
    "--wait-for-blockers",
    is_flag=True,
    help="Start even when transactions older than lock_timeout are open, and wait for them "
    "to finish instead of refusing.",
)


BUILD_WAIT = click.option(
    "--build-wait-timeout",
    metavar="DURATION",
    help="How long a concurrent build or drop may wait for other transactions (its wait "
    "never blocks the application); overrides build_wait_timeout. Default: no limit.",
)


def with_build_wait(target: Target, value: str | None) -> Target:
    """The target with --build-wait-timeout applied."""
    if value is None:
        return target
    from dataclasses import replace

    from dbopt.config import duration_ms

    settings = replace(target.settings, build_wait_timeout_ms=duration_ms(value))
    return replace(target, settings=settings)


def locking(wait: bool, wait_timeout: str | None) -> Locking:
    from dbopt.config import duration_ms
    from dbopt.errors import ConfigError
    from dbopt.usecases import Locking

    if wait_timeout is not None and not wait:
        raise ConfigError("--wait-timeout goes with --wait")
    return Locking(wait, duration_ms(wait_timeout) if wait_timeout else None)
