"""dbopt.planner.plan on hand-built catalogs: every decision, gate and refusal, no server.

The catalog, the specs, what the server made of them (``normalized``) and what dbopt's history
says it made (``owned``) are written out here as the values the planner receives from
inspection; the database tests (test_lifecycle, test_trust, tests/cases) check that those
values are what a real server gives.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Mapping
from dataclasses import replace

import pytest

from dbopt.catalog import Catalog, CatalogIndex, Relation
from dbopt.catalog.properties import IndexProperties, Properties, ViewProperties
from dbopt.errors import LockRefusal, OptionNeeded, SpecError
from dbopt.guard import Identity
from dbopt.history import OwnedObject
from dbopt.model import (
    IndexColumn,
    IndexSpec,
    Location,
    QualifiedName,
    SpecSet,
    ViewSpec,
    parse_qualified,
)
from dbopt.planner import Action, ActionKind, Plan, Step, StepMode, plan
from dbopt.plans import leftover_names, owned_relations, relevant

# --- a catalog by hand -----------------------------------------------------------------------

_oids = itertools.count(16384)


def qn(text: str) -> QualifiedName:
    return parse_qualified(text)


def rel(
    name: str,
    relkind: str = "r",
    *,
    columns: tuple[str, ...] = ("id", "customer_id", "status", "total"),
    partitions: tuple[str, ...] = (),
    is_partition: bool = False,
    owned: bool = True,
    definition: str | None = None,
    oid: int | None = None,
) -> Relation:
    """A table (``r``), partitioned table (``p``), materialized view (``m``) or view (``v``)."""
    return Relation(
        name=qn(name),
        relkind=relkind,
        is_partition=is_partition,
        owner="app" if owned else "someone_else",
        owned=owned,
        total_bytes=8192,
        estimated_rows=1000,
        columns=columns,
        partitions=tuple(qn(p) for p in partitions),
        populated=True if relkind == "m" else None,
        view_definition=definition,
        oid=next(_oids) if oid is None else oid,
    )


def idx(
    name: str,
    on: str,
    body: str = "USING btree (customer_id)",
    *,
    unique: bool = False,
    valid: bool = True,
    constraint: str | None = None,
    relkind: str = "i",
    oid: int | None = None,
) -> CatalogIndex:
    """An index as inspection reads it; ``body`` is its definition after ``ON table``."""
    table = qn(on)
    head = "CREATE UNIQUE INDEX" if unique else "CREATE INDEX"
    only = "ONLY " if relkind == "I" else ""
    return CatalogIndex(
        name=QualifiedName(table.schema, name),
        table=table,
        method=body.split()[1],
        definition=f"{head} {name} ON {only}{table} {body}",
        predicate=body.split(" WHERE ", 1)[1] if " WHERE " in body else None,
        is_unique=unique,
        has_expressions="((" in body,
        is_primary=False,
        is_valid=valid,
        is_ready=True,
        relkind=relkind,
        constraint_name=constraint,
        constraint_type="u" if constraint else None,
        size_bytes=8192,
        scans=0,
        oid=next(_oids) if oid is None else oid,
    )


def cat(
    *relations: Relation,
    indexes: Iterable[CatalogIndex] = (),
    dependents: Mapping[str, tuple[str, ...]] | None = None,
    names: Mapping[str, str] | None = None,
    types: Mapping[str, str] | None = None,
) -> Catalog:
    """A fully inspected catalog: ``names`` holds every relation and index (and ``names``)."""
    kinds = {"r": "table", "p": "partitioned table", "m": "materialized view", "v": "view"}
    index_list = list(indexes)
    all_names = {r.name: kinds[r.relkind] for r in relations}
    all_names |= {i.name: "index" for i in index_list}
    all_names |= {qn(n): k for n, k in (names or {}).items()}
    return Catalog(
        server_version=150000,
        relations={r.name: r for r in relations},
        indexes={i.name: i for i in index_list},
        dependents={qn(k): tuple(qn(d) for d in v) for k, v in (dependents or {}).items()},
        names=all_names,
        type_names={qn(n): k for n, k in (types or {}).items()},
    )


def spec(name: str, table: str, *columns: str | IndexColumn, **kw: object) -> IndexSpec:
    """An index spec; a column given as text is a plain column."""
    return IndexSpec(
        name=name,
        table=qn(table),
        columns=tuple(IndexColumn(name=c) if isinstance(c, str) else c for c in columns),
        location=Location(f"indexes/{qn(table).name}.yaml", 3, 5),
        **kw,  # type: ignore[arg-type]
    )


def view(name: str, query: str, *indexes: IndexSpec, depends_on: tuple[str, ...] = ()) -> ViewSpec:
    return ViewSpec(
        name=qn(name),
        query=query,
        location=Location(f"views/{qn(name).name}.yaml", 1, 1),
        indexes=indexes,
        depends_on=tuple(qn(d) for d in depends_on),
    )


def made(obj: CatalogIndex | Relation, *, run: int = 1, replaced: bool = False) -> OwnedObject:
    """What dbopt's history records for an object it made (by OID)."""
    if isinstance(obj, CatalogIndex):
        return OwnedObject("index", obj.name, obj.table, obj.oid, obj.definition, run, run)
    return OwnedObject("view", obj.name, obj.name, obj.oid, None, run, run, replaced=replaced)


def sql_of(steps: Iterable[Step]) -> list[str]:
    return [s.text() for s in steps]


def only(result: Plan, kind: ActionKind | None = None) -> Action:
    """The one change of the plan (of ``kind``)."""
    found = [a for a in result.actions if kind is None or a.kind == kind]
    assert len(found) == 1, [(a.kind, str(a.name)) for a in result.actions]
    return found[0]


def problems(caught: pytest.ExceptionInfo[SpecError]) -> list[str]:
    return [str(p) for p in caught.value.problems]


ORDERS = rel("orders")
BTREE_CUSTOMER = "USING btree (customer_id)"
CUSTOMER = spec("idx_orders_customer", "orders", "customer_id")


# --- create, skip, replace, repair -----------------------------------------------------------


