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

Views are checked in dependency order (their depends_on, and the spec views their queries
name): a view that reads another spec view is checked with that view's query in its place, as
a subquery under the view's name, so it is checked against what apply will build even on a
fresh database where the view it reads does not exist yet, and still without creating
anything. ``dbopt apply`` runs these same checks before its first statement.
"""

from __future__ import annotations

import graphlib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import pq, sql
from psycopg.errors import error_from_result

from dbopt.catalog import Catalog, catalog_sql, inspect
from dbopt.db import read_only_transaction, server_message
from dbopt.ddl import hurry_held_waits, needs_newer_server
from dbopt.errors import LockRefusal, LockWaitError, Problem, SpecError
from dbopt.model import (
    IndexSpec,
    Location,
    QualifiedName,
    QueryBudget,
    SpecSet,
    ViewSpec,
    parse_qualified,
)
from dbopt.spec import dependency_order, view_order
from dbopt.sqltext import (
    SqlTextError,
    expression_columns,
    expression_sql,
    query_sql,
    render_query,
)
from dbopt.words import suggest
from dbopt.yamlcache import kept

if TYPE_CHECKING:
    from dbopt.readonly import CallGraph

CHECK_TIMEOUT_MS = 5_000


def _describe(conn: psycopg.Connection[Any], query: sql.Composed) -> list[str] | psycopg.Error:
    """The result columns of one statement, parsed and analysed but neither planned nor run.

    Returns the server's error instead when the statement does not fit the database.
    """
    return _describe_all(conn, [query])[0]


def _describe_all(
    conn: psycopg.Connection[Any], queries: Sequence[sql.Composed]
) -> list[list[str] | psycopg.Error]:
    """:func:`_describe` of each query, in one read-only transaction (and one more after
    each query that fails: its error aborts the transaction), not one each.

    The queries should all read one table: the transaction keeps the ACCESS SHARE lock each
    Parse takes until it ends, and a lock kept on one table while waiting for another's would
    queue DDL on the first (and the application behind that DDL). Each uses the unnamed
    prepared statement, which the next statement replaces: the session keeps nothing."""
    results: list[list[str] | psycopg.Error] = []
    while len(results) < len(queries):
        at = len(results)
        try:
            with read_only_transaction(conn, timeout_ms=CHECK_TIMEOUT_MS, past_lock_timeout=True):
                for query in queries[at:]:
                    results.append(_prepared_columns(conn, query))
                    if isinstance(results[-1], psycopg.Error):
                        break  # the transaction is aborted: the rest in a new one
        except psycopg.Error as exc:
            # The transaction itself failed (a lost connection) before this one answered
            # anything: the query it was at fails. (After an answer, e.g. at the rollback,
            # the next transaction tells.)
            if len(results) == at:
                results.append(exc)
        if results and _held(results[-1]):
            # Their table is held by another session: waited for once, not once each.
            results += [results[-1]] * (len(queries) - len(results))
    return results


def query_columns(conn: psycopg.Connection[Any], text: str) -> tuple[str, ...] | None:
    """The result columns of a materialized view's query, parsed and analysed (never run),
    or None when the server refuses it (the query is what a restore would build from: checked
    as a restore checks it before)."""
    result = _describe(
        conn, sql.SQL("SELECT * FROM ({}) AS dbopt_view_check").format(query_sql(text))
    )
    return None if isinstance(result, psycopg.Error) else tuple(result)


def _held(result: object) -> bool:
    """The check waited for a lock another session holds (lock_timeout): the spec was not
    checked, which is no fault of the spec. (statement_timeout is the spec's: a query that
    cannot even be planned in time.)"""
    return isinstance(result, psycopg.errors.LockNotAvailable)


#: What could not be checked (the held table's lock), and the server's error for it.
Unchecked = list[tuple[str, psycopg.Error]]


def _prepared_columns(
    conn: psycopg.Connection[Any], query: sql.Composed
) -> list[str] | psycopg.Error:
    text = query.as_bytes(conn)
    encoding = conn.info.encoding
    result = conn.pgconn.prepare(b"", text)
    if result.status == pq.ExecStatus.COMMAND_OK:
        result = conn.pgconn.describe_prepared(b"")
    if result.status != pq.ExecStatus.COMMAND_OK:
        return error_from_result(result, encoding)
    return [(result.fname(i) or b"").decode(encoding) for i in range(result.nfields)]


class _SpecViews:
    """Which spec view a relation named in a query is, as the session resolves the name.

    A name in a query's FROM is a spec view when it is written with that view's schema, or
    unqualified and the view's schema is the first one of the search path holding a spec view
    of that name (a CTE of the same name hides it). A table of that name in an earlier schema
    of the path is not looked for: such a spec would shadow a table, which is asking for it.
    """

    def __init__(
        self,
        views: Sequence[ViewSpec],
        search_path: Sequence[str],
        names: Collection[QualifiedName] = (),
    ) -> None:
        self.names = {v.name for v in views} | set(names)
        self.search_path = [s for s in search_path if not s.startswith("pg_")]
        #: What each query reads (:func:`_read_views`), parsed once per query.
        self.reads: dict[str, frozenset[QualifiedName]] = {}

    def resolve(self, schema: str | None, name: str, ctes: set[str]) -> QualifiedName | None:
        if schema is not None:
            found = QualifiedName(schema, name)
            return found if found in self.names else None
        if name in ctes:
            return None
        for path_schema in self.search_path:
            candidate = QualifiedName(path_schema, name)
            if candidate in self.names:
                return candidate
        return None


def _read_views(query: str, views: _SpecViews) -> set[QualifiedName]:
    """The spec views a view query reads (empty when pglast cannot parse it: reported later)."""
    known = views.reads.get(query)
    if known is None:
        relations, ctes = _names_in(query)
        within = set(ctes)
        found = (views.resolve(schema, name, within) for schema, name in relations)
        known = views.reads[query] = frozenset(name for name in found if name is not None)
    return set(known)


@kept("view_names", "pglast")
def _names_in(query: str) -> tuple[tuple[tuple[str | None, str], ...], tuple[str, ...]]:
    """The relations a view query names, as (schema or None, name), and the names of its
    common table expressions (none of either when pglast cannot parse it)."""
    from pglast.visitors import Visitor

    stmt = _tree(query)
    if stmt is None:
        return (), ()
    relations: list[tuple[str | None, str]] = []
    ctes: list[str] = []

    class Names(Visitor):
        def visit_CommonTableExpr(self, ancestors: Any, node: Any) -> None:
            ctes.append(node.ctename)

        def visit_RangeVar(self, ancestors: Any, node: Any) -> None:
            relations.append((node.schemaname, node.relname))

    Names()(stmt)
    return tuple(relations), tuple(ctes)


@kept("view_rendered", "pglast")
def _rendered(query: str) -> str:
    """:func:`_rewrite` of ``query`` when it reads no view to put in its place."""
    from pglast.stream import RawStream

    stmt = _tree(query)
    return query if stmt is None else str(RawStream()(stmt))


def _tree(query: str) -> Any:
    """The pglast tree of a view query as the parser renders it (None when it cannot be
    parsed: the query check reports it)."""
    from pglast import parser

    try:
        return parser.parse_sql(render_query(query))[0].stmt
    except (SqlTextError, parser.ParseError):
        return None


def _parsed(text: str) -> Any:
    """The pglast tree of one statement the parser accepted before."""
    from pglast import parser

    return parser.parse_sql(text)[0].stmt


def _rewrite(query: str, views: _SpecViews, body_of: Callable[[QualifiedName], Any]) -> str:
    """``query`` with every spec view it reads replaced by ``body_of(name)`` (a pglast
    SelectStmt, or None to keep the name), as a subquery under the name or alias it had."""
    from pglast import ast
    from pglast.stream import RawStream
    from pglast.visitors import Visitor

    stmt = _tree(query)
    if stmt is None:
        return query
    ctes: set[str] = set()

    class Ctes(Visitor):
        def visit_CommonTableExpr(self, ancestors: Any, node: Any) -> None:
            ctes.add(node.ctename)

    class Inline(Visitor):
        def visit_RangeVar(self, ancestors: Any, node: Any) -> Any:
            name = views.resolve(node.schemaname, node.relname, ctes)
            body = None if name is None else body_of(name)
            if body is None:
                return None
            alias = node.alias or ast.Alias(aliasname=node.relname)
            return ast.RangeSubselect(lateral=False, subquery=body, alias=alias)

    Ctes()(stmt)
    Inline()(stmt)
    return str(RawStream()(stmt))


def _resolver(conn: psycopg.Connection[Any], views: Sequence[ViewSpec]) -> _SpecViews:
    row = conn.execute(catalog_sql("readonly_search_path")).fetchone()
    return _SpecViews(views, list(row[0]) if row else [])


def rebinding_problems(
    conn: psycopg.Connection[Any],
    views: Sequence[ViewSpec],
    changed: Mapping[QualifiedName, Collection[str]],
    catalog: Catalog,
) -> dict[QualifiedName, list[str]]:
    """For each view of ``changed`` (existing spec views, with the columns whose type or
    collation their new query changes), why the views reading it could not be re-bound at
    its replace: a view keeps its columns' types and collations (CREATE OR REPLACE VIEW
    cannot change them). Each plain view reading such a column -- of the view, or of a
    materialized view the replace rebuilds from it -- is made again as a temporary view,
    the new query standing in for what it reads, and its columns compared with its own; in
    one transaction, rolled back, taking each lock at once or not at all (a reader's other
    tables may be any). One that cannot be tried so is a problem too: the swap would tell
    only after every build."""
    by_name = {v.name: v for v in views}
    search_path = _resolver(conn, ()).search_path
    found: dict[QualifiedName, list[str]] = {}
    made = 0

    def stand_in(text: str | None, name: QualifiedName, body: str | None) -> str | None:
        """``text`` with ``body`` in place of ``name``; None when either cannot be read."""
        if text is None or body is None or _tree(text) is None or _tree(body) is None:
            return None
        resolver = _SpecViews((), search_path, (name,))
        return _rewrite(text, resolver, lambda _n: _parsed(render_query(body)))

    def differences(reader: QualifiedName, text: str | None) -> list[str] | str:
        """What would change of ``reader``'s columns, made again from ``text``; or why it
        could not be tried (a replace that cannot tell does not start)."""
        nonlocal made
        if text is None:
            return "its definition could not be rewritten over the new query"
        temp = f"dbopt_rebind_{made:06d}"
        made += 1
        try:
            with conn.transaction():
                conn.execute(
                    sql.SQL("CREATE TEMP VIEW {} AS {}").format(
                        sql.Identifier(temp), query_sql(text)
                    )
                )
                rows = conn.execute(
                    catalog_sql("view_rebinding"),
                    {"view": catalog.relations[reader].oid, "temp": f"pg_temp.{temp}"},
                ).fetchall()
        except psycopg.errors.LockNotAvailable:
            return LockRefusal(
                "a lock on what it reads was not granted at once (another session holds "
                "one of them): try again once it is done"
            )
        except (psycopg.Error, SqlTextError) as exc:
            reason = server_message(exc) if isinstance(exc, psycopg.Error) else str(exc)
            return f"it could not be made over the new query ({reason})"
        return [
            f"{column} ({old} to {new}{', and its collation' if collation else ''})"
            if old != new
            else f"{column} (its collation)"
            for column, old, new, collation in rows
        ]

    def said(view: QualifiedName, reader: QualifiedName, changes: list[str] | str, via: str) -> str:
        if isinstance(changes, LockRefusal):  # only a lock: the plan exits 3 (try again)
            return LockRefusal(
                f"the view {reader}{via} reads a column whose type or collation the new query "
                f"changes, and dbopt could not try it over the new query: {changes}"
            )
        if isinstance(changes, str):
            return (
                f"the view {reader}{via} reads a column whose type or collation the new query "
                f"changes, and dbopt could not try it over the new query: {changes}; drop "
                f"{reader} and create it again after the replace, or keep them (a cast or "
                f"COLLATE in the new query of {view})"
            )
        return (
            f"the view {reader}{via} would change its column{'s' if len(changes) > 1 else ''} "
            f"{', '.join(changes)}: a view keeps its columns' types and collations; drop "
            f"{reader} and create it again after the replace, or keep them (a cast or COLLATE "
            f"in the new query of {view})"
        )

    with conn.transaction(force_rollback=True):
        # What the readers read besides may be any table: taken at once, or not tried (a
        # wait there would be one for a table outside the specs).
        conn.execute(hurry_held_waits())
        for view in sorted(changed):
            spec = by_name.get(view)
            if spec is None:
                continue
            for reader in catalog.dependents.get(view, ()):
                relation = catalog.relations.get(reader)
                read = catalog.read_columns.get((view, reader), ())
                if relation is None or not set(read) & set(changed[view]):
                    continue  # it reads none of the columns that change: nothing to follow
                if not relation.view_definition:
                    continue  # not read (a lock not granted at once): the plan refuses it
                text = stand_in(relation.view_definition, view, spec.query)
                if relation.relkind == "v":
                    changes = differences(reader, text)
                    if changes:
                        found.setdefault(view, []).append(said(view, reader, changes, ""))
                    continue
                # Rebuilt over the new query, it must still be a query (its own columns
                # may change: it is made anew).
                made_again = differences(reader, text)
                if isinstance(made_again, str):
                    found.setdefault(view, []).append(
                        said(view, reader, made_again, f" (rebuilt from {view})")
                    )
                    continue
                for plain in catalog.dependents.get(reader, ()):
                    over = catalog.relations.get(plain)
                    if over is None or over.relkind != "v" or not over.view_definition:
                        continue  # (unread: the plan refuses it)
                    changes = differences(plain, stand_in(over.view_definition, reader, text))
                    if changes:
                        via = f" (it reads {reader}, rebuilt from {view})"
                        found.setdefault(view, []).append(said(view, plain, changes, via))
    return found


def with_read_views(specs: SpecSet, conn: psycopg.Connection[Any]) -> SpecSet:
    """``specs`` with each view also depending on the spec views its query reads, so that
    apply creates (and refresh refreshes) them first even where depends_on does not say so."""
    resolver = _resolver(conn, specs.views)
    views = []
    for view in specs.views:
        read = _read_views(view.query, resolver) - {view.name} - set(view.depends_on)
        views.append(replace(view, depends_on=(*view.depends_on, *sorted(read))))
    graph = {v.name: set(v.depends_on) for v in views}
    try:
        dependency_order(graph)
    except graphlib.CycleError:  # queries naming each other: the checks report them
        return specs
    return replace(specs, views=tuple(views))


def _view_order(views: Sequence[ViewSpec], specs: _SpecViews) -> list[ViewSpec]:
    """Views after the views they depend on: depends_on, and the spec views they read."""
    by_name = {v.name: v for v in views}
    graph = {v.name: {d for d in v.depends_on if d in by_name} for v in views}
    for view in views:
        graph[view.name] |= _read_views(view.query, specs) - {view.name}
    try:
        return [by_name[n] for n in dependency_order(graph)]
    except graphlib.CycleError:  # queries naming each other: the server refuses them anyway
        return view_order(views)


def _check_views(
    conn: psycopg.Connection[Any],
    specs: SpecSet,
    catalog: Catalog,
    problems: list[Problem],
    unchecked: Unchecked,
) -> None:
    """Each view's query (with the spec views it reads in their place) and its indexes."""
    resolver = _resolver(conn, specs.views)
    checked: dict[QualifiedName, str] = {}  # the query each checked view stands for
    failed: set[QualifiedName] = set()
    for view in _view_order(specs.views, resolver):
        reads = _read_views(view.query, resolver) - {view.name}
        if reads & failed:
            failed.add(view.name)  # what it reads fails (reported there): cannot be checked
            continue
        if reads & checked.keys():
            text = _rewrite(
                view.query,
                resolver,
                lambda name: _parsed(checked[name]) if name in checked else None,
            )
        else:  # nothing to put in place: the same text every time, kept
            text = _rendered(view.query)
        existing = catalog.relations.get(view.name)
        result = _describe(
            conn, sql.SQL("SELECT * FROM ({}) AS dbopt_view_check").format(query_sql(text))
        )
        if isinstance(result, psycopg.Error) and _held(result):
            unchecked.append((f"the query of {view.name} (and what reads it)", result))
            failed.add(view.name)
            continue
        if isinstance(result, psycopg.Error):
            problems.append(
                view.location.problem(f"the query of {view.name} fails: {server_message(result)}")
            )
            failed.add(view.name)
            columns = existing.columns if existing else None
        else:
            checked[view.name] = text
            columns = tuple(result)
        if columns is not None:
            for index in view.indexes:
                _check_index(conn, index, columns, problems, unchecked)


