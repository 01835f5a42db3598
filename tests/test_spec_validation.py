"""Spec files -> SpecSet: every problem at once, each located at file:line:column.

Spec files are written into a temporary directory that becomes the working directory, so the
paths in messages are relative (``indexes/users.yaml``) exactly as a user sees them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import Write

from dbopt.errors import SpecError
from dbopt.model import IndexColumn, Location, QualifiedName, SpecSet
from dbopt.spec import load_specs, view_order

DIRS = [(Path("indexes"), False), (Path("views"), False)]


def load() -> SpecSet:
    return load_specs(DIRS)


def problems() -> list[str]:
    """The problem lines of the SpecError that loading must raise."""
    with pytest.raises(SpecError) as caught:
        load()
    lines = [str(p) for p in caught.value.problems]
    count = len(lines)
    assert caught.value.args[0] == (
        f"{count} problem{'s' if count != 1 else ''} in the specs; nothing was run"
    )
    return lines


BARBER_INDEXES = """\
    table: appointments
    indexes:
      - name: appointments_barber_day
        columns: [barber_id, {expr: "date(starts_at)"}]
        where: "cancelled_at   IS NULL"
        include: [customer_id]
        with: {fillfactor: 90, deduplicate_items: true}
        reason: the barber's schedule screen
      - name: appointments_customer_recent
        columns: [customer_id, {name: starts_at, order: desc, nulls: last}]
      - name: appointments_notes_trgm
        method: gin
        columns: [{expr: "lower(notes)", opclass: gin_trgm_ops}]
    queries:
      - name: barber_schedule_today
        sql: >
          SELECT id, starts_at FROM appointments
          WHERE barber_id = %(barber)s AND date(starts_at) = %(day)s AND cancelled_at IS NULL
        params: {barber: 7, day: "2024-05-01"}
        budget_ms: 20
        warn_ms: 10
        expect: {uses_index: [appointments_barber_day], no_seq_scan_on: [appointments]}
