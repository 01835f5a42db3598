"""`dbopt validate --dsn`: check specs against a live database without changing anything.

Every check runs in a READ ONLY transaction that is rolled back, under a short
statement_timeout, so pointing validate at production is safe.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from dbopt.catalog import Catalog, inspect
from dbopt.db import server_message
from dbopt.docvalidate import suggest
from dbopt.errors import Problem, SpecError
from dbopt.spec import IndexSpec, Location, QualifiedName, SpecSet, ViewSpec, parse_qualified
from dbopt.sqltext import budget_query_sql, expression_sql, query_sql

CHECK_TIMEOUT_MS = 5_000


def _at(loc: Location, message: str) -> Problem:
    return Problem(loc.file, loc.line, loc.column, message)


def _try(conn: psycopg.Connection[Any], query: sql.Composed, params: Any = None) -> Any:
    """Run one statement read-only and rolled back; the cursor description, or the error."""
    try:
        with conn.transaction(force_rollback=True), conn.cursor() as cur:
            cur.execute("SET TRANSACTION READ ONLY")
            cur.execute(
                sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(CHECK_TIMEOUT_MS))
            )
            cur.execute(query, params)
            return [d.name for d in cur.description or []]
    except psycopg.Error as exc:
        return exc


def _view_columns(
    conn: psycopg.Connection[Any], view: ViewSpec, catalog: Catalog, problems: list[Problem]
) -> tuple[str, ...] | None:
    existing = catalog.relations.get(view.name)
    result = _try(
        conn,
        sql.SQL("SELECT * FROM ({}) AS dbopt_view_check LIMIT 0").format(query_sql(view.query)),
    )
    if isinstance(result, psycopg.Error):
        problems.append(
            _at(view.location, f"the query of {view.name} fails: {server_message(result)}")
        )
        return existing.columns if existing else None
    return tuple(result)


def _missing_table(table: QualifiedName, loc: Location, catalog: Catalog) -> Problem:
    known = [n.name for n in catalog.relations if n.schema == table.schema]
    return _at(loc, f"table {table} does not exist in the database" + suggest(table.name, known))


def _check_index(
    conn: psycopg.Connection[Any],
    index: IndexSpec,
    columns: tuple[str, ...],
    problems: list[Problem],
) -> None:
    for col in [c.name for c in index.columns if c.name] + list(index.include):
        if col not in columns:
            problems.append(
                _at(
                    index.location,
                    f"index {index.name}: column '{col}' does not exist on {index.table}"
                    + suggest(col, columns),
                )
            )
    exprs = [c.expr for c in index.columns if c.expr]
    for text, what in [*((e, "expression") for e in exprs), (index.where, "predicate")]:
        if text is None:
            continue
        result = _try(
            conn,
            sql.SQL("SELECT {} FROM {} WHERE false").format(
                expression_sql(text), index.table.ident()
            ),
        )
        if isinstance(result, psycopg.Error):
            problems.append(
                _at(
                    index.location,
                    f"index {index.name}: the {what} fails on {index.table}: "
                    f"{server_message(result)}",
                )
            )


def check_against_database(specs: SpecSet, conn: psycopg.Connection[Any]) -> Catalog:
    """Raise SpecError when a table, column, index or query in the specs does not fit the DB."""
    catalog = inspect(conn)
    problems: list[Problem] = []
    reported: set[QualifiedName] = set()
    for index in specs.indexes:
        relation = catalog.relations.get(index.table)
        if relation is None or relation.relkind in ("m", "v"):
            if index.table not in reported:
                problems.append(_missing_table(index.table, index.location, catalog))
                reported.add(index.table)
            continue
        _check_index(conn, index, relation.columns, problems)
    # An index file may hold only budgets: its table must exist all the same.
    view_names = {str(v.name) for v in specs.views}
    for query in specs.index_queries:
        table = parse_qualified(query.owner)
        if query.owner in view_names or table in reported or table in catalog.relations:
            continue
        problems.append(_missing_table(table, query.location, catalog))
        reported.add(table)
    for view in specs.views:
        columns = _view_columns(conn, view, catalog, problems)
        if columns is not None:
            for index in view.indexes:
                _check_index(conn, index, columns, problems)
    from dbopt.verify import budget_problems

    problems.extend(budget_problems(specs.queries, specs, catalog))
    missing_views = {str(v.name) for v in specs.views if v.name not in catalog.relations}
    for query in specs.queries:
        if query.owner in missing_views:
            continue  # its view is created by apply; the query is checked once it exists
        params = dict(query.params) if query.uses_placeholders else None
        result = _try(conn, sql.SQL("EXPLAIN {}").format(budget_query_sql(query.sql)), params)
        if isinstance(result, psycopg.Error):
            problems.append(
                _at(query.location, f"query {query.name} fails: {server_message(result)}")
            )
    if problems:
        problems.sort(key=lambda p: (p.file, p.line, p.column))
        count = len(problems)
        raise SpecError(
            f"{count} problem{'s' if count != 1 else ''} against the database; nothing was changed",
            problems,
        )
    return catalog
