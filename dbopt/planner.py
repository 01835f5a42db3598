"""plan(specs, catalog) -> Plan: a pure diff with no I/O.

Every action carries the SQL that applies it and the SQL that undoes it, so apply executes
exactly what plan showed and rollback falls out of the same value.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from psycopg import sql

from dbopt import ddl
from dbopt.catalog import Catalog, CatalogIndex, Relation
from dbopt.errors import Problem, SpecError, UnsafeActionError
from dbopt.normalize import canonical
from dbopt.spec import IndexSpec, QualifiedName, ViewSpec, view_order
from dbopt.sqltext import query_sql

NEW_SUFFIX = "_dbopt_new"
OLD_SUFFIX = "_dbopt_old"


class Kind(StrEnum):
    """What an action does to one index."""

    CREATE = "create"
    REPAIR = "repair"
    REPLACE = "replace"
    DROP = "drop"
    RESTORE = "restore"  # rollback of a replace: the previous definition back
    SKIP = "skip"


class StepKind(StrEnum):
    """How the executor must run a step."""

    BUILD = "build"  # CREATE INDEX [CONCURRENTLY]: check validity after, clean up on failure
    DROP = "drop"  # DROP INDEX CONCURRENTLY: outside a transaction
    SWAP = "swap"  # renames: one short transaction under lock_timeout
    DDL = "ddl"  # short catalog-only DDL (ON ONLY, ATTACH PARTITION) under lock_timeout
    VIEW = "view"  # CREATE/DROP MATERIALIZED VIEW: one statement, autocommit


@dataclass(frozen=True, slots=True)
class Step:
    """One statement (or, for a swap, one transaction) of an action."""

    kind: StepKind
    statements: tuple[sql.Composed, ...]
    table: QualifiedName
    index: QualifiedName  # the index this step builds or drops

    def to_json(self) -> dict[str, Any]:
        """The step as JSON (kept in the history so a run can be rolled back later)."""
        return {
            "kind": self.kind.value,
            "statements": [s.as_string() for s in self.statements],
            "table": [self.table.schema, self.table.name],
            "index": [self.index.schema, self.index.name],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Step:
        """A step stored by :meth:`to_json` (its SQL was composed by dbopt when stored)."""
        return cls(
            kind=StepKind(data["kind"]),
            statements=tuple(sql.Composed([sql.SQL(text)]) for text in data["statements"]),
            table=QualifiedName(*data["table"]),
            index=QualifiedName(*data["index"]),
        )

    def text(self) -> str:
        """The step's SQL, one statement per line, each ending with ';'."""
        body = ";\n".join(s.as_string() for s in self.statements) + ";"
        return f"BEGIN;\n{body}\nCOMMIT;" if self.kind == StepKind.SWAP else body


@dataclass(frozen=True, slots=True)
class Action:
    """One change to one index, with how to apply it and how to undo it."""

    kind: Kind
    name: QualifiedName
    table: QualifiedName
    reason: str
    forward: tuple[Step, ...] = ()
    rollback: tuple[Step, ...] = ()
    enabled: bool = True
    needs: str | None = None  # the flag that enables a disabled action
    current: str | None = None  # canonical definition in the database
    desired: str | None = None  # canonical definition of the spec
    existed_before: bool = False
    spec: IndexSpec | None = None
    object_kind: str = "index"  # index or view
    #: 0 indexes on tables, 1 materialized views (in dependency order), 2 indexes on views.
    phase: int = 0
    phase_order: int = 0
    #: Indexes built as part of this action (a view's indexes), recorded with it.
    also_creates: tuple[QualifiedName, ...] = ()

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
                n=0 if self.object_kind == "index" else 3,
            )
        )


@dataclass(frozen=True, slots=True)
class Plan:
    """Ordered actions; skips included so the plan says what it checked."""

    actions: tuple[Action, ...] = ()
    catalog_queries: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def changes(self) -> tuple[Action, ...]:
        """Actions that change something (enabled or not)."""
        return tuple(a for a in self.actions if a.kind != Kind.SKIP)

    @property
    def runnable(self) -> tuple[Action, ...]:
        """Actions apply will execute."""
        return tuple(a for a in self.changes if a.enabled)

    @property
    def blocked(self) -> tuple[Action, ...]:
        """Changes that need a flag (--replace-drifted, --prune) and will not run without it."""
        return tuple(a for a in self.changes if not a.enabled)


