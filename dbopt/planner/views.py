"""The actions on materialized views: create, replace (built aside, swapped in, readers
re-bound or rebuilt, what the old one carries carried over), drop."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace

from psycopg import sql

from dbopt import ddl
from dbopt.catalog import Catalog, Relation
from dbopt.catalog.properties import IndexProperties, Properties, ViewProperties
from dbopt.errors import LockRefusal
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
    Rebuilt,
    Step,
    StepMode,
    is_temporary,
    refusal_of,
    temporary_names,
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


#: Why a materialized view inspected apart (catalog.inspect) is not read.
UNREAD = (
    "(it may read any table): a lock on what it reads was not granted at once (another "
    "session holds one of them): try again once it is done"
)


def _leftover_identity(relation: Relation, origin: str) -> Identity:
    """The identity checked right before a materialized view dbopt made is dropped: what an
    interrupted replace left under a temporary name (it may read any table) by OID and name
    only, never deparsed there (that would lock all it reads); any other by its query too."""
    identity = view_identity(relation, origin)
    return replace(identity, definition=None) if is_temporary(relation.name) else identity


def _unread(relation: Relation) -> bool:
    """A materialized view inspected apart whose definition (and indexes) could not be read:
    nothing is known of it but its name, OID and owner."""
    return relation.relkind == "m" and relation.inspected and relation.view_definition is None


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
    refusals: list[str] = []
    if _unread(relation):
        refusals.append(LockRefusal(f"materialized view {name} could not be read {UNREAD}"))
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
                expect=(_leftover_identity(relation, origin),),
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
        refusal=refusal_of(
            f"materialized view {name} cannot be dropped: " + "; ".join(refusals), refusals
        )
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
    dropped: Collection[int] = (),
) -> list[IndexSpec]:
    """``wanted`` plus every other index the view has now (hand-made ones are kept too),
    but ``dropped`` (a rollback restores the view as it was, without the indexes the replace
    it undoes added; one dbopt made later is kept)."""
    names = {i.name for i in wanted}
    kept = list(wanted)
    for index in catalog.indexes_on(relation.name):
        if index.name.name in names:
            continue
        if index.oid in dropped:
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
    rebinding: Sequence[str] = (),
    expect_oid: int | None = None,
    undoes_change: int | None = None,
    added: Collection[int] = (),
) -> Action:
    """Build the new view aside, swap names in one short transaction, drop the old one.

    Its indexes (the spec's and any others it has) are built on the new view; views that
    read it are re-bound inside the swap (CREATE OR REPLACE VIEW keeps their grants and
    dependents); materialized views that read it are rebuilt the same way after the swap.
    What the old view carries (owner, grants, comments, storage...) is carried over.
    ``added`` (a restore): the OIDs of the indexes the replace it undoes added, left out.
    """
    refusals: list[str] = []
    name = view.name
    if expect_oid is not None and existing.oid != expect_oid:
        refusals.append(
            f"materialized view {name} is not the one dbopt made (OID {existing.oid}, dbopt's "
            f"was {expect_oid})"
        )
    plain, materialized = _dependents(name, catalog)
    # Views reading it that could not follow its new column types (livecheck's tries).
    refusals += rebinding
    # A reader's definition is read only if the locks it takes (on whatever it reads) are
    # granted at once: one that was not cannot be re-bound or rebuilt now.
    reading = {r: name for r in (*plain, *materialized)}
    for m in materialized:
        for over in _dependents(m.name, catalog)[0]:
            reading.setdefault(over, m.name)
    refusals += [
        LockRefusal(
            f"the definition of {reader.name} (it reads {source}) could not be read: a lock "
            "on what it reads was not granted at once (another session holds one of them): "
            "try again once it is done"
        )
        for reader, source in reading.items()
        if reader.inspected and not reader.view_definition
    ]
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
            added,
        ),
        plain,
        materialized,
        catalog,
        properties,
        (new_columns or {}).get(name),
        refusals,
        owners,
    )
    old = {i.name: i.oid for i in catalog.indexes_on(name)}
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
        refusal=refusal_of("; ".join(f"materialized view {name}: {r}" for r in refusals), refusals)
        or None,
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
        # The spec's indexes are rebuilt with the view: dbopt's own from now on; one the old
        # view had under its name is recorded as what it replaces (what dbopt made there is
        # followed to it, as an index rebuilt with a reader is).
        also_creates=tuple(i.qualified_name for i in view.indexes if i.qualified_name not in old),
        # Every other index dbopt made on it is kept (rebuilt with it): still dbopt's.
        also_rebuilds=(
            *(
                ("index", i.qualified_name, name, old[i.qualified_name], True)
                for i in view.indexes
                if i.qualified_name in old
            ),
            *(
                ("index", i.name, name, i.oid, True)
                for i in catalog.indexes_on(name)
                if owners.owns(i.oid)
                and i.oid not in added
                and i.name not in {s.qualified_name for s in view.indexes}
            ),
            *_rebuilt_readers(name, materialized, catalog, owners),
        ),
    )


def _rebuilt_readers(
    name: QualifiedName, readers: Sequence[Relation], catalog: Catalog, owners: Ownership
) -> tuple[Rebuilt, ...]:
    """What a cascade rebuilds with ``name``: each materialized reader (recorded with
    ``name``) and each of their indexes dbopt made (with the reader). A reader dbopt made
    stays dbopt's (``made``); one made by hand is recorded only as swapped out, so what an
    interrupted cascade leaves of it under dbopt's temporary name is dbopt's to clear, while
    its new copy is not dbopt's."""
    out: list[Rebuilt] = []
    for reader in readers:
        out.append(("view", reader.name, name, reader.oid, owners.owns(reader.oid)))
        out += [
            ("index", i.name, reader.name, i.oid, True)
            for i in catalog.indexes_on(reader.name)
            if owners.owns(i.oid)
        ]
    return tuple(out)


@dataclass(frozen=True, slots=True)
class _Aside:
    """One materialized view rebuilt aside: what clears its temporary names, what builds the
    new one under its temporary name, its part of the one swap transaction, and the drop of
    the old one after it."""

    leftovers: tuple[Step, ...]
    build: tuple[Step, ...]
    renames: tuple[sql.Composed, ...]
    #: Plain views that read it: re-bound (CREATE OR REPLACE VIEW) in the swap transaction.
    readers: tuple[Relation, ...]
    expect: tuple[Identity, ...]
    then: tuple[sql.Composed, ...]
    drop_old: Step


#: What builds the new view under its temporary name: (temporary name, its properties) -> steps.
_Make = Callable[[QualifiedName, ViewProperties | None], Sequence[Step]]


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
    """Build ``existing`` aside from ``body`` with ``indexes`` and each materialized view that
    reads it aside too (bound to the new one), then swap all of them in one transaction:
    either every view of the cascade is the new one, or none is (a reader that cannot be
    swapped, held by a session, leaves everything as it was). Plain views that read them are
    re-bound in that transaction; the old views are dropped after it, readers first.

    The swap (and each reader's binding) waits lock_timeout for the view's own lock only;
    every other lock it then needs must come within ddl.HELD_WAIT_MS, or the attempt ends
    and is retried: it never holds the view while it waits for a reader."""

    def make(new: QualifiedName, props: ViewProperties | None) -> Sequence[Step]:
        options, tablespace = props.build_options() if props is not None else ((), None)
        populated = props.populated if props is not None else True
        # With readers, made empty first: each reader is bound to it before anything is
        # filled or built, so a reader the new query cannot serve fails in seconds.
        create = ddl.create_matview(
            new,
            body,
            with_data=populated and not materialized,
            options=options,
            tablespace=tablespace,
        )
        made = Step(StepMode.VIEW, (create,), new, new, makes=True)
        if not materialized or not populated:
            return (made,)
        fill = Step(StepMode.VIEW, (ddl.refresh_matview(new, concurrently=False),), new, new)
        return (made, fill)

    main = _aside(
        existing, indexes, plain, catalog, properties, new_columns, refusals, owners, make
    )
    readers = []
    # Everything the swap puts in place or re-binds besides the view: a reader rebuilt
    # aside that reads one of them would be filled from the old one.
    swapped = [r.name for r in materialized]
    for name in (existing.name, *swapped):
        swapped += [v for v in _plain_readers_of(name, catalog) if v not in swapped]
    view_props = properties.views.get(existing.oid) if properties is not None else None
    for reader in materialized:
        refusals += _not_member(reader, "rebuild")
        refusals += [
            f"{reader.name} reads it and {other} too, which is swapped or re-bound only when "
            "the views are swapped: rebuilt aside, it would hold the new data and the old at "
            f"once; have {reader.name} read it one way"
            for other in swapped
            if other != reader.name and reader.name in catalog.dependents.get(other, ())
        ][:1]
        reader_props = properties.views.get(reader.oid) if properties is not None else None
        if view_props and not view_props.populated and reader_props and reader_props.populated:
            refusals.append(
                f"{reader.name} holds data but reads it, which holds none (WITH NO DATA): "
                f"rebuilt, {reader.name} could not be filled; refresh {existing.name} first"
            )
        sub_plain, _deeper = _dependents(reader.name, catalog)
        bound = _bound_to_new(existing, reader)
        kept = _kept_indexes(reader, (), catalog, refusals)
        readers.append(
            _aside(reader, kept, sub_plain, catalog, properties, None, refusals, owners, bound)
        )
    every = (main, *readers)
    # Plain views re-bound once every name is in place (one that reads a view and its reader
    # must see both new ones); each once.
    plain_readers = {r.name: r for one in every for r in one.readers}.values()
    rebinds = tuple(
        ddl.create_or_replace_view(v.name, _view_body(v), v.options) for v in plain_readers
    )
    renames = [r for one in every for r in one.renames]
    swap = Step(
        StepMode.SWAP,
        (renames[0], ddl.hurry_held_waits(), *renames[1:], *rebinds),
        existing.name,
        existing.name,
        expect=tuple(i for one in every for i in one.expect),
        then=tuple(t for one in every for t in one.then),
    )
    return (
        # A reader's leftover reads the view's leftover: it goes first.
        *(s for one in readers for s in one.leftovers),
        *main.leftovers,
        # The view made (empty when it has readers), each reader bound to it, then every
        # fill and build: what cannot bind fails before the long part.
        *main.build[:1],
        *(one.build[0] for one in readers),
        *main.build[1:],
        *(s for one in readers for s in one.build[1:]),
        swap,
        *(one.drop_old for one in readers),
        main.drop_old,
    )


def _plain_readers_of(name: QualifiedName, catalog: Catalog) -> list[QualifiedName]:
    """The plain views that read ``name``, directly or through other plain views."""
    found: list[QualifiedName] = []
    todo = [name]
    while todo:
        for dep in catalog.dependents.get(todo.pop(), ()):
            if catalog.names.get(dep) == "view" and dep not in found:
                found.append(dep)
                todo.append(dep)
    return found


def _not_member(reader: Relation, verb: str) -> list[str]:
    """Why a view that reads the one replaced cannot be re-bound or rebuilt (``verb``)."""
    if reader.owned:
        return []
    return [
        f"{reader.name} reads it and belongs to {reader.owner}, which this role is not a "
        f"member of: dbopt could not {verb} it"
    ]


def _bound_to_new(view: Relation, reader: Relation) -> _Make:
    """How a materialized view that reads ``view`` is made aside reading ``view``'s new copy
    (still under its temporary name): created empty in a short transaction that gives the new
    copy the name for a moment (so the reader's own query binds to it) and gives it back,
    then filled from it. The swap transaction can then put both in place at once."""
    name = view.name
    new_view, old_view = temporary_names(name)
    body = sql.SQL(_view_body(reader))

    def make(new: QualifiedName, props: ViewProperties | None) -> Sequence[Step]:
        options, tablespace = props.build_options() if props is not None else ((), None)
        bind = Step(
            StepMode.SWAP,
            (
                ddl.rename_matview(name, old_view.name),
                ddl.hurry_held_waits(),
                ddl.rename_matview(new_view, name.name),
                ddl.create_matview(
                    new, body, with_data=False, options=options, tablespace=tablespace
                ),
                ddl.rename_matview(name, new_view.name),
                ddl.rename_matview(old_view, name.name),
            ),
            name,
            new,
            expect=(
                Identity("view", name, oid=view.oid),
                Identity("view", new_view, built_as=new_view),
            ),
            makes=True,
        )
        if props is not None and not props.populated:
            return (bind,)
        fill = Step(StepMode.VIEW, (ddl.refresh_matview(new, concurrently=False),), new, new)
        return (bind, fill)

    return make


def _aside(
    existing: Relation,
    indexes: Sequence[IndexSpec],
    plain: Sequence[Relation],
    catalog: Catalog,
    properties: Properties | None,
    new_columns: Collection[str] | None,
    refusals: list[str],
    owners: Ownership,
    make: _Make,
) -> _Aside:
    """``existing`` rebuilt aside by ``make`` with ``indexes``: see :class:`_Aside`."""
    name = existing.name
    schema = name.schema
    new, old = temporary_names(name)
    props: ViewProperties | None = None
    if properties is not None:
        props = properties.views.get(existing.oid)
    if props is not None:
        refusals += props.refusals(new_columns)
    for reader in plain:
        refusals += _not_member(reader, "re-bind")
    if new_columns is not None:
        for spec in indexes:
            missing = sorted(_columns_of(spec) - set(new_columns))
            if missing:
                refusals.append(
                    f"its index {spec.name} uses {', '.join(missing)}, which the new query has "
                    "no column for"
                )
        for dependent in catalog.dependents.get(name, ()):
            used = catalog.read_columns.get((name, dependent), ())
            lost = sorted(set(used) - set(new_columns))
            if lost:
                refusals.append(
                    f"{dependent} reads its column{'s' if len(lost) > 1 else ''} "
                    f"{', '.join(lost)}, which the new query has none of"
                )
    leftovers: list[Step] = []
    cleared: set[QualifiedName] = set()  # leftovers dropped first (their indexes with them)
    unread: set[QualifiedName] = set()  # dbopt's leftovers not read (nor their indexes)
    for temp in (new, old):
        taken = name_taken(catalog, temp)
        leftover = catalog.relations.get(temp)
        # dbopt's by OID (a plain catalog column): what an interrupted replace of its left.
        mine = (
            leftover
            if leftover is not None and leftover.relkind == "m" and owners.owns(leftover.oid)
            else None
        )
        if mine is not None and _unread(mine):
            # dbopt's (by OID): only its definition is unread; someone else's is refused
            # below whatever is held (trying again would not help).
            unread.add(temp)
            refusals.append(
                LockRefusal(
                    f"what an interrupted replace left as {temp} could not be read {UNREAD}"
                )
            )
        elif mine is not None:
            # What an interrupted replace of dbopt's left behind: dbopt's own, start clean.
            identity = _leftover_identity(mine, owners.origin(mine.oid))
            leftovers.append(
                Step(StepMode.VIEW, (ddl.drop_matview(temp),), temp, temp, expect=(identity,))
            )
            cleared.add(temp)
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
        on = catalog.indexes.get(QualifiedName(schema, temp_index))
        if on is None and taken == "index" and unread:
            continue  # an index whose table was not read: likely that leftover's (try again)
        if taken and not (on is not None and on.table in cleared):
            refusals.append(f"the name {schema}.{temp_index} it needs is taken by {a(taken)}")
    renames = (
        ddl.rename_matview(name, old.name),
        ddl.rename_matview(new, name.name),
        *(ddl.rename_index(i.name, ddl.derived_name(i.name.name, OLD_SUFFIX)) for i in old_indexes),
        *(
            ddl.rename_index(QualifiedName(schema, ddl.derived_name(i.name, NEW_SUFFIX)), i.name)
            for i in indexes
        ),
    )
    expect = (
        Identity("view", old, oid=existing.oid),
        Identity("view", name, built_as=new),
        # Every index renamed is exactly the one planned: the old view's (by OID, now on the
        # view renamed aside) and the ones built on the new view.
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
    )
    build = (
        *make(new, props),
        *_view_index_steps(indexes, new, lambda n: ddl.derived_name(n, NEW_SUFFIX)),
        *(
            Step(StepMode.DDL, (statement,), new, new)
            for statement in (props.carry_before_swap(new) if props is not None else ())
        ),
    )
    drop_old = Step(
        StepMode.VIEW,
        (ddl.drop_matview(old),),
        old,
        old,
        expect=(Identity("view", old, oid=existing.oid, upfront=False),),
    )
    return _Aside(
        leftovers=tuple(leftovers),
        build=build,
        renames=renames,
        # Readers re-bound in the swap's transaction: none ever sees the old data twice.
        readers=tuple(plain),
        expect=expect,
        then=(*(props.carry(name) if props is not None else ()), *index_carry),
        drop_old=drop_old,
    )


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
