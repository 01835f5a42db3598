"""dbopt's use cases as library calls: plan, apply, rollback, refresh.

Each takes the lock it needs, inspects the catalog, plans, runs every pre-flight check and
only then executes, so every entry point — the CLI, the tests, a program looping over many
databases — gets every check. The person at the terminal is reached through :class:`Hooks`
(show the plan, ask for confirmation); progress through the executor's ``Reporter``.
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import psycopg

from dbopt import render
from dbopt.beside import check_beside
from dbopt.catalog import Catalog, catalog_sql, inspect
from dbopt.config import Settings, Target
from dbopt.db import connect, session_sql, unbounded
from dbopt.errors import (
    ConfigError,
    ConnectError,
    DboptError,
    InputError,
    LockWaitError,
    NothingToRollBack,
    PrivilegeError,
    SpecError,
    UnsafeActionError,
)
from dbopt.history import History, OwnedObject
from dbopt.locks import long_running, take_run_lock
from dbopt.model import QualifiedName, SpecSet, ViewSpec
from dbopt.planner import ActionKind, Plan
from dbopt.plans import build_plan, leftover_names, relevant
from dbopt.privileges import create_problem, resolve, unreadable_problem, view_relations
from dbopt.progress import Reporter
from dbopt.replicas import in_recovery, index_scans, require_primary

if TYPE_CHECKING:
    from dbopt.executor import Executor, RunResult
    from dbopt.importer import ImportOptions, ImportOutcome
    from dbopt.model import QueryBudget
    from dbopt.refresh import Interruption, RefreshResult, RefreshWatch
    from dbopt.rollback import RollbackPlan, Selection, Skipped
    from dbopt.status import StatusReport
    from dbopt.verify import VerifyReport
    from dbopt.verify.verdict import Baseline


class Hooks(Protocol):
    """How a use case talks to the person running it (the CLI renders; a library says yes)."""

    def planned(self, plan: Plan, title: str, skipped: Sequence[Skipped]) -> None:
        """The plan about to run (and what will be left alone), before confirmation."""

    def confirm(self, question: str) -> bool:
        """Ask for confirmation (environments with ``confirm: true``); True to go ahead."""


class Quiet:
    """Hooks for library use and tests: show nothing, confirm nothing (refuse)."""

    def __init__(self, *, yes: bool = False) -> None:
        self.yes = yes

    def planned(self, plan: Plan, title: str, skipped: Sequence[Skipped]) -> None:
        """Say nothing."""

    def confirm(self, question: str) -> bool:
        """Go ahead only when built with ``yes=True``."""
        return self.yes


@dataclass(frozen=True, slots=True)
class Locking:
    """How to take dbopt's per-database run lock."""

    wait: bool = False  # wait for another dbopt run instead of failing at once
    wait_timeout_ms: int | None = None  # None: as long as it takes


@dataclass(frozen=True, slots=True)
class Part:
    """The part of a plan to run: indexes and views by name, tables (all their indexes);
    empty: all of it."""

    objects: tuple[QualifiedName, ...] = ()
    tables: tuple[QualifiedName, ...] = ()

    def of(self, result: Plan, specs: SpecSet) -> Plan:
        """``result`` cut to this part (its replaces that would rebuild one view twice
        refused); InputError for a name no spec defines."""
        if not self.objects and not self.tables:
            return result.refusing_shared_rebuilds()
        known = {i.qualified_name for i in specs.all_indexes} | {v.name for v in specs.views}
        known |= {a.name for a in result.actions}
        tables = {s.table for s in specs.indexes} | {v.name for v in specs.views}
        unknown = [str(n) for n in self.objects if n not in known]
        unknown += [f"table {n}" for n in self.tables if n not in tables]
        if unknown:
            raise InputError("no spec defines " + ", ".join(unknown) + ": nothing was run")
        return result.only(self.objects, self.tables).refusing_shared_rebuilds()


def where(conn: psycopg.Connection[Any]) -> str:
    """The database a connection reaches, for people (never its password)."""
    info = conn.info
    version = (info.parameter_status("server_version") or "?").split()[0]
    host = info.host if info.host.startswith("/") else f"{info.host}:{info.port}"
    return f"{info.user}@{host}/{info.dbname}, PostgreSQL {version}"


