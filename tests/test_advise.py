"""`dbopt advise`: candidates from parse trees, the YAML merge, failure paths, and the proof
that it works: on BookedBarber without its indexes, advise --write, apply, verify meets the
budgets."""

from __future__ import annotations

import difflib
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import psycopg
from helpers import cli, has_extension, server_major, skip_without_extension
from pglast import parser
from ruamel.yaml import YAML

from dbopt.advise.candidates import candidates
from dbopt.advise.querytree import ColumnInfo, Kind, TableInfo, TypeClass, table_uses
from dbopt.advise.specwrite import merged_text
from dbopt.advise.suggestions import NewBudget, Suggestion, index_name
from dbopt.advise.workload import Source, WorkloadQuery, estimate
from dbopt.model import IndexColumn, IndexSpec, Location, QualifiedName
from dbopt.spec import load_specs
from dbopt.verify.params import bind, register
from tools.demo import load_bookedbarber

ROOT = Path(__file__).resolve().parent.parent
APPT = QualifiedName("public", "appointments")
COLUMNS = "id barber_id client_id status appointment_date start_time end_time total_amount"
TABLES = {
    APPT: TableInfo(
        APPT,
        {
            **{c: ColumnInfo(c) for c in COLUMNS.split()},
            "status": ColumnInfo("status", TypeClass.TEXT, 5),
            "barber_id": ColumnInfo("barber_id", TypeClass.OTHER, 400),
            "appointment_date": ColumnInfo("appointment_date", TypeClass.OTHER, 700),
            "notes": ColumnInfo("notes", TypeClass.TEXT),
            "tags": ColumnInfo("tags", TypeClass.ARRAY),
        },
        50_000,
    ),
    QualifiedName("public", "barbers"): TableInfo(
        QualifiedName("public", "barbers"),
        {c: ColumnInfo(c) for c in ("id", "user_id", "display_name")},
        100,
    ),
}


def _uses(query: str) -> dict[str, Any]:
    tree = json.loads(parser.parse_sql_json(query))["stmts"][0]["stmt"]
    return {str(u.table.name): u for u in table_uses(tree, TABLES, ["public"])}


def _shapes(query: str, table: str = "appointments", *, trigram: bool = True) -> list[Any]:
    use = _uses(query)[table]
    return [
        (
            s.method,
            tuple((c.name, c.order, c.opclass) for c in s.columns),
            s.include,
            s.where,
        )
        for s in candidates(use, TABLES[use.table], trigram=trigram)
    ]


# --- candidates (no database) ----------------------------------------------------------------


def test_equality_columns_come_first_then_the_range_and_constants_make_a_partial_index() -> None:
    shapes = _shapes(
        "SELECT date(appointment_date), sum(total_amount) FROM appointments "
        "WHERE appointment_date >= CURRENT_DATE - 30 AND status = 'completed' AND barber_id = $1"
    )
    plain = ("btree", (("barber_id", None, None), ("status", None, None),
                       ("appointment_date", None, None)), (), None)  # fmt: skip
    assert shapes[0] == plain  # more distinct values first (400 barbers, 5 statuses)
    # The constant moves to WHERE and leaves the keys; INCLUDE makes it index-only.
    partial = (
        "btree",
        (("barber_id", None, None), ("appointment_date", None, None)),
        ("total_amount",),
        "status = 'completed'",
    )
    assert partial in shapes
    # A parameter or CURRENT_DATE is no constant: never in a partial predicate.
    assert all("$" not in (s[3] or "") and "CURRENT" not in (s[3] or "") for s in shapes)


def test_order_by_columns_follow_the_equality_columns_with_their_direction() -> None:
    shapes = _shapes(
        "SELECT id, appointment_date FROM appointments WHERE client_id = $1 "
        "ORDER BY appointment_date DESC LIMIT 20"
    )
    keys = (("client_id", None, None), ("appointment_date", "desc", None))
    assert ("btree", keys, (), None) in shapes
    assert ("btree", keys, ("id",), None) in shapes