def test_a_missing_index_is_built_concurrently_and_recorded_as_made() -> None:
    result = plan([CUSTOMER], cat(ORDERS), {})
    action = only(result)
    assert (action.kind, action.name, action.enabled, action.refusal) == (
        ActionKind.CREATE,
        qn("idx_orders_customer"),
        True,
        None,
    )
    assert action.reason == "in the specs, not in the database"
    (build,) = action.forward
    assert (build.mode, build.makes, build.safe, build.expect) == (StepMode.BUILD, True, True, ())
    assert build.text() == (
        'CREATE INDEX CONCURRENTLY "idx_orders_customer" ON "public"."orders" '
        'USING btree ("customer_id");'
    )
    assert sql_of(action.rollback) == [
        'DROP INDEX CONCURRENTLY IF EXISTS "public"."idx_orders_customer";'
    ]
    assert result.runnable == (action,) and result.blocked == () and result.refused == ()
    assert result.wants_properties == (frozenset(), frozenset())


def test_an_index_with_the_servers_definition_is_skipped() -> None:
    existing = idx("idx_orders_customer", "orders")
    result = plan([CUSTOMER], cat(ORDERS, indexes=[existing]), {existing.name: BTREE_CUSTOMER})
    action = only(result)
    assert action.kind == ActionKind.SKIP
    assert action.reason == "exists with exactly the specified definition"
    assert action.forward == () and action.existed_before
    assert result.changes == ()


def test_expression_partial_and_storage_specs_render_every_clause() -> None:
    fancy = spec(
        "idx_orders_fancy",
        "orders",
        IndexColumn(expr="lower(status)", order="desc", nulls="last"),
        "customer_id",
        unique=True,
        include=("total",),
        where="status <> 'shipped'",
        storage=(("fillfactor", "90"),),
    )
    (build,) = only(plan([fancy], cat(ORDERS), {})).forward
    assert build.text() == (
        'CREATE UNIQUE INDEX CONCURRENTLY "idx_orders_fancy" ON "public"."orders" USING btree '
        '((lower(status)) DESC NULLS LAST, "customer_id") INCLUDE ("total") '
        "WITH (\"fillfactor\" = '90') WHERE status <> 'shipped';"
    )
    # PostgreSQL 14+ lets other builds ignore only builds without expressions or WHERE.
    assert build.safe is False


@pytest.mark.parametrize(
    ("method", "column"),
    [
        ("hash", IndexColumn(name="status")),
        ("gist", IndexColumn(name="during")),
        ("spgist", IndexColumn(name="status", opclass="text_ops")),
        ("gin", IndexColumn(name="tags", opclass="array_ops")),
        ("brin", IndexColumn(name="created_at")),
    ],
)
def test_every_index_method_is_named_in_the_build(method: str, column: IndexColumn) -> None:
    made_spec = spec(f"idx_orders_{method}", "orders", column, method=method)
    (build,) = only(plan([made_spec], cat(ORDERS), {})).forward
    assert f'ON "public"."orders" USING {method} ("{column.name}"' in build.text()
    if column.opclass:
        assert f'"{column.name}" "{column.opclass}")' in build.text()


def test_drift_is_replaced_only_with_replace_drifted() -> None:
    existing = idx("idx_orders_customer", "orders", "USING btree (customer_id, status)")
    catalog = cat(ORDERS, indexes=[existing])
    normalized = {existing.name: BTREE_CUSTOMER}

    held = only(plan([CUSTOMER], catalog, normalized))
    assert (held.kind, held.enabled, held.needs) == (ActionKind.REPLACE, False, "replace_drifted")
    assert held.current == "USING btree (customer_id, status)"
    assert held.desired == BTREE_CUSTOMER
    assert held.diff() == (
        "--- database\n+++ spec\n@@ -1 +1 @@\n"
        "-USING btree (customer_id, status)\n+USING btree (customer_id)"
    )
    blocked = plan([CUSTOMER], catalog, normalized)
    assert blocked.blocked == (held,) and blocked.runnable == ()
    # Nothing to read for an action that will not run.
    assert blocked.wants_properties == (frozenset(), frozenset())

    result = plan([CUSTOMER], catalog, normalized, replace_drifted=True)
    action = only(result)
    assert (action.kind, action.enabled, action.needs, action.refusal) == (
        ActionKind.REPLACE,
        True,
        None,
        None,
    )
    assert (action.replaced_oid, action.previous_definition) == (existing.oid, existing.definition)
    # Before it runs, the planner asks for what the old index carries.
    assert result.wants_properties == (frozenset({existing.oid}), frozenset())
    assert [s.mode for s in action.forward] == [StepMode.BUILD, StepMode.SWAP, StepMode.DROP]
    assert sql_of(action.forward) == [
        'CREATE INDEX CONCURRENTLY "idx_orders_customer_dbopt_new" ON "public"."orders" '
        'USING btree ("customer_id");',
        "BEGIN;\n"
        'ALTER INDEX "public"."idx_orders_customer" RENAME TO "idx_orders_customer_dbopt_old";\n'
        'ALTER INDEX "public"."idx_orders_customer_dbopt_new" RENAME TO "idx_orders_customer";\n'
        "COMMIT;",
        'DROP INDEX CONCURRENTLY IF EXISTS "public"."idx_orders_customer_dbopt_old";',
    ]


def test_a_replace_of_an_expression_index_analyzes_before_the_swap() -> None:
    day = spec("idx_orders_day", "orders", IndexColumn(expr="date(created_at)"))
    existing = idx("idx_orders_day", "orders", "USING btree (created_at)")
    action = only(
        plan(
            [day],
            cat(ORDERS, indexes=[existing]),
            {existing.name: "USING btree (date(created_at))"},
            replace_drifted=True,
        )
    )
    modes = [s.mode for s in action.forward]
    assert modes == [StepMode.BUILD, StepMode.DDL, StepMode.SWAP, StepMode.DROP]
    assert action.forward[1].text() == 'ANALYZE "public"."orders";'