_ORDER = {
    Kind.REPAIR: 0,
    Kind.CREATE: 1,
    Kind.REPLACE: 2,
    Kind.RESTORE: 2,
    Kind.DROP: 3,
    Kind.SKIP: 4,
}


def _build_steps(spec: IndexSpec, name: str, catalog: Catalog, table: Relation) -> tuple[Step, ...]:
    """Steps that build ``spec`` under ``name``: concurrently, or per partition if partitioned."""
    target = QualifiedName(spec.table.schema, name)
    if not table.is_partitioned:
        return (Step(StepKind.BUILD, (ddl.create_index(spec, name=name),), spec.table, target),)
    steps = [
        Step(
            StepKind.DDL,
            (ddl.create_index(spec, name=name, concurrently=False, only=True),),
            spec.table,
            target,
        )
    ]
    for part_name in table.partitions:
        part = catalog.relations.get(part_name)
        if part is None:  # pragma: no cover - the catalog lists partitions it has
            continue
        child = ddl.derived_name(part_name.name, f"_{name}")
        part_spec = _on_table(spec, part_name)
        child_steps = _build_steps(part_spec, child, catalog, part)
        steps.extend(child_steps)
        steps.append(
            Step(
                StepKind.DDL,
                (ddl.attach_partition_index(target, QualifiedName(part_name.schema, child)),),
                spec.table,
                target,
            )
        )
    return tuple(steps)


def _on_table(spec: IndexSpec, table: QualifiedName) -> IndexSpec:
    return replace(spec, table=table)


def _drop_steps(name: QualifiedName, table: QualifiedName, relation: Relation) -> tuple[Step, ...]:
    # DROP INDEX CONCURRENTLY is refused on partitioned indexes; a plain DROP under
    # lock_timeout is the documented way and removes the partitions' indexes with it.
    concurrently = not relation.is_partitioned
    return (Step(StepKind.DROP, (ddl.drop_index(name, concurrently=concurrently),), table, name),)


def _restore_steps(index: CatalogIndex, name: str) -> tuple[Step, ...]:
    """Steps that rebuild an index from the server's own definition, under ``name``."""
    return (
        Step(
            StepKind.BUILD,
            (ddl.recreate_from_definition(index.definition, index.name.name, name),),
            index.table,
            QualifiedName(index.name.schema, name),
        ),
    )


def _swap(table: QualifiedName, current: QualifiedName, new_name: str) -> Step:
    old = ddl.derived_name(current.name, OLD_SUFFIX)
    new = QualifiedName(current.schema, new_name)
    return Step(
        StepKind.SWAP,
        (ddl.rename_index(current, old), ddl.rename_index(new, current.name)),
        table,
        current,
    )