def _missing_table(table: QualifiedName, loc: Location, catalog: Catalog) -> Problem:
    known = [n.name for n in catalog.relations if n.schema == table.schema]
    return loc.problem(f"table {table} does not exist in the database" + suggest(table.name, known))


def _check_index(
    conn: psycopg.Connection[Any],
    index: IndexSpec,
    columns: tuple[str, ...],
    problems: list[Problem],
    unchecked: Unchecked,
) -> None:
    _check_columns(conn.info.server_version, index, columns, problems)
    _check_expressions(conn, [index], problems, unchecked)


def _check_columns(
    server_version: int, index: IndexSpec, columns: tuple[str, ...], problems: list[Problem]
) -> None:
    for need in needs_newer_server(index, server_version):
        problems.append(index.location.problem(f"index {index.name}: {need}"))
    for col in [c.name for c in index.columns if c.name] + list(index.include):
        if col not in columns:
            problems.append(
                index.location.problem(
                    f"index {index.name}: column '{col}' does not exist on {index.table}"
                    + suggest(col, columns),
                )
            )


def _check_expressions(
    conn: psycopg.Connection[Any],
    indexes: Sequence[IndexSpec],
    problems: list[Problem],
    unchecked: Unchecked,
) -> None:
    """Each index's expressions and predicate, parsed and analysed against its table (one
    held by another session is waited for once, and is ``unchecked``, not a problem)."""
    checks = [
        (index, what, expression_sql(text))
        for index in indexes
        for text, what in [
            *((c.expr, "expression") for c in index.columns if c.expr),
            (index.where, "predicate"),
        ]
        if text is not None
    ]
    # One transaction a table (see _describe_all: never a lock kept while waiting for another).
    by_table: dict[QualifiedName, list[tuple[IndexSpec, str, sql.Composable]]] = {}
    for check in checks:
        by_table.setdefault(check[0].table, []).append(check)
    for table, group in by_table.items():
        results: list[list[str] | psycopg.Error] | None = None
        if len(group) > 1:
            # All of a table's at once (one statement's parse and analysis): what fails there
            # is then told apart, each by itself (and only what fails alone is a problem).
            together = sql.SQL("SELECT {} FROM {}").format(
                sql.SQL(", ").join(e for _, _, e in group), table.ident()
            )
            outcome = _describe(conn, together)
            if not isinstance(outcome, psycopg.Error):
                continue
            if isinstance(outcome, psycopg.errors.LockNotAvailable | psycopg.errors.QueryCanceled):
                results = [outcome] * len(group)  # the table's, not theirs: waited for once
        if results is None:
            results = _describe_all(
                conn, [sql.SQL("SELECT {} FROM {}").format(e, table.ident()) for _, _, e in group]
            )
        held = [r for r in results if isinstance(r, psycopg.Error) and _held(r)]
        if held:
            names = ", ".join(sorted({i.name for i, _, _ in group}))
            unchecked.append((f"the expressions and predicates of {names} on {table}", held[0]))
            continue
        for (index, what, _), result in zip(group, results, strict=True):
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