def test_a_replace_carries_what_the_old_index_carries_or_refuses() -> None:
    existing = idx("idx_orders_customer", "orders", "USING btree (customer_id, status)")
    catalog = cat(ORDERS, indexes=[existing])
    normalized = {existing.name: BTREE_CUSTOMER}
    carried = IndexProperties(
        oid=existing.oid,
        comment="who reads it",
        tablespace=None,
        clustered=True,
        replica_identity=False,
        has_expressions=False,
        not_null_columns=("id",),
        stat_targets=(),
        extension=None,
        security_labels=0,
        partition_of=None,
        dependents=(),
    )
    properties = Properties({existing.oid: carried}, {})
    action = only(
        plan([CUSTOMER], catalog, normalized, properties=properties, replace_drifted=True)
    )
    assert action.refusal is None
    assert action.reason == "the definition drifted from the spec; carries over comment, CLUSTER ON"
    (swap,) = [s for s in action.forward if s.mode == StepMode.SWAP]
    assert [s.as_string() for s in swap.then] == [
        'COMMENT ON INDEX "public"."idx_orders_customer" IS \'who reads it\'',
        'ALTER TABLE "public"."orders" CLUSTER ON "idx_orders_customer"',
    ]
    # REPLICA IDENTITY needs a unique index on NOT NULL columns: the new one is neither.
    refused = replace(carried, clustered=False, comment=None, replica_identity=True)
    action = only(
        plan(
            [CUSTOMER],
            catalog,
            normalized,
            properties=Properties({existing.oid: refused}, {}),
            replace_drifted=True,
        )
    )
    assert action.refusal == (
        "index public.idx_orders_customer: it is its table's REPLICA IDENTITY index and the new "
        "definition is not unique"
    )


def test_drift_of_a_constraint_index_is_a_spec_error() -> None:
    existing = idx("orders_customer_key", "orders", unique=True, constraint="orders_customer_key")
    wanted = spec("orders_customer_key", "orders", "customer_id", "status", unique=True)
    with pytest.raises(SpecError) as caught:
        plan(
            [wanted],
            cat(ORDERS, indexes=[existing]),
            {existing.name: "UNIQUE USING btree (customer_id, status)"},
            replace_drifted=True,
        )
    assert problems(caught) == [
        "indexes/orders.yaml:3:5: index orders_customer_key differs from the database, but there "
        "it backs constraint orders_customer_key; dbopt does not change constraint indexes: "
        "choose another name"
    ]


def test_an_invalid_index_dbopt_made_is_repaired() -> None:
    broken = idx("idx_orders_customer", "orders", valid=False)
    action = only(
        plan(
            [CUSTOMER], cat(ORDERS, indexes=[broken]), {broken.name: BTREE_CUSTOMER}, [made(broken)]
        )
    )
    assert (action.kind, action.refusal, action.existed_before) == (ActionKind.REPAIR, None, False)
    drop, build = action.forward
    assert drop.text() == 'DROP INDEX CONCURRENTLY IF EXISTS "public"."idx_orders_customer";'
    (identity,) = drop.expect
    assert (identity.oid, identity.invalid, identity.origin) == (
        broken.oid,
        True,
        "made by dbopt run 1",
    )
    assert build.makes and build.mode == StepMode.BUILD


def test_an_invalid_index_dbopt_did_not_make_is_refused_never_dropped() -> None:
    theirs = idx("idx_orders_customer", "orders", valid=False)
    result = plan([CUSTOMER], cat(ORDERS, indexes=[theirs]), {theirs.name: BTREE_CUSTOMER})
    action = only(result)
    assert action.kind == ActionKind.REPAIR and action.existed_before
    assert action.refusal is not None
    assert "is INVALID and dbopt did not make it" in action.refusal
    assert 'DROP INDEX CONCURRENTLY IF EXISTS "public"."idx_orders_customer"' in action.refusal
    assert result.refused == (action,)


# --- refusals up front -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sequence", "table", "view", "composite type"])
def test_a_name_taken_by_another_relation_is_a_spec_error(kind: str) -> None:
    catalog = cat(ORDERS, names={"idx_orders_customer": kind})
    with pytest.raises(SpecError) as caught:
        plan([CUSTOMER], catalog, {})
    assert problems(caught) == [
        "indexes/orders.yaml:3:5: index idx_orders_customer: the name "
        f"public.idx_orders_customer is taken by a {kind}: rename one of them"
    ]


def test_an_index_of_that_name_on_another_table_is_a_spec_error() -> None:
    other = rel("customers")
    namesake = idx("idx_orders_customer", "customers", "USING btree (id)")
    with pytest.raises(SpecError) as caught:
        plan([CUSTOMER], cat(ORDERS, other, indexes=[namesake]), {})
    assert problems(caught) == [
        "indexes/orders.yaml:3:5: index idx_orders_customer is meant for public.orders but "
        "public.customers has an index of that name: rename one of them"
    ]


def test_an_index_spec_on_a_plain_view_or_a_missing_table_is_a_spec_error() -> None:
    plain = rel("v_orders", "v", definition=" SELECT orders.id FROM orders;")
    on_view = spec("idx_v_orders", "v_orders", "id")
    missing = spec("idx_gone", "gone", "id")
    with pytest.raises(SpecError) as caught:
        plan([on_view, missing], cat(ORDERS, plain), {})
    # Every problem at once, each at its spec.
    assert problems(caught) == [
        "indexes/v_orders.yaml:3:5: public.v_orders is a view: indexes go on tables and "
        "materialized views",
        "indexes/gone.yaml:3:5: table public.gone does not exist",
    ]


def test_the_plan_notes_tables_this_role_does_not_own() -> None:
    theirs = rel("orders", owned=False)
    result = plan([CUSTOMER], cat(theirs), {})
    assert result.notes == (
        "this role does not own public.orders: apply must run as their owner (or a member of it)",
    )


# --- ownership is by OID ---------------------------------------------------------------------


def test_prune_drops_an_index_dbopt_made_and_only_with_prune() -> None:
    mine = idx("idx_orders_old", "orders", "USING btree (status)")
    catalog = cat(ORDERS, indexes=[mine])

    held = only(plan([], catalog, {}, [made(mine)]))
    assert (held.kind, held.enabled, held.needs) == (ActionKind.DROP, False, "prune")
    assert held.reason == "created by dbopt and no longer in the specs"

    action = only(plan([], catalog, {}, [made(mine)], prune=True))
    assert (action.kind, action.enabled, action.needs, action.refusal) == (
        ActionKind.DROP,
        True,
        None,
        None,
    )
    (drop,) = action.forward
    assert drop.text() == 'DROP INDEX CONCURRENTLY IF EXISTS "public"."idx_orders_old";'
    assert drop.expect == (
        Identity(
            "index",
            mine.name,
            oid=mine.oid,
            table=mine.table,
            definition="USING btree (status)",
            origin="made by dbopt run 1",
        ),
    )
    # What a rollback of the drop would rebuild, for people to read.
    assert sql_of(action.rollback) == [
        'CREATE INDEX CONCURRENTLY "idx_orders_old" ON public.orders USING btree (status);'
    ]