def test_join_columns_are_indexed_on_both_sides_and_aliases_resolve() -> None:
    uses = _uses(
        "SELECT b.display_name FROM appointments a JOIN barbers b ON b.id = a.barber_id "
        "WHERE a.status IN ('pending', 'confirmed')"
    )
    kinds = {(p.column, p.kind) for p in uses["appointments"].predicates}
    assert kinds == {("barber_id", Kind.JOIN), ("status", Kind.EQ)}
    status = next(p for p in uses["appointments"].predicates if p.column == "status")
    assert status.constant == "status IN ('pending', 'confirmed')" and not status.single
    assert [(p.column, p.kind) for p in uses["barbers"].predicates] == [("id", Kind.JOIN)]
    # An IN list of several values keeps its column as a key in the partial index too.
    shapes = _shapes(
        "SELECT b.display_name FROM appointments a JOIN barbers b ON b.id = a.barber_id "
        "WHERE a.status IN ('pending', 'confirmed')"
    )
    assert any(s[3] == "status IN ('pending', 'confirmed')" and len(s[1]) == 2 for s in shapes)


def test_operators_a_btree_cannot_serve_get_gin_or_gist() -> None:
    infix = _shapes("SELECT id FROM appointments WHERE notes ILIKE '%fade%'")
    assert ("gin", (("notes", None, "gin_trgm_ops"),), (), None) in infix
    assert not any(s[0] == "gin" for s in _shapes(
        "SELECT id FROM appointments WHERE notes ILIKE '%fade%'", trigram=False))  # fmt: skip
    # A prefix LIKE is a B-tree range, not a trigram search.
    assert not any(
        s[0] == "gin" for s in _shapes("SELECT id FROM appointments WHERE notes LIKE 'a%'")
    )
    contains = _shapes("SELECT id FROM appointments WHERE tags @> ARRAY['vip']")
    assert contains == [("gin", (("tags", None, None),), (), None)]


def test_subqueries_and_ctes_are_read_and_unknown_tables_ignored() -> None:
    uses = _uses(
        "WITH recent AS (SELECT barber_id FROM appointments WHERE appointment_date > $1) "
        "SELECT display_name FROM barbers WHERE id IN (SELECT barber_id FROM recent) "
        "AND user_id = (SELECT max(client_id) FROM appointments WHERE status = 'no_show') "
        "AND EXISTS (SELECT 1 FROM nowhere n WHERE n.x = 1)"
    )
    assert {(p.column, p.kind) for p in uses["appointments"].predicates} == {
        ("appointment_date", Kind.RANGE),
        ("status", Kind.EQ),
    }
    assert [p.column for p in uses["barbers"].predicates] == ["user_id"]


def test_names_follow_the_convention_and_never_collide() -> None:
    spec = IndexSpec(
        "",
        APPT,
        (IndexColumn(name="barber_id"), IndexColumn(name="appointment_date")),
        Location("x", 1, 1),
        where="status = 'completed'",
    )
    taken = {"idx_appointments_barber_id_appointment_date_completed"}
    assert index_name(spec, taken) == "idx_appointments_barber_id_appointment_date_completed_2"
    long = IndexSpec("", APPT, tuple(IndexColumn(name="c" * 30) for _ in range(3)), spec.location)
    assert len(index_name(long, set()).encode()) <= 63


# --- the YAML merge (no database) ------------------------------------------------------------


def _suggestion(table: QualifiedName) -> tuple[Suggestion, NewBudget]:
    spec = IndexSpec(
        "idx_appointments_status_total_amount",
        table,
        (IndexColumn(name="status"), IndexColumn(name="total_amount", order="desc")),
        Location("x", 1, 1),
        include=("id",),
        reason="dbopt advise: the query at q.sql:1: estimated cost 900 -> 8 (-99%)",
    )
    budget = NewBudget(
        table,
        "big_spenders",
        "SELECT id FROM appointments WHERE status = %(p1)s ORDER BY total_amount DESC LIMIT 5",
        {"p1": "completed"},
        12,
        5.0,
        spec.name,
        "max_cost: the estimated cost with the index x 1.5",
    )
    return Suggestion(spec, 8192, ()), budget


