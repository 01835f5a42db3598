"""What a fleet does on each target: the per-target use cases of :mod:`dbopt.usecases`,
unchanged, wrapped into :class:`dbopt.fleet.Done` rows (outcome, exit code, changes,
failing budgets) the way the single-database commands judge them.

Each builder takes what the command line parsed and returns a :data:`dbopt.fleet.Work`.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import psycopg

from dbopt import usecases
from dbopt.catalog import catalog_sql
from dbopt.errors import (
    EXIT_BAD_INPUT,
    EXIT_CHECK_FAILED,
    EXIT_CONNECT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    NothingToRollBack,
    UnsafeActionError,
)
from dbopt.fleet import Context, Done, Member, Work
from dbopt.model import ChangeOutcome, RunOutcome
from dbopt.render import flag

if TYPE_CHECKING:
    from dbopt.history import History
    from dbopt.model import QueryBudget, SpecSet
    from dbopt.planner import Plan
    from dbopt.progress import Reporter
    from dbopt.rollback import Selection, Skipped
    from dbopt.verify import VerifyReport

#: How the command line makes a reporter for a target (its lines prefixed with the name).
ReporterFor = Callable[[str], "Reporter"]


class ServerTurns:
    """One target of a server measured at a time, whatever the DSNs call it: timings taken
    beside another target of the same server would measure both. The server is told by what
    it says of itself once connected (its port and its postmaster's start time), so
    localhost, 127.0.0.1, a socket directory and a service naming one server are one; the
    runner's own one-per-server scheduling (fleet.server_of, from the DSNs' text) only saves
    threads the wait."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._turns: dict[tuple[str, str], threading.Lock] = {}

    @contextlib.contextmanager
    def turn(self, conn: psycopg.Connection[Any], context: Context) -> Iterator[None]:
        """Held while measuring on ``conn``'s server; waits for the target before it (Ctrl-C
        ends the wait: KeyboardInterrupt)."""
        row = conn.execute(catalog_sql("server_identity")).fetchone()
        key = (str(row[0]), str(row[1])) if row else ("", "")
        with self._guard:
            lock = self._turns.setdefault(key, threading.Lock())
        while not lock.acquire(timeout=0.2):
            if context.stopping:
                raise KeyboardInterrupt
        try:
            yield
        finally:
            lock.release()


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _listed(items: Sequence[str], most: int = 3) -> str:
    shown = ", ".join(items[:most])
    return shown + (f" and {len(items) - most} more" if len(items) > most else "")


def _file_name(name: str) -> str:
    """A target's name as one path component inside --plans-dir, one per target: kept as it
    is when it is one already; otherwise its other characters become ``_`` and a hash of the
    whole name tells apart names that would meet (``eu/1`` and ``eu_1``, ``..``)."""
    safe = "".join(c if c.isalnum() or c in "-_.@:" else "_" for c in name)
    if safe == name and safe.strip(".") and not safe.startswith("."):
        return safe
    return f"{safe.strip('.') or 'target'}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def counts(plan: Plan) -> str:
    """``2 creates, 1 replace``: what a plan will run, by kind."""
    found = Counter(a.kind.value for a in plan.runnable)
    return ", ".join(_n(n, kind) for kind, n in sorted(found.items()))


def fingerprint(plan: Plan) -> tuple[str, ...]:
    """What a plan would run, to compare the plan confirmed with the plan about to run."""
    return tuple(
        f"{a.kind.value} {a.name}: " + "; ".join(s.text() for s in a.forward) for a in plan.runnable
    )


class _Hooks:
    """A target's hooks in a fleet: nothing printed per target (the report says it), the
    fleet was confirmed once before any target ran; a Ctrl-C pressed while this target was
    planning stops it before its first statement. With ``confirmed`` (the plan the person
    said yes to, as :func:`fingerprint`), a target whose plan is not that one any more (or
    that could not be planned for the confirmation) runs nothing."""

    def __init__(self, context: Context, confirmed: tuple[str, ...] | None = None) -> None:
        self.context = context
        self.confirmed = confirmed

    def planned(self, plan: Plan, title: str, skipped: Sequence[Skipped]) -> None:
        if self.context.stopping:
            raise KeyboardInterrupt
        if self.confirmed is not None and fingerprint(plan) != self.confirmed:
            raise UnsafeActionError(
                "its plan changed since the fleet's plan was confirmed; nothing was run here "
                "(plan and apply again)"
            )

    def confirm(self, question: str) -> bool:
        return True