def test_prune_never_drops_a_namesake_with_another_oid() -> None:
    mine = idx("idx_orders_old", "orders", "USING btree (status)")
    namesake = replace(mine, oid=next(_oids))  # dropped and made again by hand
    result = plan([], cat(ORDERS, indexes=[namesake]), {}, [made(mine)], prune=True)
    assert result.actions == ()


def test_prune_never_drops_what_dbopt_made_but_someone_renamed() -> None:
    """Renaming dbopt's index by hand says someone means to keep it: it is theirs now."""
    mine = idx("idx_orders_old", "orders", "USING btree (status)")
    renamed = replace(mine, name=qn("idx_orders_keep"))  # same OID, another name
    assert plan([], cat(ORDERS, indexes=[renamed]), {}, [made(mine)], prune=True).actions == ()


def test_prune_never_drops_what_dbopt_made_on_another_table() -> None:
    mine = idx("idx_orders_old", "orders", "USING btree (status)")
    moved = replace(mine, table=qn("customers"))  # same OID, another table: not the same fact
    catalog = cat(ORDERS, rel("customers"), indexes=[moved])
    assert plan([], catalog, {}, [made(mine)], prune=True).actions == ()


def test_a_name_only_record_counts_only_with_a_matching_definition() -> None:
    """dbopt 0.1 recorded names, not OIDs: the name alone proves nothing."""
    mine = idx("idx_orders_old", "orders", "USING btree (status)")
    catalog = cat(ORDERS, indexes=[mine])
    by_name = OwnedObject("index", mine.name, mine.table, None, mine.definition, 1, 1)
    assert only(plan([], catalog, {}, [by_name], prune=True)).kind == ActionKind.DROP
    other_definition = replace(by_name, definition="USING btree (customer_id)")
    no_definition = replace(by_name, definition=None)
    for fact in (other_definition, no_definition):
        assert plan([], catalog, {}, [fact], prune=True).actions == ()


def test_a_swapped_out_index_is_dbopts_only_under_its_temporary_name() -> None:
    old = idx("idx_orders_customer_dbopt_old", "orders", "USING btree (customer_id, status)")
    fact = replace(made(old), replaced=True)
    action = only(plan([], cat(ORDERS, indexes=[old]), {}, [fact], prune=True))
    assert action.kind == ActionKind.DROP
    assert action.reason == "left under dbopt's temporary name by an interrupted replace"
    renamed = replace(old, name=qn("idx_orders_kept"))  # renamed by hand: theirs now
    assert plan([], cat(ORDERS, indexes=[renamed]), {}, [fact], prune=True).actions == ()


def test_what_a_plan_inspects_holds_a_swapped_out_index_table_but_no_temporary_name() -> None:
    """Inspection sizes and deparses only what the specs name and what dbopt made: a swapped-out
    index (under its temporary name until its drop) still names its table, whichever specs
    there are (seen in a seventh review: its table out of the specs, its leftover was never
    inspected, so never pruned); a swapped-out view and anything under a temporary name are
    read apart instead (leftover_names), never named."""
    old_index = OwnedObject(
        "index", qn("idx_appt_dbopt_old"), qn("appointments"), 7, None, 1, 1, replaced=True
    )
    # A swapped-out view's fact carries the view's own name (history_owned.sql).
    old_view = OwnedObject("view", qn("mv_sales"), qn("mv_sales"), 8, None, 1, 1, replaced=True)
    on_leftover = OwnedObject("index", qn("mv_i"), qn("mv_revenue_dbopt_new"), 9, None, 1, 1)
    assert owned_relations([old_index, old_view, on_leftover]) == {qn("appointments")}
    for specs in (SpecSet(), SpecSet(views=(REVENUE,))):
        assert owned_relations([old_index, old_view, on_leftover]) <= relevant(
            specs, [old_index, old_view, on_leftover]
        )
        assert qn("mv_sales") not in relevant(specs, [old_index, old_view])
    revenue = {qn("mv_revenue_dbopt_new"), qn("mv_revenue_dbopt_old")}
    assert leftover_names(SpecSet(), [on_leftover]) == revenue
    assert leftover_names(SpecSet(), [old_view]) == {
        qn("mv_sales_dbopt_new"),
        qn("mv_sales_dbopt_old"),
    }


def test_a_temporary_name_dbopt_has_no_record_of_is_noted_and_left() -> None:
    leftover = idx("idx_orders_customer_dbopt_new", "orders")
    result = plan([], cat(ORDERS, indexes=[leftover]), {}, prune=True)
    assert result.actions == ()
    (note,) = result.notes
    assert note.startswith(
        "public.idx_orders_customer_dbopt_new has one of dbopt's temporary names but dbopt has "
        "no record of making it"
    )


def test_a_replace_refuses_when_its_temporary_name_is_someone_elses() -> None:
    existing = idx("idx_orders_customer", "orders", "USING btree (customer_id, status)")
    squatter = idx("idx_orders_customer_dbopt_new", "orders", "USING btree (status)")
    action = only(
        plan(
            [CUSTOMER],
            cat(ORDERS, indexes=[existing, squatter]),
            {existing.name: BTREE_CUSTOMER},
            replace_drifted=True,
        ),
        ActionKind.REPLACE,
    )
    assert action.refusal == (
        "an index named public.idx_orders_customer_dbopt_new exists on public.orders and dbopt "
        "did not make it: rename or drop it by hand"
    )


def test_a_drop_is_refused_when_something_depends_on_the_index() -> None:
    mine = idx("idx_orders_old", "orders", "USING btree (status)")
    props = IndexProperties(
        oid=mine.oid,
        comment=None,
        tablespace=None,
        clustered=False,
        replica_identity=False,
        has_expressions=False,
        not_null_columns=(),
        stat_targets=(),
        extension=None,
        security_labels=0,
        partition_of=None,
        dependents=("constraint fk_orders_status on table public.returns",),
    )
    action = only(
        plan(
            [],
            cat(ORDERS, indexes=[mine]),
            {},
            [made(mine)],
            prune=True,
            properties=Properties({mine.oid: props}, {}),
        )
    )
    assert action.refusal == (
        "index public.idx_orders_old cannot be dropped: constraint fk_orders_status on table "
        "public.returns depends on it"
    )


# --- partitioned tables ----------------------------------------------------------------------