def test_merge_keeps_every_line_of_the_file_and_validates(tmp_path: Path) -> None:
    original = (ROOT / "indexes" / "appointments.yaml").read_text()
    suggestion, budget = _suggestion(APPT)
    merged = merged_text(original, APPT, [suggestion], [budget])
    ops = difflib.SequenceMatcher(None, original.splitlines(), merged.splitlines()).get_opcodes()
    assert {op for op, *_ in ops} == {"equal", "insert"}, merged
    assert merged.startswith("# Appointments: the hottest table")  # the comment stays first
    data = YAML(typ="safe").load(merged)
    assert data["indexes"][-1]["name"] == "idx_appointments_status_total_amount"
    assert data["queries"][-1]["expect"] == {"uses_index": [suggestion.spec.name]}
    (tmp_path / "indexes").mkdir()
    (tmp_path / "indexes" / "appointments.yaml").write_text(merged)
    specs = load_specs([(tmp_path / "indexes", True)])
    assert any(i.name == suggestion.spec.name for i in specs.indexes)
    # The new entries are written as the repository writes them.
    assert "    columns: [status, {name: total_amount, order: desc}]" in merged
    assert "# dbopt advise: max_cost" in merged


def test_a_table_without_a_file_gets_a_new_one() -> None:
    table = QualifiedName("billing", "invoices")
    suggestion, _budget = _suggestion(table)
    text = merged_text(None, table, [suggestion], [])
    assert text.splitlines()[1] == "table: billing.invoices"
    assert YAML(typ="safe").load(text)["indexes"][0]["include"] == ["id"]


# --- against a database ----------------------------------------------------------------------


def test_missing_pg_stat_statements_is_a_clear_error(db_dsn: str, write: Any) -> None:
    write(**{"indexes/t.yaml": "table: t\nindexes: []\n"})
    result = cli("advise", "--dsn", db_dsn)
    assert result.exit_code == 2, result.output
    assert "pg_stat_statements is not installed in database" in result.output
    assert "CREATE EXTENSION pg_stat_statements" in result.output


def test_a_query_file_with_a_syntax_error_points_at_its_line(
    db_dsn: str, write: Any, tmp_path: Path
) -> None:
    write(**{"indexes/t.yaml": "table: t\nindexes: []\n"})
    write(**{"q.sql": "SELECT 1;\n\nSELECT id FROM t\n WHERE id = = 2;\n"})
    result = cli("advise", "--dsn", db_dsn, "--queries", "q.sql")
    assert result.exit_code == 2, result.output
    assert "q.sql:4:" in result.output and "syntax error" in result.output
    write(**{"w.sql": "SELECT 1;\nDELETE FROM t;\n"})
    result = cli("advise", "--dsn", db_dsn, "--queries", "w.sql")
    assert (
        result.exit_code == 2 and "w.sql:2:1: query 2: must be a read-only SELECT" in result.output
    )


