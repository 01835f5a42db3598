"""plan(specs, catalog) -> Plan: a pure diff with no I/O.

Every action carries the SQL that applies it and, for display, the SQL that would undo it; apply
executes exactly what plan showed. Every destructive step names the :class:`Identity` of the
object it acts on (OID, table, definition), which the executor's guard checks immediately before
the statement runs. Only objects dbopt made (their OIDs are in its history) are ever dropped.

The builders (``create_index_action``, ``replace_index_action``, ``drop_index_action`` and their
view counterparts) are also what :mod:`dbopt.rollback` uses to derive undo actions from the
facts the history recorded.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from psycopg import sql

from dbopt import ddl
from dbopt.catalog import Catalog, CatalogIndex, Relation
from dbopt.catalog.properties import IndexProperties, Properties, ViewProperties
from dbopt.deparse import canonical
from dbopt.errors import Problem, SpecError, UnsafeActionError
from dbopt.guard import Identity
from dbopt.history import OwnedObject
from dbopt.indexdef import (
    DefinitionError,
    index_spec_from_canonical,
    index_spec_from_definition,
)
from dbopt.model import IndexSpec, QualifiedName, ViewSpec
from dbopt.spec import view_order
from dbopt.sqltext import query_sql

NEW_SUFFIX = "_dbopt_new"
OLD_SUFFIX = "_dbopt_old"


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
        MATERIALIZED VIEW reading its sources. Those waits are bounded by build_wait_timeout;
        every other statement (renames, ATTACH, DROP of a view...) by lock_timeout."""
        if self.mode == StepMode.BUILD:
            return True
        first = self.statements[0].as_string() if self.statements else ""
        return first.startswith(("DROP INDEX CONCURRENTLY", "ANALYZE", "CREATE MATERIALIZED VIEW"))

    def text(self) -> str:
        """The step's SQL, one statement per line, each ending with ';'."""
        statements = (*self.statements, *self.then)
        body = ";\n".join(s.as_string() for s in statements) + ";"
        return f"BEGIN;\n{body}\nCOMMIT;" if self.mode == StepMode.SWAP else body


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
    needs: str | None = None  # the flag that enables a disabled action
    #: Why this change cannot be made as planned (apply refuses before anything runs).
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
    #: The object this action replaces, repairs or drops, and its definition as the server
    #: printed it (recorded, so a rollback can rebuild it).
    replaced_oid: int | None = None
    previous_definition: str | None = None
    previous_state: Mapping[str, Any] = field(default_factory=dict)
    #: For a rollback: the change this action undoes.
    undoes_change: int | None = None

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
    #: OIDs of indexes and views whose properties a replace or drop must check; the planner
    #: is called again with them read (one query each) before anything runs.
    wants_properties: tuple[frozenset[int], frozenset[int]] = (frozenset(), frozenset())

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


# --- ownership -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ownership:
    """Which objects of the catalog dbopt made (by OID), and what its history says of them."""

    oids: frozenset[int] = frozenset()
    origins: Mapping[int, str] = field(default_factory=dict)

    def owns(self, oid: int) -> bool:
        """True when dbopt made the object with this OID."""
        return oid in self.oids

    def origin(self, oid: int) -> str:
        """How dbopt came to own it ("created by run 12")."""
        return self.origins.get(oid, "")


def ownership(owned: Iterable[OwnedObject], catalog: Catalog) -> Ownership:
    """Match the history's facts with the live catalog.

    A made object is dbopt's when the catalog has its OID (an index on the same table); one
    recorded by name only (dbopt 0.1) when the name, table and definition match. An object a
    replace swapped out is dbopt's only while it carries dbopt's temporary name.
    """
    indexes = {i.oid: i for i in catalog.indexes.values()}
    views = {r.oid: r for r in catalog.relations.values() if r.relkind == "m"}
    oids: set[int] = set()
    origins: dict[int, str] = {}
    for fact in owned:
        found: CatalogIndex | Relation | None
        if fact.object_type == "view":
            found = (
                views.get(fact.oid)
                if fact.oid is not None
                else views.get(getattr(catalog.relations.get(fact.name), "oid", -1))
            )
        else:
            found = (
                indexes.get(fact.oid) if fact.oid is not None else catalog.indexes.get(fact.name)
            )
            if found is not None and found.table != fact.table:
                continue
            if found is not None and fact.oid is None:
                # dbopt 0.1 kept names and, for some changes, the spec's canonical definition:
                # without one that matches, the name alone proves nothing.
                recorded = fact.definition
                if recorded is None:
                    continue
                if recorded.startswith("CREATE"):
                    recorded = canonical(recorded)
                if canonical(found.definition) != recorded:
                    continue
        if found is None:
            continue
        if fact.replaced and not found.name.name.endswith(OLD_SUFFIX):
            continue
        oids.add(found.oid)
        what = "swapped out" if fact.replaced else "made"
        origins[found.oid] = f"{what} by dbopt run {fact.run_id}"
    return Ownership(frozenset(oids), origins)