"""

BARBER_VIEWS = {
    "views/mv_daily_revenue.yaml": """\
        name: mv_daily_revenue
        query: |
          SELECT shop_id, date(starts_at) AS day, sum(price) AS revenue
          FROM appointments GROUP BY 1, 2
        indexes:
          - name: mv_daily_revenue_key
            columns: [shop_id, day]
            unique: true
        refresh: {schedule: "*/15 * * * *", mode: concurrent}
        queries:
          - name: revenue_last_week
            sql: SELECT * FROM mv_daily_revenue WHERE day > now() - interval '7 days'
            budget_ms: 50
    """,
    "views/mv_weekly_revenue.yaml": """\
        name: mv_weekly_revenue
        query: SELECT shop_id, date_trunc('week', day) AS week, sum(revenue) AS revenue
               FROM mv_daily_revenue GROUP BY 1, 2
        depends_on: [mv_daily_revenue]
        refresh: {schedule: "0 * * * *"}
    """,
}


def test_a_valid_project_loads(write: Write) -> None:
    write(**{"indexes/appointments.yaml": BARBER_INDEXES, **BARBER_VIEWS})
    specs = load()
    assert specs.files == (
        "indexes/appointments.yaml",
        "views/mv_daily_revenue.yaml",
        "views/mv_weekly_revenue.yaml",
    )
    table = QualifiedName("public", "appointments")
    first, second, third = specs.indexes
    assert first.name == "appointments_barber_day"
    assert first.table == table
    assert first.columns == (IndexColumn(name="barber_id"), IndexColumn(expr="date(starts_at)"))
    assert first.where == "cancelled_at IS NULL"  # the parser's rendering
    assert first.include == ("customer_id",)
    assert first.storage == (("deduplicate_items", "on"), ("fillfactor", "90"))
    assert first.reason == "the barber's schedule screen"
    assert first.location == Location("indexes/appointments.yaml", 3, 5)
    assert second.columns[1] == IndexColumn(name="starts_at", order="desc", nulls="last")
    assert third.method == "gin"
    assert third.columns == (IndexColumn(expr="lower(notes)", opclass="gin_trgm_ops"),)

    (query,) = specs.index_queries
    assert query.name == "barber_schedule_today"
    assert query.relation == "public.appointments"
    assert query.uses_placeholders is True
    assert dict(query.params) == {"barber": 7, "day": "2024-05-01"}
    assert (query.budget_ms, query.warn_ms, query.runs, query.warmup) == (20.0, 10.0, 20, 3)
    assert query.expect.uses_index == ("appointments_barber_day",)
    assert query.expect.no_seq_scan_on == (table,)

    daily, weekly = specs.views
    assert daily.name == QualifiedName("public", "mv_daily_revenue")
    assert daily.query == (
        "SELECT shop_id, date(starts_at) AS day, sum(price) AS revenue "
        "FROM appointments GROUP BY 1, 2"
    )
    assert daily.concurrent_refresh_index() == daily.indexes[0]
    assert daily.indexes[0].table == daily.name
    assert weekly.depends_on == (daily.name,)
    assert weekly.refresh.mode == "auto"
    assert [q.name for q in specs.queries] == ["barber_schedule_today", "revenue_last_week"]
    assert len(specs.all_indexes) == 4
    assert [v.name.name for v in view_order([weekly, daily])] == [
        "mv_daily_revenue",
        "mv_weekly_revenue",
    ]


def test_unknown_key_says_did_you_mean(write: Write) -> None:
    write(
        **{
            "indexes/x.yaml": """\
                table: users
                indexes:
                  - name: users_email
                    colums: [email]
            """
        }
    )
    # Only the typo: "missing required key 'columns'" would be the same mistake twice.
    assert problems() == [
        "indexes/x.yaml:4:5: indexes[0]: unknown key 'colums'; did you mean 'columns'?"
    ]


def test_unknown_key_without_a_close_match_lists_the_allowed_keys(write: Write) -> None:
    write(**{"indexes/users.yaml": "table: users\nowner: alice\n"})
    assert problems() == [
        "indexes/users.yaml:2:1: (top level): unknown key 'owner'; "
        "allowed keys: indexes, queries, table"
    ]


def test_every_error_at_once_across_files(write: Write) -> None:
    write(
        **{
            "indexes/orders.yaml": """\
                table: orders
                indexes:
                  - name: orders_customer
                    columns: [customer_id]
                    methd: btree
                  - name: orders_open
                    columns: [id]
                    where: "x = 1); DROP TABLE users; --"
                  - name: 42
                    columns: customer_id
                  - columns: [a]
                  - name: orders_total
                    columns: [total]
                    unique: "yes"
                    method: btre
            """,
            "indexes/users.yaml": """\
                table: users
                indexes:
                  - name: users_email
                    columns: [{expr: "lower(email) FROM users"}]
                queries:
                  - name: user_by_email
                    sql: DELETE FROM users WHERE email = %(email)s
                    params: {email: a@example.com}
                    budget_ms: 5
            """,
            "views/mv_x.yaml": """\
                name: mv_x
                query: SELECT 1 AS x; SELECT 2
                refresh: {schedule: "0 * * *"}
            """,
        }
    )
    assert problems() == [
        "indexes/orders.yaml:5:5: indexes[0]: unknown key 'methd'; did you mean 'method'?",
        "indexes/orders.yaml:8:12: indexes[1].where: the predicate is not valid: "
        "syntax error at or near \")\" (near '); DROP TABLE users;')",
        "indexes/orders.yaml:9:11: indexes[2].name: expected a string, got the number 42",
        "indexes/orders.yaml:10:14: indexes[2].columns: expected a list, "
        "got the string 'customer_id'",
        "indexes/orders.yaml:11:5: indexes[3]: missing required key 'name'",
        "indexes/orders.yaml:14:13: indexes[4].unique: expected true or false, "
        "got the string 'yes'",
        "indexes/orders.yaml:15:13: indexes[4].method: the string 'btre' is not one of btree, "
        "hash, gist, spgist, gin, brin; did you mean 'btree'?",
        "indexes/users.yaml:4:22: indexes[0].columns[0].expr: the expression is not valid: "
        "must be a single expression (found more after it)",
        "indexes/users.yaml:7:10: queries[0].sql: the query is not valid: "
        "must be a read-only SELECT, not DELETE",
        "views/mv_x.yaml:2:8: query: the view query is not valid: "
        "must be exactly one statement, found 2",
        "views/mv_x.yaml:3:21: refresh.schedule: '0 * * *' has 4 fields; a cron expression "
        "has 5 (minute hour day-of-month month day-of-week), e.g. '0 * * * *', or is @hourly, "
        "@daily, @weekly, @monthly or @yearly",
    ]


def test_missing_required_keys_and_wrong_types(write: Write) -> None:
    write(
        **{
            "indexes/users.yaml": """\
                table: 5
                indexes: {name: x}
            """,
            "views/v.yaml": """\
                name: v
                refresh: hourly
                depends_on: other
            """,
            "views/w.yaml": "query: SELECT 1\n",
        }
    )
    assert problems() == [
        "indexes/users.yaml:1:8: table: expected a string, got the number 5",
        "indexes/users.yaml:2:10: indexes: expected a list, got a mapping",
        "views/v.yaml:1:1: (top level): missing required key 'query'",
        "views/v.yaml:2:10: refresh: expected a mapping, got the string 'hourly'",
        "views/v.yaml:3:13: depends_on: expected a list, got the string 'other'",
        "views/w.yaml:1:1: (top level): missing required key 'name'",
    ]


def test_column_items_and_query_fields_are_typed(write: Write) -> None:
    write(
        **{
            "indexes/users.yaml": """\
                table: users
                indexes:
                  - name: a
                    columns: [42, {nme: a}, {name: b, order: up}, null]
                    with: {fillfactor: [1]}
                queries:
                  - name: q
                    sql: SELECT 1
                    budget_ms: "5"
                    params: 5
                    runs: 0
                    expect: {uses_index: [], seq: 1}
                  - name: "bad name"
                    sql: SELECT 1
                    budget_ms: 0
            """
        }
    )
    assert problems() == [
        "indexes/users.yaml:4:15: indexes[0].columns[0]: expected a string or a mapping, "
        "got the number 42",
        "indexes/users.yaml:4:20: indexes[0].columns[1]: unknown key 'nme'; did you mean 'name'?",
        "indexes/users.yaml:4:46: indexes[0].columns[2].order: the string 'up' is not one of "
        "asc, desc",
        "indexes/users.yaml:4:51: indexes[0].columns[3]: expected a string or a mapping, "
        "got nothing",
        "indexes/users.yaml:5:24: indexes[0].with.fillfactor: expected a string, a number or "
        "true or false, got a list",
        "indexes/users.yaml:9:16: queries[0].budget_ms: expected a number, got the string '5'",
        "indexes/users.yaml:10:13: queries[0].params: expected a mapping, got the number 5",
        "indexes/users.yaml:11:11: queries[0].runs: must be at least 1, got 0",
        "indexes/users.yaml:12:26: queries[0].expect.uses_index: must not be empty",
        "indexes/users.yaml:12:30: queries[0].expect: unknown key 'seq'; "
        "allowed keys: no_seq_scan_on, plan_margin, uses_index",
        "indexes/users.yaml:13:11: queries[1].name: the string 'bad name' is not valid; "
        "expected a name of letters, digits, '_', '.' and '-', starting with a letter or '_' "
        "(it names the query in reports and JUnit)",
        "indexes/users.yaml:15:16: queries[1].budget_ms: must be greater than 0, got 0",
    ]


def test_an_unquoted_date_is_explained(write: Write) -> None:
    write(
        **{"indexes/users.yaml": "table: users\nindexes:\n  - name: 2024-01-31\n    columns: [a]\n"}
    )
    assert problems() == [
        "indexes/users.yaml:3:11: indexes[0].name: expected a string, got the date 2024-01-31 "
        "(quote it to make it a string)"
    ]


def test_a_schema_error_in_one_index_does_not_hide_the_others(write: Write) -> None:
    write(
        **{
            "indexes/users.yaml": """\
                table: users
                indexes:
                  - name: users_a
                    columns: [a]
                    uniq: true
                  - name: users_b
                    columns: [b]
                    where: "b = "
                queries:
                  - name: q
                    sql: UPDATE users SET a = 1
                    budget_ms: 5
            """
        }
    )
    assert problems() == [
        "indexes/users.yaml:5:5: indexes[0]: unknown key 'uniq'; did you mean 'unique'?",
        "indexes/users.yaml:8:12: indexes[1].where: the predicate is not valid: "
        "syntax error at end of input",
        "indexes/users.yaml:11:10: queries[0].sql: the query is not valid: "
        "must be a read-only SELECT, not UPDATE",
    ]


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("a" * 63, True),
        ("a" * 64, False),
        ("é" * 31 + "a", True),  # 63 bytes in 32 characters
        ("é" * 32, False),  # 64 bytes in 32 characters: PostgreSQL counts bytes
    ],
)
def test_identifiers_longer_than_63_bytes_are_refused(write: Write, name: str, ok: bool) -> None:
    write(**{"indexes/users.yaml": f"table: users\nindexes:\n  - name: {name}\n    columns: [a]\n"})
    if ok:
        assert load().indexes[0].name == name
    else:
        size = len(name.encode())
        assert problems() == [
            f"indexes/users.yaml:3:11: indexes[0].name: '{name}' is {size} bytes long; "
            "PostgreSQL would silently truncate it to 63 bytes: choose a shorter name"
        ]


def test_long_names_everywhere_are_checked(write: Write) -> None:
    long, other = "x" * 64, "y" * 64
    write(
        **{
            "indexes/users.yaml": f"""\
                table: app.{long}
                indexes:
                  - name: ok
                    columns: [{long}, {{name: {long}}}]
                    include: [{other}]
            """,
            "views/v.yaml": f"name: {long}\nschema: {long}\nquery: SELECT 1\n",
        }
    )

    def too_long(name: str) -> str:
        return (
            f"'{name}' is 64 bytes long; PostgreSQL would silently truncate it to 63 bytes: "
            "choose a shorter name"
        )

    assert problems() == [
        f"indexes/users.yaml:1:8: table: {too_long(long)}",
        f"indexes/users.yaml:4:15: indexes[0].columns[0]: {too_long(long)}",
        f"indexes/users.yaml:4:88: indexes[0].columns[1].name: {too_long(long)}",
        f"indexes/users.yaml:5:15: indexes[0].include[0]: {too_long(other)}",
        f"views/v.yaml:1:7: name: {too_long(long)}",
        f"views/v.yaml:2:9: schema: {too_long(long)}",
    ]


def test_duplicate_names_across_files(write: Write) -> None:
    write(
        **{
            "indexes/orders.yaml": "table: orders\nindexes:\n  - name: dup\n    columns: [b]\n",
            "indexes/users.yaml": "table: users\nindexes:\n  - name: dup\n    columns: [a]\n",
            "views/dup.yaml": "name: dup\nquery: SELECT 1 AS x\n",
            "views/other.yaml": "name: other\nschema: app\nquery: SELECT 1 AS x\n"
            "indexes:\n  - name: dup\n    columns: [x]\n",
        }
    )
    namespace = (
        "; rename one of them (indexes and materialized views share one namespace per schema)"
    )
    assert problems() == [
        # The index in schema app does not clash with public.dup.
        "indexes/users.yaml:3:5: index name 'public.dup' is already used at "
        f"indexes/orders.yaml:3:5{namespace}",
        "views/dup.yaml:1:1: materialized view name 'public.dup' is already used at "
        f"indexes/orders.yaml:3:5{namespace}",
    ]


def test_duplicate_query_names_across_files(write: Write) -> None:
    query = "queries:\n  - name: hot\n    sql: SELECT 1\n    budget_ms: 5\n"
    write(
        **{
            "indexes/a.yaml": "table: a\n" + query,
            "indexes/b.yaml": "table: b\n" + query,
        }
    )
    assert problems() == [
        "indexes/b.yaml:3:5: query name 'hot' is already used at indexes/a.yaml:3:5"
    ]


def test_twin_indexes(write: Write) -> None:
    write(
        **{
            "indexes/users.yaml": """\
                table: users
                indexes:
                  - name: users_email
                    columns: [email]
                  - name: users_email_again
                    columns: [email]
                  - name: users_email_unique
                    columns: [email]
                    unique: true
            """
        }
    )
    assert problems() == [
        "indexes/users.yaml:5:5: index 'users_email_again' has the same definition as "
        "'users_email' (indexes/users.yaml:3:5): keep one"
    ]


def test_a_broken_index_is_not_also_reported_as_a_twin(write: Write) -> None:
    write(
        **{
            "indexes/users.yaml": """\
                table: users
                indexes:
                  - name: users_a
                    columns: [a]
                  - name: users_a_or_lower
                    columns: [{name: a, expr: "lower(a)"}]
            """
        }
    )
    assert problems() == [
        "indexes/users.yaml:6:15: indexes[1].columns[0]: give exactly one of name (a column) "
        "or expr (an expression)"
    ]


def test_index_options_are_checked_against_the_method(write: Write) -> None:
    write(
        **{
            "indexes/users.yaml": """\
                table: users
                indexes:
                  - name: g
                    method: gin
                    columns: [{name: tags, order: desc}]
                    include: [id]
                    unique: true
                    with: {fillfactr: 90}
                  - name: b
                    columns: [a, {order: asc}]
                    include: [a]
                    nulls_not_distinct: true
                    with: {fillfactr: 90}
                    reason: x
                    comment: y
                  - name: o
                    columns: [{name: a, opclass: a.b.c}]
            """
        }
    )
    assert problems() == [
        "indexes/users.yaml:5:15: indexes[0].columns[0]: gin indexes do not support order or "
        "nulls (only btree)",
        "indexes/users.yaml:6:14: indexes[0].include: gin indexes cannot INCLUDE columns "
        "(only btree, gist, spgist)",
        "indexes/users.yaml:7:13: indexes[0].unique: only btree indexes can be unique, not gin",
        "indexes/users.yaml:8:12: indexes[0].with.fillfactr: unknown storage parameter "
        "'fillfactr'; gin accepts: fastupdate, gin_pending_list_limit",
        "indexes/users.yaml:10:18: indexes[1].columns[1]: give exactly one of name (a column) "
        "or expr (an expression)",
        "indexes/users.yaml:11:15: indexes[1].include[0]: 'a' is already a key column",
        "indexes/users.yaml:12:25: indexes[1].nulls_not_distinct: only applies to a unique index",
        "indexes/users.yaml:13:12: indexes[1].with.fillfactr: unknown storage parameter "
        "'fillfactr'; did you mean 'fillfactor'?",
        "indexes/users.yaml:15:14: indexes[1].comment: give either reason or comment, not both",
        "indexes/users.yaml:17:34: indexes[2].columns[0].opclass: 'a.b.c' is not a name: "
        "write name or schema.name",
    ]


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (
            "x = 1); DROP TABLE users; --",
            "syntax error at or near \")\" (near '); DROP TABLE users;')",
        ),
        ("x = 1; DROP TABLE users", "must be a single expression, not several statements"),
        ("a, b", "must be a single expression (found more after it)"),
        ("(SELECT true)", "must not contain a subquery (PostgreSQL refuses them in indexes)"),
        ("*", "must be an expression, not '*' (all columns)"),
    ],
)
def test_predicates_must_be_one_expression(write: Write, where: str, message: str) -> None:
    write(
        **{
            "indexes/users.yaml": "table: users\nindexes:\n  - name: p\n    columns: [a]\n"
            f"    where: '{where}'\n"
        }
    )
    assert problems() == [
        f"indexes/users.yaml:5:12: indexes[0].where: the predicate is not valid: {message}"
    ]


# --- views -----------------------------------------------------------------------------


def view(name: str, *extra: str) -> str:
    return "\n".join([f"name: {name}", "query: SELECT 1 AS id", *extra]) + "\n"


@pytest.mark.parametrize(
    "schedule", ["0 * * * *", "*/15 * * * *", "30 2 * * 1-5", "0 0 1 jan,jul *"]
)
def test_valid_cron_schedules(write: Write, schedule: str) -> None:
    write(**{"views/v.yaml": view("v", f'refresh: {{schedule: "{schedule}"}}')})
    assert load().views[0].refresh.schedule == schedule


@pytest.mark.parametrize(
    ("schedule", "fields"),
    [
        ("@hourly", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@YEARLY", "0 0 1 1 *"),
        ("0  0 * *  7", "0 0 * * 7"),
    ],
)
def test_cron_shorthands_become_five_fields(write: Write, schedule: str, fields: str) -> None:
    write(**{"views/v.yaml": view("v", f'refresh: {{schedule: "{schedule}"}}')})
    assert load().views[0].refresh.schedule == fields


FIVE = (
    "a cron expression has 5 (minute hour day-of-month month day-of-week), e.g. '0 * * * *', "
    "or is @hourly, @daily, @weekly, @monthly or @yearly"
)


@pytest.mark.parametrize(
    ("schedule", "why"),
    [
        ("0 * * *", f"has 4 fields; {FIVE}"),
        ("0 0 * * * *", f"has 6 fields; {FIVE}"),
        ("", f"has 0 fields; {FIVE}"),
        ("hourly", f"has 1 field; {FIVE}"),
        ("61 * * * *", "the minute field '61': 61 is out of range 0-59"),
        ("* 25 * * *", "the hour field '25': 25 is out of range 0-23"),
        ("0 0 0 * *", "the day-of-month field '0': 0 is out of range 1-31"),
        ("0 0 * 13 *", "the month field '13': 13 is out of range 1-12"),
        ("0 0 * * 8", "the day-of-week field '8': 8 is out of range 0-7"),
        ("0 0 * * mon-fry", "the day-of-week field 'mon-fry': 'fry' is not a number (0-7)"),
        ("*/0 * * * *", "the minute field '*/0' has step '0': a positive number"),
        ("0 5-2 * * *", "the hour field '5-2': the range 5-2 runs backwards"),
        ("0,,5 * * * *", "the minute field '0,,5' is not a value, range or step (0-59)"),
        (
            "5/10 * * * *",
            "the minute field '5/10' steps from a single value, which cron implementations "
            "read differently: write 5-59/10",
        ),
        ("0 0 \u0663 * *", "the day-of-month field '\u0663': '\u0663' is not a number (1-31)"),
        ("0 0 31 2 *", "never fires (no such day in any year)"),
    ],
)
def test_invalid_cron_schedules_name_the_field_and_its_range(
    write: Write, schedule: str, why: str
) -> None:
    write(**{"views/v.yaml": view("v", f'refresh: {{schedule: "{schedule}"}}')})
    assert problems() == [f"views/v.yaml:3:21: refresh.schedule: '{schedule}' {why}"]


@pytest.mark.parametrize(
    "schedule", ["0 0 * 2 1", "0 0 */30 2 0", "0 0 */31 2 6", "30 4 */7 4,6 sat", "0 0 * 2 *"]
)
def test_a_day_of_month_starting_with_a_star_fires_as_croniter_reckons_it(
    schedule: str,
) -> None:
    """parse accepts these without asking croniter (their days hold the 1st of a month):
    croniter finds a day they fire on."""
    from datetime import UTC, datetime

    from dbopt import cron

    assert cron.parse(schedule) == schedule
    assert cron.previous_tick(schedule, datetime(2030, 1, 1, tzinfo=UTC)).year >= 2020


def test_unknown_cron_shorthand(write: Write) -> None:
    write(**{"views/v.yaml": view("v", 'refresh: {schedule: "@reboot"}')})
    assert problems() == [
        "views/v.yaml:3:21: refresh.schedule: '@reboot' is not a cron shorthand dbopt can run "
        "(one of @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly)"
    ]


CONCURRENT = (
    "views/v.yaml:3:40: refresh.mode: REFRESH MATERIALIZED VIEW CONCURRENTLY needs a unique "
    "index on plain columns (no expression, no WHERE): add one under indexes, or use mode: auto"
)


@pytest.mark.parametrize(
    ("index", "ok"),
    [
        (None, False),
        ("{name: v_id, columns: [id]}", False),
        ("{name: v_id, columns: [id], unique: true, where: id > 0}", False),
        ('{name: v_id, columns: [{expr: "id + 1"}], unique: true}', False),
        ("{name: v_id, columns: [id], unique: true}", True),
        ("{name: v_id, columns: [{name: id, order: desc}], unique: true}", True),
    ],
)
def test_concurrent_refresh_needs_a_plain_unique_index(
    write: Write, index: str | None, ok: bool
) -> None:
    extra = [f"indexes: [{index}]"] if index else []
    write(
        **{"views/v.yaml": view("v", 'refresh: {schedule: "0 * * * *", mode: concurrent}', *extra)}
    )
    if ok:
        assert load().views[0].refresh.mode == "concurrent"
    else:
        assert problems() == [CONCURRENT]


def test_concurrent_refresh_is_not_judged_when_an_index_is_unreadable(write: Write) -> None:
    write(
        **{
            "views/v.yaml": view(
                "v",
                "refresh: {mode: concurrent}",
                "indexes: [{name: v_id, colums: [id], unique: true}]",
            )
        }
    )
    assert problems() == [
        "views/v.yaml:4:24: indexes[0]: unknown key 'colums'; did you mean 'columns'?"
    ]


def test_refresh_mode_typo(write: Write) -> None:
    write(**{"views/v.yaml": view("v", "refresh: {mode: concurent}")})
    assert problems() == [
        "views/v.yaml:3:17: refresh.mode: the string 'concurent' is not one of concurrent, "
        "blocking, auto; did you mean 'concurrent'?"
    ]


def test_view_query_must_be_read_only(write: Write) -> None:
    write(
        **{
            "views/a.yaml": "name: a\nquery: DELETE FROM users RETURNING id\n",
            "views/b.yaml": "name: b\nquery: SELECT * FROM users FOR UPDATE\n",
        }
    )
    assert problems() == [
        "views/a.yaml:2:8: query: the view query is not valid: must be a read-only SELECT, "
        "not DELETE",
        "views/b.yaml:2:8: query: the view query is not valid: must be read-only: it contains "
        "FOR UPDATE/SHARE (row locks)",
    ]


def test_view_reason_or_comment(write: Write) -> None:
    write(**{"views/v.yaml": view("v", "reason: daily report", "comment: the same")})
    assert problems() == ["views/v.yaml:4:10: comment: give either reason or comment, not both"]


def test_depends_on_cycle(write: Write) -> None:
    write(
        **{
            "views/a.yaml": view("a", "depends_on: [c]"),
            "views/b.yaml": view("b", "depends_on: [a]"),
            "views/c.yaml": view("c", "depends_on: [b]"),
            "views/d.yaml": view("d", "depends_on: [a]"),
        }
    )
    assert problems() == [
        "views/a.yaml:3:14: materialized views depend on each other in a cycle: "
        "public.a -> public.c -> public.b -> public.a (each depends on the next); "
        "remove one of these depends_on entries"
    ]


def test_depends_on_itself(write: Write) -> None:
    write(**{"views/a.yaml": view("a", "depends_on: [b, a]"), "views/b.yaml": view("b")})
    assert problems() == [
        "views/a.yaml:3:17: view 'public.a' depends on itself; remove it from depends_on"
    ]


def test_unknown_depends_on(write: Write) -> None:
    write(
        **{
            "views/mv_daily.yaml": view("mv_daily"),
            "views/mv_weekly.yaml": view("mv_weekly", "depends_on: [mv_dayly, app.mv_daily]"),
        }
    )
    assert problems() == [
        "views/mv_weekly.yaml:3:14: depends_on names 'public.mv_dayly', which is not a view "
        "in the specs; did you mean 'public.mv_daily'?",
        "views/mv_weekly.yaml:3:24: depends_on names 'app.mv_daily', which is not a view "
        "in the specs; did you mean 'public.mv_daily'?",
    ]


def test_depending_on_a_view_whose_file_is_broken_is_not_another_error(write: Write) -> None:
    write(
        **{
            "views/a.yaml": view("a", "refresh: {mode: sometimes}"),
            "views/b.yaml": view("b", "depends_on: [a]"),
        }
    )
    assert problems() == [
        "views/a.yaml:3:17: refresh.mode: the string 'sometimes' is not one of concurrent, "
        "blocking, auto"
    ]


def test_view_in_another_schema(write: Write) -> None:
    write(
        **{
            "views/a.yaml": view("a", "schema: reporting"),
            "views/b.yaml": view("b", "schema: reporting", "depends_on: [a, reporting.a]"),
        }
    )
    (a, b) = load().views
    assert a.name == QualifiedName("reporting", "a")
    # depends_on defaults to the view's own schema.
    assert b.depends_on == (a.name, a.name)


def test_view_order_is_stable_and_respects_dependencies(write: Write) -> None:
    write(
        **{
            "views/z.yaml": view("z"),
            "views/b.yaml": view("b", "depends_on: [z, c]"),
            "views/c.yaml": view("c"),
            "views/a.yaml": view("a", "depends_on: [b]"),
        }
    )
    ordered = [v.name.name for v in view_order(load().views)]
    assert ordered == ["c", "z", "b", "a"]


# --- query budgets ---------------------------------------------------------------------


def budget(*lines: str) -> str:
    return "table: users\nqueries:\n  - name: q\n" + "".join(f"    {line}\n" for line in lines)


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("INSERT INTO users VALUES (1)", "must be a read-only SELECT, not INSERT"),
        ("UPDATE users SET a = 1", "must be a read-only SELECT, not UPDATE"),
        ("DELETE FROM users", "must be a read-only SELECT, not DELETE"),
        (
            "WITH d AS (DELETE FROM users RETURNING *) SELECT * FROM d",
            "must be read-only: it contains DELETE",
        ),
        ("SELECT * INTO backup FROM users", "must be read-only: it contains SELECT INTO"),
        (
            "SELECT * FROM users FOR UPDATE",
            "must be read-only: it contains FOR UPDATE/SHARE (row locks)",
        ),
        ("SELECT 1; SELECT 2", "must be exactly one statement, found 2"),
    ],
)
def test_budget_queries_must_be_read_only(write: Write, sql: str, message: str) -> None:
    write(**{"indexes/users.yaml": budget(f'sql: "{sql}"', "budget_ms: 5")})
    assert problems() == [
        f"indexes/users.yaml:4:10: queries[0].sql: the query is not valid: {message}"
    ]


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT pg_stat_reset()", "pg_stat_reset() resets the server's statistics"),
        (
            "SELECT * FROM users WHERE id = (SELECT pg_catalog.pg_terminate_backend(42)::int)",
            "pg_catalog.pg_terminate_backend() interrupts or ends another session",
        ),
        (
            "WITH l AS (SELECT pg_try_advisory_lock(7)) SELECT * FROM users, l",
            "pg_try_advisory_lock() takes or releases an advisory lock (a session lock outlives "
            "the rolled-back transaction, and any lock can block the application)",
        ),
        (
            # In a YAML double-quoted scalar \" is a quote: these are quoted identifiers.
            'SELECT * FROM \\"pg_catalog\\".\\"pg_create_physical_replication_slot\\"(1)',
            "pg_catalog.pg_create_physical_replication_slot() creates, drops, advances or "
            "consumes a replication slot or origin",
        ),
    ],
)
def test_budget_queries_must_not_call_what_changes_something(
    write: Write, sql: str, message: str
) -> None:
    write(**{"indexes/users.yaml": budget(f'sql: "{sql}"', "budget_ms: 5")})
    assert problems() == [
        f"indexes/users.yaml:4:10: queries[0].sql: {message}: verify must change nothing"
    ]


def test_placeholders_and_params_must_match(write: Write) -> None:
    write(
        **{
            "indexes/users.yaml": budget(
                "sql: SELECT * FROM users WHERE shop = %(shop)s AND day = %(day)s",
                "params: {shop: 1, barber: 2}",
                "budget_ms: 5",
            )
        }
    )
    assert problems() == [
        "indexes/users.yaml:4:10: queries[0].sql: placeholder %(day)s has no value: "
        "add it under params",
        "indexes/users.yaml:5:23: queries[0].params.barber: parameter 'barber' is not used in sql",
    ]


def test_a_placeholder_without_any_params(write: Write) -> None:
    write(
        **{
            "indexes/users.yaml": budget(
                "sql: SELECT * FROM users WHERE id = %(id)s", "budget_ms: 5"
            )
        }
    )
    assert problems() == [
        "indexes/users.yaml:4:10: queries[0].sql: placeholder %(id)s has no value: "
        "add it under params"
    ]


def test_a_literal_percent_with_params(write: Write) -> None:
    write(
        **{
            "indexes/users.yaml": budget(
                "sql: \"SELECT * FROM users WHERE id = %(id)s AND name LIKE 'a%'\"",
                "params: {id: 1}",
                "budget_ms: 5",
            )
        }
    )
    assert problems() == [
        "indexes/users.yaml:4:10: queries[0].sql: the query is not valid: a bare '%' in a "
        "query: use %(name)s for parameters and %% for a literal '%'"
    ]


def test_a_percent_is_always_psycopg_grammar(write: Write) -> None:
    """With or without params, budget SQL follows psycopg: %% is a literal percent.

    What validate checks is then exactly what verify sends (always with a params mapping).
    """
    write(
        **{
            "indexes/users.yaml": budget(
                "sql: SELECT * FROM users WHERE name LIKE 'a%%'", "budget_ms: 5"
            )
        }
    )
    (query,) = load().index_queries
    assert query.uses_placeholders is True
    assert query.sql == "SELECT * FROM users WHERE name LIKE 'a%%'"


def test_a_bare_percent_is_an_error(write: Write) -> None:
    write(
        **{
            "indexes/users.yaml": budget(
                "sql: SELECT * FROM users WHERE name LIKE 'a%'", "budget_ms: 5"
            )
        }
    )
    with pytest.raises(SpecError) as caught:
        load()
    assert [p.message for p in caught.value.problems] == [
        "queries[0].sql: the query is not valid: a bare '%' in a query: use %(name)s for "
        "parameters and %% for a literal '%'"
    ]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            ["warn_ms: 10"],
            "indexes/users.yaml:6:14: queries[0].warn_ms: must be below budget_ms (10), got 10",
        ),
        (
            ["warn_ms: 12.5"],
            "indexes/users.yaml:6:14: queries[0].warn_ms: must be below budget_ms (10), got 12.5",
        ),
        (
            ["timeout_ms: 9"],
            "indexes/users.yaml:6:17: queries[0].timeout_ms: must be at least budget_ms (10)",
        ),
    ],
)
def test_budget_thresholds(write: Write, lines: list[str], message: str) -> None:
    write(**{"indexes/users.yaml": budget("sql: SELECT 1", "budget_ms: 10", *lines)})
    assert problems() == [message]


def test_warn_below_budget_is_fine(write: Write) -> None:
    write(
        **{
            "indexes/users.yaml": budget(
                "sql: SELECT 1", "budget_ms: 10", "warn_ms: 9.5", "timeout_ms: 10"
            )
        }
    )
    (query,) = load().index_queries
    assert (query.warn_ms, query.timeout_ms) == (9.5, 10.0)


# --- files and directories -------------------------------------------------------------


def test_problems_are_sorted_by_file_then_position(write: Write) -> None:
    write(
        **{
            "indexes/users.yaml": budget(
                "sql: SELECT 1", "timeout_ms: 2", "budget_ms: 5", "warn_ms: 8"
            ),
        }
    )
    assert problems() == [
        "indexes/users.yaml:5:17: queries[0].timeout_ms: must be at least budget_ms (5)",
        "indexes/users.yaml:7:14: queries[0].warn_ms: must be below budget_ms (5), got 8",
    ]


def test_file_level_problems(write: Write) -> None:
    write(
        **{
            "indexes/a_list.yaml": "- users\n",
            "indexes/b_unknown.yaml": "foo: 1\n",
            "indexes/c_empty.yaml": "",
            "indexes/d_tagged.yaml": "table: !!python/object/apply:os.system [id]\n",
            "indexes/e_twice.yaml": "table: users\n---\ntable: orders\n",
            "indexes/f_dupkey.yaml": "table: users\ntable: orders\n",
            "indexes/g_bad.yaml": "table: a.b.c\n",
        }
    )
    assert problems() == [
        "indexes/a_list.yaml:1:1: a spec file must be a mapping of keys to values",
        "indexes/b_unknown.yaml:1:1: cannot tell what this file is: an index file needs "
        "'table', a view file needs 'name' and 'query'",
        "indexes/c_empty.yaml:1:1: the file is empty; remove it or add a spec",
        "indexes/d_tagged.yaml:1:8: the tag '!!python/object/apply:os.system' is not allowed: "
        "dbopt reads plain YAML only (strings, numbers, true/false, lists and mappings); "
        "remove the tag",
        "indexes/e_twice.yaml:3:1: more than one YAML document ('---') in one file; "
        "use one file per spec",
        "indexes/f_dupkey.yaml:2:1: duplicate key 'table' (first given at line 1); "
        "remove one of them",
        "indexes/g_bad.yaml:1:8: table: 'a.b.c' is not a relation name: write name or schema.name",
    ]


def test_only_yaml_files_are_read(write: Write) -> None:
    write(
        **{
            "indexes/users.yml": "table: users\n",
            "indexes/README.md": "not a spec",
            "indexes/users.yaml.bak": "garbage: [",
        }
    )
    assert load().files == ("indexes/users.yml",)


def test_no_spec_files(write: Write) -> None:
    write(**{"indexes/README.md": "nothing here"})
    with pytest.raises(SpecError) as caught:
        load()
    assert str(caught.value) == (
        "no spec files (*.yaml) found in indexes, views: write indexes/<table>.yaml or "
        "views/<name>.yaml, or point --specs at the directory that holds them"
    )


def test_a_required_directory_must_exist(write: Write) -> None:
    write(**{"indexes/users.yaml": "table: users\n"})
    with pytest.raises(SpecError) as caught:
        load_specs([(Path("indexes"), True), (Path("specs"), True)])
    assert [str(p) for p in caught.value.problems] == [
        "specs:1:1: no such directory: check --specs"
    ]


def test_schema_qualified_table(write: Write) -> None:
    write(**{"indexes/t.yaml": "table: billing.invoices\nindexes:\n  - {name: i, columns: [a]}\n"})
    (index,) = load().indexes
    assert index.table == QualifiedName("billing", "invoices")
    assert index.qualified_name == QualifiedName("billing", "i")


def test_a_left_prefix_index_needs_a_reason(write: Write) -> None:
    write(
        **{
            "indexes/t.yaml": """
                table: t
                indexes:
                  - {name: t_a, columns: [a]}
                  - {name: t_a_b, columns: [a, b]}
                  - {name: t_a_partial, columns: [a], where: "b > 1"}
                  - {name: t_c, columns: [c], reason: smaller and hot}
                  - {name: t_c_d, columns: [c, d]}
                """
        }
    )
    with pytest.raises(SpecError) as caught:
        load()
    assert [str(p) for p in caught.value.problems] == [
        "indexes/t.yaml:4:5: index 't_a' is a left prefix of 't_a_b' (indexes/t.yaml:5:5), which "
        "serves the same lookups: remove it, or say why it is worth keeping under reason"
    ]


# --- every problem at once ---------------------------------------------------------------

LONG_NAME = "orders_placed_at_for_the_nightly_report_of_every_shop_in_every_region_xy"


def test_every_problem_in_every_file_at_once(write: Write) -> None:
    """One run reports what used to take five: schema, semantic, cross-file and YAML errors."""
    assert len(LONG_NAME.encode()) == 72
    write(
        **{
            "indexes/orders.yaml": f"""\
                table: orders
                indexes:
                  - name: orders_customer
                    columns: [customer_id]
                    unique: "yes"
                    where: "status = 'open'; DELETE FROM orders"
                  - name: {LONG_NAME}
                    columns: [placed_at]
                queries:
                  - name: cleanup
                    sql: DELETE FROM orders WHERE id = %(id)s
                    params: {{id: 1}}
                    budget_ms: "5"
            """,
            "indexes/users.yaml": """\
                table: users
                indexes:
                  - name: orders_customer
                    columns: [id]
            """,
            "views/mv_daily.yaml": """\
                name: mv_daily
                query: SELECT date(placed_at) AS day, count(*) AS n FROM orders GROUP BY 1
                depends_on: [mv_weekly]
                indexes:
                  - name: mv_daily_day
                    columns: [day]
                    unique: 1
                refresh: {schedule: "0 25 * * *", mode: concurrent}
            """,
            "views/mv_weekly.yaml": """\
                name: mv_weekly
                query: SELECT date_trunc('week', day) AS week, sum(n) AS n FROM mv_daily GROUP BY 1
                reason: weekly totals: for the board
            """,
        }
    )
    assert problems() == [
        "indexes/orders.yaml:5:13: indexes[0].unique: expected true or false, got the string 'yes'",
        "indexes/orders.yaml:6:12: indexes[0].where: the predicate is not valid: "
        "must be a single expression, not several statements",
        f"indexes/orders.yaml:7:11: indexes[1].name: '{LONG_NAME}' is 72 bytes long; "
        "PostgreSQL would silently truncate it to 63 bytes: choose a shorter name",
        "indexes/orders.yaml:11:10: queries[0].sql: the query is not valid: "
        "must be a read-only SELECT, not DELETE",
        "indexes/orders.yaml:13:16: queries[0].budget_ms: expected a number, got the string '5'",
        "indexes/users.yaml:3:5: index name 'public.orders_customer' is already used at "
        "indexes/orders.yaml:3:5; rename one of them (indexes and materialized views share "
        "one namespace per schema)",
        "views/mv_daily.yaml:7:13: indexes[0].unique: expected true or false, got the number 1",
        "views/mv_daily.yaml:8:21: refresh.schedule: '0 25 * * *' the hour field '25': "
        "25 is out of range 0-23",
        # Its file cannot be read, so depending on mv_weekly is no error.
        "views/mv_weekly.yaml:3:22: invalid YAML: the value of 'reason' contains ': ', which "
        "YAML reads as the start of another key: a value containing ': ' must be quoted, e.g. "
        'reason: "weekly totals: for the board"',
    ]


def test_a_wrong_type_at_the_top_hides_nothing_else_in_the_file(write: Write) -> None:
    write(
        **{
            "indexes/users.yaml": """\
                table: 5
                indexes:
                  - name: users_email
                    columns: [email]
                    where: "email = "
                queries:
                  - name: q
                    sql: UPDATE users SET a = 1
                    budget_ms: 5
                    warn_ms: 8
            """,
            "views/v.yaml": """\
                name: v
                query: SELECT 1; SELECT 2
                refresh: {schedule: "@sometimes", mode: sometimes}
                depends_on: v
                queries:
                  - {name: q, sql: "DELETE FROM users", budget_ms: 5}
            """,
        }
    )
    assert problems() == [
        "indexes/users.yaml:1:8: table: expected a string, got the number 5",
        "indexes/users.yaml:5:12: indexes[0].where: the predicate is not valid: "
        "syntax error at end of input",
        "indexes/users.yaml:8:10: queries[0].sql: the query is not valid: "
        "must be a read-only SELECT, not UPDATE",
        "indexes/users.yaml:10:14: queries[0].warn_ms: must be below budget_ms (5), got 8",
        "views/v.yaml:2:8: query: the view query is not valid: "
        "must be exactly one statement, found 2",
        "views/v.yaml:3:21: refresh.schedule: '@sometimes' is not a cron shorthand dbopt can "
        "run (one of @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly)",
        "views/v.yaml:3:41: refresh.mode: the string 'sometimes' is not one of concurrent, "
        "blocking, auto",
        "views/v.yaml:4:13: depends_on: expected a list, got the string 'v'",
        "views/v.yaml:6:5: query name 'q' is already used at indexes/users.yaml:7:5",
        "views/v.yaml:6:20: queries[0].sql: the query is not valid: "
        "must be a read-only SELECT, not DELETE",
    ]


def test_a_view_without_a_name_is_still_checked(write: Write) -> None:
    write(
        **{
            "views/a.yaml": """\
                name: [a]
                query: SELECT 1 AS id
                indexes: [{name: a_id, columns: [id], method: gin, include: [x]}]
                queries: [{name: q, sql: "SELECT 1; SELECT 2", budget_ms: 5}]
            """,
            # a.yaml may be the view named a: no "not a view in the specs" here.
            "views/b.yaml": "name: b\nquery: SELECT 1 AS id\ndepends_on: [a]\n",
        }
    )
    assert problems() == [
        "views/a.yaml:1:7: name: expected a string, got a list",
        "views/a.yaml:3:61: indexes[0].include: gin indexes cannot INCLUDE columns "
        "(only btree, gist, spgist)",
        "views/a.yaml:4:26: queries[0].sql: the query is not valid: "
        "must be exactly one statement, found 2",
    ]


def test_two_files_for_one_table(write: Write) -> None:
    write(
        **{
            "indexes/users.yaml": "table: users\nindexes:\n  - {name: users_a, columns: [a]}\n",
            "indexes/users_more.yaml": "table: public.users\n"
            "indexes:\n  - {name: users_b, columns: [b]}\n",
            "indexes/app_users.yaml": "table: app.users\n",
        }
    )
    assert problems() == [
        "indexes/users_more.yaml:1:8: table 'public.users' already has a spec file "
        "(indexes/users.yaml:1:8): keep one file per table, and move these indexes and "
        "queries there",
    ]


def test_a_misspelt_key_in_an_index_hides_none_of_its_other_problems(write: Write) -> None:
    write(
        **{
            "indexes/users.yaml": """\
                table: users
                indexes:
                  - name: users_a
                    columns: [a]
                  - name: users_a
                    colums: [b]
                    method: brin
                    unique: true
                    with: {fillfactor: 90}
            """
        }
    )
    assert problems() == [
        "indexes/users.yaml:5:5: index name 'public.users_a' is already used at "
        "indexes/users.yaml:3:5; rename one of them (indexes and materialized views share "
        "one namespace per schema)",
        "indexes/users.yaml:6:5: indexes[1]: unknown key 'colums'; did you mean 'columns'?",
        "indexes/users.yaml:8:13: indexes[1].unique: only btree indexes can be unique, not brin",
        "indexes/users.yaml:9:12: indexes[1].with.fillfactor: unknown storage parameter "
        "'fillfactor'; brin accepts: pages_per_range, autosummarize",
    ]


def test_a_duplicate_key_hides_nothing_else_in_the_file(write: Write) -> None:
    write(
        **{
            "indexes/users.yaml": """\
                table: users
                indexes:
                  - name: users_a
                    columns: [a]
                    columns: [b]
                    where: "a = 1; SELECT 2"
            """
        }
    )
    assert problems() == [
        "indexes/users.yaml:5:5: duplicate key 'columns' (first given at line 4); "
        "remove one of them",
        "indexes/users.yaml:6:12: indexes[0].where: the predicate is not valid: "
        "must be a single expression, not several statements",
    ]
