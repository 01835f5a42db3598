"""The actions on indexes: create, repair (an INVALID index, or on Citus an index INVALID or
missing on some shard placements), replace (carrying over what the old one carries), drop.
Also what rollback derives its undo actions from."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from psycopg import sql

from dbopt import ddl
from dbopt.catalog import Catalog, CatalogIndex, Relation
from dbopt.catalog.properties import Properties
from dbopt.citus import ShardedIndex, ShardIndex
from dbopt.deparse import canonical
from dbopt.errors import Problem
from dbopt.guard import Identity
from dbopt.indexdef import (
    DefinitionError,
    index_spec_from_canonical,
    index_spec_from_definition,
)
from dbopt.model import IndexSpec, QualifiedName
from dbopt.planner.actions import NEW_SUFFIX, OLD_SUFFIX, Action, ActionKind, Step, StepMode
from dbopt.planner.ownership import Ownership, index_identity, name_taken
from dbopt.words import a

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
    blockers = [] if props is None else props.drop_blockers()
    if index.backs_constraint:
        blockers.insert(0, f"it backs constraint {index.constraint_name}")
    refusal = None
    if blockers:
        refusal = f"index {index.name} cannot be dropped: " + "; ".join(blockers)
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
                refusals.append(f"the name {name} it needs is taken by {a(taken)}")
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
        refusals += _citus_carry_refusals(name, relation, props.tablespace, props.clustered)
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


def _citus_carry_refusals(
    name: QualifiedName, relation: Relation, tablespace: str | None, clustered: bool
) -> list[str]:
    """What a replace would carry over that Citus refuses on its tables: a tablespace
    (ErrorIfUnsupportedIndexStmt, commands/index.c) and ALTER TABLE ... CLUSTER ON, which is
    not among the ALTER TABLE subcommands Citus propagates (ErrorIfUnsupportedAlterTableStmt,
    commands/table.c)."""
    if not relation.sharded:
        return []
    kind = f"the {relation.citus} table {relation.name}"
    out = []
    if tablespace:
        out.append(
            f"index {name} is in tablespace {tablespace}, which its replacement would keep, and "
            f"Citus refuses a tablespace on an index of {kind}: move it to the default "
            "tablespace first"
        )
    if clustered:
        out.append(
            f"{relation.name} is CLUSTERed on index {name}, which its replacement would keep, "
            f"and Citus refuses ALTER TABLE ... CLUSTER ON on {kind}, so the replacement "
            "could not keep it: drop the index and apply again instead"
        )
    return out


def _index_action(
    spec: IndexSpec,
    relation: Relation,
    catalog: Catalog,
    normalized: Mapping[QualifiedName, str],
    owners: Ownership,
    properties: Properties | None,
    problems: list[Problem],
    placements: Mapping[QualifiedName, ShardedIndex] | None = None,
) -> Action | None:
    name = spec.qualified_name
    existing = catalog.indexes.get(name)
    desired = normalized.get(name)
    loc = spec.location
    needs = ddl.needs_newer_server(spec, catalog.server_version)
    if needs:
        problems.extend(loc.problem(f"index {spec.name}: {need}") for need in needs)
        return None
    if existing is None:
        taken = name_taken(catalog, name)
        if taken:
            problems.append(
                loc.problem(
                    f"index {spec.name}: the name {name} is taken by {a(taken)}: rename one of "
                    "them",
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
    sharded = (placements or {}).get(name) if relation.sharded else None
    if (desired is None or desired == current) and sharded is not None and _broken(sharded):
        # A drifted one is replaced instead: its build goes to every shard anyway.
        return _shard_repair_action(spec, existing, relation, catalog, owners, sharded, desired)
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
            # IF EXISTS: on Citus the drop goes to every shard, and a failed build may have
            # left some without the index (Citus's own hint says the same).
            "("
            + sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(name.ident()).as_string()
            + "), then apply again"
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


def _broken(sharded: ShardedIndex) -> tuple[ShardIndex, ...]:
    """The placements where the index is INVALID or missing (an unreadable one proves
    nothing: it is not repaired blind)."""
    return tuple(p for p in sharded.bad if p.error is None)


def _shard_repair_action(
    spec: IndexSpec,
    existing: CatalogIndex,
    relation: Relation,
    catalog: Catalog,
    owners: Ownership,
    sharded: ShardedIndex,
    desired: str | None,
) -> Action:
    """Repair an index valid on the Citus coordinator but INVALID or missing on some shard
    placements (a failed REINDEX on one worker, a shard index dropped there).

    INVALID only: ``REINDEX INDEX CONCURRENTLY`` on the coordinator, which Citus sends to every
    placement of every shard as ``REINDEX INDEX CONCURRENTLY <index>_<shardid>``
    (PreprocessReindexStmt, CreateReindexTaskList in commands/index.c). A missing one cannot
    be reindexed (the shard's task fails: relation "<index>_<shardid>" does not exist), so
    then the index is dropped concurrently (IF EXISTS on every shard) and built again, as
    Citus's hint for a partly failed concurrent index command says. Guarded like every
    rebuild: the coordinator's index must still be the one dbopt planned from, valid.
    """
    name = spec.qualified_name
    broken = _broken(sharded)
    where = "; ".join(f"{p.state} on {p.where}" for p in broken)
    missing = any(p.valid is None for p in broken)
    identity = index_identity(existing, invalid=False, origin=owners.origin(existing.oid))
    forward: tuple[Step, ...]
    if missing:
        reason = (
            f"valid on the Citus coordinator but {where}: REINDEX cannot rebuild a shard's "
            "missing index, so drop it on every shard and build it again"
        )
        forward = _drop_steps(identity, spec.table, relation) + _build_steps(
            spec, spec.name, catalog, relation
        )
        by_hand = [
            sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(name.ident()).as_string(),
            ddl.create_index(spec).as_string(),
        ]
    else:
        reason = (
            f"valid on the Citus coordinator but {where}: REINDEX INDEX CONCURRENTLY "
            "(Citus runs it on every shard placement)"
        )
        statement = ddl.reindex_concurrently(name)
        forward = (Step(StepMode.REINDEX, (statement,), spec.table, name, expect=(identity,)),)
        by_hand = [statement.as_string()]
    refusal = None
    mine = owners.owns(existing.oid)
    if not mine:
        refusal = (
            f"index {name} is {where} and dbopt did not make it: dbopt never rebuilds what it "
            f"did not make; check it and repair it by hand ({'; '.join(by_hand)}), then "
            "apply again"
        )
    return Action(
        kind=ActionKind.REPAIR,
        name=name,
        table=spec.table,
        reason=reason,
        forward=forward,
        rollback=(),
        refusal=refusal,
        spec=spec,
        current=canonical(existing.definition),
        desired=desired,
        existed_before=not mine,
        # It worked on the coordinator before this run: a rollback has nothing to undo (it
        # must not drop an index the run only rebuilt on some shards).
        previous_state={"valid": True},
        replaced_oid=existing.oid,
        previous_definition=existing.definition,
    )