EVENTS = rel(
    "events", "p", columns=("id", "day", "kind"), partitions=("events_2025", "events_2026")
)
EVENTS_2025 = rel("events_2025", columns=("id", "day", "kind"), is_partition=True)
EVENTS_2026 = rel("events_2026", columns=("id", "day", "kind"), is_partition=True)
DAY_KIND = spec("idx_events_day_kind", "events", "day", "kind")


def test_a_partitioned_table_gets_on_only_then_each_partition_concurrently_then_attach() -> None:
    action = only(plan([DAY_KIND], cat(EVENTS, EVENTS_2025, EVENTS_2026), {}))
    assert [s.mode for s in action.forward] == [
        StepMode.DDL,
        StepMode.BUILD,
        StepMode.DDL,
        StepMode.BUILD,
        StepMode.DDL,
    ]
    assert sql_of(action.forward) == [
        'CREATE INDEX "idx_events_day_kind" ON ONLY "public"."events" USING btree ("day", "kind");',
        'CREATE INDEX CONCURRENTLY "events_2025_idx_events_day_kind" ON "public"."events_2025" '
        'USING btree ("day", "kind");',
        'ALTER INDEX "public"."idx_events_day_kind" ATTACH PARTITION '
        '"public"."events_2025_idx_events_day_kind";',
        'CREATE INDEX CONCURRENTLY "events_2026_idx_events_day_kind" ON "public"."events_2026" '
        'USING btree ("day", "kind");',
        'ALTER INDEX "public"."idx_events_day_kind" ATTACH PARTITION '
        '"public"."events_2026_idx_events_day_kind";',
    ]
    assert [s.makes for s in action.forward] == [True, True, False, True, False]
    # Dropping it again: DROP INDEX CONCURRENTLY is refused on a partitioned index.
    assert sql_of(action.rollback) == ['DROP INDEX IF EXISTS "public"."idx_events_day_kind";']


def test_an_index_of_a_partitioned_table_is_pruned_without_concurrently_and_never_replaced() -> (
    None
):
    parent = idx("idx_events_day_kind", "events", "USING btree (day)", relkind="I")
    catalog = cat(EVENTS, EVENTS_2025, EVENTS_2026, indexes=[parent])
    drop = only(plan([], catalog, {}, [made(parent)], prune=True))
    assert sql_of(drop.forward) == ['DROP INDEX IF EXISTS "public"."idx_events_day_kind";']
    assert drop.forward[0].expect[0].oid == parent.oid

    replace_action = only(
        plan(
            [DAY_KIND],
            catalog,
            {parent.name: "USING btree (day, kind)"},
            replace_drifted=True,
        )
    )
    assert replace_action.refusal is not None
    assert replace_action.refusal.startswith(
        "index public.idx_events_day_kind is on partitioned table public.events: replacing an "
        "index of a partitioned table is not supported yet"
    )


# --- materialized views ----------------------------------------------------------------------

REVENUE_SQL = "SELECT customer_id, sum(total) AS revenue FROM orders GROUP BY customer_id"
REVENUE_DEF = (
    " SELECT orders.customer_id,\n    sum(orders.total) AS revenue\n   FROM orders\n"
    "  GROUP BY orders.customer_id;"
)
REVENUE_ID = spec("mv_revenue_customer", "mv_revenue", "customer_id", unique=True)
REVENUE = view("mv_revenue", REVENUE_SQL, REVENUE_ID)
TOP = view(
    "mv_top",
    "SELECT customer_id FROM mv_revenue WHERE revenue > 100",
    depends_on=("mv_revenue",),
)


def mv(name: str, definition: str = REVENUE_DEF, **kw: object) -> Relation:
    return rel(name, "m", columns=("customer_id", "revenue"), definition=definition, **kw)  # type: ignore[arg-type]


def test_a_view_is_created_with_its_indexes() -> None:
    action = only(plan([], cat(ORDERS), {}, views=[REVENUE]))
    assert (action.kind, action.object_type, action.phase) == (ActionKind.CREATE, "view", 1)
    assert action.also_creates == (qn("mv_revenue_customer"),)
    assert [s.mode for s in action.forward] == [StepMode.VIEW, StepMode.BUILD]
    create, index = sql_of(action.forward)
    assert create.startswith('CREATE MATERIALIZED VIEW "public"."mv_revenue" AS SELECT')
    assert index == (
        'CREATE UNIQUE INDEX CONCURRENTLY "mv_revenue_customer" ON "public"."mv_revenue" '
        'USING btree ("customer_id");'
    )
    assert sql_of(action.rollback) == ['DROP MATERIALIZED VIEW IF EXISTS "public"."mv_revenue";']


def test_views_are_created_in_dependency_order_whatever_the_spec_order() -> None:
    for views in ([REVENUE, TOP], [TOP, REVENUE]):
        result = plan([], cat(ORDERS), {}, views=views)
        assert [str(a.name) for a in result.actions] == ["public.mv_revenue", "public.mv_top"]


def test_an_unchanged_view_is_skipped_and_its_indexes_planned_after_every_view() -> None:
    existing = mv("mv_revenue")
    result = plan(
        [CUSTOMER],
        cat(ORDERS, existing),
        {},
        views=[REVENUE],
        normalized_views={existing.name: REVENUE_DEF},
    )
    assert [(a.kind, str(a.name), a.phase) for a in result.actions] == [
        (ActionKind.CREATE, "public.idx_orders_customer", 0),
        (ActionKind.SKIP, "public.mv_revenue", 1),
        (ActionKind.CREATE, "public.mv_revenue_customer", 2),
    ]