def check_against_database(
    specs: SpecSet,
    conn: psycopg.Connection[Any],
    *,
    budgets: bool = True,
    catalog: Catalog | None = None,
    calls: Callable[[], CallGraph] | None = None,
) -> Catalog:
    """Raise SpecError when a table, column, index or query in the specs does not fit the DB,
    listing every problem at its file:line. ``budgets=False`` leaves the budgeted queries out
    (what apply builds does not depend on them; verify checks them). ``catalog``: an
    inspection of at least ``specs.relations()`` the caller has already made (apply's).

    A check whose table another session holds past lock_timeout is no problem of the spec:
    LockWaitError (exit 3: try again) names what could not be checked, unless some spec has
    a problem (SpecError, with those said in its notes). ``calls``
    gives the call graph the budgets' checks need (read once for several checks)."""
    if catalog is None:
        catalog = inspect(conn, specs.relations())
    unchecked: Unchecked = []
    problems: list[Problem] = []
    reported: set[QualifiedName] = set()
    on_tables: list[IndexSpec] = []
    for index in specs.indexes:
        relation = catalog.relations.get(index.table)
        if relation is None or relation.relkind in ("m", "v"):
            if index.table not in reported:
                problems.append(_missing_table(index.table, index.location, catalog))
                reported.add(index.table)
            continue
        _check_columns(conn.info.server_version, index, relation.columns, problems)
        on_tables.append(index)
    _check_expressions(conn, on_tables, problems, unchecked)
    # An index file may hold only budgets: its table must exist all the same.
    view_names = {str(v.name) for v in specs.views}
    for query in specs.index_queries:
        table = parse_qualified(query.relation)
        if query.relation in view_names or table in reported or table in catalog.relations:
            continue
        problems.append(_missing_table(table, query.location, catalog))
        reported.add(table)
    _check_views(conn, specs, catalog, problems, unchecked)
    if budgets:
        _check_budgets(conn, specs, catalog, problems, unchecked, calls)
    said = [
        f"{what} not checked: {server_message(exc)} (another session holds what it reads; "
        "try again once it is done)"
        for what, exc in unchecked
    ]
    if problems:
        problems.sort(key=lambda p: (p.file, p.line, p.column))
        count = len(problems)
        refused = SpecError(
            f"{count} problem{'s' if count != 1 else ''} against the database; nothing was changed",
            problems,
        )
        refused.notes = said
        raise refused
    if unchecked:
        raise LockWaitError(
            f"gave up waiting for a lock ({server_message(unchecked[0][1])}): "
            + "; ".join(what for what, _ in unchecked)
            + " could not be checked: another session holds what they read (nothing was changed; "
            "try again once it is done)"
        )
    return catalog