def plan(
    specs: Sequence[IndexSpec],
    catalog: Catalog,
    normalized: Mapping[QualifiedName, str],
    managed: Iterable[QualifiedName] = (),
    *,
    attempted: Iterable[QualifiedName] = (),
    views: Sequence[ViewSpec] = (),
    normalized_views: Mapping[QualifiedName, str] | None = None,
    managed_views: Iterable[QualifiedName] = (),
    replace_drifted: bool = False,
    prune: bool = False,
    cascade: bool = False,
    catalog_queries: int = 0,
) -> Plan:
    """Diff specs against the catalog.

    ``specs`` are table indexes; ``views`` materialized views with their indexes. ``managed``
    and ``managed_views`` are what dbopt created earlier (only those may be dropped);
    ``attempted`` the indexes dbopt ever tried to create, even in a run that failed.
    """
    actions: list[Action] = []
    problems: list[Problem] = []
    tried = set(attempted)
    view_actions, view_index_specs = _plan_views(
        views, catalog, normalized_views or {}, managed_views, prune
    )
    actions.extend(view_actions)
    all_specs = [*specs, *view_index_specs]
    wanted = {s.qualified_name for s in specs} | {
        i.qualified_name for v in views for i in v.indexes
    }
    for spec in all_specs:
        table = catalog.relations.get(spec.table)
        if table is None:
            loc = spec.location
            problems.append(
                Problem(loc.file, loc.line, loc.column, f"table {spec.table} does not exist")
            )
            continue
        action = _action_for(spec, table, catalog, normalized)
        if action.kind == Kind.REPAIR and action.name in tried:
            # The INVALID index is what a failed dbopt build left: dbopt's own once rebuilt.
            action = replace(action, existed_before=False)
        if spec in view_index_specs:
            action = replace(action, phase=2)
        actions.append(action)
    if problems:
        raise SpecError("the specs name tables the database does not have", problems)
    dropped_views = {a.name for a in view_actions if a.kind == Kind.DROP}
    for name in sorted(set(managed) - wanted):
        index = catalog.indexes.get(name)
        if index is None or index.table in dropped_views:
            continue
        relation = catalog.relations[index.table]
        actions.append(
            Action(
                kind=Kind.DROP,
                name=name,
                table=index.table,
                reason="created by dbopt and no longer in the specs",
                forward=_drop_steps(name, index.table, relation),
                rollback=_restore_steps(index, name.name),
                enabled=prune,
                needs=None if prune else "--prune",
                current=canonical(index.definition),
                existed_before=False,
                phase=2 if relation.relkind == "m" else 0,
            )
        )
    actions.extend(_leftovers(catalog, wanted | {a.name for a in actions}, prune))
    for i, action in enumerate(actions):
        if action.kind == Kind.REPLACE and not replace_drifted:
            actions[i] = _disabled(action, "--replace-drifted")
        elif action.kind == Kind.REPLACE and catalog.dependents.get(action.name):
            _check_cascade(action.name, catalog, cascade)
    actions.sort(key=lambda a: (a.phase, a.phase_order, str(a.table), _ORDER[a.kind], a.name.name))
    return Plan(tuple(actions), catalog_queries=catalog_queries)


def _leftovers(catalog: Catalog, known: set[QualifiedName], prune: bool) -> list[Action]:
    """Indexes under dbopt's temporary names that an interrupted replace left behind."""
    actions = []
    for index in catalog.indexes.values():
        temporary = index.name.name.endswith((NEW_SUFFIX, OLD_SUFFIX))
        on_temporary = index.table.name.endswith((NEW_SUFFIX, OLD_SUFFIX))
        if not temporary or on_temporary or index.name in known:
            continue
        relation = catalog.relations[index.table]
        actions.append(
            Action(
                kind=Kind.DROP,
                name=index.name,
                table=index.table,
                reason="left under dbopt's temporary name by an interrupted replace",
                forward=_drop_steps(index.name, index.table, relation),
                rollback=(),
                enabled=prune,
                needs=None if prune else "--prune",
                current=canonical(index.definition),
                phase=2 if relation.relkind == "m" else 0,
            )
        )
    return actions


def _check_cascade(name: QualifiedName, catalog: Catalog, cascade: bool) -> None:
    """Replacing a view others read needs --cascade, and a rebuild dbopt can do safely."""
    readers = ", ".join(str(d) for d in catalog.dependents[name])
    if not cascade:
        raise UnsafeActionError(
            f"materialized view {name} must be replaced but {readers} depend on it: run with "
            "--cascade to rebuild them too (the plan lists them), or drop them first"
        )
    _plain, materialized = _dependents(name, catalog)
    for reader in materialized:
        _sub_plain, deeper = _dependents(reader.name, catalog)
        if deeper:
            raise UnsafeActionError(
                f"--cascade rebuilds {reader.name} (it reads {name}), but materialized views "
                + ", ".join(str(d.name) for d in deeper)
                + " read it in turn: dbopt rebuilds one level of materialized views; "
                "replace them in separate steps"
            )