def test_a_drifted_view_is_replaced_only_with_replace_drifted() -> None:
    existing = mv("mv_revenue", REVENUE_DEF.replace("sum(", "max("))
    catalog = cat(ORDERS, existing)
    normalized = {existing.name: REVENUE_DEF}

    held = only(plan([], catalog, {}, views=[REVENUE], normalized_views=normalized))
    assert (held.kind, held.enabled, held.needs) == (ActionKind.REPLACE, False, "replace_drifted")

    result = plan(
        [], catalog, {}, views=[REVENUE], normalized_views=normalized, replace_drifted=True
    )
    action = only(result)
    assert (action.kind, action.enabled, action.refusal) == (ActionKind.REPLACE, True, None)
    assert result.wants_properties == (frozenset(), frozenset({existing.oid}))
    assert [s.mode for s in action.forward] == [
        StepMode.VIEW,
        StepMode.BUILD,
        StepMode.SWAP,
        StepMode.VIEW,
    ]
    build_aside, index_aside, swap, drop_old = action.forward
    assert build_aside.text().startswith(
        'CREATE MATERIALIZED VIEW "public"."mv_revenue_dbopt_new" AS SELECT'
    )
    assert (
        '"mv_revenue_customer_dbopt_new" ON "public"."mv_revenue_dbopt_new"' in index_aside.text()
    )
    assert swap.expect[0] == Identity("view", qn("mv_revenue_dbopt_old"), oid=existing.oid)
    assert drop_old.text() == 'DROP MATERIALIZED VIEW IF EXISTS "public"."mv_revenue_dbopt_old";'
    assert drop_old.expect == (
        Identity("view", qn("mv_revenue_dbopt_old"), oid=existing.oid, upfront=False),
    )


def test_replacing_a_view_others_read_needs_cascade_and_rebinds_them() -> None:
    existing = mv("mv_revenue", REVENUE_DEF.replace("sum(", "max("))
    reader = rel(
        "v_big_customers", "v", definition=" SELECT mv_revenue.customer_id FROM mv_revenue;"
    )
    catalog = cat(ORDERS, existing, reader, dependents={"mv_revenue": ("v_big_customers",)})
    normalized = {existing.name: REVENUE_DEF}
    # Without --replace-drifted nothing would run: no refusal yet.
    held = only(plan([], catalog, {}, views=[REVENUE], normalized_views=normalized))
    assert not held.enabled

    with pytest.raises(OptionNeeded) as caught:
        plan([], catalog, {}, views=[REVENUE], normalized_views=normalized, replace_drifted=True)
    assert caught.value.option == "cascade"
    assert str(caught.value) == (
        "materialized view public.mv_revenue must be replaced but public.v_big_customers depends "
        "on it: rebuilding it too must be asked for (the plan lists it), or drop it first"
    )

    action = only(
        plan(
            [],
            catalog,
            {},
            views=[REVENUE],
            normalized_views=normalized,
            replace_drifted=True,
            cascade=True,
        )
    )
    assert (
        action.reason
        == "the query drifted from the spec; rebuilds what reads it: public.v_big_customers"
    )
    (swap,) = [s for s in action.forward if s.mode == StepMode.SWAP]
    assert swap.text().splitlines()[-2] == (
        'CREATE OR REPLACE VIEW "public"."v_big_customers" AS SELECT mv_revenue.customer_id FROM '
        "mv_revenue;"
    )


def test_prune_drops_a_view_dbopt_made_with_its_indexes_in_one_step() -> None:
    existing = mv("mv_revenue")
    its_index = idx("mv_revenue_customer", "mv_revenue", unique=True)
    catalog = cat(ORDERS, existing, indexes=[its_index])
    owned = [made(existing), made(its_index)]

    held = only(plan([], catalog, {}, owned))
    assert (held.kind, held.object_type, held.needs) == (ActionKind.DROP, "view", "prune")

    action = only(plan([], catalog, {}, owned, prune=True))  # the index goes with its view
    assert (action.kind, action.enabled, action.refusal) == (ActionKind.DROP, True, None)
    (drop,) = action.forward
    assert drop.text() == 'DROP MATERIALIZED VIEW IF EXISTS "public"."mv_revenue";'
    assert drop.expect == (
        Identity(
            "view",
            existing.name,
            oid=existing.oid,
            definition=REVENUE_DEF,
            origin="made by dbopt run 1",
        ),
    )
    assert action.previous_state == {
        "indexes": [{"name": "mv_revenue_customer", "definition": its_index.definition}]
    }


def test_a_view_others_read_is_never_pruned_and_a_namesake_never_dropped() -> None:
    existing = mv("mv_revenue")
    reader = rel("v_reader", "v", definition=" SELECT 1;")
    catalog = cat(ORDERS, existing, reader, dependents={"mv_revenue": ("v_reader",)})
    action = only(plan([], catalog, {}, [made(existing)], prune=True))
    assert action.refusal == (
        "materialized view public.mv_revenue cannot be dropped: public.v_reader depends on it: "
        "drop it first (dbopt never drops objects it did not create)"
    )
    namesake = replace(existing, oid=next(_oids))
    assert plan([], cat(ORDERS, namesake), {}, [made(existing)], prune=True).actions == ()


def test_a_refusal_that_is_only_a_lock_not_granted_says_try_again() -> None:
    """A view read apart whose definition a held lock kept unread: its drop is refused, and
    the plan says the refusal is only that lock (exit 3, try again); one more reason of
    another kind (a reader depending on it) makes it a refusal proper (exit 2)."""
    unread = replace(mv("mv_revenue"), view_definition=None, inspected=True)
    result = plan([], cat(ORDERS, unread), {}, [made(unread)], prune=True)
    action = only(result)
    assert action.refusal is not None and "could not be read" in action.refusal
    assert isinstance(action.refusal, LockRefusal) and result.refused_for_locks
    reader = rel("v_reader", "v", definition=" SELECT 1;")
    catalog = cat(ORDERS, unread, reader, dependents={"mv_revenue": ("v_reader",)})
    result = plan([], catalog, {}, [made(unread)], prune=True)
    assert only(result).refusal is not None and not result.refused_for_locks
    assert not plan([], cat(ORDERS), {}, views=[REVENUE]).refused_for_locks  # none refused


def test_a_reader_that_could_not_be_tried_for_a_lock_is_a_lock_refusal() -> None:
    """livecheck's rebinding answers reach the plan as they are: a LockRefusal alone refuses
    it for a lock (exit 3), with any other answer beside it not (exit 2)."""
    existing = mv("mv_revenue", REVENUE_DEF.replace("sum(", "max("))
    reader = rel("v_reader", "v", definition=" SELECT 1;")
    catalog = cat(ORDERS, existing, reader, dependents={"mv_revenue": ("v_reader",)})
    lock = LockRefusal("the view public.v_reader ... could not try it: a lock ...: try again")

    def replaced(*answers: str) -> Plan:
        return plan(
            [],
            catalog,
            {},
            views=[REVENUE],
            normalized_views={existing.name: REVENUE_DEF},
            replace_drifted=True,
            cascade=True,
            view_rebinding={existing.name: list(answers)},
        )

    assert replaced(lock).refused_for_locks
    assert not replaced(lock, "the view public.v_reader would change its column").refused_for_locks
    assert not replaced().refused