def new_builds(specs: SpecSet, catalog: Catalog) -> list[IndexSpec]:
    """The spec indexes apply would build: not there yet, on a table (or partitioned table)
    that is (:func:`check_builds` checks them)."""
    return [
        s
        for s in specs.indexes
        if s.qualified_name not in catalog.indexes
        and getattr(catalog.relations.get(s.table), "relkind", None) in ("r", "p")
    ]


def partition_keys(catalog: Catalog) -> dict[QualifiedName, str]:
    """Each partitioned table's key (its trial copy is partitioned the same way)."""
    return {n: r.partition_key for n, r in catalog.relations.items() if r.partition_key}


def partition_problems(new: Sequence[IndexSpec], catalog: Catalog) -> list[Problem]:
    """Unique specs that lack the key of a partitioned table below theirs (a sub-partition:
    the trial copy of the table has no partitions, so only this says it): CREATE INDEX on
    the table would build every other partition's index, then fail on that one."""
    problems = []
    for spec in new:
        if not spec.unique:
            continue
        keys = {c.name for c in spec.columns if c.name}
        todo = list(getattr(catalog.relations.get(spec.table), "partitions", ()))
        while todo:
            below = catalog.relations.get(todo.pop())
            if below is None:
                continue
            todo.extend(below.partitions)
            key = below.partition_key
            inside = key.partition("(")[2].rpartition(")")[0] if key else ""
            try:
                needed = set(expression_columns(inside)) if inside else set()
            except SqlTextError:
                needed = set()
            if needed - keys:
                problems.append(
                    spec.location.problem(
                        f"index {spec.name}: PostgreSQL refuses it on {spec.table}: a unique "
                        f"index must include the key of every partitioned table below it, and "
                        f"{below.name} is partitioned by {key}"
                    )
                )
                break
    return problems