# --- identities ------------------------------------------------------------------------------


def index_identity(
    index: CatalogIndex, *, invalid: bool | None = None, origin: str = ""
) -> Identity:
    """What the catalog says this index is: OID, table, definition."""
    return Identity(
        "index",
        index.name,
        oid=index.oid,
        table=index.table,
        definition=canonical(index.definition),
        invalid=invalid,
        origin=origin,
    )


def view_identity(relation: Relation, origin: str = "") -> Identity:
    """What the catalog says this materialized view is: OID and query."""
    return Identity(
        "view",
        relation.name,
        oid=relation.oid,
        definition=relation.view_definition,
        origin=origin,
    )


def name_taken(catalog: Catalog, name: QualifiedName, *, by_types: bool = False) -> str | None:
    """What already has ``name`` in its schema ("table", "sequence"...), or None; a
    materialized view (``by_types``) also needs a name no type has."""
    return catalog.name_taken(name, by_types=by_types)


# --- index actions ---------------------------------------------------------------------------


def _safe(spec: IndexSpec) -> bool:
    """A build PostgreSQL 14+ lets other concurrent builds ignore (no expression, no WHERE)."""
    return spec.plain_columns and spec.where is None


def _build_steps(
    spec: IndexSpec,
    name: str,
    catalog: Catalog,
    table: Relation,
    tablespace: str | None = None,
) -> tuple[Step, ...]:
    """Steps that build ``spec`` under ``name``: concurrently, or per partition if partitioned."""
    target = QualifiedName(spec.table.schema, name)
    if not table.is_partitioned:
        return (
            Step(
                StepMode.BUILD,
                (ddl.create_index(spec, name=name, tablespace=tablespace),),
                spec.table,
                target,
                makes=True,
                safe=_safe(spec),
            ),
        )
    steps = [
        Step(
            StepMode.DDL,
            (ddl.create_index(spec, name=name, concurrently=False, only=True),),
            spec.table,
            target,
            makes=True,
        )
    ]
    for part_name in table.partitions:
        part = catalog.relations.get(part_name)
        if part is None:  # pragma: no cover - the catalog lists partitions it has
            continue
        child = ddl.derived_name(part_name.name, f"_{name}")
        part_spec = replace(spec, table=part_name)
        child_steps = _build_steps(part_spec, child, catalog, part, tablespace)
        steps.extend(child_steps)
        steps.append(
            Step(
                StepMode.DDL,
                (ddl.attach_partition_index(target, QualifiedName(part_name.schema, child)),),
                spec.table,
                target,
            )
        )
    return tuple(steps)


def _drop_steps(identity: Identity, table: QualifiedName, relation: Relation) -> tuple[Step, ...]:
    # DROP INDEX CONCURRENTLY is refused on partitioned indexes; a plain DROP under
    # lock_timeout is the documented way and removes the partitions' indexes with it.
    concurrently = not relation.is_partitioned
    statement = ddl.drop_index(identity.name, concurrently=concurrently)
    return (Step(StepMode.DROP, (statement,), table, identity.name, expect=(identity,)),)


def _display_drop(
    name: QualifiedName, table: QualifiedName, relation: Relation
) -> tuple[Step, ...]:
    """How a rollback would drop an index this action makes (for display only)."""
    statement = ddl.drop_index(name, concurrently=not relation.is_partitioned)
    return (Step(StepMode.DROP, (statement,), table, name),)


def _display_rebuild(index: CatalogIndex, name: str) -> tuple[Step, ...]:
    """How a rollback would rebuild a catalog index under ``name`` (for display only)."""
    try:
        statement = ddl.recreate_from_definition(index.definition, index.name.name, name)
    except ValueError:
        return ()
    return (
        Step(StepMode.BUILD, (statement,), index.table, QualifiedName(index.name.schema, name)),
    )