# --- plan ----------------------------------------------------------------------------------


def plan_work(
    specs: SpecSet,
    history: History,
    *,
    replace_drifted: bool = False,
    prune: bool = False,
    cascade: bool = False,
    part: usecases.Part | None = None,
    exit_code: bool = False,
) -> Work:
    """``dbopt plan`` on a target: changes found are a finding (exit 1 with ``exit_code``),
    a plan apply would refuse is exit 2 (3 when only locks not granted at once refuse it)."""

    def work(member: Member, context: Context) -> Done:
        result = usecases.plan(
            member.target,
            specs,
            history,
            replace_drifted=replace_drifted,
            prune=prune,
            cascade=cascade,
            part=part or usecases.Part(),
        )
        changes = [f"{a.kind.value} {a.name}" for a in result.changes]
        if result.refused:
            refusals = [a.refusal or "" for a in result.refused]
            # Only locks not granted at once: "locked" (exit 3, try again), as apply says.
            locked = result.refused_for_locks
            return Done(
                "locked" if locked else "refused",
                EXIT_CONNECT if locked else EXIT_BAD_INPUT,
                len(changes),
                detail="apply would refuse: " + "; ".join(refusals),
                # A finding of a read-only command: it stops no other target.
                failed=False,
                value=result,
            )
        code = EXIT_CHECK_FAILED if exit_code and changes else EXIT_OK
        return Done(
            "changes" if changes else "unchanged",
            code,
            len(changes),
            detail=_listed(changes),
            value=result,
        )

    return work


# --- apply and rollback --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CanaryCheck:
    """What verify measures on a canary after its apply (``None``: verify's defaults)."""

    queries: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()
    plan_margin: float | None = None
    fail_on_fragile: bool = False


def _run_done(outcome: usecases.Outcome, command: str) -> Done:
    """A run's outcome as print_outcome and blocked_exit judge it for one database."""
    run = outcome.run
    blocked = [f"{a.kind.value} {a.name} needs {flag(a.needs or '')}" for a in outcome.plan.blocked]
    if run is None:
        code = EXIT_CHECK_FAILED if blocked else EXIT_OK
        return Done("unchanged", code, 0, detail="; ".join(blocked), value=outcome)
    failures = [
        c.error or str(c.action.name) for c in run.changes if c.result == ChangeOutcome.FAILED
    ]
    skipped = [str(c.action.name) for c in run.changes if c.result == ChangeOutcome.SKIPPED]
    made = sum(1 for c in run.changes if c.result == ChangeOutcome.OK)
    where = f"run {run.run_id}"
    if run.outcome == RunOutcome.ABORTED:
        return Done("interrupted", EXIT_INTERRUPTED, made, detail=f"{where}: Ctrl-C", value=outcome)
    if run.outcome == RunOutcome.STOPPED:
        detail = f"{where}: {command} {run.stopped}"
        return Done("stopped", EXIT_CHECK_FAILED, made, detail=detail, failed=True, value=outcome)
    if run.outcome == RunOutcome.FAILED:
        detail = f"{where}: " + "; ".join(failures)
        return Done("failed", EXIT_CHECK_FAILED, made, detail=detail, failed=True, value=outcome)
    if skipped and command == "apply":
        detail = f"{where}: skipped {', '.join(skipped)}"
        return Done("failed", EXIT_CHECK_FAILED, made, detail=detail, failed=True, value=outcome)
    done = "applied" if command == "apply" else "rolled back"
    code = EXIT_CHECK_FAILED if blocked else EXIT_OK
    return Done(done, code, made, detail="; ".join([where, *blocked]), value=outcome)