def check_builds(
    new: Sequence[IndexSpec],
    conn: psycopg.Connection[Any],
    lock_timeout_ms: int,
    *,
    statement_timeout_ms: int | None = None,
    keys: Mapping[QualifiedName, str] | None = None,
) -> None:
    """Let the server refuse, before anything is built, what CREATE INDEX itself would refuse
    of the ``new`` indexes (:func:`new_builds`: a function that is not IMMUTABLE, a type
    without an operator class for the method, a storage parameter out of range, a unique
    index without a partitioned table's key): each is built on an empty temporary copy of
    its table (partitioned by ``keys``, :func:`partition_keys`) in a rolled-back
    transaction (as plan normalises the existing ones), and SpecError lists every refusal at
    its file:line. Needs a session that may write temporary tables (apply's).
    ``statement_timeout_ms``: the bound of its statements, when not the session's."""
    from dbopt.deparse import normalize_specs

    normalize_specs(
        conn,
        new,
        lock_timeout_ms,
        read=False,
        statement_timeout_ms=statement_timeout_ms,
        partition_keys=keys,
    )


def trial_builds(
    new: Sequence[IndexSpec],
    catalog: Catalog,
    conn: psycopg.Connection[Any],
    lock_timeout_ms: int,
    *,
    writable: bool = False,
    calls: Callable[[], CallGraph] | None = None,
) -> list[str]:
    """:func:`check_builds` as plan and validate --dsn run it, for any role: SpecError for
    what the server refuses of a spec; what this session cannot try is said in notes,
    never refused -- on a standby (no temporary tables), without TEMPORARY, without SELECT
    on a table (its copy is made LIKE it), or where a build needs a privilege this role
    lacks (apply, as the owner, checks those). ``writable``: in a session whose transactions
    are read-only by default (validate's), the trial's own transaction is read-write (it
    assigns a transaction id and writes a little WAL; everything is rolled back)."""
    from dbopt.deparse import NotTried, normalize_specs
    from dbopt.privileges import temp_problem, unreadable_tables
    from dbopt.replicas import in_recovery

    # What needs a newer server is the plan's to say, in its own words ("needs PostgreSQL
    # 15 or later"), not the trial's (the server's syntax error).
    new = [s for s in new if not needs_newer_server(s, catalog.server_version)]
    if not new:
        return []
    problems = partition_problems(new, catalog)
    if problems:
        raise SpecError("the specs cannot be applied to this database", problems)

    def many(count: int) -> str:
        return f"{count} new index{'es' if count != 1 else ''} not built on trial"

    if in_recovery(conn):
        return [f"{many(len(new))}: a standby has no temporary tables (apply checks them)"]
    problem = temp_problem(conn)
    if problem:
        return [f"{many(len(new))}: {problem} (apply checks them)"]
    notes = []
    unreadable = set(unreadable_tables(conn, sorted({s.table for s in new})))
    if unreadable:
        skipped = [s for s in new if s.table in unreadable]
        tables = ", ".join(str(t) for t in sorted(unreadable))
        notes.append(
            f"{many(len(skipped))}: this role may not read {tables} (a trial copies the "
            "table's columns; apply, as its owner, checks them)"
        )
    tried = [s for s in new if s.table not in unreadable]
    for spec, reached in unsafe_calls(conn, tried, calls).items():
        tried.remove(spec)
        notes.append(
            f"index {spec.name} not built on trial: it calls {reached}, which a trial does not "
            "run (apply builds it as written)"
        )
    try:
        normalize_specs(
            conn,
            tried,
            lock_timeout_ms,
            read=False,
            writable=writable,
            partition_keys=partition_keys(catalog),
            privileges_noted=True,
        )
    except NotTried as exc:
        notes += [f"not built on trial, for want of a privilege: {line}" for line in exc.lines]
    except SpecError as exc:
        exc.notes = [*notes, *exc.notes]  # what was not tried, said with what was refused
        raise
    except psycopg.errors.LockNotAvailable:
        # Another session holds one of the tables: apply checks them once it may.
        notes.append(
            f"{many(len(tried))}: a table's lock was not granted within lock_timeout "
            "(apply checks them)"
        )
    return notes