def create_index_action(
    spec: IndexSpec,
    relation: Relation,
    catalog: Catalog,
    *,
    kind: ActionKind = ActionKind.CREATE,
    reason: str | None = None,
    desired: str | None = None,
    undoes_change: int | None = None,
) -> Action:
    """Build ``spec`` (which does not exist yet) concurrently."""
    name = spec.qualified_name
    return Action(
        kind=kind,
        name=name,
        table=spec.table,
        reason=reason or spec.reason or "in the specs, not in the database",
        forward=_build_steps(spec, spec.name, catalog, relation),
        rollback=_display_drop(name, spec.table, relation),
        spec=spec,
        desired=desired,
        undoes_change=undoes_change,
    )


def drop_index_action(
    index: CatalogIndex,
    relation: Relation,
    *,
    reason: str,
    origin: str = "",
    properties: Properties | None = None,
    enabled: bool = True,
    needs: str | None = None,
    undoes_change: int | None = None,
    phase: int = 0,
) -> Action:
    """Drop an index dbopt made, guarded by its identity; refused when something depends on it."""
    props = properties.indexes.get(index.oid) if properties is not None else None
    refusal = None
    if props is not None and props.blockers():
        refusal = f"index {index.name} cannot be dropped: " + "; ".join(props.blockers())
    return Action(
        kind=ActionKind.DROP,
        name=index.name,
        table=index.table,
        reason=reason,
        forward=_drop_steps(index_identity(index, origin=origin), index.table, relation),
        rollback=_display_rebuild(index, index.name.name),
        enabled=enabled,
        needs=needs,
        refusal=refusal,
        current=canonical(index.definition),
        existed_before=False,
        replaced_oid=index.oid,
        previous_definition=index.definition,
        undoes_change=undoes_change,
        phase=phase,
    )


def _leftover_steps(
    names: Sequence[QualifiedName],
    table: QualifiedName,
    relation: Relation,
    catalog: Catalog,
    owners: Ownership,
) -> tuple[tuple[Step, ...], list[str]]:
    """Drops of what an interrupted replace left under dbopt's temporary names (dbopt's own
    only); why the replace cannot start when a temporary name is taken by something else."""
    steps: list[Step] = []
    refusals: list[str] = []
    for name in names:
        index = catalog.indexes.get(name)
        if index is None:
            taken = name_taken(catalog, name)
            if taken:
                refusals.append(f"the name {name} it needs is taken by a {taken}")
            continue
        if index.table == table and owners.owns(index.oid):
            identity = index_identity(index, origin=owners.origin(index.oid))
            steps.extend(_drop_steps(identity, table, relation))
        else:
            refusals.append(
                f"an index named {name} exists on {index.table} and dbopt did not make it: "
                "rename or drop it by hand"
            )
    return tuple(steps), refusals


def replace_index_action(
    spec: IndexSpec,
    existing: CatalogIndex,
    relation: Relation,
    catalog: Catalog,
    owners: Ownership,
    properties: Properties | None,
    *,
    kind: ActionKind = ActionKind.REPLACE,
    reason: str = "the definition drifted from the spec",
    desired: str | None = None,
    expect_oid: int | None = None,
    undoes_change: int | None = None,
) -> Action:
    """Build ``spec`` aside, swap it in (carrying over what the old index carries), drop the old.

    The old index is ``existing``; with ``expect_oid`` it must also have that OID (a rollback
    replaces only the index dbopt made).
    """
    name = existing.name
    table = existing.table
    aside = QualifiedName(name.schema, ddl.derived_name(spec.name, NEW_SUFFIX))
    old = QualifiedName(name.schema, ddl.derived_name(spec.name, OLD_SUFFIX))
    refusals: list[str] = []
    if relation.is_partitioned:
        refusals.append(
            f"index {name} is on partitioned table {table}: replacing an index of a partitioned "
            "table is not supported yet; DROP INDEX it (a short lock on the parent and its "
            "partitions) and apply again"
        )
    if existing.backs_constraint:
        refusals.append(f"index {name} backs constraint {existing.constraint_name}")
    leftovers, leftover_refusals = _leftover_steps([aside, old], table, relation, catalog, owners)
    refusals += leftover_refusals
    props = properties.indexes.get(existing.oid) if properties is not None else None
    if props is not None:
        try:
            before: IndexSpec | None = index_spec_from_definition(existing.definition, table=table)
            # Compared as the server prints both (the spec's expressions as it normalised them).
            after = (
                index_spec_from_canonical(desired, table=table, name=spec.name) if desired else spec
            )
        except DefinitionError:
            before, after = None, spec
        refusals += [f"index {name}: {r}" for r in props.refusals(after, before)]
    identity = index_identity(existing, origin=owners.origin(existing.oid))
    if expect_oid is not None and existing.oid != expect_oid:
        refusals.append(
            f"index {name} is not the one dbopt made (OID {existing.oid}, dbopt's was {expect_oid})"
        )
    build = _build_steps(
        spec, aside.name, catalog, relation, props.tablespace if props is not None else None
    )
    analyze: tuple[Step, ...] = ()
    if not spec.plain_columns:
        # The planner needs statistics on the expressions before the new index takes the name
        # (the old one had them); PostgreSQL gathers them only by ANALYZE.
        analyze = (Step(StepMode.DDL, (ddl.analyze(table),), table, aside),)
    swap = Step(
        StepMode.SWAP,
        (ddl.rename_index(name, old.name), ddl.rename_index(aside, name.name)),
        table,
        name,
        expect=(
            replace(identity, name=old, definition=None),
            Identity("index", name, table=table, built_as=aside),
        ),
        then=tuple(props.carry(table, name)) if props is not None else (),
    )
    drop_old = _drop_steps(replace(identity, name=old, upfront=False), table, relation)
    carried = props.carried() if props is not None else []
    if carried:
        reason += "; carries over " + ", ".join(carried)
    return Action(
        kind=kind,
        name=name,
        table=table,
        reason=reason,
        forward=(*leftovers, *build, *analyze, swap, *drop_old),
        rollback=_display_rebuild(existing, aside.name),
        refusal="; ".join(refusals) or None,
        spec=spec,
        current=canonical(existing.definition),
        desired=desired,
        existed_before=True,
        replaced_oid=existing.oid,
        previous_definition=existing.definition,
        undoes_change=undoes_change,
    )