def test_parameters_are_planned_generically_without_running(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
    conn.execute("INSERT INTO t SELECT g, g::text FROM generate_series(1, 1000) g")
    conn.execute("ANALYZE t")
    query = WorkloadQuery("q", "SELECT v FROM t WHERE id = $1 AND v <> $2", Source.STATEMENTS)
    plan = estimate(conn, query, 5_000)
    assert not isinstance(plan, str), plan
    assert any(n.index == "t_pkey" for n in plan.walk())
    # Nothing was left prepared (before 16), and the session is usable.
    assert conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone() == (0,)
    # What the server cannot plan comes back as its message (the query is then skipped).
    bad = estimate(conn, WorkloadQuery("b", "SELECT $1 + $2 FROM t", Source.STATEMENTS), 5_000)
    assert isinstance(bad, str) and "operator is not unique" in bad


# --- end to end: advise --write, apply, verify -----------------------------------------------

SCALE = "0.05"  # 50,000 appointments: the planner prefers indexes (as test_bookedbarber)


def _without_indexes(src: Path, dst: Path, max_cost: dict[str, float]) -> None:
    """The shipped index specs with their indexes (and the expectations naming them) removed,
    each budget also asking for ``max_cost``: twice the hand-written indexes' estimated cost."""
    dst.mkdir()
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    for path in sorted(src.glob("*.yaml")):
        doc = yaml.load(path.read_text())
        doc["indexes"] = []
        for query in doc.get("queries") or []:
            query.pop("expect", None)
            query["max_cost"] = math.ceil(2 * max_cost[query["name"]])
        with (dst / path.name).open("w") as out:
            yaml.dump(doc, out)


def _verify(*args: str) -> list[dict[str, Any]]:
    verified = cli("verify", *args, "--format", "json")
    queries: list[dict[str, Any]] = json.loads(verified.stdout)["queries"]
    return queries


def test_advise_write_apply_verify_meets_the_budgets(
    conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any], db_dsn: str, tmp_path: Path
) -> None:
    if not has_extension(conn, "hypopg"):
        skip_without_extension(conn, "hypopg", f"postgresql-{server_major(conn)}-hypopg")
    started = time.monotonic()
    load_bookedbarber(db_dsn, SCALE)
    admin_conn.execute("CREATE EXTENSION pg_stat_statements")
    admin_conn.execute("CREATE EXTENSION hypopg")
    # The yardstick: the estimated cost of each budgeted query with the hand-written indexes.
    shipped = ("--dsn", db_dsn, "--specs", str(ROOT / "indexes"))
    assert cli("apply", *shipped).exit_code == 0
    conn.execute("VACUUM (ANALYZE)")
    hand = {q["name"]: q["cost"] for q in _verify(*shipped)}
    assert cli("rollback", *shipped, "--last", "--yes").exit_code == 0
    conn.execute("ANALYZE")
    specs_dir = tmp_path / "indexes"
    _without_indexes(ROOT / "indexes", specs_dir, hand)
    specs = load_specs([(specs_dir, True)])
    db = ("--dsn", db_dsn, "--specs", str(specs_dir))
    before = _verify(*db)
    met_before = sum(1 for q in before if q["status"] == "pass")
    # The application's workload: each budgeted query a few times, as the owner (parameters
    # untyped, as drivers with server-side binding send them: verify's binding).
    with psycopg.connect(db_dsn, autocommit=True) as app, app.cursor() as cur:
        register(cur)
        for budget in specs.queries:
            for _ in range(3):
                cur.execute(budget.sql, bind(app, budget.params) if budget.params else None)
                cur.fetchall()
    advised = cli("advise", *db, "--min-calls", "3", "--write")
    assert advised.exit_code == 0, advised.output
    assert "planned generically with" in advised.output
    assert cli("validate", *db).exit_code == 0
    applied = cli("apply", *db)
    assert applied.exit_code == 0, applied.output
    conn.execute("VACUUM (ANALYZE)")
    after = _verify(*db)
    met = [q for q in after if q["status"] == "pass"]
    share = len(met) / len(after)
    print(
        f"advise e2e: {met_before}/{len(before)} budgets met before, "
        f"{len(met)}/{len(after)} after ({share:.0%}) in {time.monotonic() - started:.1f} s"
    )

    assert share >= 0.8, [
        (q["name"], [f["message"] for f in q["findings"] if f["status"] == "fail"])
        for q in after
        if q["status"] != "pass"
    ]
    assert len(met) > met_before  # the suggestions made the difference
    # Every suggestion is written with its reason, and the files stay loadable.
    written = load_specs([(specs_dir, True)])
    assert written.indexes and all(
        i.reason and "estimated cost" in i.reason for i in written.indexes
    )
    shutil.rmtree(specs_dir)
