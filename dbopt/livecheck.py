"""`dbopt validate --dsn`: check specs against a live database without changing anything.

Nothing a spec says is run before it is known to change nothing. View queries, index
expressions and predicates are only parsed and analysed by the server (the protocol's
Parse and Describe: every name and type is resolved, nothing is planned or executed, so not
even an IMMUTABLE function is evaluated). A budget query is first checked against the
database's catalog exactly as verify checks it (:class:`dbopt.readonly.CallGraph`): a query
that can reach anything that changes something is reported at its file:line and never sent.
The others are planned with plain EXPLAIN (no ANALYZE). Each statement runs in a READ ONLY
transaction that is rolled back, under a short statement_timeout, so pointing validate at
production is safe.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import pq, sql
from psycopg.errors import error_from_result

from dbopt.catalog import Catalog, inspect
from dbopt.db import read_only_transaction, server_message
from dbopt.ddl import needs_newer_server
from dbopt.errors import Problem, SpecError
from dbopt.model import (
    IndexSpec,
    Location,
    QualifiedName,
    QueryBudget,
    SpecSet,
    ViewSpec,
    parse_qualified,
)
from dbopt.readonly import CallGraph
from dbopt.sqltext import SqlTextError, budget_query_sql, expression_sql, query_sql
from dbopt.verify.select import budget_problems
from dbopt.words import suggest

CHECK_TIMEOUT_MS = 5_000


def _explain(
    conn: psycopg.Connection[Any], query: sql.Composed, params: Mapping[str, object] | None
) -> psycopg.Error | None:
    """Plan one statement with plain EXPLAIN, read-only and rolled back; None, or the error."""
    try:
        with read_only_transaction(conn, timeout_ms=CHECK_TIMEOUT_MS) as cur:
            cur.execute(query, params)
    except psycopg.Error as exc:
        return exc
    return None


def _describe(conn: psycopg.Connection[Any], query: sql.Composed) -> list[str] | psycopg.Error:
    """The result columns of one statement, parsed and analysed but neither planned nor run.

    Uses the unnamed prepared statement, which the next statement replaces: the session keeps
    nothing. Returns the server's error instead when the statement does not fit the database.
    """
    text = query.as_bytes(conn)
    encoding = conn.info.encoding
    try:
        with read_only_transaction(conn, timeout_ms=CHECK_TIMEOUT_MS):
            result = conn.pgconn.prepare(b"", text)
            if result.status == pq.ExecStatus.COMMAND_OK:
                result = conn.pgconn.describe_prepared(b"")
            if result.status != pq.ExecStatus.COMMAND_OK:
                raise error_from_result(result, encoding)
            return [(result.fname(i) or b"").decode(encoding) for i in range(result.nfields)]
    except psycopg.Error as exc:
        return exc


def _view_columns(
    conn: psycopg.Connection[Any], view: ViewSpec, catalog: Catalog, problems: list[Problem]
) -> tuple[str, ...] | None:
    existing = catalog.relations.get(view.name)
    result = _describe(
        conn, sql.SQL("SELECT * FROM ({}) AS dbopt_view_check").format(query_sql(view.query))
    )
    if isinstance(result, psycopg.Error):
        problems.append(
            view.location.problem(f"the query of {view.name} fails: {server_message(result)}")
        )
        return existing.columns if existing else None
    return tuple(result)


def _missing_table(table: QualifiedName, loc: Location, catalog: Catalog) -> Problem:
    known = [n.name for n in catalog.relations if n.schema == table.schema]
    return loc.problem(f"table {table} does not exist in the database" + suggest(table.name, known))


def _check_index(
    conn: psycopg.Connection[Any],
    index: IndexSpec,
    columns: tuple[str, ...],
    problems: list[Problem],
) -> None:
    for need in needs_newer_server(index, conn.info.server_version):
        problems.append(index.location.problem(f"index {index.name}: {need}"))
    for col in [c.name for c in index.columns if c.name] + list(index.include):
        if col not in columns:
            problems.append(
                index.location.problem(
                    f"index {index.name}: column '{col}' does not exist on {index.table}"
                    + suggest(col, columns),
                )
            )
    exprs = [c.expr for c in index.columns if c.expr]
    for text, what in [*((e, "expression") for e in exprs), (index.where, "predicate")]:
        if text is None:
            continue
        result = _describe(
            conn,
            sql.SQL("SELECT {} FROM {}").format(expression_sql(text), index.table.ident()),
        )
        if isinstance(result, psycopg.Error):
            problems.append(
                index.location.problem(
                    f"index {index.name}: the {what} fails on {index.table}: "
                    f"{server_message(result)}",
                )
            )


def _may_run(query: QueryBudget, calls: CallGraph) -> bool:
    """True when the budget query passes the read-only checks (budget_problems says why not)."""
    try:
        return not calls.refusals(query.sql, with_placeholders=True)
    except SqlTextError:
        return False


def check_against_database(specs: SpecSet, conn: psycopg.Connection[Any]) -> Catalog:
    """Raise SpecError when a table, column, index or query in the specs does not fit the DB."""
    catalog = inspect(conn, specs.relations())
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
        table = parse_qualified(query.relation)
        if query.relation in view_names or table in reported or table in catalog.relations:
            continue
        problems.append(_missing_table(table, query.location, catalog))
        reported.add(table)
    for view in specs.views:
        columns = _view_columns(conn, view, catalog, problems)
        if columns is not None:
            for index in view.indexes:
                _check_index(conn, index, columns, problems)
    calls = CallGraph.read(conn)
    problems.extend(budget_problems(specs.queries, specs, catalog, calls))
    missing_views = {str(v.name) for v in specs.views if v.name not in catalog.relations}
    for query in specs.queries:
        if query.relation in missing_views or not _may_run(query, calls):
            # Its view is created by apply (checked once it exists), or it was refused above.
            continue
        params = dict(query.params) if query.uses_placeholders else None
        result = _explain(conn, sql.SQL("EXPLAIN {}").format(budget_query_sql(query.sql)), params)
        if isinstance(result, psycopg.Error):
            problems.append(
                query.location.problem(f"query {query.name} fails: {server_message(result)}")
            )
    if problems:
        problems.sort(key=lambda p: (p.file, p.line, p.column))
        count = len(problems)
        raise SpecError(
            f"{count} problem{'s' if count != 1 else ''} against the database; nothing was changed",
            problems,
        )
    return catalog