def _index_action(
    spec: IndexSpec,
    relation: Relation,
    catalog: Catalog,
    normalized: Mapping[QualifiedName, str],
    owners: Ownership,
    properties: Properties | None,
    problems: list[Problem],
) -> Action | None:
    name = spec.qualified_name
    existing = catalog.indexes.get(name)
    desired = normalized.get(name)
    loc = spec.location
    if existing is None:
        taken = name_taken(catalog, name)
        if taken:
            problems.append(
                loc.problem(
                    f"index {spec.name}: the name {name} is taken by a {taken}: rename one of them",
                )
            )
            return None
        return create_index_action(spec, relation, catalog, desired=desired)
    current = canonical(existing.definition)
    if existing.table != spec.table:
        problems.append(
            loc.problem(
                f"index {spec.name} is meant for {spec.table} but {existing.table} has an "
                "index of that name: rename one of them",
            )
        )
        return None
    if not (existing.is_valid and existing.is_ready):
        return _repair_action(spec, existing, relation, catalog, owners, current, desired)
    if desired is None or desired == current:
        return Action(
            kind=ActionKind.SKIP,
            name=name,
            table=spec.table,
            reason="exists with exactly the specified definition",
            spec=spec,
            current=current,
            desired=desired,
            existed_before=True,
        )
    if existing.backs_constraint:
        problems.append(
            loc.problem(
                f"index {spec.name} differs from the database, but there it backs "
                f"constraint {existing.constraint_name}; dbopt does not change constraint "
                "indexes: choose another name",
            )
        )
        return None
    return replace_index_action(
        spec, existing, relation, catalog, owners, properties, desired=desired
    )


def _repair_action(
    spec: IndexSpec,
    existing: CatalogIndex,
    relation: Relation,
    catalog: Catalog,
    owners: Ownership,
    current: str,
    desired: str | None,
) -> Action:
    """Drop an INVALID index (a failed concurrent build) and build it again.

    Only when it is dbopt's own, or exactly the spec's definition (then it is the spec's index,
    whoever's build failed); never while another session is building it (the guard checks).
    """
    name = spec.qualified_name
    mine = owners.owns(existing.oid)
    refusal = None
    if not mine:
        refusal = (
            f"index {name} is INVALID and dbopt did not make it (another session's failed "
            "build?): dbopt never drops what it did not make; check it and drop it by hand "
            f"(DROP INDEX CONCURRENTLY {name}), then apply again"
        )
    identity = index_identity(existing, invalid=True, origin=owners.origin(existing.oid))
    return Action(
        kind=ActionKind.REPAIR,
        name=name,
        table=spec.table,
        reason="the index is INVALID (a failed concurrent build): drop it and build again",
        forward=_drop_steps(identity, spec.table, relation)
        + _build_steps(spec, spec.name, catalog, relation),
        rollback=(),
        refusal=refusal,
        spec=spec,
        current=current,
        desired=desired,
        # The INVALID index a dbopt build left is dbopt's own once rebuilt.
        existed_before=not mine,
        replaced_oid=existing.oid,
        previous_definition=existing.definition,
    )


