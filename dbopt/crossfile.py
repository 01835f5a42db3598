"""Checks that need every spec file at once: one file per table, names unique per schema,
no twin or redundant indexes, view dependencies that exist and form no cycle.

They run on whatever the files gave, even when some files or items are broken: a broken
index is kept out of the comparisons (its definition is a guess), and a view whose file could
not be read may be the one another view depends on.
"""

from __future__ import annotations

import graphlib
from collections.abc import Iterable, Sequence
from typing import Any

from dbopt.errors import Problem
from dbopt.model import IndexSpec, Location, QualifiedName, SpecSet, ViewSpec
from dbopt.words import suggest


def _located(loc: Location, message: str) -> Problem:
    return loc.problem(message)


def cross_file_problems(
    specs: SpecSet,
    broken: Iterable[Location] = (),
    unread: Iterable[str] = (),
    tables: Iterable[tuple[QualifiedName, Location]] = (),
) -> list[Problem]:
    """Checks that need every file: one file per table, duplicate names, twin indexes, view
    dependencies.

    ``broken`` indexes (with a problem already reported) are not compared with others: their
    definition is a guess. Depending on a view named like an ``unread`` file is not an error.
    """
    broken = set(broken)
    problems: list[Problem] = []
    files: dict[QualifiedName, Location] = {}
    for table, loc in tables:
        if table in files:
            problems.append(
                loc.problem(
                    f"table '{table}' already has a spec file ({files[table]}): keep one file "
                    "per table, and move these indexes and queries there"
                )
            )
        else:
            files[table] = loc
    seen: dict[QualifiedName, Location] = {}
    relations: Iterable[tuple[QualifiedName, Location, str]] = [
        *((i.qualified_name, i.location, "index") for i in specs.all_indexes),
        *((v.name, v.location, "materialized view") for v in specs.views),
    ]
    for name, loc, what in relations:
        if name in seen:
            problems.append(
                _located(
                    loc,
                    f"{what} name '{name}' is already used at {seen[name]}; rename one of "
                    "them (indexes and materialized views share one namespace per schema)",
                )
            )
        else:
            seen[name] = loc
    twins: dict[tuple[Any, ...], IndexSpec] = {}
    for index in specs.all_indexes:
        if index.location in broken:
            continue
        shape = (
            index.table,
            index.columns,
            index.method,
            index.unique,
            index.nulls_not_distinct,
            index.include,
            index.where,
        )
        if shape in twins:
            problems.append(
                _located(
                    index.location,
                    f"index '{index.name}' has the same definition as "
                    f"'{twins[shape].name}' ({twins[shape].location}): keep one",
                )
            )
        else:
            twins[shape] = index
    problems.extend(
        _left_prefix_problems([i for i in specs.all_indexes if i.location not in broken])
    )
    query_names: dict[str, Location] = {}
    for query in specs.queries:
        if query.name in query_names:
            problems.append(
                _located(
                    query.location,
                    f"query name '{query.name}' is already used at {query_names[query.name]}",
                )
            )
        else:
            query_names[query.name] = query.location
    problems.extend(_view_graph_problems(specs.views, set(unread)))
    return problems


def _dependency_at(view: ViewSpec, dep: QualifiedName) -> Location:
    """Where ``view`` names ``dep`` under depends_on (else the view itself)."""
    for name, loc in zip(view.depends_on, view.depends_on_at, strict=False):
        if name == dep:
            return loc
    return view.location


def _left_prefix_problems(indexes: Sequence[IndexSpec]) -> list[Problem]:
    """A non-unique index whose key is a left prefix of another's is redundant without a reason.

    The longer index serves every lookup of the shorter one (same method, same predicate);
    keeping both costs writes and space, so the spec must say why (e.g. a much smaller index
    for a hot query).
    """
    longer: dict[tuple[Any, ...], IndexSpec] = {}
    for index in indexes:
        for k in range(1, len(index.columns)):
            key = (index.table, index.method, index.where, index.columns[:k])
            longer.setdefault(key, index)
    problems = []
    for index in indexes:
        key = (index.table, index.method, index.where, index.columns)
        other = longer.get(key)
        if other is None or index.unique or index.reason:
            continue
        problems.append(
            _located(
                index.location,
                f"index '{index.name}' is a left prefix of '{other.name}' ({other.location}), "
                "which serves the same lookups: remove it, or say why it is worth keeping "
                "under reason",
            )
        )
    return problems


def _view_graph_problems(
    views: Sequence[ViewSpec], unread: set[str] | None = None
) -> list[Problem]:
    """depends_on names a view of the specs, not the view itself, and views form no cycle.

    A view named like an ``unread`` file (one whose name could not be read) may be the one
    meant: naming it is not an error.
    """
    by_name = {v.name: v for v in views}
    problems: list[Problem] = []
    graph: dict[QualifiedName, set[QualifiedName]] = {}
    for view in views:
        deps = graph.setdefault(view.name, set())
        for dep in view.depends_on:
            if dep == view.name:
                problems.append(
                    _located(
                        _dependency_at(view, dep),
                        f"view '{view.name}' depends on itself; remove it from depends_on",
                    )
                )
            elif dep in by_name:
                deps.add(dep)
            elif dep.name not in (unread or set()):
                known = [str(n) for n in sorted(by_name)]
                problems.append(
                    _located(
                        _dependency_at(view, dep),
                        f"depends_on names '{dep}', which is not a view in the specs"
                        + suggest(str(dep), known),
                    )
                )
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        # graphlib lists each node before the node that depends on it; reverse the list so
        # that every view is followed by the view it depends on, and start at the first name.
        ring: list[QualifiedName] = list(reversed(exc.args[1]))[:-1]
        start = ring.index(min(ring))
        ring = ring[start:] + ring[:start]
        shown = " -> ".join(str(n) for n in [*ring, ring[0]])
        problems.append(
            _located(
                _dependency_at(by_name[ring[0]], ring[1]),
                f"materialized views depend on each other in a cycle: {shown} "
                "(each depends on the next); remove one of these depends_on entries",
            )
        )
    return problems