def unsafe_calls(
    conn: psycopg.Connection[Any],
    specs: Sequence[IndexSpec],
    calls: Callable[[], CallGraph] | None = None,
) -> dict[IndexSpec, str]:
    """The specs among ``specs`` whose expressions or predicate reach something that could
    change things (verify's call graph), with what they call, in words. Building such an
    index, even on an empty temporary copy, evaluates what it calls (constants folded: a
    function that says IMMUTABLE and writes runs): only apply, which builds it as written,
    may. One query (the call graph), and only when a spec has an expression or predicate;
    ``calls`` gives the graph a caller has read (or reads it once for several checks)."""
    coded = [s for s in specs if s.where or any(c.expr for c in s.columns)]
    if not coded:
        return {}
    if calls is None:
        from dbopt.readonly import CallGraph

        graph = CallGraph.read(conn)
    else:
        graph = calls()
    found: dict[IndexSpec, str] = {}
    for spec in coded:
        refused = graph.refusals(_as_query(spec), with_placeholders=False)
        if refused:
            found[spec] = refused[0].message
    return found


def _as_query(spec: IndexSpec) -> str:
    """What an index spec evaluates, as a query the read-only checks can read (never run)."""
    values = sql.SQL(", ").join(
        sql.SQL(c.expr) if c.expr else sql.Identifier(c.name or "") for c in spec.columns
    )
    query = sql.SQL("SELECT {} FROM {}").format(values, spec.table.ident())
    if spec.where:
        query = sql.SQL("{} WHERE {}").format(query, sql.SQL(spec.where))
    return query.as_string()


