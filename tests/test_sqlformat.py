"""Printed SQL reads like hand-written SQL and means exactly what dbopt runs."""

from __future__ import annotations

from pglast import parse_sql

from dbopt.sqlformat import pretty, script


def _tree(text: str) -> object:
    def strip(node: object) -> object:
        if isinstance(node, dict):
            return {
                k: strip(v)
                for k, v in node.items()
                if not k.endswith(("location", "_len", "_start", "_end"))
            }
        if isinstance(node, (list, tuple)):
            return [strip(v) for v in node]
        return node

    return strip([s.stmt(skip_none=True) for s in parse_sql(text)])


def test_quotes_only_what_needs_quoting_and_keeps_the_meaning() -> None:
    sent = (
        'CREATE INDEX CONCURRENTLY "idx_orders_Status" ON "public"."user" USING btree '
        '("customer_id", "select", lower("Name") text_pattern_ops) INCLUDE ("total", "x y") '
        "WHERE status IN ('new', 'paid')"
    )
    printed = pretty(sent)
    assert printed == (
        'CREATE INDEX CONCURRENTLY "idx_orders_Status"\n'
        '  ON public."user" (customer_id, "select", (lower("Name")) text_pattern_ops) '
        'INCLUDE (total, "x y")\n'
        "  WHERE status IN ('new', 'paid')"
    )
    assert _tree(printed) == _tree(sent)


def test_a_view_query_keeps_its_lists_whole() -> None:
    printed = pretty(
        'CREATE MATERIALIZED VIEW "public"."mv" AS SELECT date(created_at) AS day, '
        "location_id, count(*) FROM appointments GROUP BY 1, 2 WITH NO DATA"
    )
    assert "GROUP BY 1, 2" in printed
    assert "  " not in printed.replace("\n  ", "\n").split("AS SELECT", 1)[0]


def test_what_the_parser_cannot_print_back_is_printed_as_sent() -> None:
    assert pretty("NOT SQL AT ALL;") == "NOT SQL AT ALL"


def test_a_swap_stays_one_transaction() -> None:
    text = script(
        [
            'ALTER INDEX "public"."a" RENAME TO "a_old"',
            'ALTER INDEX "public"."a_new" RENAME TO "a"',
        ],
        transaction=True,
    )
    assert text == (
        "BEGIN;\nALTER INDEX public.a RENAME TO a_old;\nALTER INDEX public.a_new RENAME TO a;\n"
        "COMMIT;"
    )