# --- view actions ----------------------------------------------------------------------------


def create_view_action(
    view: ViewSpec,
    position: int,
    *,
    kind: ActionKind = ActionKind.CREATE,
    reason: str | None = None,
    undoes_change: int | None = None,
) -> Action:
    """Create a materialized view with its indexes."""
    return Action(
        kind=kind,
        name=view.name,
        table=view.name,
        reason=reason or view.reason or "in the specs, not in the database",
        forward=(
            Step(
                StepMode.VIEW,
                (ddl.create_matview(view.name, query_sql(view.query)),),
                view.name,
                view.name,
                makes=True,
            ),
            *_view_index_steps(view.indexes, view.name, lambda n: n),
        ),
        rollback=(Step(StepMode.VIEW, (ddl.drop_matview(view.name),), view.name, view.name),),
        object_type="view",
        phase=1,
        phase_order=position,
        also_creates=tuple(i.qualified_name for i in view.indexes),
        undoes_change=undoes_change,
    )


def drop_view_action(
    relation: Relation,
    catalog: Catalog,
    *,
    reason: str,
    origin: str = "",
    properties: Properties | None = None,
    enabled: bool = True,
    needs: str | None = None,
    undoes_change: int | None = None,
    phase_order: int = 0,
    also_dropped: Collection[QualifiedName] = (),
) -> Action:
    """Drop a materialized view dbopt made; refused when anything depends on it (other than
    views ``also_dropped`` before it)."""
    name = relation.name
    refusals = []
    readers = [d for d in catalog.dependents.get(name, ()) if d not in also_dropped]
    if readers:
        refusals.append(
            ", ".join(str(d) for d in readers)
            + " depend on it: drop them first (dbopt never drops objects it did not create)"
        )
    props = properties.views.get(relation.oid) if properties is not None else None
    if props is not None:
        refusals += props.blockers()
    indexes = catalog.indexes_on(name)
    return Action(
        kind=ActionKind.DROP,
        name=name,
        table=name,
        reason=reason,
        forward=(
            Step(
                StepMode.VIEW,
                (ddl.drop_matview(name),),
                name,
                name,
                expect=(view_identity(relation, origin),),
            ),
        ),
        rollback=(
            Step(
                StepMode.VIEW,
                (ddl.create_matview_from_definition(name, relation.view_definition or ""),),
                name,
                name,
            ),
            *(step for i in indexes for step in _display_rebuild(i, i.name.name)),
        ),
        enabled=enabled,
        needs=needs,
        refusal=(f"materialized view {name} cannot be dropped: " + "; ".join(refusals))
        if refusals
        else None,
        current=relation.view_definition,
        object_type="view",
        phase=1,
        phase_order=phase_order,
        replaced_oid=relation.oid,
        previous_definition=relation.view_definition,
        previous_state={
            "indexes": [{"name": i.name.name, "definition": i.definition} for i in indexes]
        },
        undoes_change=undoes_change,
    )


def _view_index_steps(
    indexes: Sequence[IndexSpec], on: QualifiedName, rename: Callable[[str], str]
) -> tuple[Step, ...]:
    return tuple(
        Step(
            StepMode.BUILD,
            (ddl.create_index(i, name=rename(i.name), table=on),),
            on,
            QualifiedName(on.schema, rename(i.name)),
            makes=True,
            safe=_safe(i),
        )
        for i in indexes
    )


def _view_body(relation: Relation) -> str:
    """The server's own deparsed query of a view (trusted: it comes from pg_get_viewdef)."""
    return (relation.view_definition or "").strip().rstrip(";").strip()


def _dependents(name: QualifiedName, catalog: Catalog) -> tuple[list[Relation], list[Relation]]:
    """Plain views and materialized views that read ``name`` directly."""
    plain: list[Relation] = []
    materialized: list[Relation] = []
    for dep in catalog.dependents.get(name, ()):
        relation = catalog.relations.get(dep)
        if relation is None:
            continue
        (materialized if relation.relkind == "m" else plain).append(relation)
    return plain, materialized


