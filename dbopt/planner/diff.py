"""plan(specs, catalog) -> Plan: the specs diffed against the catalog, pure, no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from dbopt import citus
from dbopt.catalog import Catalog, Relation
from dbopt.catalog.properties import Properties
from dbopt.citus import ShardedIndex
from dbopt.errors import OptionNeeded, Problem, SpecError
from dbopt.history import OwnedObject
from dbopt.model import IndexSpec, QualifiedName, ViewSpec
from dbopt.planner.actions import (
    _ORDER,
    _RELKINDS,
    NEW_SUFFIX,
    OLD_SUFFIX,
    Action,
    ActionKind,
    Plan,
    StepMode,
)
from dbopt.planner.indexes import _index_action, drop_index_action
from dbopt.planner.ownership import Ownership, name_taken, ownership
from dbopt.planner.views import (
    _dependents,
    create_view_action,
    drop_view_action,
    replace_view_action,
)
from dbopt.spec import view_order
from dbopt.words import a, they

_LEFT_BEHIND = "left under dbopt's temporary name by an interrupted replace"


def _plan_views(
    views: Sequence[ViewSpec],
    catalog: Catalog,
    normalized: Mapping[QualifiedName, str],
    new_columns: Mapping[QualifiedName, tuple[str, ...]] | None,
    owners: Ownership,
    properties: Properties | None,
    prune: bool,
    problems: list[Problem],
    replace_drifted: bool = False,
    rebinding: Mapping[QualifiedName, Sequence[str]] | None = None,
) -> tuple[list[Action], list[IndexSpec]]:
    """Actions for materialized views, and the index specs of views that stay as they are."""
    actions: list[Action] = []
    index_specs: list[IndexSpec] = []
    for position, view in enumerate(view_order(views)):
        existing = catalog.relations.get(view.name)
        loc = view.location
        if existing is None:
            taken = name_taken(catalog, view.name, by_types=True)
            if taken:
                problems.append(
                    loc.problem(
                        f"{view.name} is taken by {a(taken)}: choose another name",
                    )
                )
                continue
            actions.append(create_view_action(view, position))
            continue
        if existing.relkind != "m":
            problems.append(
                loc.problem(
                    f"{view.name} already exists as a "
                    f"{_RELKINDS.get(existing.relkind, existing.relkind)}: choose another name",
                )
            )
            continue
        desired = normalized.get(view.name)
        current = existing.view_definition
        if desired is None or desired == current:
            actions.append(
                Action(
                    kind=ActionKind.SKIP,
                    name=view.name,
                    table=view.name,
                    reason="the materialized view has exactly the specified query",
                    current=current,
                    desired=desired,
                    existed_before=True,
                    object_type="view",
                    phase=1,
                    phase_order=position,
                )
            )
            index_specs.extend(view.indexes)
            continue
        actions.append(
            replace_view_action(
                view,
                existing,
                catalog,
                owners,
                properties,
                position,
                desired=desired,
                new_columns=new_columns,
                rebinding=(rebinding or {}).get(view.name, ()),
            )
        )
    wanted = {v.name for v in views}
    # What an interrupted replace left under a temporary name, that a replace that will run
    # drops first anyway (its own leftovers and its readers').
    cleared = {
        step.index
        for action in actions
        if replace_drifted or action.kind != ActionKind.REPLACE
        for step in action.forward
        if step.mode == StepMode.VIEW and step.index.name.endswith((NEW_SUFFIX, OLD_SUFFIX))
    }
    gone = [
        r
        for r in catalog.relations.values()
        if r.relkind == "m"
        and owners.owns(r.oid)
        and r.name not in wanted
        and r.name not in cleared
    ]
    dropped: set[QualifiedName] = set()
    for offset, relation in enumerate(_readers_first(gone, catalog)):
        actions.append(
            drop_view_action(
                relation,
                catalog,
                reason=_LEFT_BEHIND
                if relation.name.name.endswith((NEW_SUFFIX, OLD_SUFFIX))
                else _gone_reason(owners.origin(relation.oid)),
                origin=owners.origin(relation.oid),
                properties=properties,
                enabled=prune,
                needs=None if prune else "prune",
                phase_order=10_000 + offset,
                also_dropped=frozenset(dropped),
            )
        )
        dropped.add(relation.name)
    return actions, index_specs


def _readers_first(views: Sequence[Relation], catalog: Catalog) -> list[Relation]:
    """``views`` ordered so that each comes after those of them that read it (by name, newest
    name first, where none does): what an interrupted cascade left (a reader's leftover
    reading the view's) is dropped reader first."""
    left = sorted(views, key=lambda r: r.name, reverse=True)
    names = {r.name for r in left}
    out: list[Relation] = []
    while left:
        done = {r.name for r in out}
        ready = next(
            (
                r
                for r in left
                if all(d in done or d not in names for d in catalog.dependents.get(r.name, ()))
            ),
            left[0],  # a cycle cannot be: views read what exists before them
        )
        out.append(ready)
        left.remove(ready)
    return out


# --- the plan --------------------------------------------------------------------------------


def plan(
    specs: Sequence[IndexSpec],
    catalog: Catalog,
    normalized: Mapping[QualifiedName, str],
    owned: Iterable[OwnedObject] = (),
    *,
    views: Sequence[ViewSpec] = (),
    normalized_views: Mapping[QualifiedName, str] | None = None,
    view_columns: Mapping[QualifiedName, tuple[str, ...]] | None = None,
    view_rebinding: Mapping[QualifiedName, Sequence[str]] | None = None,
    properties: Properties | None = None,
    replace_drifted: bool = False,
    prune: bool = False,
    cascade: bool = False,
    catalog_queries: int = 0,
    placements: Mapping[QualifiedName, ShardedIndex] | None = None,
    lenient: bool = False,
) -> Plan:
    """Diff specs against the catalog.

    ``specs`` are table indexes; ``views`` materialized views with their indexes. ``owned``
    is what dbopt's history says it made (only those objects may be dropped). ``properties``
    are those of the objects a replace or drop touches; without them the plan lists in
    ``wants_properties`` which to read, and the caller plans again with them. On a Citus
    coordinator ``placements`` are the specs' existing indexes on every shard placement
    (dbopt.citus.shard_indexes): one INVALID or missing on some of them is repaired.
    Specs that cannot be applied raise SpecError; ``lenient`` leaves them out instead and
    lists them in ``conflicts`` (status reports them).
    """
    actions: list[Action] = []
    problems: list[Problem] = []
    owners = ownership(owned, catalog)
    view_actions, view_index_specs = _plan_views(
        views,
        catalog,
        normalized_views or {},
        view_columns,
        owners,
        properties,
        prune,
        problems,
        replace_drifted,
        view_rebinding,
    )
    actions.extend(view_actions)
    wanted = {s.qualified_name for s in specs} | {
        i.qualified_name for v in views for i in v.indexes
    }
    for spec in [*specs, *view_index_specs]:
        relation = catalog.relations.get(spec.table)
        loc = spec.location
        if relation is None:
            problems.append(loc.problem(f"table {spec.table} does not exist"))
            continue
        if relation.relkind not in ("r", "p", "m"):
            kind = _RELKINDS.get(relation.relkind, relation.relkind)
            problems.append(
                loc.problem(
                    f"{spec.table} is {a(kind)}: indexes go on tables and materialized views",
                )
            )
            continue
        refused = citus.refusals(spec, relation)
        if refused:
            problems.extend(refused)
            continue
        action = _index_action(
            spec, relation, catalog, normalized, owners, properties, problems, placements
        )
        if action is None:
            continue
        if spec in view_index_specs:
            action = replace(action, phase=2)
        actions.append(action)
    if problems and not lenient:
        raise SpecError("the specs cannot be applied to this database", problems)
    dropped_views = {a.name for a in view_actions if a.kind == ActionKind.DROP}
    for index in sorted(catalog.indexes.values(), key=lambda i: i.name):
        if not owners.owns(index.oid) or index.name in wanted or index.table in dropped_views:
            continue
        reason = (
            _LEFT_BEHIND
            if index.name.name.endswith((NEW_SUFFIX, OLD_SUFFIX))
            else _gone_reason(owners.origin(index.oid))
        )
        relation = catalog.relations[index.table]
        actions.append(
            drop_index_action(
                index,
                relation,
                reason=reason,
                origin=owners.origin(index.oid),
                properties=properties,
                enabled=prune,
                needs=None if prune else "prune",
                phase=2 if relation.relkind == "m" else 0,
            )
        )
    notes = _unowned_leftovers(catalog, owners, wanted)
    not_owned = sorted(
        {
            str(a.table)
            for a in actions
            if a.kind != ActionKind.SKIP
            and a.table in catalog.relations
            and not catalog.relations[a.table].owned
        }
    )
    if not_owned:
        notes.append(
            "this role does not own "
            + ", ".join(not_owned)
            + ": apply must run as their owner (or a member of it)"
        )
    for i, action in enumerate(actions):
        if action.kind == ActionKind.REPLACE and not replace_drifted:
            # A view others read needs the cascade too: said at once, not after the first flag.
            readers = action.object_type == "view" and bool(catalog.dependents.get(action.name))
            needs = "replace_drifted cascade" if readers and not cascade else "replace_drifted"
            actions[i] = _disabled(action, needs)
        elif action.kind == ActionKind.REPLACE and action.object_type == "view":
            _check_cascade(action.name, catalog, cascade)
    actions.sort(key=lambda a: (a.phase, a.phase_order, str(a.table), _ORDER[a.kind], a.name.name))
    return Plan(
        tuple(actions),
        catalog_queries=catalog_queries,
        notes=tuple(notes),
        conflicts=tuple(str(p) for p in problems),
        wants_properties=wanted_properties(actions, catalog)
        if properties is None
        else (
            frozenset(),
            frozenset(),
        ),
    )


def _unowned_leftovers(
    catalog: Catalog, owners: Ownership, wanted: set[QualifiedName]
) -> list[str]:
    """Indexes under dbopt's temporary names that its history does not say it made."""
    return [
        f"{index.name} has one of dbopt's temporary names but dbopt has no record of making it "
        "(a build interrupted before dbopt could record it?): not touched; drop it by hand "
        "once you have checked it"
        for index in sorted(catalog.indexes.values(), key=lambda i: i.name)
        if index.name.name.endswith((NEW_SUFFIX, OLD_SUFFIX))
        and not owners.owns(index.oid)
        and index.name not in wanted
        and not index.table.name.endswith((NEW_SUFFIX, OLD_SUFFIX))
    ]


def wanted_properties(
    actions: Sequence[Action], catalog: Catalog
) -> tuple[frozenset[int], frozenset[int]]:
    """OIDs of the indexes and views whose properties the runnable replaces and drops need
    (a replaced view's readers and indexes too)."""
    indexes: set[int] = set()
    views: set[int] = set()
    for action in actions:
        if not action.enabled or action.kind not in (
            ActionKind.REPLACE,
            ActionKind.DROP,
            ActionKind.RESTORE,
        ):
            continue
        if action.replaced_oid is None:
            continue
        if action.object_type == "index":
            indexes.add(action.replaced_oid)
            continue
        views.add(action.replaced_oid)
        readers = _dependents(action.name, catalog)[1] if action.kind != ActionKind.DROP else []
        for relation in [catalog.relations[action.name], *readers]:
            views.add(relation.oid)
            indexes.update(i.oid for i in catalog.indexes_on(relation.name))
    return frozenset(indexes), frozenset(views)


def _gone_reason(origin: str) -> str:
    """Why dbopt may drop an object of its own that left the specs: how it came to own it."""
    if origin.startswith("adopted"):
        return f"{origin} (it existed before: `dbopt import --adopt`) and no longer in the specs"
    return "created by dbopt and no longer in the specs"


def _check_cascade(name: QualifiedName, catalog: Catalog, cascade: bool) -> None:
    """Replacing a view others read must be asked for with the cascade option (the plan
    lists what it rebuilds)."""
    if not catalog.dependents.get(name) or cascade:
        return
    readers, verb, pronoun = they(catalog.dependents[name])
    raise OptionNeeded(
        f"materialized view {name} must be replaced but {readers} {verb} on it: rebuilding "
        f"{pronoun} too must be asked for (the plan lists {pronoun}), or drop {pronoun} first",
        option="cascade",
    )


def _disabled(action: Action, flag: str) -> Action:
    if not action.enabled:
        return action
    return replace(action, enabled=False, needs=flag)