def test_an_unread_leftover_is_a_lock_refusal_only_when_it_is_dbopts() -> None:
    """What an interrupted replace of dbopt's left under a temporary name, unread: try again
    (exit 3). One dbopt has no record of making is refused as taken whatever is held (seen in
    a review: it said "try again" and exit 3, and the next try refused with exit 2)."""
    existing = mv("mv_revenue", REVENUE_DEF.replace("sum(", "max("))
    left = replace(mv("mv_revenue_dbopt_new"), view_definition=None, inspected=True)
    normalized = {existing.name: REVENUE_DEF}

    def replaced(owned: list[OwnedObject]) -> Plan:
        return plan(
            [],
            cat(ORDERS, existing, left),
            {},
            owned,
            views=[REVENUE],
            normalized_views=normalized,
            replace_drifted=True,
        )

    ours = replaced([made(left)])
    assert "mv_revenue_dbopt_new could not be read" in (only(ours).refusal or "")
    assert ours.refused_for_locks
    # Its indexes were not read either: one under a temporary index name is likely its own
    # (seen in a review: "taken by an index", exit 2, where trying again went through).
    with_index = plan(
        [],
        cat(ORDERS, existing, left, names={"mv_revenue_customer_dbopt_new": "index"}),
        {},
        [made(left)],
        views=[REVENUE],
        normalized_views=normalized,
        replace_drifted=True,
    )
    assert with_index.refused_for_locks, only(with_index).refusal
    theirs = replaced([])
    assert "is taken by a materialized view that dbopt has no record of making" in (
        only(theirs).refusal or ""
    )
    assert theirs.refused and not theirs.refused_for_locks


def test_a_view_name_taken_by_a_type_or_another_relation_is_a_spec_error() -> None:
    with pytest.raises(SpecError) as caught:
        plan([], cat(ORDERS, types={"mv_revenue": "domain"}), {}, views=[REVENUE])
    assert problems(caught) == [
        "views/mv_revenue.yaml:1:1: public.mv_revenue is taken by a domain: choose another name"
    ]
    with pytest.raises(SpecError) as caught:
        plan([], cat(ORDERS, rel("mv_revenue")), {}, views=[REVENUE])
    assert problems(caught) == [
        "views/mv_revenue.yaml:1:1: public.mv_revenue already exists as a table: "
        "choose another name"
    ]


def test_a_replace_refuses_what_the_old_view_carries_that_cannot_be_kept() -> None:
    existing = mv("mv_revenue", REVENUE_DEF.replace("sum(", "max("))
    props = ViewProperties(
        oid=existing.oid,
        owner="app",
        current_role="app",
        comment=None,
        tablespace=None,
        reloptions=(),
        populated=True,
        grants=(),
        column_comments=(("revenue", "in cents"),),
        stat_targets=(),
        storage=(),
        clustered_index=None,
        default_grantees=(),
        statistics=(),
        extension=None,
        security_labels=0,
        dependents=(),
    )
    action = only(
        plan(
            [],
            cat(ORDERS, existing),
            {},
            views=[REVENUE],
            normalized_views={existing.name: REVENUE_DEF},
            view_columns={existing.name: ("customer_id", "total")},
            properties=Properties({}, {existing.oid: props}),
            replace_drifted=True,
        )
    )
    assert action.refusal == (
        "materialized view public.mv_revenue: column revenue has a comment, but the new query "
        "has no such column"
    )


# --- the plan as a whole ---------------------------------------------------------------------


def _everything() -> tuple[list[IndexSpec], Catalog, dict[QualifiedName, str], list[OwnedObject]]:
    """One catalog where every kind of action happens (with --replace-drifted --prune)."""
    customers = rel("customers", columns=("id", "name"))
    broken = idx("idx_orders_status", "orders", "USING btree (status)", valid=False)
    drifted = idx("idx_customers_name", "customers", "USING btree (id)")
    same = idx("idx_orders_customer", "orders")
    stale = idx("idx_orders_total", "orders", "USING btree (total)")
    old_view = mv("mv_old")
    catalog = cat(
        ORDERS,
        customers,
        EVENTS,
        EVENTS_2025,
        EVENTS_2026,
        old_view,
        indexes=[broken, drifted, same, stale],
    )
    specs = [
        CUSTOMER,
        spec("idx_orders_status", "orders", "status"),
        spec("idx_customers_name", "customers", "name"),
        spec("idx_orders_created", "orders", "created_at"),
        DAY_KIND,
    ]
    normalized = {
        same.name: BTREE_CUSTOMER,
        broken.name: "USING btree (status)",
        drifted.name: "USING btree (name)",
    }
    return specs, catalog, normalized, [made(broken), made(stale), made(old_view)]


def test_actions_are_ordered_by_phase_table_kind_and_name_whatever_the_input_order() -> None:
    specs, catalog, normalized, owned = _everything()
    first = plan(
        specs,
        catalog,
        normalized,
        owned,
        views=[REVENUE, TOP],
        replace_drifted=True,
        prune=True,
    )
    got = [(str(a.kind), str(a.name)) for a in first.actions]
    expected = [
        ("replace", "public.idx_customers_name"),
        ("create", "public.idx_events_day_kind"),
        ("repair", "public.idx_orders_status"),
        ("create", "public.idx_orders_created"),
        ("drop", "public.idx_orders_total"),
        ("skip", "public.idx_orders_customer"),
        ("create", "public.mv_revenue"),
        ("create", "public.mv_top"),
        ("drop", "public.mv_old"),
    ]
    assert got == expected
    shuffled = random.Random(7)
    for _ in range(5):
        specs_again, views_again = list(specs), [REVENUE, TOP]
        shuffled.shuffle(specs_again)
        shuffled.shuffle(views_again)
        again = plan(
            specs_again,
            catalog,
            normalized,
            list(reversed(owned)),
            views=views_again,
            replace_drifted=True,
            prune=True,
        )
        assert [(str(a.kind), str(a.name)) for a in again.actions] == expected


def _destructive(step: Step) -> bool:
    """Drops and renames: what the guard must check the identity of before it runs."""
    first = step.statements[0].as_string()
    return step.mode in (StepMode.DROP, StepMode.SWAP) or first.startswith("DROP")