def _columns_of(spec: IndexSpec) -> set[str]:
    """The column names an index uses: keys, INCLUDE, and those its expressions and WHERE
    name (as the PostgreSQL parser reads them)."""
    import json

    from pglast import parser

    names = {c.name for c in spec.columns if c.name} | set(spec.include)
    texts = [c.expr for c in spec.columns if c.expr] + ([spec.where] if spec.where else [])
    for text in texts:
        tree = json.loads(parser.parse_sql_json(f"SELECT {text}"))
        stack: list[Any] = [tree]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                ref = node.get("ColumnRef")
                if isinstance(ref, dict):
                    fields = [f.get("String", {}).get("sval") for f in ref.get("fields", [])]
                    if fields and fields[-1]:
                        names.add(str(fields[-1]))
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
    return names


def _kept_indexes(
    relation: Relation,
    wanted: Sequence[IndexSpec],
    catalog: Catalog,
    refusals: list[str],
    drop_owned: Ownership | None = None,
) -> list[IndexSpec]:
    """``wanted`` plus every other index the view has now (hand-made ones are kept too);
    with ``drop_owned``, not the other indexes dbopt made (a rollback restores the view as it
    was, without the indexes the replace added)."""
    names = {i.name for i in wanted}
    kept = list(wanted)
    for index in catalog.indexes_on(relation.name):
        if index.name.name in names:
            continue
        if drop_owned is not None and drop_owned.owns(index.oid):
            continue
        try:
            kept.append(
                index_spec_from_definition(
                    index.definition, table=relation.name, name=index.name.name
                )
            )
        except DefinitionError as exc:
            refusals.append(f"its index {index.name} cannot be rebuilt: {exc}")
    return kept


def replace_view_action(
    view: ViewSpec,
    existing: Relation,
    catalog: Catalog,
    owners: Ownership,
    properties: Properties | None,
    position: int,
    *,
    body: sql.Composable | None = None,
    kind: ActionKind = ActionKind.REPLACE,
    reason: str = "the query drifted from the spec",
    desired: str | None = None,
    new_columns: Mapping[QualifiedName, tuple[str, ...]] | None = None,
    expect_oid: int | None = None,
    undoes_change: int | None = None,
) -> Action:
    """Build the new view aside, swap names in one short transaction, drop the old one.

    Its indexes (the spec's and any others it has) are built on the new view; views that
    read it are re-bound inside the swap (CREATE OR REPLACE VIEW keeps their grants and
    dependents); materialized views that read it are rebuilt the same way after the swap.
    What the old view carries (owner, grants, comments, storage...) is carried over.
    """
    refusals: list[str] = []
    name = view.name
    if expect_oid is not None and existing.oid != expect_oid:
        refusals.append(
            f"materialized view {name} is not the one dbopt made (OID {existing.oid}, dbopt's "
            f"was {expect_oid})"
        )
    plain, materialized = _dependents(name, catalog)
    for reader in materialized:
        _sub_plain, deeper = _dependents(reader.name, catalog)
        if deeper:
            refusals.append(
                f"rebuilding {reader.name} (it reads {name}) would need rebuilding "
                + ", ".join(str(d.name) for d in deeper)
                + " in turn: dbopt rebuilds one level of materialized views; replace them in "
                "separate steps"
            )
    forward = _rebuild_view(
        existing,
        body if body is not None else query_sql(view.query),
        _kept_indexes(
            existing,
            view.indexes,
            catalog,
            refusals,
            owners if kind == ActionKind.RESTORE else None,
        ),
        plain,
        materialized,
        catalog,
        properties,
        (new_columns or {}).get(name),
        refusals,
        owners,
    )
    rebuilt = [str(r.name) for r in plain + materialized]
    if rebuilt:
        reason += "; rebuilds what reads it: " + ", ".join(rebuilt)
    props = properties.views.get(existing.oid) if properties is not None else None
    if props is not None and props.carried():
        reason += "; carries over " + ", ".join(props.carried())
    return Action(
        kind=kind,
        name=name,
        table=name,
        reason=reason,
        forward=forward,
        rollback=(),
        refusal="; ".join(f"materialized view {name}: {r}" for r in refusals) or None,
        current=existing.view_definition,
        desired=desired,
        existed_before=True,
        object_type="view",
        phase=1,
        phase_order=position,
        replaced_oid=existing.oid,
        previous_definition=existing.view_definition,
        previous_state={
            "indexes": [
                {"name": i.name.name, "definition": i.definition} for i in catalog.indexes_on(name)
            ]
        },
        undoes_change=undoes_change,
        # The spec's indexes are rebuilt with the view: dbopt's own from now on.
        also_creates=tuple(i.qualified_name for i in view.indexes),
    )


