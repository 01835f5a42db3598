"""The plan as a value: actions, their steps, and the plan that orders them."""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from psycopg import sql

from dbopt.ddl import derived_name, hurry_held_waits
from dbopt.errors import LockRefusal
from dbopt.guard import Identity
from dbopt.model import IndexSpec, QualifiedName

NEW_SUFFIX = "_dbopt_new"
OLD_SUFFIX = "_dbopt_old"


def is_temporary(name: QualifiedName) -> bool:
    """The name is one of dbopt's temporary names (a view built aside, or swapped out)."""
    return name.name.endswith((NEW_SUFFIX, OLD_SUFFIX))


def base_name(name: QualifiedName) -> QualifiedName:
    """The view a temporary name stands for (``name`` itself when it is none, or when the
    temporary name was shortened past recognition)."""
    for suffix in (NEW_SUFFIX, OLD_SUFFIX):
        if name.name.endswith(suffix):
            base = QualifiedName(name.schema, name.name[: -len(suffix)])
            if derived_name(base.name, suffix) == name.name:
                return base
    return name


def temporary_names(name: QualifiedName) -> tuple[QualifiedName, QualifiedName]:
    """The names a view is built aside under and swapped out to (what an interrupted replace
    may have left)."""
    return (
        QualifiedName(name.schema, derived_name(name.name, NEW_SUFFIX)),
        QualifiedName(name.schema, derived_name(name.name, OLD_SUFFIX)),
    )


def refusal_of(text: str, reasons: Sequence[str]) -> str:
    """``text`` (``reasons`` said together) as an action's refusal: a :class:`LockRefusal`
    when each reason is one (trying again can succeed), else plain text. Joined with any
    other refusal later, it is plain text again: a lock is then not all that refuses it."""
    locked = bool(reasons) and all(isinstance(r, LockRefusal) for r in reasons)
    return LockRefusal(text) if locked else text


class ActionKind(StrEnum):
    """What an action does to one index or view."""

    CREATE = "create"
    REPAIR = "repair"
    REPLACE = "replace"
    DROP = "drop"
    RESTORE = "restore"  # rollback of a replace: the previous definition back
    SKIP = "skip"


class StepMode(StrEnum):
    """How the executor runs a step (in a transaction or not, what it checks after)."""

    BUILD = "build"  # CREATE INDEX [CONCURRENTLY]: check validity after, clean up on failure
    #: REINDEX INDEX CONCURRENTLY of an index that exists: check validity (and every Citus
    #: placement) after; on failure nothing is dropped (the index was there before).
    REINDEX = "reindex"
    DROP = "drop"  # DROP INDEX CONCURRENTLY: outside a transaction
    SWAP = "swap"  # renames: one short transaction under lock_timeout
    DDL = "ddl"  # short catalog-only DDL (ON ONLY, ATTACH PARTITION) under lock_timeout
    VIEW = "view"  # CREATE/DROP MATERIALIZED VIEW: one statement, autocommit


@dataclass(frozen=True, slots=True)
class Step:
    """One statement (or, for a swap, one transaction) of an action."""

    mode: StepMode
    statements: tuple[sql.Composed, ...]
    table: QualifiedName
    index: QualifiedName  # the object this step builds, drops or swaps into place
    #: What the objects must be: checked right before the statements run — for a swap, inside
    #: its transaction after the renames (which hold the locks), so the commit is what was
    #: checked. A destructive step always has one.
    expect: tuple[Identity, ...] = ()
    #: A swap's statements after the check, in the same transaction (what the new object
    #: carries over from the old one).
    then: tuple[sql.Composed, ...] = ()
    #: The step creates ``index`` (an index or view): dbopt records its OID as its own.
    makes: bool = False
    #: A concurrent build other concurrent builds need not wait for (PostgreSQL 14+ lets
    #: them ignore a build without expressions or predicate).
    safe: bool = False

    @property
    def gentle(self) -> bool:
        """Its lock waits never block the application's reads and writes: a concurrent build
        or drop (SHARE UPDATE EXCLUSIVE, then waits for transactions), ANALYZE, a CREATE
        MATERIALIZED VIEW reading its sources, a REFRESH of a view built aside (nobody else
        reads it yet). Those waits are bounded by build_wait_timeout;
        every other statement (renames, ATTACH, DROP of a view...) by lock_timeout."""
        if self.mode in (StepMode.BUILD, StepMode.REINDEX):
            return True
        first = self.statements[0].as_string() if self.statements else ""
        return first.startswith(
            ("DROP INDEX CONCURRENTLY", "ANALYZE", "CREATE MATERIALIZED VIEW", "REFRESH")
        )

    @property
    def hurried(self) -> bool:
        """A swap that waits up to lock_timeout for its first lock only, then at most
        ddl.HELD_WAIT_MS for each other lock it takes while holding that one."""
        return self.mode == StepMode.SWAP and hurry_held_waits() in self.statements

    def text(self) -> str:
        """The step's SQL, one statement per line, each ending with ';'."""
        statements = (*self.statements, *self.then)
        body = ";\n".join(s.as_string() for s in statements) + ";"
        return f"BEGIN;\n{body}\nCOMMIT;" if self.mode == StepMode.SWAP else body


