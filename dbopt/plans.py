"""Building a plan: inspect what the specs touch, let the server check and normalise them,
read what dbopt owns, diff (pure, in dbopt.planner), and read the properties of what a replace
or drop touches."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from dbopt import citus
from dbopt.catalog import Catalog, catalog_sql, inspect
from dbopt.catalog.properties import Properties, read_properties
from dbopt.citus import ShardedIndex
from dbopt.config import Settings
from dbopt.deparse import (
    ViewCheck,
    canonical,
    normalize_specs,
    normalize_views,
    simple_canonical,
)
from dbopt.errors import PrivilegeError, SpecError
from dbopt.gcpause import paused_gc
from dbopt.history import History, OwnedObject
from dbopt.livecheck import new_builds, rebinding_problems, trial_builds, unsafe_calls
from dbopt.model import IndexSpec, QualifiedName, SpecSet
from dbopt.planner import (
    ActionKind,
    NewViewOwner,
    Plan,
    base_name,
    is_temporary,
    own_new_views,
    plan,
    temporary_names,
)
from dbopt.privileges import temp_problem
from dbopt.replicas import in_recovery

if TYPE_CHECKING:
    from dbopt.readonly import CallGraph


def relevant(specs: SpecSet, owned: Iterable[OwnedObject]) -> set[QualifiedName]:
    """What a plan touches, so the only relations inspection sizes and deparses (and so may
    wait for): the specs' tables and views, and what dbopt made (it may drop it)."""
    views = {v.name for v in specs.views}
    return {s.table for s in specs.indexes} | views | owned_relations(owned)


def owned_relations(owned: Iterable[OwnedObject]) -> set[QualifiedName]:
    """The relations what dbopt made lives on (an index: its table; never a temporary name:
    :func:`leftover_names`)."""
    out: set[QualifiedName] = set()
    for fact in owned:
        if fact.replaced and fact.object_type == "view":
            continue  # swapped out: under a temporary name (leftover_names), not its own
        name = fact.table if fact.object_type == "index" else fact.name
        if not is_temporary(name):
            out.add(name)
    return out


def leftover_names(specs: SpecSet, owned: Iterable[OwnedObject]) -> set[QualifiedName]:
    """The names an interrupted replace of the specs' views or of dbopt's may have left
    (their indexes are checked): inspected apart (Catalog inspect's ``apart``), as a copy of
    a reader may read any table."""
    views = {v.name for v in specs.views}
    for fact in owned:
        if fact.object_type == "view":
            views.add(fact.name)
        elif is_temporary(fact.table):
            views.add(fact.table)  # an index on what a replace left
    bases = {base_name(v) for v in views}
    return {t for v in bases for t in temporary_names(v)} | {v for v in views if is_temporary(v)}


def build_plan(
    conn: psycopg.Connection[Any],
    specs: SpecSet,
    settings: Settings,
    history: History,
    *,
    replace_drifted: bool = False,
    prune: bool = False,
    cascade: bool = False,
    catalog: Catalog | None = None,
    placements: Mapping[QualifiedName, ShardedIndex] | None = None,
    owned: Sequence[OwnedObject] | None = None,
    check_new: bool = False,
    lenient: bool = False,
    building: bool = False,
) -> Plan:
    """Inspect the catalog (unless given), let the server check and normalise the specs, read
    what dbopt owns, and diff; the properties of what a replace or drop touches are read
    (one query per kind) and the plan made again with them. On a Citus coordinator the
    specs' existing indexes are read on every shard placement too (unless ``placements``
    gives them: status reads them for more tables anyway). ``owned``: what history.owned()
    returned, when the caller has just read it (it inspected the catalog with it).
    ``check_new``: the indexes it would build are built on trial too, on empty temporary
    copies of their tables (livecheck.trial_builds: SpecError for what the server refuses,
    as apply's check would; what this session cannot try is in the plan's notes); apply
    checks beside the plan instead.
    ``lenient``: specs that cannot be applied are left out and listed in ``conflicts``
    (status) instead of refused. ``building``: the caller changes things (apply, not its
    dry run): an existing index whose expression or predicate calls something that could
    change things is normalised all the same (which evaluates what it calls); otherwise it
    is present but not compared, and says why."""
    with paused_gc():  # ten thousand catalog rows and actions, all kept: nothing to collect
        return _build_plan(
            conn,
            specs,
            settings,
            history,
            replace_drifted=replace_drifted,
            prune=prune,
            cascade=cascade,
            catalog=catalog,
            placements=placements,
            owned=owned,
            check_new=check_new,
            lenient=lenient,
            building=building,
        )