def _rebuild_view(
    existing: Relation,
    body: sql.Composable,
    indexes: Sequence[IndexSpec],
    plain: Sequence[Relation],
    materialized: Sequence[Relation],
    catalog: Catalog,
    properties: Properties | None,
    new_columns: Collection[str] | None,
    refusals: list[str],
    owners: Ownership,
) -> tuple[Step, ...]:
    """Build ``existing`` aside from ``body`` with ``indexes``, swap it in, re-bind or
    rebuild its readers, drop the old one."""
    name = existing.name
    schema = name.schema
    new = QualifiedName(schema, ddl.derived_name(name.name, NEW_SUFFIX))
    old = QualifiedName(schema, ddl.derived_name(name.name, OLD_SUFFIX))
    props: ViewProperties | None = None
    if properties is not None:
        props = properties.views.get(existing.oid)
    if props is not None:
        refusals += props.refusals(new_columns)
    for reader in (*plain, *materialized):
        if not reader.owned:
            refusals.append(
                f"{reader.name} reads it and belongs to {reader.owner}, which this role is not "
                "a member of: dbopt could not re-bind or rebuild it"
            )
    if new_columns is not None:
        for spec in indexes:
            missing = sorted(_columns_of(spec) - set(new_columns))
            if missing:
                refusals.append(
                    f"its index {spec.name} uses {', '.join(missing)}, which the new query has "
                    "no column for"
                )
    leftovers: list[Step] = []
    for temp in (new, old):
        taken = name_taken(catalog, temp)
        leftover = catalog.relations.get(temp)
        if leftover is not None and leftover.relkind == "m" and owners.owns(leftover.oid):
            # What an interrupted replace of dbopt's left behind: dbopt's own, start clean.
            identity = view_identity(leftover, owners.origin(leftover.oid))
            leftovers.append(
                Step(StepMode.VIEW, (ddl.drop_matview(temp),), temp, temp, expect=(identity,))
            )
        elif taken:
            refusals.append(
                f"the name {temp} it needs is taken by a {taken} that dbopt has no record of "
                "making: drop it by hand once you have checked it"
            )
    old_indexes = catalog.indexes_on(name)
    index_carry: list[sql.Composed] = []
    by_name = {i.name.name: i for i in old_indexes}
    for spec in indexes:
        before = by_name.get(spec.name)
        index_props: IndexProperties | None = None
        if before is not None and properties is not None:
            index_props = properties.indexes.get(before.oid)
        if index_props is not None:
            refusals += [
                f"its index {before.name if before else spec.name}: {r}"
                for r in index_props.blockers()
            ]
            index_carry += index_props.carry(name, QualifiedName(schema, spec.name), on_view=True)
    for temp_index in [
        ddl.derived_name(i.name, s) for i in indexes for s in (NEW_SUFFIX, OLD_SUFFIX)
    ]:
        taken = name_taken(catalog, QualifiedName(schema, temp_index))
        if taken:
            refusals.append(f"the name {schema}.{temp_index} it needs is taken by a {taken}")
    options, tablespace = props.build_options() if props is not None else ((), None)
    swap = Step(
        StepMode.SWAP,
        (
            ddl.rename_matview(name, old.name),
            ddl.rename_matview(new, name.name),
            *(
                ddl.rename_index(i.name, ddl.derived_name(i.name.name, OLD_SUFFIX))
                for i in old_indexes
            ),
            *(
                ddl.rename_index(
                    QualifiedName(schema, ddl.derived_name(i.name, NEW_SUFFIX)), i.name
                )
                for i in indexes
            ),
            # Readers re-bound in the same transaction: none ever sees the old data twice.
            *(ddl.create_or_replace_view(v.name, _view_body(v), v.options) for v in plain),
        ),
        name,
        name,
        expect=(
            Identity("view", old, oid=existing.oid),
            Identity("view", name, built_as=new),
            # Every index renamed is exactly the one planned: the old view's (by OID, now on
            # the view renamed aside) and the ones built on the new view.
            *(
                Identity(
                    "index",
                    QualifiedName(schema, ddl.derived_name(i.name.name, OLD_SUFFIX)),
                    oid=i.oid,
                    table=old,
                    upfront=False,
                )
                for i in old_indexes
            ),
            *(
                Identity(
                    "index",
                    QualifiedName(schema, i.name),
                    table=name,
                    built_as=QualifiedName(schema, ddl.derived_name(i.name, NEW_SUFFIX)),
                )
                for i in indexes
            ),
        ),
        then=(*(props.carry(name) if props is not None else ()), *index_carry),
    )
    steps: list[Step] = [
        *leftovers,
        Step(
            StepMode.VIEW,
            (
                ddl.create_matview(
                    new,
                    body,
                    with_data=props.populated if props is not None else True,
                    options=options,
                    tablespace=tablespace,
                ),
            ),
            new,
            new,
            makes=True,
        ),
        *_view_index_steps(indexes, new, lambda n: ddl.derived_name(n, NEW_SUFFIX)),
        *(
            Step(StepMode.DDL, (statement,), new, new)
            for statement in (props.carry_before_swap(new) if props is not None else ())
        ),
        swap,
    ]
    for reader in materialized:
        sub_plain, _deeper = _dependents(reader.name, catalog)
        steps.extend(
            _rebuild_view(
                reader,
                sql.SQL(_view_body(reader)),
                _kept_indexes(reader, (), catalog, refusals),
                sub_plain,
                [],
                catalog,
                properties,
                None,
                refusals,
                owners,
            )
        )
    steps.append(
        Step(
            StepMode.VIEW,
            (ddl.drop_matview(old),),
            old,
            old,
            expect=(Identity("view", old, oid=existing.oid, upfront=False),),
        )
    )
    return tuple(steps)


