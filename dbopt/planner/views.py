"""The actions on materialized views: create, replace (built aside, swapped in, readers
re-bound or rebuilt, what the old one carries carried over), drop."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace

from psycopg import sql

from dbopt import ddl
from dbopt.catalog import Catalog, Relation
from dbopt.catalog.properties import IndexProperties, Properties, ViewProperties
from dbopt.guard import Identity
from dbopt.indexdef import (
    DefinitionError,
    index_spec_from_definition,
)
from dbopt.model import IndexSpec, QualifiedName, ViewSpec
from dbopt.planner.actions import (
    NEW_SUFFIX,
    OLD_SUFFIX,
    Action,
    ActionKind,
    Plan,
    Step,
    StepMode,
)
from dbopt.planner.indexes import _display_rebuild, _safe
from dbopt.planner.ownership import Ownership, name_taken, view_identity
from dbopt.sqltext import query_sql
from dbopt.words import a, they

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
        names, verb, pronoun = they(readers)
        refusals.append(
            f"{names} {verb} on it: drop {pronoun} first (dbopt never drops objects it did not "
            "create)"
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
    from dbopt.sqltext import expression_columns

    names = {c.name for c in spec.columns if c.name} | set(spec.include)
    texts = [c.expr for c in spec.columns if c.expr] + ([spec.where] if spec.where else [])
    for text in texts:
        names.update(expression_columns(text))
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
                f"the name {temp} it needs is taken by {a(taken)} that dbopt has no record of "
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
            refusals.append(f"the name {schema}.{temp_index} it needs is taken by {a(taken)}")
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


@dataclass(frozen=True, slots=True)
class NewViewOwner:
    """Who a materialized view dbopt creates must belong to, for dbopt to count it as its own
    (the history's owner must be able to act on it): ``role`` to give it to right after it
    is made (None: its creator will do), or why creating one is refused."""

    role: str | None = None
    refusal: str | None = None


def own_new_views(plan: Plan, owner: NewViewOwner) -> Plan:
    """The plan with each view it creates given to ``owner.role`` right after it is made
    (before its indexes), or refused with ``owner.refusal``."""
    if owner.role is None and owner.refusal is None:
        return plan
    actions = []
    for action in plan.actions:
        if action.object_type != "view" or action.kind != ActionKind.CREATE:
            actions.append(action)
        elif owner.refusal is not None:
            actions.append(replace(action, refusal=owner.refusal))
        else:
            assert owner.role is not None
            first, *rest = action.forward
            give = Step(
                StepMode.DDL,
                (ddl.alter_matview_owner(action.name, owner.role),),
                action.name,
                action.name,
            )
            actions.append(replace(action, forward=(first, give, *rest)))
    return replace(plan, actions=tuple(actions))