def _build_plan(
    conn: psycopg.Connection[Any],
    specs: SpecSet,
    settings: Settings,
    history: History,
    *,
    replace_drifted: bool,
    prune: bool,
    cascade: bool,
    catalog: Catalog | None,
    placements: Mapping[QualifiedName, ShardedIndex] | None,
    owned: Sequence[OwnedObject] | None,
    check_new: bool,
    lenient: bool,
    building: bool,
) -> Plan:
    if owned is None:
        owned = history.owned(conn)
    if catalog is None:
        catalog = inspect(conn, relevant(specs, owned), apart=leftover_names(specs, owned))
    # Only specs whose index exists need comparing; the rest are creates.
    existing = [
        s
        for s in specs.indexes
        if s.qualified_name in catalog.indexes and s.table in catalog.relations
    ]
    view_indexes = [
        i
        for v in specs.views
        for i in v.indexes
        if v.name in catalog.relations and i.qualified_name in catalog.indexes
    ]
    # Plain-column indexes whose text already matches need no server round trip.
    fast: dict[QualifiedName, str] = {}
    for spec in existing + view_indexes:
        text = simple_canonical(spec)
        if text is not None and text == canonical(catalog.indexes[spec.qualified_name].definition):
            fast[spec.qualified_name] = text
    slow = [s for s in existing + view_indexes if s.qualified_name not in fast]
    standby = in_recovery(conn)
    unchecked: dict[QualifiedName, str] = {}

    @functools.cache
    def calls() -> CallGraph:
        """The call graph, read once if anything below needs it (existing specs, trials)."""
        from dbopt.readonly import CallGraph

        return CallGraph.read(conn)

    view_conflicts: list[str] = []
    normalized_slow: Mapping[QualifiedName, str]
    if standby:
        # A standby cannot create the temporary objects normalising needs: what exists is
        # reported as not compared, never as drift or as matching.
        normalized_slow, round_trips = {}, 0
        checked = ViewCheck({}, {}, 0)
        standby_reason = "a standby cannot normalise the spec: plan against the primary for drift"
        unchecked = {s.qualified_name: standby_reason for s in slow}
        unchecked |= {v.name: standby_reason for v in specs.views if v.name in catalog.relations}
    else:
        if slow or specs.views:
            problem = temp_problem(conn)
            if problem:
                raise PrivilegeError(problem)
        if not building:
            # Normalising builds it on an empty copy, which runs what it calls (folded).
            for spec, reached in unsafe_calls(conn, slow, calls).items():
                unchecked[spec.qualified_name] = (
                    f"comparing it would run what it calls: {reached}; apply, which changes "
                    "things, compares it"
                )
            slow = [s for s in slow if s.qualified_name not in unchecked]
        normalized_slow, round_trips = normalize_specs(conn, slow, settings.lock_timeout_ms)
        existing_views = {n for n, r in catalog.relations.items() if r.relkind == "m"}
        while True:
            try:
                checked = normalize_views(
                    conn, specs.views, existing_views, settings.lock_timeout_ms
                )
                break
            except SpecError as exc:
                # status: a view spec the server refuses is reported, the others planned.
                files = {p.file for p in exc.problems}
                kept = tuple(v for v in specs.views if v.location.file not in files)
                if not lenient or len(kept) == len(specs.views):
                    raise
                view_conflicts += [str(p) for p in exc.problems]
                specs = replace(specs, views=kept)
    normalized = {**fast, **normalized_slow}
    # A replace whose new query changes a column's type: the views that read it, tried.
    rebinding = (
        rebinding_problems(conn, specs.views, checked.retyped, catalog) if checked.retyped else {}
    )
    # What apply would refuse of its new builds, refused now; what cannot be tried, said.
    trial = (
        trial_builds(
            new_builds(specs, catalog), catalog, conn, settings.lock_timeout_ms, calls=calls
        )
        if check_new
        else []
    )
    queries = catalog.queries + round_trips + checked.round_trips + 2
    if placements is None:
        placements = _placements(conn, catalog, existing + view_indexes)
        queries += 1 if placements else 0

    def diff(properties: Properties | None) -> Plan:
        return plan(
            specs.indexes,
            catalog,
            normalized,
            owned,
            views=specs.views,
            normalized_views=checked.definitions,
            view_columns=checked.columns,
            view_rebinding=rebinding,
            properties=properties,
            replace_drifted=replace_drifted,
            prune=prune,
            cascade=cascade,
            catalog_queries=queries,
            placements=placements,
            lenient=lenient,
        )

    owner = new_view_owner(conn, history, [v.name.schema for v in specs.views])
    first = _uncompared(own_new_views(diff(None), owner), unchecked)
    indexes, views = first.wants_properties
    if indexes or views:
        result = own_new_views(diff(read_properties(conn, indexes, views)), owner)
        first = replace(_uncompared(result, unchecked), catalog_queries=queries + 1)
    if view_conflicts:
        first = replace(first, conflicts=(*view_conflicts, *first.conflicts))
    return replace(first, notes=(*first.notes, *trial)) if trial else first