#: An object a view's replace rebuilds: (kind, name, the view or table it is recorded with,
#: the OID it replaces, whether its new copy is dbopt's -- a reader made by hand is recorded
#: only as swapped out).
Rebuilt = tuple[str, QualifiedName, QualifiedName, int, bool]


@dataclass(frozen=True, slots=True)
class Action:
    """One change to one index or view, with how to apply it and how it would be undone."""

    kind: ActionKind
    name: QualifiedName
    table: QualifiedName
    reason: str
    forward: tuple[Step, ...] = ()
    #: The SQL that would undo the action, for people (plan --sql, the run's rollback file);
    #: rollback itself derives its statements from the facts the history records.
    rollback: tuple[Step, ...] = ()
    enabled: bool = True
    needs: str | None = None  # the option that enables a disabled action ("prune", ...)
    #: Why this change cannot be made as planned (apply refuses before anything runs); a
    #: :class:`LockRefusal` when that is only a lock not granted at once (:func:`refusal_of`).
    refusal: str | None = None
    current: str | None = None  # canonical definition in the database
    desired: str | None = None  # canonical definition of the spec
    existed_before: bool = False
    spec: IndexSpec | None = None
    object_type: str = "index"  # index or view
    #: 0 indexes on tables, 1 materialized views (in dependency order), 2 indexes on views.
    phase: int = 0
    phase_order: int = 0
    #: Indexes built as part of this action (a view's indexes), recorded with it.
    also_creates: tuple[QualifiedName, ...] = ()
    #: What a view's replace rebuilds besides (the materialized views that read it, their
    #: indexes dbopt made), recorded as rebuilt with the action (see :data:`Rebuilt`).
    also_rebuilds: tuple[Rebuilt, ...] = ()
    #: The object this action replaces, repairs or drops, and its definition as the server
    #: printed it (recorded, so a rollback can rebuild it).
    replaced_oid: int | None = None
    previous_definition: str | None = None
    previous_state: Mapping[str, Any] = field(default_factory=dict)
    #: For a rollback: the change this action undoes.
    undoes_change: int | None = None
    #: False for a skip whose definition could not be compared (on a hot standby the server
    #: cannot normalise a spec: no temporary objects there).
    compared: bool = True

    def diff(self) -> str:
        """A one-line-per-side diff of the definitions (for drift)."""
        if self.current is None or self.desired is None:
            return ""
        return "\n".join(
            difflib.unified_diff(
                self.current.strip().splitlines(),
                self.desired.strip().splitlines(),
                "database",
                "spec",
                lineterm="",
                n=0 if self.object_type == "index" else 3,
            )
        )