@dataclass(frozen=True, slots=True)
class ApplyOptions:
    """What apply may do beyond creating what is missing, and how."""

    replace_drifted: bool = False
    prune: bool = False
    cascade: bool = False
    jobs: int | None = None
    locking: Locking = Locking()
    #: Start even when long transactions will make concurrent builds wait (and wait for them).
    wait_for_blockers: bool = False
    dry_run: bool = False
    plans_dir: Path | None = None
    yes: bool = False  # confirmed on the command line
    part: Part = Part()


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a use case planned and, if anything ran, how the run went."""

    plan: Plan
    run: RunResult | None = None
    skipped: tuple[Skipped, ...] = ()
    undoes_run: int | None = None
    sql: str = ""  # the SQL of a dry run or --plan
    notes: tuple[str, ...] = field(default_factory=tuple)


def summary(plan: Plan, target: Target) -> str:
    """One line for the confirmation prompt: what will happen, and where."""
    counts = Counter(a.kind.value for a in plan.runnable)
    what = ", ".join(f"{n} {kind}{'s' if n > 1 else ''}" for kind, n in sorted(counts.items()))
    label = plan.where or target.describe()
    on = f"{target.env} ({label})" if target.env else label
    return f"{what or 'nothing'} on {on}"


def refusal_error(plan: Plan, said: str) -> DboptError:
    """The error of a plan with refusals, ``said`` first: LockWaitError (exit 3, as for any
    lock dbopt cannot take: try again) where each is only a lock not granted at once, else
    UnsafeActionError (exit 2)."""
    text = f"{said}:\n  " + "\n  ".join(a.refusal or "" for a in plan.refused)
    return LockWaitError(text) if plan.refused_for_locks else UnsafeActionError(text)


def _refuse_refused(plan: Plan, command: str) -> None:
    if plan.refused:
        raise refusal_error(plan, f"{command} refused before anything ran")


def _builds_something(specs: SpecSet, owned: Sequence[OwnedObject]) -> bool:
    """A guess, before inspection, that the run will build: a spec names an object dbopt has
    not made (its first build's connection is then worth opening already; a wrong guess
    costs a connection opened for nothing, or opened later)."""
    made = {o.name for o in owned}
    names = [*(s.qualified_name for s in specs.indexes), *(v.name for v in specs.views)]
    return any(name not in made for name in names)


def _owned_relation(catalog: Catalog, name: QualifiedName) -> bool:
    relation = catalog.relations.get(name)
    # A relation the run creates (a new view) will be owned by this role.
    return True if relation is None else relation.owned


def preflight(
    runner: Executor,
    plan: Plan,
    catalog: Catalog,
    settings: Settings,
    *,
    command: str,
    wait_for_blockers: bool,
    views: Sequence[ViewSpec] = (),
) -> None:
    """Every check that can refuse before the first statement: refusals of the plan (what a
    replace cannot carry over, what a drop would break), ownership of every table and view
    the run touches, that the run can record itself in the history, that standbys' lag can be
    read when it must be waited for, and transactions that would make concurrent builds and
    drops wait. A plan refused only for locks not granted at once says so (exit 3: try again)
    once nothing else is wrong that trying again would not mend (exit 2)."""
    if not plan.refused_for_locks:
        _refuse_refused(plan, command)
    missing = sorted({str(a.table) for a in plan.runnable if not _owned_relation(catalog, a.table)})
    if missing:
        raise UnsafeActionError(
            f"{command} refused: the current role does not own "
            + ", ".join(missing)
            + ": CREATE INDEX, DROP INDEX and REFRESH need ownership of the table or view "
            "(or membership in the owning role); GRANT the owner role to this user or run as "
            "the owner"
        )
    building = {a.name.schema for a in plan.runnable if a.kind != ActionKind.DROP}
    problem = create_problem(runner.control, building, command)
    if problem:
        raise UnsafeActionError(problem)
    made = {a.name for a in plan.runnable if a.object_type == "view" and a.kind != ActionKind.DROP}
    reads = resolve(
        runner.control,
        view_relations(v for v in views if v.name in made),
        runner.settings.search_path,
    )
    problem = unreadable_problem(runner.control, reads, "the materialized views it builds read")
    if problem:
        raise PrivilegeError(problem)
    runner.history.writable(runner.control)
    runner.lag_gate.check_visible()
    _refuse_refused(plan, command)  # only locks not granted at once are left
    drops_only = all(a.kind == ActionKind.DROP for a in plan.runnable)
    busy = long_running(
        runner.control,
        settings.lock_timeout_ms,
        sorted({a.table for a in plan.runnable}) if drops_only else None,
    )
    if busy and not wait_for_blockers:
        raise UnsafeActionError(
            f"{command} refused: these transactions are older than lock_timeout and would make "
            "concurrent builds and drops wait:\n  "
            + "\n  ".join(str(b) for b in busy)
            + "\nend them, or choose to wait for them"
        )


def _confirm(hooks: Hooks, plan: Plan, target: Target, command: str, yes: bool) -> None:
    if not target.settings.confirm or yes:
        return
    if not hooks.confirm(f"{command}: {summary(plan, target)}"):
        raise UnsafeActionError("not confirmed; nothing was run")


def plan(
    target: Target,
    specs: SpecSet,
    history: History,
    *,
    replace_drifted: bool = False,
    prune: bool = False,
    cascade: bool = False,
    part: Part = Part(),
) -> Plan:
    """What apply would do (read-only: no lock, nothing written)."""
    with connect(target.dsn, settings=unbounded(target.settings)) as conn:
        result = build_plan(
            conn,
            specs,
            target.settings,
            history,
            replace_drifted=replace_drifted,
            prune=prune,
            cascade=cascade,
            check_new=True,
        )
        return replace(part.of(result, specs), where=where(conn))


def apply(
    target: Target,
    specs: SpecSet,
    history: History,
    options: ApplyOptions,
    *,
    reporter: Reporter,
    hooks: Hooks,
    sleep: Callable[[float], None] | None = None,
    on_start: Callable[[Executor], None] | None = None,
) -> Outcome:
    """Lock, check the specs against the database (as ``validate --dsn``), inspect, plan,
    check, confirm, build; the outcome says what ran and how.

    ``on_start`` is given the executor as soon as it is connected: a caller running this in
    a thread (a fleet) keeps it to cancel the builds when Ctrl-C reaches the main thread."""
    from dbopt.executor import Executor
    from dbopt.livecheck import (
        check_against_database,
        check_builds,
        new_builds,
        partition_keys,
        partition_problems,
        with_read_views,
    )

    settings = target.settings
    with Executor(
        target.dsn,
        settings,
        history,
        reporter,
        sleep=sleep or time.sleep,
        patient=options.wait_for_blockers,
        replicas=target.replicas,
    ) as runner:
        if on_start is not None:
            on_start(runner)
        require_primary(runner.control, "apply")
        take_run_lock(
            runner.control,
            wait=options.locking.wait,
            wait_timeout_ms=options.locking.wait_timeout_ms,
            # A caller running this in a thread (a fleet: on_start) never sees Ctrl-C as a
            # KeyboardInterrupt; it reaches the wait through the executor's cancel flag.
            stop=runner.cancelled if on_start is not None else None,
        )
        history.remember(runner.control)
        if not options.dry_run:  # every grant a run needs, not only the reading ones
            history.require_grants(runner.control, "write")
        # validate --dsn's checks of every spec, before anything is built: a misspelt column
        # refuses the run with every problem at its file:line, not after the first builds.
        # One inspection serves the checks and the plan: what the specs name (budgets'
        # tables too) and what dbopt made.
        owned = history.owned(runner.control)
        if not options.dry_run and _builds_something(specs, owned):
            runner.open_worker()  # for the check beside (below), then the first build
        catalog = inspect(
            runner.control,
            relevant(specs, owned) | specs.relations(),
            apart=leftover_names(specs, owned),
        )
        new = new_builds(specs, catalog)
        problems = partition_problems(new, catalog)
        if problems:
            raise SpecError("the specs cannot be applied to this database", problems)
        # The server's refusals of the new builds (check_builds: an empty temporary copy of
        # each table, built on) take tens of milliseconds of its time: on the first build's
        # connection, beside the other checks and the plan, and first as ever (dbopt.beside).
        check = functools.partial(
            check_builds,
            new,
            lock_timeout_ms=settings.lock_timeout_ms,
            statement_timeout_ms=0,
            keys=partition_keys(catalog),
        )
        lend = runner.lend_worker if new and not options.dry_run else None
        with check_beside(check, runner.control, lend) as beside:
            check_against_database(specs, runner.control, budgets=False, catalog=catalog)
            beside.reached()
            specs = with_read_views(specs, runner.control)  # B reads A: A is created first
            result = build_plan(
                runner.control,
                specs,
                settings,
                history,
                replace_drifted=options.replace_drifted,
                prune=options.prune,
                cascade=options.cascade,
                catalog=catalog,
                owned=owned,
                building=not options.dry_run,
            )
            result = replace(options.part.of(result, specs), where=where(runner.control))
        if options.dry_run:
            _refuse_refused(result, "apply")
            return Outcome(result, sql=session_sql(settings) + render.plan_sql(result))
        if not result.runnable:
            return Outcome(result)
        runner.open_worker()  # beside the checks, the prompt and the run's first history rows
        preflight(
            runner,
            result,
            catalog,
            settings,
            command="apply",
            wait_for_blockers=options.wait_for_blockers,
            views=specs.views,
        )
        hooks.planned(result, "Plan", ())
        _confirm(hooks, result, target, "apply", options.yes)
        run = runner.run_plan(
            result,
            command="apply",
            environment=target.env,
            jobs=options.jobs or settings.jobs,
            plans_dir=options.plans_dir,
            rollback_text=session_sql(settings) + render.plan_sql(result, rollback=True),
        )
        return Outcome(result, run)


def refuse_adoption_undo(
    conn: psycopg.Connection[Any], history: History, selection: Selection
) -> None:
    """An import run (``dbopt import --adopt``) only recorded objects that existed before
    dbopt: it has no undo, and rollback never drops them (InputError, nothing run)."""
    if not (selection.run_id is not None or selection.names) or not history.exists(conn):
        return
    if selection.run_id is not None:
        run = history.run(conn, selection.run_id)
        if run is not None and run.command == "import":
            raise InputError(
                f"run {run.id} is an import: it adopted objects that existed before dbopt, "
                "which rollback never drops; it has nothing to undo, and nothing was run"
            )
        return
    for name in selection.names:
        changes = history.changes(conn, names=[name])
        adopted = [c for c in changes if c.name == name and c.run_command == "import"]
        if adopted and not any(c.name == name and c.run_command == "apply" for c in changes):
            raise InputError(
                f"{name} existed before dbopt (adopted by import run {adopted[0].run_id}): "
                "rollback never drops it; nothing was run"
            )


def rollback(
    target: Target,
    history: History,
    selection: Selection,
    *,
    reporter: Reporter,
    hooks: Hooks,
    locking: Locking = Locking(),
    wait_for_blockers: bool = False,
    plan_only: bool = False,
    yes: bool = False,
    on_start: Callable[[Executor], None] | None = None,
) -> Outcome:
    """Undo a run (or objects' last changes) with apply's checks: lock, ownership, what a drop
    would break, confirmation. Derived from the history's facts, never from its SQL.
    ``on_start`` as for :func:`apply`."""
    from dbopt.executor import Executor
    from dbopt.rollback import rollback_plan

    settings = target.settings
    with Executor(
        target.dsn, settings, history, reporter, patient=wait_for_blockers, replicas=target.replicas
    ) as runner:
        if on_start is not None:
            on_start(runner)
        require_primary(runner.control, "rollback")
        refuse_adoption_undo(runner.control, history, selection)
        if not plan_only:
            take_run_lock(
                runner.control,
                wait=locking.wait,
                wait_timeout_ms=locking.wait_timeout_ms,
                stop=runner.cancelled if on_start is not None else None,
            )
            history.remember(runner.control)
        derived: RollbackPlan = rollback_plan(runner.control, history, selection)
        catalog = derived.catalog
        assert catalog is not None  # rollback_plan always inspects
        # Restores that would rebuild one view twice: one at a time, as apply's replaces.
        result = replace(derived.plan.refusing_shared_rebuilds(), where=where(runner.control))
        if not result.runnable:
            reasons = "\n  ".join(f"{s.name}: {s.reason}" for s in derived.skipped)
            raise NothingToRollBack("nothing to roll back" + (f":\n  {reasons}" if reasons else ""))
        if plan_only:
            _refuse_refused(result, "rollback")
            return Outcome(
                result,
                skipped=derived.skipped,
                undoes_run=derived.undoes_run,
                sql=session_sql(settings) + render.plan_sql(result),
            )
        preflight(
            runner,
            result,
            catalog,
            settings,
            command="rollback",
            wait_for_blockers=wait_for_blockers,
        )
        hooks.planned(result, "Rollback plan", derived.skipped)
        _confirm(hooks, result, target, "rollback", yes)
        run = runner.run_plan(
            result,
            command="rollback",
            environment=target.env,
            undoes_run=derived.undoes_run,
        )
        return Outcome(result, run, skipped=derived.skipped, undoes_run=derived.undoes_run)


@dataclass(frozen=True, slots=True)
class RefreshOptions:
    """Which views to refresh, and how."""

    names: tuple[QualifiedName, ...] = ()
    stale_only: bool = False
    older_than: timedelta | None = None
    concurrently_only: bool = False
    plan_only: bool = False


def refresh(
    target: Target,
    specs: SpecSet,
    history: History,
    options: RefreshOptions,
    created: Callable[[str], None] | None = None,
    watch: RefreshWatch | None = None,
    interruption: Interruption | None = None,
) -> tuple[list[RefreshResult], str]:
    """Refresh the chosen views in dependency order (or, with ``plan_only``, return the SQL);
    ``watch`` hears of each view as it starts and ends; ``interruption`` is how a fleet's
    Ctrl-C reaches the target (it cancels the catalog read or the REFRESH running)."""
    from dbopt import refresh as vw

    if options.stale_only and options.older_than is not None:
        raise InputError("choose stale views by their schedule or by age, not both")
    chosen = vw.select_views(specs, options.names)
    try:
        with connect(
            target.dsn, application_name="dbopt-refresh", settings=target.settings
        ) as conn:
            return _refresh(conn, target, chosen, history, options, created, watch, interruption)
    except psycopg.errors.QueryCanceled:
        if interruption is not None and interruption.requested:
            raise KeyboardInterrupt from None  # Ctrl-C cancelled the catalog read
        raise


def _refresh(
    conn: psycopg.Connection[Any],
    target: Target,
    chosen: Sequence[ViewSpec],
    history: History,
    options: RefreshOptions,
    created: Callable[[str], None] | None,
    watch: RefreshWatch | None,
    interruption: Interruption | None,
) -> tuple[list[RefreshResult], str]:
    """The refresh of the ``chosen`` views on an open connection (see :func:`refresh`)."""
    from dbopt import refresh as vw

    require_primary(conn, "refresh-views")
    with interruption.cancellable(conn) if interruption else nullcontext():
        catalog = inspect(conn, [v.name for v in chosen])
    items = vw.plan_refresh(chosen, catalog, concurrently_only=options.concurrently_only)
    if options.stale_only or options.older_than is not None:
        last = {k: v.started_at for k, v in history.last_refreshes(conn).items()}
        items = vw.filter_stale(
            items, last, now=datetime.now().astimezone(), older_than=options.older_than
        )
    if options.plan_only:
        return [], vw.refresh_sql(items, target.settings)
    missing = sorted(
        str(i.view.name)
        for i in items
        if not i.refused and not _owned_relation(catalog, i.view.name)
    )
    if missing:
        raise UnsafeActionError(
            "refresh refused: the current role does not own " + ", ".join(missing)
        )
    history.ensure(conn, created=created)
    return (
        vw.run_refresh(conn, items, target.settings, history, target.env, watch, interruption),
        "",
    )


def verify(
    target: Target,
    specs: SpecSet,
    *,
    queries: Sequence[str] = (),
    tables: Sequence[str] = (),
    baseline: Baseline | None = None,
    threshold: float | None = None,
    regression_floor_ms: float | None = None,
    progress: Callable[[QueryBudget], None] | None = None,
    plan_margin: float | None = None,
    fail_on_fragile: bool = False,
    retries: int = 0,
    alone: Callable[[psycopg.Connection[Any]], AbstractContextManager[object]] | None = None,
) -> VerifyReport:
    """Measure and judge the budgets on a read-only session, after checking that the role can
    read every relation they read (PrivilegeError otherwise); see
    :func:`dbopt.verify.run_verify`. ``None`` means verify's default. ``alone``: held while
    measuring (a fleet's turn on the target's server: fleetwork.ServerTurns)."""
    from dbopt import verify as vf
    from dbopt.privileges import budget_relations

    with connect(target.dsn, settings=target.settings, read_only=True) as conn:
        reads = resolve(conn, budget_relations(specs), target.settings.search_path)
        problem = unreadable_problem(conn, reads, "the budgeted queries read")
        if problem:
            raise PrivilegeError(problem)
        with alone(conn) if alone is not None else nullcontext():
            return vf.run_verify(
                conn,
                specs,
                target.settings,
                queries=queries,
                tables=tables,
                baseline=baseline,
                threshold=vf.DEFAULT_REGRESSION if threshold is None else threshold,
                regression_floor_ms=vf.DEFAULT_REGRESSION_FLOOR_MS
                if regression_floor_ms is None
                else regression_floor_ms,
                progress=progress,
                plan_margin=vf.DEFAULT_PLAN_MARGIN if plan_margin is None else plan_margin,
                fail_on_fragile=fail_on_fragile,
                retries=retries,
            )


def status(target: Target, specs: SpecSet, history: History) -> StatusReport:
    """What dbopt manages and how it is; with the environment's standbys listed, each
    index's scans on every node and in total (a standby serves reads the primary never sees).
    Works on a standby too (read-only)."""
    from dbopt.status import NodeScans, index_status, with_nodes

    with connect(target.dsn, settings=target.settings) as conn:
        report = index_status(conn, specs, target.settings, history)
        standby = in_recovery(conn)
    report = replace(report, standby=standby)
    if not target.replicas:
        return report
    names = [r.name for r in (*report.managed, *report.unmanaged)]
    nodes = [
        NodeScans(
            "this standby" if standby else "primary",
            {r.name: r.scans or 0 for r in (*report.managed, *report.unmanaged)},
        )
    ]
    for replica in target.replicas:
        try:
            with connect(
                replica.dsn,
                application_name="dbopt-status",
                connect_timeout=5,
                settings=unbounded(target.settings),
                read_only=True,
            ) as node:
                nodes.append(NodeScans(replica.name, index_scans(node, names)))
        except (ConnectError, ConfigError, psycopg.Error) as exc:
            nodes.append(NodeScans(replica.name, None, str(exc).splitlines()[0]))
    return with_nodes(report, nodes)


def import_specs(
    target: Target,
    history: History,
    options: ImportOptions,
    *,
    confirm: Callable[[str], bool] | None = None,
    created: Callable[[str], None] | None = None,
) -> ImportOutcome:
    """Spec files for the indexes and materialized views the database has; with
    ``options.adopt`` also recorded as dbopt's (lock, standby, history and ownership checked
    first). See :mod:`dbopt.importer`."""
    from dbopt.importer import import_database

    return import_database(target, history, options, confirm=confirm, created=created)


def pg_cron_sql(
    target: Target, specs: SpecSet, names: Sequence[QualifiedName], history: History
) -> str:
    """pg_cron calls for the chosen views (the catalog says which can refresh concurrently)."""
    from dbopt import refresh as vw

    chosen = vw.select_views(specs, names)
    with connect(target.dsn, settings=target.settings) as conn:
        items = vw.plan_refresh(chosen, inspect(conn, [v.name for v in chosen]))
        row = conn.execute(catalog_sql("current_database")).fetchone()
    assert row is not None
    return vw.pg_cron_sql(items, str(row[0]), history.schema)


__all__ = [
    "ApplyOptions",
    "Hooks",
    "Locking",
    "Outcome",
    "Part",
    "Quiet",
    "RefreshOptions",
    "apply",
    "import_specs",
    "plan",
    "preflight",
    "refresh",
    "refuse_adoption_undo",
    "rollback",
    "status",
    "summary",
    "verify",
]