def _plan_views(
    views: Sequence[ViewSpec],
    catalog: Catalog,
    normalized: Mapping[QualifiedName, str],
    new_columns: Mapping[QualifiedName, tuple[str, ...]] | None,
    owners: Ownership,
    properties: Properties | None,
    prune: bool,
    problems: list[Problem],
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
                        f"{view.name} is taken by a {taken}: choose another name",
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
            )
        )
    wanted = {v.name for v in views}
    for offset, relation in enumerate(
        sorted(
            (r for r in catalog.relations.values() if r.relkind == "m" and owners.owns(r.oid)),
            key=lambda r: r.name,
            reverse=True,
        )
    ):
        if relation.name in wanted:
            continue
        actions.append(
            drop_view_action(
                relation,
                catalog,
                reason="created by dbopt and no longer in the specs",
                origin=owners.origin(relation.oid),
                properties=properties,
                enabled=prune,
                needs=None if prune else "--prune",
                phase_order=10_000 + offset,
            )
        )
    return actions, index_specs


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
    properties: Properties | None = None,
    replace_drifted: bool = False,
    prune: bool = False,
    cascade: bool = False,
    catalog_queries: int = 0,
) -> Plan:
    """Diff specs against the catalog.

    ``specs`` are table indexes; ``views`` materialized views with their indexes. ``owned``
    is what dbopt's history says it made (only those objects may be dropped). ``properties``
    are those of the objects a replace or drop touches; without them the plan lists in
    ``wants_properties`` which to read, and the caller plans again with them.
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
                    f"{spec.table} is a {kind}: indexes go on tables and materialized views",
                )
            )
            continue
        action = _index_action(spec, relation, catalog, normalized, owners, properties, problems)
        if action is None:
            continue
        if spec in view_index_specs:
            action = replace(action, phase=2)
        actions.append(action)
    if problems:
        raise SpecError("the specs cannot be applied to this database", problems)
    dropped_views = {a.name for a in view_actions if a.kind == ActionKind.DROP}
    for index in sorted(catalog.indexes.values(), key=lambda i: i.name):
        if not owners.owns(index.oid) or index.name in wanted or index.table in dropped_views:
            continue
        reason = (
            "left under dbopt's temporary name by an interrupted replace"
            if index.name.name.endswith((NEW_SUFFIX, OLD_SUFFIX))
            else "created by dbopt and no longer in the specs"
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
                needs=None if prune else "--prune",
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
            actions[i] = _disabled(action, "--replace-drifted")
        elif action.kind == ActionKind.REPLACE and action.object_type == "view":
            _check_cascade(action.name, catalog, cascade)
    actions.sort(key=lambda a: (a.phase, a.phase_order, str(a.table), _ORDER[a.kind], a.name.name))
    return Plan(
        tuple(actions),
        catalog_queries=catalog_queries,
        notes=tuple(notes),
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


def _check_cascade(name: QualifiedName, catalog: Catalog, cascade: bool) -> None:
    """Replacing a view others read needs --cascade (the plan lists what it rebuilds)."""
    if not catalog.dependents.get(name) or cascade:
        return
    readers = ", ".join(str(d) for d in catalog.dependents[name])
    raise UnsafeActionError(
        f"materialized view {name} must be replaced but {readers} depend on it: run with "
        "--cascade to rebuild them too (the plan lists them), or drop them first"
    )


def _disabled(action: Action, flag: str) -> Action:
    if not action.enabled:
        return action
    return replace(action, enabled=False, needs=flag)