def test_every_destructive_step_names_what_it_acts_on() -> None:
    specs, catalog, normalized, owned = _everything()
    drifted_view = mv("mv_revenue", REVENUE_DEF.replace("sum(", "max("))
    catalog = replace(catalog, relations={**catalog.relations, drifted_view.name: drifted_view})
    result = plan(
        specs,
        catalog,
        normalized,
        owned,
        views=[REVENUE],
        normalized_views={drifted_view.name: REVENUE_DEF},
        replace_drifted=True,
        prune=True,
    )
    destructive = [(a, s) for a in result.actions for s in a.forward if _destructive(s)]
    kinds = {a.kind for a, _ in destructive}
    assert kinds == {ActionKind.REPAIR, ActionKind.REPLACE, ActionKind.DROP}
    for action, step in destructive:
        assert step.expect, (action.kind, str(action.name), step.text())
        # An identity either pins the OID or is the object this action built itself.
        for identity in step.expect:
            assert identity.oid is not None or identity.built_as is not None, step.text()
    # Builds never need one: they make, they do not touch.
    for action in result.actions:
        for step in action.forward:
            if step.mode == StepMode.BUILD:
                assert step.expect == (), step.text()


@pytest.mark.parametrize(
    ("definition", "expected"),
    [
        (
            "CREATE INDEX i ON public.t USING btree (a) WITH (fillfactor='80', "
            "deduplicate_items=off)",
            "USING btree (a) WITH (deduplicate_items=off, fillfactor='80')",
        ),
        # A string that says WITH is an expression's, never the storage clause.
        (
            "CREATE INDEX i ON public.t USING btree (c) WHERE ((c = ' WITH (b=1, a=2)'::text))",
            "USING btree (c) WHERE ((c = ' WITH (b=1, a=2)'::text))",
        ),
        (
            "CREATE INDEX i ON public.t USING btree (c) WITH (fillfactor='80', "
            "deduplicate_items=off) WHERE ((c = ' WITH (b=1, a=2)'::text))",
            "USING btree (c) WITH (deduplicate_items=off, fillfactor='80') "
            "WHERE ((c = ' WITH (b=1, a=2)'::text))",
        ),
        (
            "CREATE UNIQUE INDEX i ON public.t USING btree (\"we(ird\") WITH (z=1, a='2, 3')",
            "UNIQUE USING btree (\"we(ird\") WITH (a='2, 3', z=1)",
        ),
    ],
)
def test_canonical_lists_storage_parameters_by_name(definition: str, expected: str) -> None:
    from dbopt.deparse import canonical

    assert canonical(definition) == expected


def test_replaces_that_put_in_place_what_a_later_replace_rebuilds_are_refused() -> None:
    """Seen in a second review: a view replaced first (its new query reads another table)
    that a later replace's cascade would rebuild from the old one failed that replace after
    its builds; and one that two replaces both rebuild. The later one is refused, naming
    which comes first."""
    a_rep, revenue, count, top = (
        QualifiedName("public", n) for n in ("a_rep", "mv_revenue", "mv_count", "mv_top")
    )

    def replace_of(name: QualifiedName, *rebuilds: QualifiedName) -> Action:
        return Action(
            kind=ActionKind.REPLACE,
            name=name,
            table=name,
            reason="the query drifted from the spec",
            object_type="view",
            also_rebuilds=tuple(("view", r, name, 1, True) for r in rebuilds),
        )

    first = Plan((replace_of(a_rep), replace_of(revenue, a_rep))).refusing_shared_rebuilds()
    assert [a.refusal for a in first.actions] == [
        None,
        "materialized view public.mv_revenue: this run's replace of public.a_rep puts a new "
        "public.a_rep in place first, which this replace would rebuild again from the one there "
        "now: run them one at a time (--index public.a_rep, then --index public.mv_revenue)",
    ]
    both = Plan((replace_of(count, top), replace_of(revenue, top), replace_of(top)))
    refused = [a.refusal or "" for a in both.refusing_shared_rebuilds().actions]
    assert refused[0] == ""
    assert "replace of public.mv_count puts a new public.mv_top in place first" in refused[1]
    assert "which this replace would replace again" in refused[2]
    # Not run (it needs a flag): nothing to clash with.
    off = replace(replace_of(count, top), enabled=False)
    assert Plan((off, replace_of(revenue, top))).refusing_shared_rebuilds().refused == ()


def test_a_replace_that_would_rebuild_what_the_run_drops_is_refused() -> None:
    """Seen in a third review: a rollback dropping mv2 (made by the run) and restoring mv1,
    whose cascade rebuilds mv2, dropped it and then failed the restore after its builds; an
    apply --prune dropping a reader a replace rebuilds said the reader was 'made again by
    someone else' (it was dbopt's own cascade)."""
    mv1, mv2 = QualifiedName("public", "mv1"), QualifiedName("public", "mv2")
    restore = Action(
        kind=ActionKind.RESTORE,
        name=mv1,
        table=mv1,
        reason="undo",
        object_type="view",
        also_rebuilds=(("view", mv2, mv1, 1, True),),
    )
    drop = Action(
        kind=ActionKind.DROP,
        name=mv2,
        table=mv2,
        reason="undo",
        object_type="view",
        undoes_change=7,
    )
    plan = Plan((drop, restore)).refusing_shared_rebuilds()
    assert [a.refusal for a in plan.actions] == [
        None,
        "materialized view public.mv1: this run drops public.mv2, and this replace would "
        "rebuild public.mv2: run them one at a time (--index public.mv2, then --index "
        "public.mv1)",
    ]
    # An index of the reader dropped: the same.
    index = QualifiedName("public", "mv2_x")
    dropped_index = Action(kind=ActionKind.DROP, name=index, table=mv2, reason="pruned")
    refused = Plan((restore, dropped_index)).refusing_shared_rebuilds().refused
    assert [a.name for a in refused] == [mv1]
    assert "this run drops public.mv2_x (of public.mv2)" in (refused[0].refusal or "")
    # An apply's drop is a prune: run alone, it needs --prune still (the hint says so).
    assert "(--index public.mv2_x --prune, then --index public.mv1)" in (refused[0].refusal or "")
    # A drop that does not run (it needs --prune) is no clash.
    idle = replace(drop, enabled=False)
    assert Plan((idle, restore)).refusing_shared_rebuilds().refused == ()
