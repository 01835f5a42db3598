"""Running actions and whole plans: history rows, parallel tables, undoing a half-made change."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

import psycopg
from psycopg import errors as pgerrors
from psycopg.types.json import Jsonb

from dbopt import gcpause
from dbopt.executor.results import (
    Built,
    ChangeResult,
    Cost,
    RunResult,
    StepFailed,
    _Made,
    by_hand_if_unsure,
)
from dbopt.executor.steps import StepRunner
from dbopt.guard import Identity, NotOursError
from dbopt.model import ChangeOutcome, QualifiedName, RunOutcome
from dbopt.planner import Action, ActionKind, Plan, StepMode, temporary_names
from dbopt.replicas import ReplicaLagStop


class Executor(StepRunner):
    """Runs the actions of a plan, records them, and makes each change whole or not at all."""

    def _undo_built(self, built: dict[QualifiedName, int]) -> str:
        """Drop what a failed action built (a change is made whole or not at all).

        Only objects this run made (their OIDs), views first (their indexes go with them),
        then indexes, newest first.
        """
        out = ""
        # Left by a failed drop already reported (between two build attempts): not again.
        reported = built.reported if isinstance(built, Built) else set()
        made = [
            (name, oid, self._oid_of(name))
            for name, oid in reversed(list(built.items()))
            if name not in reported
        ]
        # Views first (their indexes go with them), then partitioned indexes (their attached
        # partitions' indexes go with them), then the rest.
        rank = {"m": 0, "I": 1}
        for name, oid, now in sorted(
            made, key=lambda m: 2 if m[2] is None else rank.get(m[2].relkind, 2)
        ):
            if now is None or now.oid != oid:
                continue
            if now.relkind == "m":
                identity = Identity("view", name, oid=oid)
                what = "the view it built"
            else:
                invalid = now.valid is False
                identity = Identity("index", name, oid=oid, invalid=True if invalid else None)
                what = "the INVALID index" if invalid else "the index it built"
            # Only presumed this build's, it is not in the history: said how to drop it.
            out += self._drop_own(identity, what, by_hand=by_hand_if_unsure(built, name))
        return out

    def _record_start(self, run_id: int, action: Action) -> int:
        values = {
            "object_schema": action.name.schema,
            "object_name": action.name.name,
            "table_name": str(action.table),
            "object_kind": action.object_type,
            "action": action.kind.value,
            "definition": action.desired,
            "previous_definition": action.previous_definition,
            "replaced_oid": action.replaced_oid,
            "previous_state": Jsonb(dict(action.previous_state)) if action.previous_state else None,
            "undoes_change": action.undoes_change,
            "existed_before": action.existed_before,
            "forward_sql": "\n".join(s.text() for s in action.forward),
            # For people reading the history; rollback never executes it.
            "rollback_sql": "\n".join(s.text() for s in action.rollback),
        }
        change_id: int = self._control(lambda c: self.history.start_change(c, run_id, values))
        return change_id

    def _record_made(
        self,
        change_id: int | None,
        name: QualifiedName,
        made: _Made | None = None,
        *,
        finished: bool = False,
    ) -> bool:
        """Record the OID and definition of the object a change leaves under ``name``
        (``made``: what the step that made it read under that name right after it); with
        ``finished`` (its last statement made it) the change's result ok in the same
        statement. True when that result is recorded."""
        if change_id is None:
            return False
        if made is None:
            made = self._oid_of(name)
        if made is None:
            return False
        found = made.oid
        definition = made.definition if made.full else self._definition(found)
        result = ChangeOutcome.OK if finished else None
        self._control(
            lambda c: self.history.record_object(c, change_id, found, definition, result=result)
        )
        return finished

    def _record_first(self, change_id: int | None, built: dict[QualifiedName, int]) -> None:
        """A failed build's INVALID index is dbopt's: recorded before the clean-up tries it
        (only when the server showed this run building it)."""
        if change_id is None or len(built) != 1:
            return
        name = next(iter(built))
        if isinstance(built, Built) and name in built.unsure:
            return
        self._control(lambda c: self.history.record_object(c, change_id, built[name], None))

    def _record_built_with(
        self,
        run_id: int,
        index: QualifiedName,
        view: QualifiedName,
        action: str,
        *,
        kind: str = "index",
        replaced_oid: int | None = None,
        made: bool = True,
    ) -> None:
        """An index built with its view (and dropped with it), or a view rebuilt with the one
        it reads (``kind`` view, recorded with that one): dbopt made it. With a new view it
        is a create; with a replaced view a rebuild, undone with the view's change;
        ``replaced_oid``: what it replaces (swapped out: dbopt's while it carries dbopt's
        temporary name); without ``made``, its new copy is not recorded as dbopt's."""
        change = self._control(
            lambda c: self.history.start_change(
                c,
                run_id,
                {
                    "object_schema": index.schema,
                    "object_name": index.name,
                    "table_name": str(view),
                    "object_kind": kind,
                    "action": action,
                    # A reader made by hand existed before dbopt: never dbopt's by its name.
                    "existed_before": not made,
                    "replaced_oid": replaced_oid,
                },
            )
        )
        if not made or not self._record_made(change, index, finished=True):
            self._control(lambda c: self.history.finish_change(c, change, ChangeOutcome.OK))

    def _record_aside(
        self,
        run_id: int,
        view: QualifiedName,
        copy: QualifiedName,
        made: _Made,
        replaced: int,
        mine: bool,
    ) -> int:
        """The rebuild of a reader a cascade made aside: its change row, running, under the
        copy's temporary name and OID (dbopt's while it carries that name: history_owned.sql,
        ownership), until :meth:`_land_aside` says what became of it. ``replaced``: the
        reader it stands for; ``mine``: dbopt made that one (see _record_built_with)."""
        values = {
            "object_schema": copy.schema,
            "object_name": copy.name,
            "table_name": str(view),
            "object_kind": "view",
            "action": "rebuild",
            "existed_before": not mine,
            "replaced_oid": replaced,
            "object_oid": made.oid,
            "built_definition": made.definition if made.full else None,
        }
        row: int = self._control(lambda c: self.history.start_change(c, run_id, values))
        return row

    def _record_placed(
        self,
        run_id: int,
        action: Action,
        aside: dict[QualifiedName, tuple[int, bool]],
        placed: set[QualifiedName],
    ) -> None:
        """What the action made besides its object, now in place: the indexes built with
        it, what its cascade rebuilt (each reader's row, written when its copy was made,
        landed under the reader's name; taken out of ``aside``). Each once: ``placed`` holds
        what is recorded already (a Ctrl-C part-way, and the action's end records the rest)."""
        for reader, (row, mine) in list(aside.items()):
            self._land_aside(row, reader, mine, None)
            del aside[reader]
            placed.add(reader)
        for index in action.also_creates:
            if index not in placed:
                verb = "create" if action.kind == ActionKind.CREATE else "rebuild"
                self._record_built_with(run_id, index, action.name, verb)
                placed.add(index)
        for kind, name, table, oid, made in action.also_rebuilds:
            if name not in placed:
                self._record_built_with(
                    run_id, name, table, "rebuild", kind=kind, replaced_oid=oid, made=made
                )
                placed.add(name)

    def _land_aside(
        self, row: int, reader: QualifiedName, mine: bool, failed: ChangeResult | None
    ) -> None:
        """The reader's rebuild is over: swapped in (``failed`` None), its row names the
        reader, its OID only if dbopt made it (a reader made by hand stays not dbopt's, as
        _record_built_with records it); else it keeps the copy's name and OID with the
        action's result (the clean-up dropped the copy, or it is the leftover the next
        replace clears: dbopt's only under that very name, history_owned.sql)."""
        if failed is not None:
            outcome, error = failed.result, failed.error
            self._control(lambda c: self.history.finish_change(c, row, outcome, error))
            return
        now = self._oid_of(reader) if mine else None
        oid = now.oid if now is not None else None
        definition = (
            None if now is None else now.definition if now.full else self._definition(now.oid)
        )
        self._control(
            lambda c: self.history.land_change(
                c, row, reader, ChangeOutcome.OK, None, oid=oid, definition=definition
            )
        )

    def _swapped_in(self, action: Action, built: dict[QualifiedName, int]) -> bool:
        """A replace (or restore) that did not end ok but whose swap happened: what it built
        is under the action's name, usable (history_landed.sql's rule, seen from here)."""
        if action.kind not in (ActionKind.REPLACE, ActionKind.RESTORE) or not built:
            return False
        now = self._oid_of(action.name)
        return now is not None and now.oid in built.values() and now.valid is not False

    def preflight(self, action: Action) -> None:
        """Check, before its first statement, every identity the action can check now."""
        for step in action.forward:
            for identity in step.expect:
                if identity.upfront and identity.built_as is None and step.mode != StepMode.SWAP:
                    self.check(identity, {})

    def _preflight_patiently(self, action: Action) -> None:
        """:meth:`preflight`, waiting for a lock the way a step does (its check reads the
        object's definition, which needs its table)."""
        attempt = 0
        first = time.monotonic()
        while True:
            if self._cancelled.is_set():  # Ctrl-C while this action waited its turn
                raise KeyboardInterrupt
            started = time.time()
            try:
                self.preflight(action)
                return
            except pgerrors.LockNotAvailable:
                attempt += 1
                blockers = self.blockers(action.table, started)
                step = action.forward[0]
                self._after_lock_wait(step, blockers, attempt, first)

    def run_action(self, run_id: int | None, action: Action) -> ChangeResult:
        """Run one action's steps and record it in the history."""
        change_id = None if run_id is None else self._record_start(run_id, action)
        if change_id is not None:
            self._changes[threading.get_ident()] = change_id
        started = time.monotonic()
        built = Built()
        finished = False  # the change's result recorded with its object
        #: The change rows of the readers a cascade made aside so far, by reader.
        aside: dict[QualifiedName, tuple[int, bool]] = {}
        #: What the action made besides its object, once recorded (right after a swap).
        placed: set[QualifiedName] = set()
        self.reporter.action_started(action.kind.value, action.name)
        try:
            self._preflight_patiently(action)
        except KeyboardInterrupt:
            # Ctrl-C before its first statement: nothing of it was made.
            self._ctrl_c()
            result = ChangeResult(action, ChangeOutcome.ABORTED, 0.0, error="Ctrl-C")
            self.reporter.finished(action.name)
        except NotOursError as exc:
            result = ChangeResult(action, ChangeOutcome.SKIPPED, 0.0, error=str(exc))
            self.reporter.finished(action.name)
        except StepFailed as exc:
            result = ChangeResult(
                action, ChangeOutcome.FAILED, time.monotonic() - started, error=str(exc)
            )
            self.reporter.finished(action.name)
        else:
            result, finished = self._run_steps(
                action, run_id, change_id, built, started, aside, placed
            )
        if change_id is not None:
            if (
                result.result == ChangeOutcome.OK
                and action.kind != ActionKind.DROP
                and not self._recorded_last(action, built)
            ):
                finished = self._record_made(change_id, action.name, finished=True)
            if not finished:
                self._control(
                    lambda c: self.history.finish_change(c, change_id, result.result, result.error)
                )
            # What it made besides is dbopt's once it is in place: the action done, or its
            # swap landed (it failed or was stopped after it, dropping what it swapped out);
            # recorded right after a swap already (see _run_steps), else now.
            swapped = result.result == ChangeOutcome.OK or self._swapped_in(action, built)
            if run_id is not None and swapped:
                self._record_placed(run_id, action, aside, placed)
            for reader, (row, mine) in aside.items():
                self._land_aside(row, reader, mine, result)
        self.reporter.action_ended(
            action.kind.value, action.name, str(result.result), result.seconds, result.error
        )
        return result

    @staticmethod
    def _recorded_last(action: Action, built: dict[QualifiedName, int]) -> bool:
        """True when the action's last step made its object and _run_steps recorded it
        then: no statement ran after, so what it recorded is what the action leaves."""
        last = action.forward[-1] if action.forward else None
        return (
            last is not None
            and last.makes
            and last.index == action.name
            and len(built) == 1
            and action.name in built
        )

    def _run_steps(
        self,
        action: Action,
        run_id: int | None,
        change_id: int | None,
        built: dict[QualifiedName, int],
        started: float,
        aside: dict[QualifiedName, tuple[int, bool]],
        placed: set[QualifiedName],
    ) -> tuple[ChangeResult, bool]:
        """The action's steps: its result, and whether that result is recorded already (with
        the object its last step made). ``aside`` gets the change row of each reader a
        cascade makes aside, written the moment its copy exists."""
        cost = Cost()
        #: The readers a cascade rebuilds, by the name their copy is made under.
        readers = {
            temporary_names(rebuilt[1])[0]: rebuilt
            for rebuilt in action.also_rebuilds
            if rebuilt[0] == "view"
        }
        #: The action's object as its last step left it (read in full), when that step made it.
        final: _Made | None = None
        finished = False
        try:
            for step in action.forward:
                last = step is action.forward[-1] and step.index == action.name
                finish = last and action.kind != ActionKind.DROP
                # What the action makes first is its object (below): the read right after
                # its step records it too, in the same statement; not on Citus, where the
                # shards are checked first (asked now, before the step: never between a
                # build and the read that keeps what it made).
                record = None
                if change_id is not None and step.makes and not built:
                    record = None if self._citus_installed() else (change_id, finish)
                # Read in full (definition, size) only where it is used: the first object the
                # action makes (recorded now) and its own object made by its last step (its
                # size); every other read stays lock-free.
                made = self.run_step(step, built, cost, describe=not built or last, record=record)
                final = made if step.makes and last else None
                if run_id is not None and step.mode == StepMode.SWAP and step.index == action.name:
                    # The swap put the view's new copy, its indexes and every reader's copy in
                    # place: recorded at once, before the old views are dropped (dbopt stopped
                    # then still knows what it made there).
                    self._record_placed(run_id, action, aside, placed)
                if change_id is not None and step.makes and len(built) == 1:
                    # What the action makes first is its object (a replace's build aside):
                    # known as dbopt's from now on, even if dbopt stops before the end. Made
                    # by its last statement, the change is done: its result ok in the same
                    # row update (a Ctrl-C during that update is caught below: undone, and
                    # recorded aborted; once it returned, the change is done and says so).
                    if made is not None and made.recorded:
                        finished = finish and made.valid is not False
                    else:
                        finished = self._record_made(change_id, step.index, made, finished=finish)
                elif (
                    run_id is not None and made is not None and step.makes and step.index in readers
                ):
                    # A reader's copy, made aside: its change row written the moment it
                    # exists, as the view's own copy's is (dbopt stopped before the swap,
                    # the next replace clears it as dbopt's leftover).
                    _kind, reader, _table, replaced, mine = readers[step.index]
                    row = self._record_aside(run_id, action.name, step.index, made, replaced, mine)
                    aside[reader] = (row, mine)
        except (StepFailed, NotOursError) as exc:

            def clean() -> str:
                self._record_first(change_id, built)
                return self._undo_built(built)

            cleaned = self._clean_up_through_ctrl_c(clean, hurry=True)
            failed = ChangeResult(
                action,
                ChangeOutcome.FAILED,
                time.monotonic() - started,
                error=str(exc) + cleaned,
                cost=cost,
            )
            return failed, False
        except KeyboardInterrupt:
            self._ctrl_c()

            def clean() -> str:
                self._record_first(change_id, built)
                return self._undo_built(built)

            cleaned = self._cleaning_up(clean)
            aborted = ChangeResult(
                action,
                ChangeOutcome.ABORTED,
                time.monotonic() - started,
                error="Ctrl-C" + self.take_note() + cleaned,
                cost=cost,
            )
            return aborted, False
        finally:
            self.reporter.finished(action.name)
        size = None
        if action.kind != ActionKind.DROP:
            size = final.size if final is not None else self._index_size(action.name)
        done = ChangeResult(
            action, ChangeOutcome.OK, time.monotonic() - started, size_bytes=size, cost=cost
        )
        return done, finished

    def _stop_workers(self, futures: Sequence[Future[list[ChangeResult]]]) -> None:
        """Ctrl-C with workers running: cancel their statements and wait for them to end
        (they clean up what their steps left). Ctrl-C again stops their clean-ups (what those
        leave, the report says, and the next apply repairs or prunes it), and the wait goes
        on: the run's connections close only once no worker uses them."""
        self._ctrl_c()  # Ctrl-C again hurries them from now on
        stop = self.cancel
        while True:
            try:
                stop()
                wait(futures)
                return
            except KeyboardInterrupt:  # before the handler was set (or where it cannot be)
                stop = self.hurry

    def run_plan(
        self,
        plan: Plan,
        *,
        command: str,
        environment: str | None,
        jobs: int = 1,
        undoes_run: int | None = None,
        plans_dir: Path | None = None,
        rollback_text: str = "",
    ) -> RunResult:
        """Run every runnable action; tables in parallel with ``jobs`` > 1, never one twice.
        After a Ctrl-C, one more only hurries the clean-up (until close())."""
        gcpause.run_starts()
        self._control(lambda c: self.history.ensure(c, created=self.reporter.event))
        orphans = self._control(lambda c: self.history.close_orphans(c))
        if orphans:
            self.reporter.event(
                f"{orphans} earlier run(s) had stopped without finishing: recorded as aborted"
            )
        run_id: int = self._control(
            lambda c: self.history.start_run(c, command, environment, undoes_run)
        )
        # The way back is written down before the first build (for people; never executed).
        self._control(lambda c: self.history.set_rollback_sql(c, run_id, rollback_text))
        if plans_dir is not None:
            plans_dir.mkdir(parents=True, exist_ok=True)
            (plans_dir / f"run-{run_id}-rollback.sql").write_text(rollback_text, "utf-8")
        groups: dict[QualifiedName, list[Action]] = {}
        views: list[Action] = []
        for action in plan.runnable:
            if action.object_type == "view":
                views.append(action)  # in dependency order, one at a time
            else:
                groups.setdefault(action.table, []).append(action)
        results: list[ChangeResult] = []
        failed = threading.Event()
        stopped: list[str] = []

        def run_group(group: Sequence[Action]) -> list[ChangeResult]:
            out = []
            for action in group:
                if failed.is_set() or self._cancelled.is_set():
                    break
                try:
                    # Only what builds writes WAL worth waiting for; a drop goes ahead.
                    if action.kind != ActionKind.DROP and not self.lag_gate.wait(
                        f"{action.kind.value} {action.name}"
                    ):
                        break  # cancelled while paused
                except ReplicaLagStop as exc:
                    stopped.append(str(exc))
                    failed.set()
                    break
                res = self.run_action(run_id, action)
                out.append(res)
                if res.result in (ChangeOutcome.FAILED, ChangeOutcome.ABORTED):
                    failed.set()
            return out

        interrupted = False
        crashed = True
        try:
            try:
                first = [g for g in groups.values() if g[0].phase == 0]
                last = [g for g in groups.values() if g[0].phase != 0]
                if jobs <= 1:
                    for group in first:
                        results.extend(run_group(group))
                else:
                    with ThreadPoolExecutor(max_workers=jobs) as pool:
                        futures = [pool.submit(run_group, g) for g in first]
                        try:
                            for future in futures:
                                results.extend(future.result())
                        except KeyboardInterrupt:
                            # Cancel the running builds on the server now: the workers then
                            # stop at once and clean up. They are waited for here, however
                            # often Ctrl-C comes again: the run's connections are closed
                            # only once no worker uses them.
                            self._stop_workers(futures)
                            for future in futures:
                                if not future.cancelled() and future.exception() is None:
                                    results.extend(future.result())
                            raise
                # Views after table indexes (their queries may use them), then views' own indexes.
                results.extend(run_group(views))
                for group in last:
                    results.extend(run_group(group))
            except KeyboardInterrupt:
                interrupted = True
                self._ctrl_c()
                self.cancel()
            if any(r.result == ChangeOutcome.ABORTED for r in results) or self._cancelled.is_set():
                interrupted = True
            outcome = (
                RunOutcome.ABORTED
                if interrupted
                else RunOutcome.FAILED
                if any(r.result == ChangeOutcome.FAILED for r in results)
                else RunOutcome.STOPPED
                if stopped
                else RunOutcome.SUCCEEDED
            )
            crashed = False
        finally:
            if crashed:
                # An unexpected error: the run is not left 'running' for the next one to find.
                with contextlib.suppress(psycopg.Error):
                    self._control(lambda c: self.history.finish_run(c, run_id, RunOutcome.FAILED))
        self._control(lambda c: self.history.finish_run(c, run_id, outcome))
        done = {r.action.name for r in results}
        return RunResult(
            run_id,
            outcome,
            results,
            stopped=stopped[0] if stopped else None,
            not_started=tuple(a.name for a in plan.runnable if a.name not in done),
        )