def _plan_views(
    views: Sequence[ViewSpec],
    catalog: Catalog,
    normalized: Mapping[QualifiedName, str],
    managed: Iterable[QualifiedName],
    prune: bool,
) -> tuple[list[Action], list[IndexSpec]]:
    """Actions for materialized views, and the index specs of views that stay as they are."""
    actions: list[Action] = []
    index_specs: list[IndexSpec] = []
    ordered = view_order(views)
    for position, view in enumerate(ordered):
        existing = catalog.relations.get(view.name)
        if existing is None:
            actions.append(_create_view(view, position))
            continue
        if existing.relkind != "m":
            loc = view.location
            raise SpecError(
                f"{view.name} exists and is not a materialized view",
                [
                    Problem(
                        loc.file,
                        loc.line,
                        loc.column,
                        f"{view.name} already exists as a "
                        f"{_RELKINDS.get(existing.relkind, existing.relkind)}: choose another name",
                    )
                ],
            )
        desired = normalized.get(view.name)
        current = existing.view_definition
        if desired is None or desired == current:
            actions.append(
                Action(
                    kind=Kind.SKIP,
                    name=view.name,
                    table=view.name,
                    reason="the materialized view has exactly the specified query",
                    current=current,
                    desired=desired,
                    existed_before=True,
                    object_kind="view",
                    phase=1,
                    phase_order=position,
                )
            )
            index_specs.extend(view.indexes)
            continue
        actions.append(_replace_view(view, existing, catalog, position, current, desired))
    wanted = {v.name for v in views}
    for offset, name in enumerate(sorted(set(managed) - wanted, reverse=True)):
        existing = catalog.relations.get(name)
        if existing is None or existing.relkind != "m":
            continue
        dependents = catalog.dependents.get(name, ())
        reason = "created by dbopt and no longer in the specs"
        if dependents and prune:
            raise UnsafeActionError(
                f"materialized view {name} left the specs but "
                + ", ".join(str(d) for d in dependents)
                + " depend on it: drop them first (dbopt never drops objects it did not create)"
            )
        actions.append(
            Action(
                kind=Kind.DROP,
                name=name,
                table=name,
                reason=reason,
                forward=(Step(StepKind.VIEW, (ddl.drop_matview(name),), name, name),),
                rollback=(
                    Step(
                        StepKind.VIEW,
                        (ddl.create_matview_from_definition(name, existing.view_definition or ""),),
                        name,
                        name,
                    ),
                    *(
                        Step(
                            StepKind.BUILD,
                            (ddl.recreate_from_definition(i.definition, i.name.name, i.name.name),),
                            name,
                            i.name,
                        )
                        for i in catalog.indexes_on(name)
                    ),
                ),
                enabled=prune,
                needs=None if prune else "--prune",
                current=existing.view_definition,
                object_kind="view",
                phase=1,
                phase_order=10_000 + offset,
            )
        )
    return actions, index_specs


_RELKINDS = {"r": "table", "p": "partitioned table", "v": "view", "m": "materialized view"}


def _view_index_steps(
    view: ViewSpec, on: QualifiedName, rename: Callable[[str], str]
) -> tuple[Step, ...]:
    return tuple(
        Step(
            StepKind.BUILD,
            (ddl.create_index(i, name=rename(i.name), table=on),),
            on,
            QualifiedName(on.schema, rename(i.name)),
        )
        for i in view.indexes
    )


def _create_view(view: ViewSpec, position: int) -> Action:
    return Action(
        kind=Kind.CREATE,
        name=view.name,
        table=view.name,
        reason=view.reason or "in the specs, not in the database",
        forward=(
            Step(
                StepKind.VIEW,
                (ddl.create_matview(view.name, query_sql(view.query)),),
                view.name,
                view.name,
            ),
            *_view_index_steps(view, view.name, lambda n: n),
        ),
        rollback=(Step(StepKind.VIEW, (ddl.drop_matview(view.name),), view.name, view.name),),
        object_kind="view",
        phase=1,
        phase_order=position,
        also_creates=tuple(i.qualified_name for i in view.indexes),
    )


