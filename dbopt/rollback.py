"""Rollback plans: undo a run (or the last change of some objects) from recorded facts.

The history is data, never code: each change records structured facts — the object's kind and
name, its table, the OID of what dbopt made and of what it replaced, and definitions as the
server printed them. A rollback reads those facts, checks them against the live catalog (the
object must still be the one dbopt made: same OID, table and definition, and a credible fact:
see :meth:`dbopt.history.History.owned`), and derives its actions with the same builders as a
plan: a create is undone by a guarded drop, a replace by a replace back to the previous
definition (parsed by the PostgreSQL parser into a spec, never executed as text; a view's
query must pass the same checks as a budget query), a drop by a create. Whatever cannot be
undone is listed with the reason.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import psycopg

from dbopt.catalog import Catalog, CatalogIndex, Relation, inspect
from dbopt.catalog.properties import Properties, read_properties
from dbopt.errors import InputError
from dbopt.history import ChangeRecord, History, OwnedObject, RunRecord
from dbopt.indexdef import DefinitionError, index_spec_from_definition
from dbopt.model import IndexSpec, Location, QualifiedName, RunOutcome, ViewSpec
from dbopt.planner import (
    NEW_SUFFIX,
    OLD_SUFFIX,
    Action,
    ActionKind,
    Ownership,
    Plan,
    create_index_action,
    create_view_action,
    drop_index_action,
    drop_view_action,
    is_temporary,
    name_taken,
    own_new_views,
    ownership,
    replace_index_action,
    replace_view_action,
    temporary_names,
    wanted_properties,
)
from dbopt.plans import new_view_owner
from dbopt.readonly import CallGraph
from dbopt.sqltext import SqlTextError, check_query, query_sql
from dbopt.words import a


@dataclass(frozen=True, slots=True)
class Selection:
    """What to undo: one run, the last apply run, or the last change of some objects."""

    run_id: int | None = None
    last: bool = False
    names: tuple[QualifiedName, ...] = ()

    def check(self) -> None:
        """Exactly one way of choosing (InputError otherwise)."""
        if sum((self.run_id is not None, self.last, bool(self.names))) != 1:
            raise InputError("choose exactly one: the last run, a run id, or object names")


@dataclass(frozen=True, slots=True)
class Skipped:
    """A recorded change that rollback leaves as it is, and why."""

    name: QualifiedName
    reason: str


@dataclass(frozen=True, slots=True)
class RollbackPlan:
    """The undo actions (as a Plan), the run they undo, and what cannot be undone."""

    plan: Plan
    undoes_run: int | None
    skipped: tuple[Skipped, ...] = ()
    catalog: Catalog | None = None  # what the plan was checked against


def current_oid(change: ChangeRecord, later: Sequence[ChangeRecord]) -> int | None:
    """The OID of what ``change`` made, followed through later changes of dbopt's.

    A later replace, repair or drop of it ends it (None), unless that change was itself
    rolled back: then the object is what the rollback made (a restore hands it back); a
    rebuild (a cascade rebuilt it with a view it reads) carries it on as what it made. A later
    change counts when it is done: ended ok, or landed (ChangeRecord.landed).
    """
    oid = change.object_oid
    after = change.id
    ordered = sorted(later, key=lambda c: c.id)
    while oid is not None:
        successor = next(
            (c for c in ordered if c.replaced_oid == oid and c.done and c.id > after), None
        )
        if successor is None:
            return oid
        if successor.action == "rebuild":  # rebuilt with a view it reads: carried on
            oid, after = successor.object_oid, successor.id
            continue
        undo = next((c for c in ordered if c.undoes_change == successor.id and c.done), None)
        if undo is None:
            return None
        oid, after = undo.object_oid, undo.id
    return None


def _live(change: ChangeRecord, later: Sequence[ChangeRecord]) -> bool:
    """Not undone by a rollback, and what it made still there (possibly after a restore):
    an INVALID index a stopped create left behind counts (it is what the run left). A
    rebuild never counts by itself: it is undone with the change of the view it went with."""
    if change.undone_by is not None or change.action == "rebuild":
        return False
    if change.action == "drop" and change.name.name.endswith((NEW_SUFFIX, OLD_SUFFIX)):
        return False  # a leftover cleared: nothing to bring back
    if change.left_invalid:
        return current_oid(change, later) is not None
    if not change.done:
        return False
    if change.object_oid is None:
        return True
    return current_oid(change, later) is not None


def _later(
    conn: psycopg.Connection[Any], history: History, records: Sequence[ChangeRecord]
) -> list[ChangeRecord]:
    names = sorted({c.name for c in records})
    return history.changes(conn, names=names) if names else []


def _select(
    conn: psycopg.Connection[Any],
    history: History,
    selection: Selection,
) -> tuple[list[ChangeRecord], int | None]:
    """The changes to undo, newest first, and the run they belong to (None for names)."""
    if selection.names:
        chosen = []
        for name in selection.names:
            later = history.changes(conn, names=[name])
            mine = [c for c in later if c.name == name and c.run_command == "apply"]
            if not mine:
                raise InputError(f"dbopt never changed {name}: nothing to roll back")
            live = [c for c in mine if _live(c, later)]
            chosen.append(live[0] if live else mine[0])
        return sorted(chosen, key=lambda c: -c.id), None
    if selection.run_id is not None:
        run = history.run(conn, selection.run_id)
        if run is None:
            raise InputError(
                f"there is no run {selection.run_id}: see `dbopt status` for the last runs"
            )
        if run.command != "apply":
            raise InputError(
                f"run {run.id} is a {run.command}, not an apply: only applies are undone"
            )
        records = history.changes(conn, run_id=run.id)
        later = _later(conn, history, records)
        undone = [c.undone_by_run for c in records if c.undone_by_run is not None]
        if records and undone and not any(_live(c, later) for c in records):
            raise InputError(f"run {run.id} was already rolled back by run {max(undone)}")
        return records, run.id
    failed: RunRecord | None = None  # the newest apply, when it failed leaving nothing
    for newest, run in enumerate(history.apply_runs(conn)):
        records = history.changes(conn, run_id=run.id)
        if any(_live(c, _later(conn, history, records)) for c in records):
            if failed is not None:
                # Never reached past a failed run unasked: after "apply failed", --last meant
                # that apply, not the good one before it.
                raise InputError(
                    f"the last apply (run {failed.id}) {failed.outcome} and left nothing to "
                    f"undo; the newest apply with something left is run {run.id}: to undo it, "
                    f"name it (dbopt rollback --run {run.id})"
                )
            return records, run.id
        if (
            newest == 0  # the newest apply only, and only until a rollback came after it
            and run.outcome != RunOutcome.SUCCEEDED
            and not any(c.undone_by is not None for c in records)
            and not history.rolled_back_since(conn, run.id)
        ):
            failed = run
    raise InputError("no apply run left to roll back: every change was undone or superseded")


class _Skip(Exception):
    """This change has no undo; the message says why."""


@dataclass(frozen=True, slots=True)
class _Context:
    """What deriving an undo needs besides the change."""

    catalog: Catalog
    owners: Ownership
    later: Sequence[ChangeRecord]
    properties: Properties | None
    dropped_views: Collection[QualifiedName]
    calls: CallGraph | None
    #: The columns of each previous query a restore would build from (what it can keep).
    columns: Mapping[QualifiedName, tuple[str, ...]]


def derive(
    records: Sequence[ChangeRecord],
    later: Sequence[ChangeRecord],
    catalog: Catalog,
    owned: Sequence[OwnedObject],
    properties: Properties | None = None,
    calls: CallGraph | None = None,
    columns: Mapping[QualifiedName, tuple[str, ...]] | None = None,
) -> tuple[list[Action], list[Skipped]]:
    """The undo action of each change (newest first), or why there is none. Pure.

    ``calls`` checks a view query read back from the history (nothing it can reach may have
    a side effect); without it such a view is not rebuilt. A change that landed
    (ChangeRecord.landed) is undone as if it had ended ok.

    A view the run created may be dropped before a view it reads is (its reader gone, the
    drop goes through): only when that view's own undo is a drop that will run. One that is
    left alone (made again by someone else, its undo refused) still reads the other, whose
    drop is then refused before anything runs -- never found out half-way.
    """
    dropped = {c.name for c in records if c.object_type == "view" and c.action == "create"}
    while True:
        context = _Context(
            catalog, ownership(owned, catalog), later, properties, dropped, calls, columns or {}
        )
        actions, skipped = _derive(records, context)
        dropping = {
            a.name
            for a in actions
            if a.object_type == "view"
            and a.kind == ActionKind.DROP
            and a.refusal is None
            and a.enabled
        }
        if dropped <= dropping:
            return actions, skipped
        dropped &= dropping  # fewer readers go first: derive again (shrinks, so it ends)


def _derive(
    records: Sequence[ChangeRecord], context: _Context
) -> tuple[list[Action], list[Skipped]]:
    later = context.later
    actions: list[Action] = []
    skipped: list[Skipped] = []
    for change in sorted(records, key=lambda c: -c.id):
        if change.undone_by is not None:
            skipped.append(Skipped(change.name, f"already undone (change {change.undone_by})"))
            continue
        if not change.done and not change.left_invalid:
            skipped.append(Skipped(change.name, f"its change {change.result}: nothing was made"))
            continue
        if change.object_type == "index" and change.table in context.dropped_views:
            continue  # dropped with its view
        if change.action == "rebuild":
            if any(r.name == change.table and r.object_type == "view" for r in records):
                continue  # undone with its view
            skipped.append(
                Skipped(
                    change.name,
                    f"rebuilt with the view {change.table} by run {change.run_id}: roll back "
                    "that view's change",
                )
            )
            continue
        if not _live(change, later):
            skipped.append(
                Skipped(change.name, "a later change of dbopt replaced what this one made")
            )
            continue
        try:
            actions.append(_undo(change, context))
        except _Skip as skip:
            skipped.append(Skipped(change.name, str(skip)))
    return actions, skipped


def _undo(change: ChangeRecord, context: _Context) -> Action:
    reason = f"undo {change.action} of run {change.run_id}"
    if change.left_invalid:
        reason += f" (the INVALID index its {change.result} build left)"
    if change.action in ("create", "restore", "repair"):
        if change.action == "repair" and change.existed_before:
            raise _Skip("it existed before dbopt (dbopt only rebuilt it): a repair has no way back")
        if change.action == "repair" and change.previous_state.get("valid"):
            raise _Skip(
                "it was valid before this run, which only rebuilt it (on its shards): a repair "
                "has no way back"
            )
        return _undo_create(change, context, reason)
    if change.action == "replace":
        return _undo_replace(change, context, reason)
    if change.action == "drop":
        return _undo_drop(change, context, reason)
    raise _Skip(f"dbopt has no undo for a {change.action}")


def _made(change: ChangeRecord, context: _Context) -> CatalogIndex | Relation:
    """The live object this change made, when it is still the one dbopt made."""
    name, catalog = change.name, context.catalog
    if change.object_type == "view":
        found: CatalogIndex | Relation | None = catalog.relations.get(name)
        if found is None or found.relkind != "m":
            raise _Skip(f"there is no materialized view {name} any more")
    else:
        found = catalog.indexes.get(name)
        taken = catalog.names.get(name)
        if found is None and taken in ("index", "partitioned index"):
            raise _Skip(
                f"{name} is now an index of another table, not on {change.table}: not dbopt's"
            )
        if found is None:
            raise _Skip(
                f"{name} is now {a(taken)}, not dbopt's index"
                if taken
                else f"there is no index {name} any more"
            )
        if found.table != change.table:
            raise _Skip(f"index {name} is on {found.table} now, not on {change.table}: not dbopt's")
    expected = current_oid(change, context.later)
    if expected is not None and found.oid != expected:
        raise _Skip(
            f"{name} is not the {change.object_type} dbopt made: its OID is {found.oid}, "
            f"dbopt's was {expected} (dropped and made again by someone else)"
        )
    if not context.owners.owns(found.oid):
        raise _Skip(
            f"dbopt's history has no credible record of making {name} (its definition changed "
            "since, or the history's owner cannot act on it)"
        )
    return found


def _undo_create(change: ChangeRecord, context: _Context, reason: str) -> Action:
    found = _made(change, context)
    catalog = context.catalog
    origin = f"made by dbopt run {change.run_id}"
    if isinstance(found, Relation):
        return drop_view_action(
            found,
            catalog,
            reason=reason,
            origin=origin,
            properties=context.properties,
            also_dropped=context.dropped_views,
            undoes_change=change.id,
            phase_order=-change.id,  # newest first: what reads a view goes before it
        )
    relation = catalog.relations[found.table]
    return drop_index_action(
        found,
        relation,
        reason=reason,
        origin=origin,
        properties=context.properties,
        undoes_change=change.id,
        phase=2 if relation.relkind == "m" else 0,
    )


def _index_spec(change: ChangeRecord, definition: str | None, name: str) -> IndexSpec:
    if not definition:
        raise _Skip("its previous definition was not recorded (dbopt 0.1): rebuild it by hand")
    try:
        return index_spec_from_definition(
            definition,
            table=change.table,
            name=name,
            reason=f"restored by rollback of run {change.run_id}",
        )
    except DefinitionError as exc:
        raise _Skip(f"the recorded previous definition cannot be rebuilt: it {exc}") from None


def _view_spec(change: ChangeRecord, calls: CallGraph | None) -> ViewSpec:
    """The previous view: its query (one read-only SELECT that can reach nothing with a side
    effect — it will run with this role's rights) and its indexes."""
    text = (change.previous_definition or "").strip().rstrip(";").strip()
    if not text:
        raise _Skip("its previous query was not recorded: rebuild it by hand")
    try:
        check_query(text, with_placeholders=False)
    except SqlTextError as exc:
        raise _Skip(f"the recorded previous query is refused: it {exc}") from None
    if calls is None:
        raise _Skip("the recorded previous query could not be checked")
    refusals = calls.refusals(text, with_placeholders=False)
    if refusals:
        raise _Skip(
            "the recorded previous query is refused: "
            + "; ".join(r.message for r in refusals)
            + " (it would run with this role's rights)"
        )
    indexes = []
    for item in change.previous_state.get("indexes", []):
        try:
            indexes.append(
                index_spec_from_definition(
                    str(item["definition"]), table=change.name, name=str(item["name"])
                )
            )
        except (DefinitionError, KeyError, TypeError) as exc:
            raise _Skip(f"a recorded index of the previous view cannot be rebuilt: {exc}") from None
    return ViewSpec(
        name=change.name,
        query=text,
        location=Location("<history>", 0, 0),
        indexes=tuple(indexes),
    )


def _added_with(change: ChangeRecord, later: Sequence[ChangeRecord]) -> set[int]:
    """The indexes a view's replace added (built with it, none of the old view's), as they
    are now: the restore leaves them out. Every other index dbopt made on the view (a later
    run's, one the replace carried over) is kept."""
    return {
        oid
        for c in later
        if c.run_id == change.run_id
        and c.object_type == "index"
        and c.table == change.name
        and c.action in ("create", "rebuild")
        and c.replaced_oid is None
        and (oid := current_oid(c, later)) is not None
    }


def _undo_replace(change: ChangeRecord, context: _Context, reason: str) -> Action:
    found = _made(change, context)
    catalog = context.catalog
    expected = current_oid(change, context.later)
    if isinstance(found, Relation):
        view = _view_spec(change, context.calls)
        action = replace_view_action(
            view,
            found,
            catalog,
            context.owners,
            context.properties,
            -change.id,
            body=query_sql(view.query),
            kind=ActionKind.RESTORE,
            reason=reason,
            expect_oid=expected,
            undoes_change=change.id,
            added=_added_with(change, context.later),
            new_columns=context.columns,
        )
        return replace(action, enabled=True)
    spec = _index_spec(change, change.previous_definition, change.name.name)
    relation = catalog.relations.get(change.table)
    if relation is None:
        raise _Skip(f"its table {change.table} does not exist any more")
    return replace_index_action(
        spec,
        found,
        relation,
        catalog,
        context.owners,
        context.properties,
        kind=ActionKind.RESTORE,
        reason=reason,
        expect_oid=expected,
        undoes_change=change.id,
    )


def _undo_drop(change: ChangeRecord, context: _Context, reason: str) -> Action:
    catalog = context.catalog
    if change.name.name.endswith((NEW_SUFFIX, OLD_SUFFIX)):
        raise _Skip(
            "it was what an interrupted replace left under dbopt's temporary name: nothing to "
            "bring back"
        )
    taken = name_taken(catalog, change.name, by_types=change.object_type == "view")
    if taken:
        raise _Skip(f"the name {change.name} is taken by {a(taken)} now")
    if change.object_type == "view":
        return create_view_action(
            _view_spec(change, context.calls), -change.id, reason=reason, undoes_change=change.id
        )
    relation = catalog.relations.get(change.table)
    if relation is None:
        raise _Skip(f"its table {change.table} does not exist any more")
    spec = _index_spec(change, change.previous_definition, change.name.name)
    return create_index_action(spec, relation, catalog, reason=reason, undoes_change=change.id)


def _restored_columns(
    conn: psycopg.Connection[Any], records: Sequence[ChangeRecord], calls: CallGraph | None
) -> dict[QualifiedName, tuple[str, ...]]:
    """The columns of each previous query a restore would build from, once it passed the
    checks a restore makes of it (parsed and analysed by the server, never run): an index
    or a reader that needs a column it lacks refuses the restore before anything runs."""
    from dbopt.livecheck import query_columns

    found: dict[QualifiedName, tuple[str, ...]] = {}
    if calls is None:
        return found
    for change in records:
        if change.object_type != "view" or change.action != "replace":
            continue
        try:
            view = _view_spec(change, calls)
        except _Skip:
            continue  # refused: said by its undo
        columns = query_columns(conn, view.query)
        if columns is not None:
            found[change.name] = columns
    return found


def rollback_plan(
    conn: psycopg.Connection[Any], history: History, selection: Selection
) -> RollbackPlan:
    """The plan that undoes ``selection``: facts from the history, checked against the live
    catalog of what they name (nothing else is inspected, so nothing else waited for).

    Raises InputError when there is no history or no such run.
    """
    selection.check()
    if not history.exists(conn):
        raise InputError(
            f"no dbopt history in schema {history.schema}: nothing was applied here yet"
        )
    owned = history.owned(conn)
    records, undoes = _select(conn, history, selection)
    # A view's replace undone alone (--index): the indexes its run made with it are what the
    # restore leaves out; their changes are read too (a whole run's records hold them).
    replaced = {c.run_id for c in records if c.object_type == "view" and c.action == "replace"}
    with_them = [
        c
        for run in (sorted(replaced) if selection.names else ())
        for c in history.changes(conn, run_id=run)
        if c not in records
    ]
    later = _later(conn, history, [*records, *with_them])
    # What a cascade rebuilt (a view reading a replaced one, its indexes) is not named: the
    # inspection finds it as a reader of the view it rebuilt with, and reads it only if the
    # locks it takes come at once (it may read any table; a restore that would rebuild it
    # refuses while they do not).
    touched = {
        c.table if c.object_type == "index" else c.name
        for c in records
        if c.action != "rebuild" and not is_temporary(c.name)
    }
    # What an interrupted replace of a view may have left (its indexes' names are checked),
    # read apart: a reader's copy may read any table.
    left = {
        t
        for c in records
        if c.object_type == "view"
        for t in ((c.name,) if is_temporary(c.name) else temporary_names(c.name))
    }
    catalog = inspect(conn, touched, apart=left)
    calls = None
    if any(c.object_type == "view" and c.action in ("replace", "drop") for c in records):
        calls = CallGraph.read(conn)
    columns = _restored_columns(conn, records, calls)
    actions, skipped = derive(records, later, catalog, owned, calls=calls, columns=columns)
    indexes, views = wanted_properties(actions, catalog)
    if indexes or views:
        properties = read_properties(conn, indexes, views)
        actions, skipped = derive(records, later, catalog, owned, properties, calls, columns)
    actions.sort(key=lambda a: (a.phase, a.phase_order, str(a.table), a.name.name))
    view_schemas = [a.name.schema for a in actions if a.object_type == "view"]
    result = own_new_views(Plan(tuple(actions)), new_view_owner(conn, history, view_schemas))
    return RollbackPlan(result, undoes, tuple(skipped), catalog)
