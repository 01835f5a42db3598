"""verify's explanation never contradicts the plan it prints: "used" and "not used" are decided
from the same parsed EXPLAIN the printed plan comes from, for every plan shape.

Each shape runs twice on a real server: once with the planner steered to the index (the
printed plan shows it, and no line may say it was not used or not chosen), once steered away
from every index scan (the printed plan does not show it, and the explanation must say so).
The steering is the session's own enable_* settings; the queries themselves are unchanged.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
import pytest
from psycopg import sql

from dbopt.config import Settings
from dbopt.model import (
    Expectation,
    IndexColumn,
    IndexSpec,
    Location,
    QualifiedName,
    QueryBudget,
    SpecSet,
    ViewSpec,
)
from dbopt.verify import QueryResult, Status, explanation, plan_text, run_verify

AT = Location("indexes/x.yaml", 1, 1)


def index(name: str, table: QualifiedName, *columns: IndexColumn) -> IndexSpec:
    return IndexSpec(name=name, table=table, columns=columns, location=AT)


APPTS = QualifiedName("public", "appointments")
EVENTS = QualifiedName("public", "events")
COUNTS = QualifiedName("public", "barber_counts")
ORDERS = QualifiedName("Sales", "Orders")

BARBER_DESC = index(
    "idx_appt_barber", APPTS, IndexColumn(name="barber_id", order="desc", nulls="last")
)
EVENTS_AT = index("idx_events_at", EVENTS, IndexColumn(name="at"))
EVENTS_ID = index("idx_events_id", EVENTS, IndexColumn(name="id"))
COUNTS_BARBER = index("idx_counts_barber", COUNTS, IndexColumn(name="barber_id"))
ORDERS_DAY = index("Orders By Day", ORDERS, IndexColumn(name="Day"))

#: The partitions' own indexes, as the plan of a partitioned table names them.
EVENT_PARTITION_INDEXES = (
    "events_2025_at_idx",
    "events_2026_h1_at_idx",
    "events_2025_id_idx",
    "events_2026_h1_id_idx",
)

SETUP = [
    "CREATE TABLE appointments (id int PRIMARY KEY, barber_id int, status text)",
    "INSERT INTO appointments SELECT g, g % 2000, 'x' FROM generate_series(1, 20000) g",
    "CREATE INDEX idx_appt_barber ON appointments (barber_id DESC NULLS LAST)",
    "CREATE TABLE barbers (id int PRIMARY KEY, name text)",
    "INSERT INTO barbers SELECT g, 'b' || g FROM generate_series(1, 200) g",
    # Two levels of partitions: the plan names events_2026_h1_at_idx, the spec idx_events_at.
    "CREATE TABLE events (id int, at date NOT NULL) PARTITION BY RANGE (at)",
    "CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')",
    "CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO "
    "('2027-01-01') PARTITION BY RANGE (at)",
    "CREATE TABLE events_2026_h1 PARTITION OF events_2026 FOR VALUES FROM ('2026-01-01') TO "
    "('2026-07-01')",
    "INSERT INTO events SELECT g, DATE '2025-01-01' + g % 540 FROM generate_series(1, 20000) g",
    "CREATE INDEX idx_events_at ON events (at)",
    "CREATE INDEX idx_events_id ON events (id)",
    "CREATE MATERIALIZED VIEW barber_counts AS "
    "SELECT barber_id, count(*) AS n FROM appointments GROUP BY barber_id",
    "CREATE INDEX idx_counts_barber ON barber_counts (barber_id)",
    'CREATE SCHEMA "Sales"',
    'CREATE TABLE "Sales"."Orders" (id int, "Day" date)',
    """INSERT INTO "Sales"."Orders" SELECT g, DATE '2025-01-01' + g % 300 """
    "FROM generate_series(1, 20000) g",
    'CREATE INDEX "Orders By Day" ON "Sales"."Orders" ("Day")',
    "VACUUM ANALYZE",
]

USE_INDEX = {"enable_seqscan": "off", "enable_hashjoin": "off", "enable_mergejoin": "off"}
AVOID_INDEX = {"enable_indexscan": "off", "enable_bitmapscan": "off", "enable_indexonlyscan": "off"}

#: name: (query, expected index, the table its file is for, settings, node the plan shows)
SHAPES: dict[str, tuple[str, IndexSpec, QualifiedName, dict[str, str], str]] = {
    "index_scan": (
        "SELECT * FROM appointments WHERE barber_id = 7",
        BARBER_DESC,
        APPTS,
        {"enable_bitmapscan": "off"},
        "Index Scan using idx_appt_barber on public.appointments",
    ),
    "bitmap_index_scan": (
        "SELECT * FROM appointments WHERE barber_id = 7",
        BARBER_DESC,
        APPTS,
        {"enable_indexscan": "off"},
        "Bitmap Index Scan using idx_appt_barber",
    ),
    "bitmap_or": (
        # Two columns: PostgreSQL 18 turns `barber_id = 7 OR barber_id = 9` into one = ANY scan.
        "SELECT * FROM appointments WHERE barber_id = 7 OR id = 9",
        BARBER_DESC,
        APPTS,
        {"enable_indexscan": "off"},
        "BitmapOr",
    ),
    "index_only_scan": (
        "SELECT barber_id FROM appointments WHERE barber_id = 7",
        BARBER_DESC,
        APPTS,
        {"enable_bitmapscan": "off"},
        "Index Only Scan using idx_appt_barber on public.appointments",
    ),
    "nested_loop": (
        "SELECT a.id FROM barbers b JOIN appointments a ON a.barber_id = b.id WHERE b.name = 'b7'",
        BARBER_DESC,
        APPTS,
        {"enable_bitmapscan": "off"},
        "Nested Loop",
    ),
    "init_plan": (
        "SELECT (SELECT max(id) FROM appointments WHERE barber_id = 7) AS last",
        BARBER_DESC,
        APPTS,
        {"enable_bitmapscan": "off"},
        "Index Scan using idx_appt_barber",
    ),
    "sub_plan": (
        "SELECT b.id, (SELECT count(*) FROM appointments a WHERE a.barber_id = b.id) "
        "FROM barbers b WHERE b.id < 4",
        BARBER_DESC,
        QualifiedName("public", "barbers"),
        {"enable_bitmapscan": "off"},
        "Index Only Scan using idx_appt_barber",
    ),
    "cte": (
        "WITH mine AS MATERIALIZED (SELECT id FROM appointments WHERE barber_id = 7) "
        "SELECT count(*) FROM mine",
        BARBER_DESC,
        APPTS,
        {"enable_bitmapscan": "off"},
        "CTE Scan",
    ),
    "partitions_append": (
        "SELECT id FROM events WHERE at BETWEEN '2025-12-20' AND '2026-01-10'",
        EVENTS_AT,
        EVENTS,
        {"enable_bitmapscan": "off"},
        "Index Scan using events_2026_h1_at_idx on public.events_2026_h1",
    ),
    "partitions_merge_append": (
        "SELECT id FROM events ORDER BY id LIMIT 5",
        EVENTS_ID,
        EVENTS,
        {"enable_bitmapscan": "off"},
        "Merge Append",
    ),
    "materialized_view": (
        "SELECT n FROM barber_counts WHERE barber_id = 7",
        COUNTS_BARBER,
        COUNTS,
        {"enable_bitmapscan": "off"},
        "Index Scan using idx_counts_barber on public.barber_counts",
    ),
    "quoted_schema_and_name": (
        """SELECT id FROM "Sales"."Orders" WHERE "Day" = DATE '2025-01-05'""",
        ORDERS_DAY,
        ORDERS,
        {"enable_bitmapscan": "off"},
        "Index Scan using Orders By Day on Sales.Orders",
    ),
}


@pytest.fixture
def shapes_db(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    for statement in SETUP:
        conn.execute(statement)
    return conn


def specs_for(query: str, spec: IndexSpec, relation: QualifiedName) -> SpecSet:
    """One budget that fails on time (so the explanation lists the meant index) and expects
    ``spec`` to be used; every index of the setup is in the specs."""
    budget = QueryBudget(
        name="q",
        sql=query,
        budget_ms=0.000001,
        location=AT,
        relation=str(relation),
        runs=1,
        warmup=0,
        expect=Expectation(uses_index=(spec.name,)),
    )
    view = ViewSpec(
        name=COUNTS,
        query="SELECT barber_id, count(*) AS n FROM appointments GROUP BY barber_id",
        location=AT,
        indexes=(COUNTS_BARBER,),
    )
    return SpecSet(
        indexes=(BARBER_DESC, EVENTS_AT, EVENTS_ID, ORDERS_DAY),
        views=(view,),
        index_queries=(budget,),
    )


def verify_with(
    conn: psycopg.Connection[Any], specs: SpecSet, settings: dict[str, str]
) -> QueryResult:
    for name, value in settings.items():
        conn.execute(sql.SQL("SET {} = {}").format(sql.Identifier(name), value))
    (result,) = run_verify(conn, specs, Settings()).results
    conn.execute("RESET ALL")
    return result


_USING = re.compile(r"using (.+?)(?: on [^ ]+)?  \(")


def printed_indexes(result: QueryResult) -> set[str]:
    """The index names the printed plan shows (``... using NAME [on table]  (rows ...``)."""
    assert result.measurement.plan is not None
    return set(_USING.findall(plan_text(result.measurement.plan)))


def meant_line(text: str, spec: IndexSpec) -> str:
    (line,) = [x for x in text.splitlines() if f"INDEX {_quoted(spec.name)} ON" in x]
    return line.strip()


def _quoted(name: str) -> str:
    return name if re.fullmatch(r"[a-z_][a-z0-9_]*", name) else f'"{name}"'


def assert_agrees(result: QueryResult, spec: IndexSpec, names: tuple[str, ...]) -> bool:
    """The explanation and the printed plan agree on whether ``spec`` is used; returns it."""
    text = explanation(result)
    shown = printed_indexes(result) & {spec.name, *names}
    unused = f"expected index {spec.name} is not used"
    assert result.verdict.status == Status.FAIL  # over its tiny budget: meant is listed
    meant = meant_line(text, spec)
    if shown:
        assert unused not in text, text
        assert "did not choose it" not in meant, text
        assert "the plan uses it (" in meant, text
    else:
        assert unused in text, text
        assert "exists, but the planner did not choose it" in meant, text
        assert "the plan uses it" not in text, text
    return bool(shown)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_explanation_agrees_with_the_printed_plan(
    shapes_db: psycopg.Connection[Any], shape: str
) -> None:
    query, spec, relation, settings, node = SHAPES[shape]
    specs = specs_for(query, spec, relation)
    partitions = EVENT_PARTITION_INDEXES if spec.table == EVENTS else ()

    used = verify_with(shapes_db, specs, {**USE_INDEX, **settings})
    assert node in plan_text(used.measurement.plan or pytest.fail("no plan")), explanation(used)
    assert assert_agrees(used, spec, partitions)
    assert not [f for f in used.verdict.findings if f.kind == "uses_index"]

    avoided = verify_with(shapes_db, specs, AVOID_INDEX)
    assert not assert_agrees(avoided, spec, partitions)
    assert [f.kind for f in avoided.verdict.findings if f.kind == "uses_index"] == ["uses_index"]


def test_a_partitions_index_counts_for_the_partitioned_index_two_levels_up(
    shapes_db: psycopg.Connection[Any],
) -> None:
    query, spec, relation, settings, _ = SHAPES["partitions_append"]
    result = verify_with(shapes_db, specs_for(query, spec, relation), {**USE_INDEX, **settings})
    meant = meant_line(explanation(result), spec)
    # The server's own definition of the parent, and the partition's scan that serves it.
    assert meant.startswith("CREATE INDEX idx_events_at ON ONLY public.events USING btree (at)")
    assert "the plan uses it (Index Scan using events_2025_at_idx on public.events_2025)" in meant


def test_same_index_name_in_another_schema_is_not_the_expected_index(
    conn: psycopg.Connection[Any],
) -> None:
    for schema in ("a", "b"):
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.t (k int)")
        conn.execute(f"INSERT INTO {schema}.t SELECT g FROM generate_series(1, 5000) g")
        conn.execute(f"CREATE INDEX idx_dup ON {schema}.t (k)")
    conn.execute("ANALYZE")
    spec = index("idx_dup", QualifiedName("a", "t"), IndexColumn(name="k"))
    for schema, used in (("b", False), ("a", True)):
        budget = QueryBudget(
            name="q",
            sql=f"SELECT k FROM {schema}.t WHERE k = 5",
            budget_ms=0.000001,
            location=AT,
            relation=f"{schema}.t",
            runs=1,
            warmup=0,
            expect=Expectation(uses_index=("idx_dup",)),
        )
        specs = SpecSet(indexes=(spec,), index_queries=(budget,))
        result = verify_with(conn, specs, {"enable_bitmapscan": "off", "enable_seqscan": "off"})
        text = explanation(result)
        assert f"using idx_dup on {schema}.t" in text
        meant = meant_line(text, spec)
        if used:
            assert "expected index idx_dup is not used" not in text
            assert "the plan uses it (Index Only Scan using idx_dup on a.t)" in meant
        else:
            # The plan scans b.idx_dup: the spec's a.idx_dup is not what it uses.
            assert "expected index idx_dup is not used (it uses b.idx_dup)" in text
            assert "exists, but the planner did not choose it" in meant


def test_the_meant_index_keeps_desc_and_nulls(shapes_db: psycopg.Connection[Any]) -> None:
    # Built: the server's definition. Not built: the spec's full CREATE INDEX.
    query, spec, relation, _, _ = SHAPES["index_scan"]
    result = verify_with(shapes_db, specs_for(query, spec, relation), AVOID_INDEX)
    assert meant_line(explanation(result), spec).startswith(
        "CREATE INDEX idx_appt_barber ON public.appointments USING btree "
        "(barber_id DESC NULLS LAST) [indexes/x.yaml:1:1]"
    )
    shapes_db.execute("DROP INDEX idx_appt_barber")
    rich = IndexSpec(
        name="idx_appt_barber",
        table=APPTS,
        columns=(
            IndexColumn(name="barber_id", order="desc", nulls="first"),
            IndexColumn(name="status", opclass="text_pattern_ops", collation="C"),
        ),
        include=("id",),
        where="status <> 'done'",
        location=AT,
    )
    budget = specs_for(query, spec, relation).index_queries[0]
    result = verify_with(shapes_db, SpecSet(indexes=(rich,), index_queries=(budget,)), {})
    meant = meant_line(explanation(result), rich)
    assert '(barber_id DESC NULLS FIRST, status COLLATE "C" text_pattern_ops)' in meant
    assert "INCLUDE (id) WHERE status <> 'done'" in meant
    assert "in the specs but not built yet: run dbopt apply" in meant
