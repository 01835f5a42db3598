"""plan(specs, catalog) -> Plan: a pure diff with no I/O.

Every action carries the SQL that applies it and the SQL that undoes it, so apply executes
exactly what plan showed and rollback falls out of the same value.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from psycopg import sql

from dbopt import ddl
from dbopt.catalog import Catalog, CatalogIndex, Relation
from dbopt.errors import Problem, SpecError
from dbopt.normalize import canonical
from dbopt.spec import IndexSpec, QualifiedName

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

    def diff(self) -> str:
        """A one-line-per-side diff of the definitions (for drift)."""
        if self.current is None or self.desired is None:
            return ""
        return "\n".join(
            difflib.unified_diff(
                [self.current], [self.desired], "database", "spec", lineterm="", n=0
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
    from dataclasses import replace

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
    replace_drifted: bool = False,
    prune: bool = False,
    catalog_queries: int = 0,
) -> Plan:
    """Diff index specs against the catalog. ``managed``: indexes dbopt created earlier."""
    actions: list[Action] = []
    problems: list[Problem] = []
    wanted = {s.qualified_name for s in specs}
    for spec in specs:
        table = catalog.relations.get(spec.table)
        if table is None:
            loc = spec.location
            problems.append(
                Problem(loc.file, loc.line, loc.column, f"table {spec.table} does not exist")
            )
            continue
        actions.append(_action_for(spec, table, catalog, normalized))
    if problems:
        raise SpecError("the specs name tables the database does not have", problems)
    for name in sorted(set(managed) - wanted):
        index = catalog.indexes.get(name)
        if index is None:
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
            )
        )
    for action in actions:
        if action.kind == Kind.REPLACE and not replace_drifted:
            actions[actions.index(action)] = _disabled(action, "--replace-drifted")
    actions.sort(key=lambda a: (str(a.table), _ORDER[a.kind], a.name.name))
    return Plan(tuple(actions), catalog_queries=catalog_queries)


def _disabled(action: Action, flag: str) -> Action:
    from dataclasses import replace

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
    new_name = ddl.derived_name(spec.name, NEW_SUFFIX)
    restore_name = ddl.derived_name(spec.name, NEW_SUFFIX)
    old_name = QualifiedName(name.schema, ddl.derived_name(spec.name, OLD_SUFFIX))
    return Action(
        kind=Kind.REPLACE,
        name=name,
        table=spec.table,
        reason="the definition drifted from the spec",
        forward=(
            *_build_steps(spec, new_name, catalog, table),
            _swap(spec.table, name, new_name),
            *_drop_steps(old_name, spec.table, table),
        ),
        rollback=(
            *_restore_steps(existing, restore_name),
            _swap(spec.table, name, restore_name),
            *_drop_steps(old_name, spec.table, table),
        ),
        spec=spec,
        current=current,
        desired=desired,
        existed_before=True,
    )
