"""Cleaning up what a step left: a failed build's INVALID index, a drop stopped part-way, the
``_ccnew``/``_ccold`` copies a stopped REINDEX INDEX CONCURRENTLY left (on the coordinator and
on Citus shards), and what Ctrl-C's clean-up did, for the report.

Every drop here is of something this run made, checked by :mod:`dbopt.guard` (OID, table,
INVALID, nobody building it) right before it runs. A part of the step runner
(:class:`dbopt.executor.steps.StepRunner`), which provides the connections and waits.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import errors as pgerrors
from psycopg.rows import dict_row

from dbopt import citus, ddl, guard
from dbopt.catalog import catalog_sql
from dbopt.citus import Leftover, ShardLeftovers
from dbopt.config import Settings
from dbopt.db import server_message
from dbopt.executor.results import Built, _Made, prove
from dbopt.guard import Identity, NotOursError
from dbopt.model import QualifiedName
from dbopt.planner import Step, StepMode
from dbopt.progress import Blocker, Reporter, Watch


class Cleanup(ABC):
    """The clean-up of what steps left; the runner provides what it works with."""

    settings: Settings
    reporter: Reporter
    sleep: Callable[[float], None]
    #: The citus extension is installed (None: not asked yet).
    _citus: bool | None
    #: What a step stopped by Ctrl-C cleaned up, per worker thread (for the report).
    _notes: dict[int, str]
    #: Ctrl-C came again while workers cleaned up: clean-ups stop waiting and trying (what
    #: they leave, the report says; the next apply repairs or prunes it).
    _hurry: threading.Event

    def _give_up(self, deadline: float) -> bool:
        """Whether a clean-up stops trying: cleanup_wait is spent, or Ctrl-C came again."""
        return time.monotonic() >= deadline or self._hurry.is_set()

    def _rest(self, seconds: float) -> None:
        """A clean-up's wait before it tries again; Ctrl-C again (hurry) cuts it short."""
        if self.sleep is time.sleep:
            self._hurry.wait(seconds)
        else:
            self.sleep(seconds)

    def _cleaning_up(self, clean: Callable[[], str]) -> str:
        """``clean()``, Ctrl-C's clean-up, in the thread Ctrl-C reached (--jobs 1: the main
        thread); what it did, for the report. Ctrl-C again during it hurries it: run again,
        it stops at once and says what it left (the change is still recorded, as aborted)."""
        while True:
            try:
                return clean()
            except KeyboardInterrupt:
                self.hurry()

    @abstractmethod
    def hurry(self) -> None:
        """Ctrl-C again: clean-ups stop waiting and trying; what runs now is cancelled."""

    @abstractmethod
    def _control(self, fn: Callable[[psycopg.Connection[Any]], Any]) -> Any:
        """``fn`` on the shared control connection."""

    @abstractmethod
    def _worker(self, lock_timeout_ms: int | None = None) -> psycopg.Connection[Any]:
        """This thread's connection for statements."""

    @abstractmethod
    def _oid_of(self, name: QualifiedName) -> _Made | None:
        """What the relation named ``name`` is now (no lock)."""

    @abstractmethod
    def own_pids(self) -> list[int]:
        """Backend pids of dbopt's own connections."""

    @abstractmethod
    def blockers(self, table: QualifiedName, since: float) -> list[Blocker]:
        """Sessions holding locks on ``table`` or transactions older than ``since``."""

    @abstractmethod
    def _backoff(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt`` + 1."""

    def _finish_broken_drop(self, step: Step) -> str:
        """A DROP INDEX CONCURRENTLY stopped part-way (Ctrl-C, a timeout, an error) may have
        marked the index INVALID already: the index is then of no use to any query, and
        dropping it was what was asked, so finish the drop (guarded as every drop is). An
        index still valid was not touched: it stays, and the action reports its failure.
        Returns what was done, for the report."""
        out = ""
        # Only DROP INDEX CONCURRENTLY marks an index INVALID part-way (a plain DROP INDEX is
        # one transaction); one INVALID before the drop was not made so by it: left as it is
        # (the action reports its failure), never dropped again and again under lock_timeout.
        if step.mode != StepMode.DROP or not step.gentle:
            return out
        for identity in step.expect:
            if identity.object_type != "index" or identity.oid is None or identity.invalid:
                continue
            try:
                now = self._oid_of(identity.name)
            except psycopg.Error:
                continue
            if now is None or now.oid != identity.oid or now.valid is not False:
                continue
            broken = dataclasses.replace(identity, invalid=True)
            # Left, it is still to drop (not to build again): said with the statement.
            statement = ddl.drop_index(identity.name).as_string()
            out += self._drop_own(
                broken, "the index its stopped drop had made INVALID", by_hand=f"({statement})"
            )
        return out

    def _finishing_drop(self, step: Step) -> str:
        """:meth:`_finish_broken_drop` after a step failed: Ctrl-C during it stops the run and
        hurries nothing the first time (the drop that was asked for is finished, as after a
        Ctrl-C that stopped the step itself); Ctrl-C again leaves it and says so."""
        return self._clean_up_through_ctrl_c(lambda: self._finish_broken_drop(step))

    def _clean_up_through_ctrl_c(self, clean: Callable[[], str], *, hurry: bool = False) -> str:
        """``clean()``, a clean-up after a failure; Ctrl-C during it stops the run and the
        clean-up goes on (:meth:`_cleaning_up`), hurried at once with ``hurry``."""
        try:
            return clean()
        except KeyboardInterrupt:
            self._ctrl_c()
            if hurry:
                self.hurry()
            return self._cleaning_up(clean)

    @abstractmethod
    def _ctrl_c(self) -> None:
        """Ctrl-C reached this thread: the run stops (cancelled)."""

    def _drop_own(
        self,
        identity: Identity,
        what: str,
        *,
        left_by: str = "the failed build",
        by_hand: str | None = None,
    ) -> str:
        """Drop an object this run made (a failed build's INVALID index, a build aside that
        could not be swapped in); returns what was done, for the report.

        DROP INDEX CONCURRENTLY waits for the same old transactions that stopped the build,
        so it keeps trying (each wait bounded by lock_timeout) for up to cleanup_wait_ms; the
        guard checks before every attempt that the object is still the one this run made.
        ``by_hand``: where and how to drop it by hand, said when dbopt could not (else: the
        next apply repairs or prunes it).
        """
        later = (
            "the next apply repairs or prunes it"
            if by_hand is None
            else f"drop it by hand {by_hand}"
        )
        deadline = time.monotonic() + self.settings.cleanup_wait_ms / 1000.0
        attempt = 0
        while not self._hurry.is_set():
            started = time.time()
            try:
                live = self._control(lambda c: guard.check(c, identity, self.own_pids()))
            except pgerrors.LockNotAvailable:
                # The check reads the definition, which waits for the same lock the DROP
                # would: wait for it the same way.
                if self._give_up(deadline):
                    break
                self._rest(min(5.0, self._backoff(attempt)))
                attempt += 1
                continue
            except NotOursError as exc:
                if exc.gone:
                    return ""
                if self._give_up(deadline) or "is building" not in str(exc):
                    return f"; {what} {identity.name} was left alone: {exc}"
                self._rest(min(5.0, self._backoff(attempt)))
                attempt += 1
                continue
            if identity.object_type == "view":
                statement = ddl.drop_matview(identity.name)
            else:
                statement = ddl.drop_index(identity.name, concurrently=live.relkind != "I")
            try:
                self._worker().execute(statement)
                left = f" {left_by} left" if identity.invalid else ""
                self.reporter.event(f"dropped {what} {identity.name}{left}")
                return f"; {what} {identity.name} was dropped"
            except pgerrors.LockNotAvailable:
                if self._give_up(deadline):
                    break
                if attempt == 0:
                    named = "; ".join(str(b) for b in self.blockers(identity.name, started))
                    self.reporter.event(
                        f"waiting to drop {what} {identity.name}; blocked by: "
                        f"{named or 'no blocker still visible'}"
                    )
                self._rest(min(5.0, self._backoff(attempt)))
                attempt += 1
            except psycopg.OperationalError:
                # A lost connection (or a statement_timeout): back off, then try again
                # on a fresh connection, until cleanup_wait runs out.
                if self._give_up(deadline):
                    break
                self._rest(min(5.0, self._backoff(attempt)))
                attempt += 1
            except psycopg.Error as exc:
                hint = "" if by_hand is None else f"; {later}"
                return f"; {what} {identity.name} could NOT be dropped: {server_message(exc)}{hint}"
        if self._hurry.is_set():
            return f"; {what} {identity.name} could NOT be dropped (Ctrl-C again): {later}"
        return (
            f"; {what} {identity.name} could NOT be dropped within "
            f"{self.settings.cleanup_wait_ms} ms: {later}"
        )

    # --- what a stopped REINDEX INDEX CONCURRENTLY left --------------------------------------

    def _note(self, text: str) -> None:
        """Keep what a step stopped by Ctrl-C cleaned up, for the action's report."""
        if text:
            self._notes[threading.get_ident()] = text

    def take_note(self) -> str:
        """What the last step of this thread stopped by Ctrl-C cleaned up ('' if nothing)."""
        return self._notes.pop(threading.get_ident(), "")

    def _citus_installed(self) -> bool:
        """Whether the citus extension is installed (asked once, when first needed)."""
        if self._citus is None:
            self._citus = bool(self._control(citus.installed))
        return self._citus

    def _citus_table(self, table: QualifiedName) -> bool:
        """Whether Citus holds ``table`` (its indexes then have copies on the shards)."""
        if not self._citus_installed():
            return False
        return self._control(lambda c: citus.citus_table(c, table)) is not None

    def _reindex_leftovers(self, step: Step) -> tuple[list[Leftover], ShardLeftovers]:
        """Every INVALID ``<index>_ccnew``/``_ccold`` of the step's index there is now: on the
        coordinator (the server itself without Citus), and on every shard placement of a Citus
        table (``<index>_<shardid>_ccnew``...)."""

        def query(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
            with conn.cursor(row_factory=dict_row) as cur:
                cur.execute(
                    catalog_sql("reindex_leftovers"),
                    {"schema": step.table.schema, "table": step.table.name},
                )
                return cur.fetchall()

        here = [
            Leftover(QualifiedName(step.table.schema, row["name"]), int(row["oid"]))
            for row in self._control(query)
            if ddl.reindex_leftover_of(row["name"], step.index.name)
        ]
        shards = ShardLeftovers()
        if self._citus_table(step.table):
            shards = self._control(lambda c: citus.shard_leftovers(c, step.table, step.index))
        return here, shards

    def _reindex_before(self, step: Step) -> frozenset[tuple[str | None, int | None, int]] | None:
        """Right before a REINDEX attempt: the leftovers there already (another session's, or
        an earlier run's), which its clean-up never takes for its own. None: not a REINDEX, or
        they could not be read (then nothing is taken for this attempt's)."""
        if step.mode != StepMode.REINDEX:
            return None
        try:
            here, shards = self._reindex_leftovers(step)
        except psycopg.Error as exc:
            self.reporter.event(
                f"{step.index}: could not read what an earlier REINDEX left: {server_message(exc)}"
            )
            return None
        return frozenset(x.key for x in (*here, *shards.leftovers))

    def _clean_reindex(
        self, step: Step, before: frozenset[tuple[str | None, int | None, int]] | None
    ) -> tuple[str, bool]:
        """After a REINDEX INDEX CONCURRENTLY that failed, timed out or was cancelled: drop the
        INVALID ``<index>_ccnew`` (or ``_ccold``) copies it left, on the coordinator and on the
        shards — only those that were not there right before it (``before``). Returns what was
        done for the report, and whether something it left is still there (each named, with
        the statement that drops it by hand and the node to run it on).

        On the coordinator each goes through the guard (its OID, its table, INVALID, no other
        session building it) and DROP INDEX CONCURRENTLY IF EXISTS, as a failed build's INVALID
        index does. A shard's is dropped on the node holding it (:func:`citus.drop_on_node`,
        DROP INDEX CONCURRENTLY IF EXISTS outside any transaction block) right after it was
        read there INVALID, with that OID, under the name PostgreSQL gives the copy of that
        shard's index; while a session builds an index on its shard (a cancelled task still
        stopping) dbopt reads again, for up to cleanup_wait.
        """
        if step.mode != StepMode.REINDEX:
            return "", False
        deadline = time.monotonic() + self.settings.cleanup_wait_ms / 1000.0
        busy_until = time.monotonic() + 10.0
        out = ""
        left = False
        handled: set[tuple[str | None, int | None, int]] = set()
        attempt = 0
        while True:
            try:
                here, shards = self._reindex_leftovers(step)
            except psycopg.Error as exc:
                return (
                    f"{out}; what the stopped REINDEX left could not be read "
                    f"({server_message(exc)}): look for INVALID {step.index.name}_ccnew "
                    "indexes on the coordinator and on the shards",
                    True,
                )
            found = [
                x
                for x in (*here, *shards.leftovers)
                if x.key not in handled and (before is None or x.key not in before)
            ]
            if before is None:
                # Nothing is known to be this attempt's: each is named, none dropped.
                for leftover in found:
                    out += self._left_alone(
                        leftover,
                        "dbopt could not read what was there before its REINDEX",
                        "unless another session made it, drop it by hand",
                    )
                return out, left or bool(found)
            for leftover in [x for x in found if not x.building]:
                handled.add(leftover.key)
                said, dropped = self._drop_leftover(step, leftover, deadline)
                out += said
                left = left or not dropped
            waiting = [x for x in found if x.building]
            now = time.monotonic()
            # A placement still busy without a leftover yet: a cancelled task may still be
            # stopping (it makes its copy first); another session's build is not waited for.
            if not waiting and (not shards.busy or now >= min(deadline, busy_until)):
                break
            if now >= deadline or self._hurry.is_set():
                for leftover in waiting:
                    out += self._left_alone(
                        leftover,
                        "a session was still building an index on its table",
                        "once that build has ended, drop it by hand",
                    )
                left = left or bool(waiting)
                break
            self._rest(min(2.0, self._backoff(attempt)))
            attempt += 1
        for where in shards.unreadable:
            out += (
                f"; what the stopped REINDEX left on {where} could not be read: look there for "
                f"INVALID {step.index.name}_<shardid>_ccnew indexes"
            )
            left = True
        return out, left

    def _drop_leftover(self, step: Step, leftover: Leftover, deadline: float) -> tuple[str, bool]:
        """Drop one leftover of a stopped REINDEX (see :meth:`_clean_reindex`): what was done,
        and whether it is gone."""
        statement = ddl.drop_index(leftover.name).as_string()
        if leftover.host is None:
            identity = Identity(
                "index", leftover.name, oid=leftover.oid, table=step.table, invalid=True
            )
            said = self._drop_own(
                identity,
                "the INVALID index",
                left_by="the stopped REINDEX",
                by_hand=f"on the coordinator: {statement}",
            )
            try:
                now = self._oid_of(leftover.name)
            except psycopg.Error:
                return said, False
            return said, now is None or now.oid != leftover.oid
        # Right before the drop, the node is read again: still that OID (this REINDEX's copy,
        # not one made since under the same name), still INVALID, nobody building there.
        why: str | None
        try:
            now = self._control(lambda c: citus.shard_leftovers(c, step.table, step.index))
        except psycopg.Error as exc:
            now, why = None, server_message(exc)
        if now is not None:
            same = [x for x in now.leftovers if x.key == leftover.key and x.name == leftover.name]
            if not same:
                why = "it is no longer the INVALID copy the stopped REINDEX left there"
            elif same[0].building:
                why = "a session is building an index on that shard right now"
            elif self._hurry.is_set():
                why = "Ctrl-C again stopped the clean-up"
            else:
                # It waits for the transactions using the shard, until the clean-up's time is
                # spent.
                bound = max(1000, int((deadline - time.monotonic()) * 1000))
                try:
                    why = citus.drop_on_node(self._worker(), leftover, bound)
                except psycopg.Error as exc:
                    why = server_message(exc)
        if why is None:
            self.reporter.event(
                f"dropped the INVALID index {leftover.name} the stopped REINDEX left "
                f"{leftover.where}"
            )
            return f"; the INVALID index {leftover.name} {leftover.where} was dropped", True
        return (
            f"; the INVALID index {leftover.name} {leftover.where} could NOT be dropped: {why}; "
            f"drop it by hand on {leftover.host}:{leftover.port}: {statement}",
            False,
        )

    def _left_alone(self, leftover: Leftover, why: str, advice: str) -> str:
        """The report's words for a leftover dbopt did not drop, with the statement that does."""
        node = "the coordinator" if leftover.host is None else f"{leftover.host}:{leftover.port}"
        statement = ddl.drop_index(leftover.name).as_string()
        return (
            f"; the INVALID index {leftover.name} {leftover.where} was left alone ({why}); "
            f"{advice} on {node}: {statement}"
        )

    def _after_interrupted(
        self,
        step: Step,
        built: dict[QualifiedName, int],
        watches: list[Watch],
        before: frozenset[tuple[str | None, int | None, int]] | None,
    ) -> str:
        """Ctrl-C stopped ``step``: what it left is this run's to clean up (the action drops
        what it built); what was done, for the report."""
        self._after_failed_build(step, built, watches)
        out = self._finish_broken_drop(step)
        return out + self._clean_reindex(step, before)[0]

    def _after_failed_build(
        self, step: Step, built: dict[QualifiedName, int], watches: list[Watch]
    ) -> None:
        """A failed CREATE INDEX CONCURRENTLY may leave an INVALID index: note it as this run's.

        Proof is the OID the server showed for this very backend's build. Without it (the
        build failed before the watcher sampled it), an INVALID index under the name is taken
        for this build's only when the name was free just before the build started — and then
        only to clean it up (guarded: INVALID, not being built), never recorded as dbopt's.
        A build that failed waiting for its table lock never made one: another session's index
        that appeared meanwhile is never taken.
        """
        if step.mode != StepMode.BUILD or step.index in built:
            return
        watch = watches[-1] if watches else None
        if watch is not None and watch.oid is not None:
            prove(built, step.index, watch.oid)
            return
        if watch is None or not watch.free_before:
            return
        made = self._oid_of(step.index)
        if made is not None and made.valid is False:
            if isinstance(built, Built):  # first: a Ctrl-C between the two never makes it sure
                built.unsure.add(step.index)
            built[step.index] = made.oid