def _replace_view(
    view: ViewSpec,
    existing: Relation,
    catalog: Catalog,
    position: int,
    current: str | None,
    desired: str,
) -> Action:
    """Build the new view aside, swap names in one short transaction, drop the old one.

    Views that read it are re-bound inside the swap (CREATE OR REPLACE VIEW keeps their grants
    and dependents); materialized views that read it are rebuilt the same way after the swap.
    This only runs with --cascade (plan() refuses otherwise).
    """
    name = view.name
    schema = name.schema
    new = QualifiedName(schema, ddl.derived_name(name.name, NEW_SUFFIX))
    old_indexes = catalog.indexes_on(name)
    plain, materialized = _dependents(name, catalog)
    rebuilt = [str(r.name) for r in plain + materialized]
    reason = "the query drifted from the spec"
    if rebuilt:
        reason += "; rebuilds what reads it: " + ", ".join(rebuilt)
    forward = _rebuild_steps(
        name,
        query_sql(view.query),
        _view_index_steps(view, new, lambda n: ddl.derived_name(n, NEW_SUFFIX)),
        [i.name.name for i in old_indexes],
        [i.name for i in view.indexes],
        plain,
        materialized,
        catalog,
    )
    backward = _rebuild_steps(
        name,
        sql.SQL(_view_body(existing)),
        _retargeted(old_indexes, new),
        [i.name for i in view.indexes],
        [i.name.name for i in old_indexes],
        plain,
        materialized,
        catalog,
    )
    return Action(
        kind=Kind.REPLACE,
        name=name,
        table=name,
        reason=reason,
        forward=forward,
        rollback=backward,
        current=current,
        desired=desired,
        existed_before=True,
        object_kind="view",
        phase=1,
        phase_order=position,
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


def _retargeted(indexes: Sequence[CatalogIndex], on: QualifiedName) -> tuple[Step, ...]:
    """Rebuild catalog indexes on another relation, under NEW-suffixed names."""
    return tuple(
        Step(
            StepKind.BUILD,
            (
                ddl.retarget_definition(
                    i.definition, i.name.name, ddl.derived_name(i.name.name, NEW_SUFFIX), on
                ),
            ),
            on,
            QualifiedName(on.schema, ddl.derived_name(i.name.name, NEW_SUFFIX)),
        )
        for i in indexes
    )


def _rebuild_steps(
    name: QualifiedName,
    body: sql.Composable,
    build_indexes: tuple[Step, ...],
    current_indexes: Sequence[str],
    incoming_indexes: Sequence[str],
    plain: Sequence[Relation],
    materialized: Sequence[Relation],
    catalog: Catalog,
) -> tuple[Step, ...]:
    """Build ``name`` aside from ``body``, swap it in, re-bind or rebuild its readers, drop."""
    schema = name.schema
    new = QualifiedName(schema, ddl.derived_name(name.name, NEW_SUFFIX))
    old = QualifiedName(schema, ddl.derived_name(name.name, OLD_SUFFIX))
    swap = Step(
        StepKind.SWAP,
        (
            ddl.rename_matview(name, old.name),
            ddl.rename_matview(new, name.name),
            *(
                ddl.rename_index(QualifiedName(schema, n), ddl.derived_name(n, OLD_SUFFIX))
                for n in current_indexes
            ),
            *(
                ddl.rename_index(QualifiedName(schema, ddl.derived_name(n, NEW_SUFFIX)), n)
                for n in incoming_indexes
            ),
            # Readers re-bound in the same transaction: none ever sees the old data twice.
            *(ddl.create_or_replace_view(v.name, _view_body(v)) for v in plain),
        ),
        name,
        name,
    )
    steps: list[Step] = [
        # A build aside that a failed run left behind is dbopt's own: start clean.
        Step(StepKind.VIEW, (ddl.drop_matview(new),), new, new),
        Step(StepKind.VIEW, (ddl.create_matview(new, body),), new, new),
        *build_indexes,
        swap,
    ]
    for reader in materialized:
        indexes = catalog.indexes_on(reader.name)
        reader_new = QualifiedName(
            reader.name.schema, ddl.derived_name(reader.name.name, NEW_SUFFIX)
        )
        names = [i.name.name for i in indexes]
        sub_plain, _sub_materialized = _dependents(reader.name, catalog)
        steps.extend(
            _rebuild_steps(
                reader.name,
                sql.SQL(_view_body(reader)),
                _retargeted(indexes, reader_new),
                names,
                names,
                sub_plain,
                [],
                catalog,
            )
        )
    steps.append(Step(StepKind.VIEW, (ddl.drop_matview(old),), old, old))
    return tuple(steps)


def _disabled(action: Action, flag: str) -> Action:
    if not action.enabled:
        return action
    return replace(action, enabled=False, needs=flag)


def _action_for(
    spec: IndexSpec, table: Relation, catalog: Catalog, normalized: Mapping[QualifiedName, str]
) -> Action:
    name = spec.qualified_name
    existing = catalog.indexes.get(name)
    desired = normalized.get(name)
    if existing is None:
        return Action(
            kind=Kind.CREATE,
            name=name,
            table=spec.table,
            reason=spec.reason or "in the specs, not in the database",
            forward=_build_steps(spec, spec.name, catalog, table),
            rollback=_drop_steps(name, spec.table, table),
            spec=spec,
            desired=desired,
        )
    current = canonical(existing.definition)
    if existing.table != spec.table:
        raise SpecError(
            f"index name {name} is taken by an index on {existing.table}",
            [
                Problem(
                    spec.location.file,
                    spec.location.line,
                    spec.location.column,
                    f"index {spec.name} is meant for {spec.table} but {existing.table} has an "
                    "index of that name: rename one of them",
                )
            ],
        )
    if not (existing.is_valid and existing.is_ready):
        # A failed CREATE INDEX CONCURRENTLY leaves an INVALID index behind; IF NOT EXISTS
        # would silently keep it, so it is dropped and built again.
        return Action(
            kind=Kind.REPAIR,
            name=name,
            table=spec.table,
            reason="the index is INVALID (a failed concurrent build): drop it and build again",
            forward=_drop_steps(name, spec.table, table)
            + _build_steps(spec, spec.name, catalog, table),
            # No way back to an INVALID index, and never a drop of what existed before.
            rollback=(),
            spec=spec,
            current=current,
            desired=desired,
            existed_before=True,
        )
    if desired is None or desired == current:
        return Action(
            kind=Kind.SKIP,
            name=name,
            table=spec.table,
            reason="exists with exactly the specified definition",
            spec=spec,
            current=current,
            desired=desired,
            existed_before=True,
        )
    if existing.backs_constraint:
        raise SpecError(
            f"index {name} backs constraint {existing.constraint_name}",
            [
                Problem(
                    spec.location.file,
                    spec.location.line,
                    spec.location.column,
                    f"index {spec.name} differs from the database, but there it backs "
                    f"constraint {existing.constraint_name}; dbopt does not change constraint "
                    "indexes: choose another name",
                )
            ],
        )
    if table.is_partitioned:
        raise UnsafeActionError(
            f"index {name} on partitioned table {spec.table} drifted from its spec; replacing "
            "an index of a partitioned table is not supported yet: DROP INDEX it (a short "
            "lock on the parent and its partitions) and apply again"
        )
    new_name = ddl.derived_name(spec.name, NEW_SUFFIX)
    restore_name = ddl.derived_name(spec.name, NEW_SUFFIX)
    old_name = QualifiedName(name.schema, ddl.derived_name(spec.name, OLD_SUFFIX))
    # What an interrupted replace left under dbopt's own temporary names goes first.
    leftovers = (
        *_drop_steps(QualifiedName(name.schema, new_name), spec.table, table),
        *_drop_steps(old_name, spec.table, table),
    )
    return Action(
        kind=Kind.REPLACE,
        name=name,
        table=spec.table,
        reason="the definition drifted from the spec",
        forward=(
            *leftovers,
            *_build_steps(spec, new_name, catalog, table),
            _swap(spec.table, name, new_name),
            *_drop_steps(old_name, spec.table, table),
        ),
        rollback=(
            *leftovers,
            *_restore_steps(existing, restore_name),
            _swap(spec.table, name, restore_name),
            *_drop_steps(old_name, spec.table, table),
        ),
        spec=spec,
        current=current,
        desired=desired,
        existed_before=True,
    )
