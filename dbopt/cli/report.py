"""Reporters for the executor: rich progress bars on a terminal, timestamped lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from dbopt.model import QualifiedName
from dbopt.progress import Blocker


class LineReporter:
    """Plain timestamped lines on stderr (logs, CI, cron)."""

    def __init__(self, verbose: int = 0) -> None:
        self.verbose = verbose
        self._last: dict[QualifiedName, float] = {}

    def event(self, message: str) -> None:
        """One line with a timestamp."""
        click.echo(f"{time.strftime('%H:%M:%S')} {message}", err=True)

    def progress(self, index: QualifiedName, phase: str, done: int, total: int) -> None:
        """At most one progress line per index every 10 s."""
        now = time.monotonic()
        if now - self._last.get(index, 0) < 10:
            return
        self._last[index] = now
        pct = f" {100 * done / total:.0f}%" if total else ""
        self.event(f"{index}: {phase}{pct}")

    def waiting(
        self, index: QualifiedName, phase: str, seconds: float, blockers: list[Blocker]
    ) -> None:
        """At most one line per index every 10 s: the phase, for how long, and for whom."""
        now = time.monotonic()
        if now - self._last.get(index, 0) < 10:
            return
        self._last[index] = now
        self.event(f"{index}: {phase} for {seconds:.0f}s; {_waiting_for(blockers)}")

    def finished(self, index: QualifiedName) -> None:
        """Nothing to close."""
        self._last.pop(index, None)

    def action_started(self, kind: str, name: QualifiedName) -> None:
        """``create public.x ...``"""
        self.event(f"{kind} {name} ...")

    def action_ended(
        self, kind: str, name: QualifiedName, result: str, seconds: float, error: str | None
    ) -> None:
        """``public.x: ok in 1.2s`` (and `` — error`` when there is one)."""
        self.event(f"{name}: {result} in {seconds:.1f}s" + (f" — {error}" if error else ""))


def _waiting_for(blockers: list[Blocker]) -> str:
    if not blockers:
        return "waiting for: no session still visible"
    return "waiting for: " + "; ".join(str(b) for b in blockers)


class RichReporter(LineReporter):
    """A rich progress bar per build, events above the bars."""

    def __init__(self, verbose: int = 0) -> None:
        super().__init__(verbose)
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(file=sys.stderr)
        self.bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[phase]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,  # a finished run leaves its summary, not its last frame
        )
        self.tasks: dict[QualifiedName, Any] = {}
        self.bars.start()

    def event(self, message: str) -> None:
        """Printed above the bars."""
        from rich.markup import escape

        # Messages hold server text and blocking queries: never read them as markup.
        self.bars.console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {escape(message)}")

    def progress(self, index: QualifiedName, phase: str, done: int, total: int) -> None:
        """Update (or open) the bar of this index."""
        task = self.tasks.get(index)
        if task is None:
            task = self.bars.add_task(str(index), total=total or None, phase=phase)
            self.tasks[index] = task
        self.bars.update(task, completed=done, total=total or None, phase=phase)

    def waiting(
        self, index: QualifiedName, phase: str, seconds: float, blockers: list[Blocker]
    ) -> None:
        """The bar says it waits; a line above it says for whom, every 10 s."""
        task = self.tasks.get(index)
        if task is None:
            task = self.bars.add_task(str(index), total=None, phase=phase)
            self.tasks[index] = task
        self.bars.update(task, phase=f"{phase} {seconds:.0f}s")
        super().waiting(index, phase, seconds, blockers)

    def finished(self, index: QualifiedName) -> None:
        """Remove the bar of this index."""
        task = self.tasks.pop(index, None)
        if task is not None:
            self.bars.remove_task(task)

    def close(self) -> None:
        """Stop drawing."""
        self.bars.stop()


def make_reporter(verbose: int) -> LineReporter:
    """Rich bars on a terminal, plain lines otherwise."""
    return RichReporter(verbose) if sys.stderr.isatty() else LineReporter(verbose)