@dataclass(frozen=True, slots=True)
class Plan:
    """Ordered actions; skips included so the plan says what it checked."""

    actions: tuple[Action, ...] = ()
    catalog_queries: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)
    #: The database it was made against, for people: ``user@host:port/db, PostgreSQL 15.4``.
    where: str = ""
    #: OIDs of indexes and views whose properties a replace or drop must check; the planner
    #: is called again with them read (one query each) before anything runs.
    wants_properties: tuple[frozenset[int], frozenset[int]] = (frozenset(), frozenset())
    #: Specs that cannot be applied to this database (a name taken, a table missing...), as
    #: ``file:line:column: message``: only in a plan made with ``lenient`` (status), which
    #: leaves them out; any other plan refuses them (SpecError).
    conflicts: tuple[str, ...] = ()

    @property
    def changes(self) -> tuple[Action, ...]:
        """Actions that change something (enabled or not)."""
        return tuple(a for a in self.actions if a.kind != ActionKind.SKIP)

    @property
    def runnable(self) -> tuple[Action, ...]:
        """Actions apply will execute."""
        return tuple(a for a in self.changes if a.enabled)

    @property
    def blocked(self) -> tuple[Action, ...]:
        """Changes that need a flag (--replace-drifted, --prune) and will not run without it."""
        return tuple(a for a in self.changes if not a.enabled)

    @property
    def refused(self) -> tuple[Action, ...]:
        """Runnable changes that cannot be made as planned: nothing may start then."""
        return tuple(a for a in self.runnable if a.refusal)

    @property
    def refused_for_locks(self) -> bool:
        """Every refusal is only a lock not granted at once: the same plan may go through
        once the other session is done (exit 3, as for any lock dbopt cannot take)."""
        refused = self.refused
        return bool(refused) and all(isinstance(a.refusal, LockRefusal) for a in refused)

    def refusing_shared_rebuilds(self) -> Plan:
        """The plan with each view replace refused whose cascade would rebuild (or replace) a
        materialized view an earlier replace of the same run puts in place (the view it
        replaces, or one it rebuilds): that one gets a new OID there, and the later replace,
        having planned the old one, would fail after its builds. What is run together
        decides it: apply the plan (or its part) first, then this one (``--index``)."""
        claimed: dict[QualifiedName, QualifiedName] = {}
        # What the run drops (a view, or an index of one): a replace must not rebuild it.
        dropped: dict[QualifiedName, QualifiedName] = {}
        #: The views (and tables) whose indexes the run drops, with one of those indexes.
        dropped_indexes: dict[QualifiedName, QualifiedName] = {}
        #: An apply's drops are prunes: run alone, they still need --prune (a rollback's
        #: drops undo creates: nothing more to say).
        pruned = set()
        for action in self.actions:
            if action.kind == ActionKind.DROP and action.enabled:
                dropped.setdefault(action.name, action.name)
                if action.undoes_change is None:
                    pruned.add(action.name)
                if action.object_type != "view":
                    dropped_indexes.setdefault(action.table, action.name)
        actions = []
        for action in self.actions:
            if (
                action.object_type != "view"
                or action.kind not in (ActionKind.REPLACE, ActionKind.RESTORE)
                or not action.enabled
            ):
                actions.append(action)
                continue
            rebuilds = [name for _kind, name, *_rest in action.also_rebuilds]
            clash = [n for n in (action.name, *rebuilds) if n in claimed]
            # What it rebuilds, or an index of those or of the view itself, dropped.
            gone = [n for n in (*rebuilds, action.name) if n in dropped and n != action.name]
            gone += [n for n in rebuilds if n in dropped_indexes]
            gone += [action.name] if action.name in dropped_indexes else []
            said = None
            if clash:
                other = claimed[clash[0]]
                said = (
                    f"materialized view {action.name}: this run's replace of {other} puts a "
                    f"new {clash[0]} in place first, which this replace would "
                    f"{'replace' if clash[0] == action.name else 'rebuild'} again from the "
                    f"one there now: run them one at a time (--index {other}, then --index "
                    f"{action.name})"
                )
            elif gone:
                what = dropped.get(gone[0]) or dropped_indexes[gone[0]]
                said = (
                    f"materialized view {action.name}: this run drops {what}"
                    + (f" (of {gone[0]})" if what != gone[0] else "")
                    + f", and this replace would rebuild {gone[0]}: run them one at a time "
                    f"(--index {what}{' --prune' if what in pruned else ''}, then --index "
                    f"{action.name})"
                )
            if said is not None:
                refusal = f"{action.refusal}; {said}" if action.refusal else said
                action = replace(action, refusal=refusal)
            # What it puts in place has a new OID: the view itself, and what it rebuilds.
            for name in (action.name, *rebuilds):
                claimed.setdefault(name, action.name)
            actions.append(action)
        return replace(self, actions=tuple(actions))

    def only(
        self, objects: Collection[QualifiedName] = (), tables: Collection[QualifiedName] = ()
    ) -> Plan:
        """The part of the plan about ``objects`` (indexes or views, by name) and the indexes
        of ``tables`` (a view counts as a table of its indexes): what ``apply --index`` and
        ``--table`` run. A view's action includes its own indexes."""
        if not objects and not tables:
            return self
        kept = tuple(
            a
            for a in self.actions
            if a.name in objects
            or a.table in tables
            or (a.object_type == "view" and a.name in tables)
        )
        return replace(self, actions=kept)


_ORDER = {
    ActionKind.REPAIR: 0,
    ActionKind.CREATE: 1,
    ActionKind.REPLACE: 2,
    ActionKind.RESTORE: 2,
    ActionKind.DROP: 3,
    ActionKind.SKIP: 4,
}

_RELKINDS = {
    "r": "table",
    "p": "partitioned table",
    "m": "materialized view",
    "v": "view",
    "i": "index",
    "I": "partitioned index",
    "S": "sequence",
    "f": "foreign table",
    "c": "composite type",
}