def apply_work(
    specs: SpecSet,
    history: History,
    options: usecases.ApplyOptions,
    reporter_for: ReporterFor,
    canary_check: CanaryCheck | None = None,
    confirmed: Mapping[str, tuple[str, ...] | Done] | None = None,
) -> Work:
    """``dbopt apply`` on a target (confirmed for the whole fleet beforehand: ``confirmed``
    maps each target to the :func:`fingerprint` of the plan confirmed, or to how its planning
    ended where it could not be planned -- unreachable, locked, refused: its outcome and exit
    code, nothing run; a target runs only the plan confirmed); on a canary, the budgets are
    verified after the apply (one canary of a server at a time: ServerTurns) and a miss
    fails the canary."""
    options = replace(options, yes=True)
    turns = ServerTurns()

    def work(member: Member, context: Context) -> Done:
        own = options
        if options.plans_dir is not None:  # run ids are per database: a folder per target
            own = replace(options, plans_dir=options.plans_dir / _file_name(member.name))
        expected = None
        if confirmed is not None:
            found = confirmed.get(member.name)
            if found is None:
                raise UnsafeActionError("it was not planned for the confirmation; nothing was run")
            if isinstance(found, Done):
                return found
            expected = found
        outcome = usecases.apply(
            member.target,
            specs,
            history,
            own,
            reporter=reporter_for(member.name),
            hooks=_Hooks(context, expected),
            on_start=lambda runner: context.on_cancel(runner.interrupt),
        )
        if options.dry_run:
            return Done("dry run", changes=len(outcome.plan.runnable), value=outcome)
        done = _run_done(outcome, "apply")
        if not context.canary or canary_check is None or done.code != EXIT_OK:
            return done
        if context.stopping:
            raise KeyboardInterrupt
        report = usecases.verify(
            member.target,
            specs,
            queries=canary_check.queries,
            tables=canary_check.tables,
            plan_margin=canary_check.plan_margin,
            fail_on_fragile=canary_check.fail_on_fragile,
            alone=lambda conn: turns.turn(conn, context),
        )
        failing = tuple(r.budget.name for r in report.failed)
        applied = f"{done.detail}; " if done.detail else ""  # nothing to say of an unchanged one
        if not failing:
            met = _n(len(report.results), "budget")
            return replace(done, detail=f"{applied}{met} met")
        return replace(
            done,
            outcome="budgets failed",
            code=EXIT_CHECK_FAILED,
            failing=failing,
            failed=True,
            detail=f"{applied}{len(failing)} of {_n(len(report.results), 'budget')} failed: "
            + ", ".join(failing),
        )

    return work


def rollback_work(
    history: History,
    selection: Selection,
    reporter_for: ReporterFor,
    *,
    locking: usecases.Locking | None = None,
    wait_for_blockers: bool = False,
    plan_only: bool = False,
) -> Work:
    """``dbopt rollback --last`` on a target; a target with nothing to undo is fine."""

    def work(member: Member, context: Context) -> Done:
        try:
            outcome = usecases.rollback(
                member.target,
                history,
                selection,
                reporter=reporter_for(member.name),
                hooks=_Hooks(context),
                locking=locking or usecases.Locking(),
                wait_for_blockers=wait_for_blockers,
                plan_only=plan_only,
                yes=True,
                on_start=lambda runner: context.on_cancel(runner.interrupt),
            )
        except NothingToRollBack as exc:
            return Done("nothing to undo", changes=0, detail=str(exc).splitlines()[0])
        if plan_only:
            return Done("planned", changes=len(outcome.plan.runnable), value=outcome)
        return _run_done(outcome, "rollback")

    return work