def _check_budgets(
    conn: psycopg.Connection[Any],
    specs: SpecSet,
    catalog: Catalog,
    problems: list[Problem],
    unchecked: Unchecked,
    graph: Callable[[], CallGraph] | None,
) -> None:
    # verify's modules (and the catalog's call graph) only here: apply checks no budgets and
    # never loads them.
    from dbopt.readonly import CallGraph
    from dbopt.verify.measurement import explain
    from dbopt.verify.select import budget_problems

    calls = CallGraph.read(conn) if graph is None else graph()
    problems.extend(budget_problems(specs.queries, specs, catalog, calls))
    missing_views = {str(v.name) for v in specs.views if v.name not in catalog.relations}
    for query in specs.queries:
        if query.relation in missing_views or not _may_run(query, calls):
            # Its view is created by apply (checked once it exists), or it was refused above.
            continue
        try:
            # Planned as verify plans it: parameters typed by the server, as applications
            # with server-side binding send them (dbopt.verify.params).
            explain(conn, query, CHECK_TIMEOUT_MS, analyze=False, past_lock_timeout=True)
        except psycopg.Error as exc:
            if _held(exc):
                unchecked.append((f"query {query.name}", exc))
                continue
            problems.append(
                query.location.problem(f"query {query.name} fails: {server_message(exc)}")
            )