def _placements(
    conn: psycopg.Connection[Any], catalog: Catalog, existing: Sequence[IndexSpec]
) -> Mapping[QualifiedName, ShardedIndex]:
    """On a Citus coordinator, the existing specs' indexes on every shard placement of their
    Citus tables (one query; none without Citus or without such an index)."""
    if not catalog.citus:
        return {}
    tables = {
        relation.oid
        for spec in existing
        if (relation := catalog.relations.get(spec.table)) is not None and relation.sharded
    }
    return citus.shard_indexes(conn, tables) if tables else {}


def _uncompared(result: Plan, names: Mapping[QualifiedName, str]) -> Plan:
    """Skips of ``names`` said to be present but not compared, with why (a standby's plan;
    an expression plan must not run)."""
    if not names:
        return result
    actions = tuple(
        replace(
            a,
            compared=False,
            reason=f"exists; its definition was not compared ({names[a.name]})",
        )
        if a.kind == ActionKind.SKIP and a.name in names
        else a
        for a in result.actions
    )
    return replace(result, actions=actions)


def new_view_owner(
    conn: psycopg.Connection[Any], history: History, schemas: Sequence[str]
) -> NewViewOwner:
    """Who the materialized views a run creates must belong to (see view_owner.sql)."""
    if not schemas:
        return NewViewOwner()
    option = "SET" if conn.info.server_version >= 160000 else "MEMBER"
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            catalog_sql("view_owner"),
            {"option": option, "schemas": sorted(set(schemas)), "schema": history.schema},
        )
        row = cur.fetchone()
    if row is None or row["keeper_acts"] or row["me_cannot_create"]:
        # No history yet (this role will own it), no need, or this role creates nothing.
        return NewViewOwner()
    keeper, me = row["keeper"], row["me"]
    if row["can_become"] and not row["keeper_cannot_create"]:
        return NewViewOwner(role=keeper)
    how = (
        sql.SQL("GRANT CREATE ON SCHEMA {} TO {}")
        .format(
            sql.SQL(", ").join(sql.Identifier(s) for s in row["keeper_cannot_create"]),
            sql.Identifier(keeper),
        )
        .as_string()
        if row["can_become"]
        else f"run as {keeper}, or as a member of it that may SET ROLE to it"
    )
    return NewViewOwner(
        refusal=(
            f"a materialized view created by {me} would not count as dbopt's own (the "
            f"history's owner {keeper} cannot act on {me}'s objects), so dbopt could never "
            f"drop or roll it back; giving it to {keeper} is not possible: {how}"
        )
    )