def fleet_summary(plans: Sequence[tuple[str, Plan | None]], env: str, command: str) -> str:
    """The one confirmation line of a fleet: ``apply: 3 creates on 20 targets of production``;
    when the targets differ, the totals; then the targets with nothing to change and those
    that could not be planned."""
    planned = [(n, p) for n, p in plans if p is not None]
    unknown = [n for n, p in plans if p is None]
    changing = [p for _n, p in planned if p.runnable]
    kinds = {counts(p) for p in changing}
    if not changing:
        what = "nothing to change"
    elif len(kinds) == 1:
        what = f"{kinds.pop()} on {_n(len(changing), 'target')}"
    else:
        every: Counter[str] = Counter()
        for p in changing:
            every.update(a.kind.value for a in p.runnable)
        sums = ", ".join(_n(n, k) for k, n in sorted(every.items()))
        what = f"{sums} in all, on {_n(len(changing), 'target')}"
    notes = []
    if len(planned) > len(changing) and changing:
        notes.append(f"{len(planned) - len(changing)} with nothing to change")
    if unknown:
        notes.append(f"{len(unknown)} could not be planned: {_listed(unknown)}")
    return f"{command}: {what} of {env}" + (f" ({'; '.join(notes)})" if notes else "")


# --- verify, status, refresh ---------------------------------------------------------------


def verify_work(
    specs: SpecSet,
    *,
    queries: Sequence[str] = (),
    tables: Sequence[str] = (),
    plan_margin: float | None = None,
    fail_on_fragile: bool = False,
    progress: Callable[[str, QueryBudget], None] | None = None,
    retries: int = 0,
    strict: bool = False,
) -> Work:
    """``dbopt verify`` on a target: missed budgets are a finding (exit 1), unstable ones too
    with ``strict``. Never two targets of one server measured at once (ServerTurns)."""
    turns = ServerTurns()

    def work(member: Member, context: Context) -> Done:
        report: VerifyReport = usecases.verify(
            member.target,
            specs,
            queries=queries,
            tables=tables,
            plan_margin=plan_margin,
            fail_on_fragile=fail_on_fragile,
            progress=None if progress is None else (lambda b: progress(member.name, b)),
            retries=retries,
            alone=lambda conn: turns.turn(conn, context),
        )
        failing = tuple(r.budget.name for r in report.failed)
        if strict:
            failing += tuple(r.budget.name for r in report.unstable)
        worst = report.worst.value
        return Done(
            worst,
            EXIT_CHECK_FAILED if failing else EXIT_OK,
            failing=failing,
            detail=f"{len(report.results)} quer{'y' if len(report.results) == 1 else 'ies'}",
            value=report,
        )

    return work


def status_work(specs: SpecSet, history: History, *, exit_code: bool = False) -> Work:
    """``dbopt status`` on a target: what needs attention is a finding (exit 1 with
    ``exit_code``)."""

    def work(member: Member, context: Context) -> Done:
        report = usecases.status(member.target, specs, history)
        attention = list(report.attention())
        return Done(
            "attention" if attention else "ok",
            EXIT_CHECK_FAILED if exit_code and attention else EXIT_OK,
            len(attention),
            detail=_listed(attention, 2),
            value=report,
        )

    return work


def refresh_work(
    specs: SpecSet, history: History, options: usecases.RefreshOptions, *, strict: bool = False
) -> Work:
    """``dbopt refresh-views`` on a target: a failed refresh fails the target."""
    from dbopt.model import RefreshOutcome

    def work(member: Member, context: Context) -> Done:
        from dbopt.refresh import Interruption

        interruption = Interruption()
        context.on_cancel(interruption.interrupt)
        results, _sql = usecases.refresh(
            member.target, specs, history, options, interruption=interruption
        )
        failed = [f"{r.view}: {r.message}" for r in results if r.outcome == RefreshOutcome.FAILED]
        skipped = [str(r.view) for r in results if r.outcome == RefreshOutcome.SKIPPED]
        refreshed = sum(1 for r in results if r.outcome == RefreshOutcome.OK)
        if failed or (strict and skipped):
            detail = "; ".join(failed + [f"skipped {s}" for s in skipped])
            return Done("failed", EXIT_CHECK_FAILED, refreshed, detail=detail, failed=True)
        detail = f"skipped (already running): {', '.join(skipped)}" if skipped else ""
        return Done("refreshed", EXIT_OK, refreshed, detail=detail, value=results)

    return work


__all__ = [
    "CanaryCheck",
    "ReporterFor",
    "apply_work",
    "counts",
    "fleet_summary",
    "plan_work",
    "refresh_work",
    "rollback_work",
    "status_work",
    "verify_work",
]
