"""The workload advise works on, and planning it without running it.

Three sources: the top statements of ``pg_stat_statements`` by total execution time, a file
of queries, or the budgeted queries of the specs. Every query passes the parser's read-only
check of :mod:`dbopt.sqltext` and the database's call graph (:mod:`dbopt.readonly`), as
verify's budgets do, before it is planned; it is only ever planned (plain EXPLAIN, in a READ
ONLY transaction that is rolled back), never executed.

Normalised statements carry ``$1``-style parameters whose values are unknown: they are
planned generically, with ``EXPLAIN (GENERIC_PLAN)`` on PostgreSQL 16 and later, and before
16 the way that option replaced: ``PREPARE`` (the server types each parameter), ``SET LOCAL
plan_cache_mode = force_generic_plan`` and ``EXPLAIN EXECUTE`` with NULL for every parameter
(a generic plan never looks at the values).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from dbopt.catalog import catalog_sql
from dbopt.db import read_only_transaction, server_message
from dbopt.errors import InputError, Problem
from dbopt.model import QueryBudget, SpecSet
from dbopt.readonly import CallGraph
from dbopt.readonly.references import static_refusals
from dbopt.sqltext import SqlTextError, check_query, query_tree
from dbopt.verify.measurement import estimated_plan, raise_if_lost
from dbopt.verify.plan import PlanNode, parse_plan
from dbopt.yamlload import line_column

#: The statement name of the pre-16 generic planning (deallocated right after).
_PREPARED = "dbopt_advise_generic"
_PARAM = re.compile(r"\$(\d+)")


class Source(StrEnum):
    """Where the workload came from."""

    STATEMENTS = "pg_stat_statements"
    FILE = "file"
    SPECS = "specs"


class StatementsUnavailableError(InputError):
    """pg_stat_statements cannot be read here (not installed, or not preloaded)."""


@dataclass(frozen=True, slots=True)
class WorkloadQuery:
    """One query of the workload: its text and what is known of how it runs."""

    name: str
    text: str
    source: Source
    #: The spec budget it is (``--from-specs``): planned with its own parameter values.
    budget: QueryBudget | None = None
    calls: int | None = None
    total_ms: float | None = None
    mean_ms: float | None = None
    #: Where it was written (a file query), for messages.
    where: str | None = None

    @property
    def parameters(self) -> int:
        """How many ``$n`` parameters the text has (0 for spec budgets: they bind values)."""
        if self.budget is not None:
            return 0
        return max((int(m) for m in _PARAM.findall(self.text)), default=0)

    def tree(self) -> dict[str, Any]:
        """The parse tree (pglast JSON) of the query."""
        return query_tree(self.text, with_placeholders=self.budget is not None)


@dataclass(frozen=True, slots=True)
class Skipped:
    """A statement of the workload that advise leaves out, and why."""

    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class Workload:
    """The queries to advise on, those left out, and how the source was read."""

    source: Source
    queries: tuple[WorkloadQuery, ...]
    skipped: tuple[Skipped, ...] = ()
    #: Statements of other roles whose text this role may not read (pg_read_all_stats).
    hidden: int = 0


def generic_method(server_version: int) -> str:
    """How ``$n`` parameters are planned on this server, in words for the output."""
    if server_version >= 160000:
        return "EXPLAIN (GENERIC_PLAN)"
    return (
        "PREPARE + SET plan_cache_mode = force_generic_plan + EXPLAIN EXECUTE with NULL "
        "parameters (EXPLAIN (GENERIC_PLAN) needs PostgreSQL 16)"
    )


def _checked(text: str) -> str:
    """The query after the parser's read-only check and the static list of refused calls."""
    checked = check_query(text, with_placeholders=False)
    refused = static_refusals(text, with_placeholders=False)
    if refused:
        raise SqlTextError(str(refused[0]))
    return checked.text


def estimate(
    conn: psycopg.Connection[Any], query: WorkloadQuery, timeout_ms: int
) -> PlanNode | str:
    """The planner's estimated plan of ``query`` (generic for ``$n`` parameters), or the
    server's error. Never runs the query."""
    if query.budget is not None:
        return estimated_plan(conn, query.budget, timeout_ms)
    body = sql.SQL(_checked(query.text))  # parsed: one read-only statement, nothing refused
    count = query.parameters
    options = sql.SQL("VERBOSE, FORMAT JSON")
    prepared = count > 0 and conn.info.server_version < 160000
    try:
        with read_only_transaction(conn, timeout_ms=timeout_ms) as cur:
            if count == 0:
                cur.execute(sql.SQL("EXPLAIN ({}) {}").format(options, body))
            elif not prepared:
                cur.execute(sql.SQL("EXPLAIN (GENERIC_PLAN, {}) {}").format(options, body))
            else:
                cur.execute(sql.SQL("PREPARE {} AS {}").format(sql.Identifier(_PREPARED), body))
                cur.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                nulls = sql.SQL(", ").join([sql.NULL] * count)
                cur.execute(
                    sql.SQL("EXPLAIN ({}) EXECUTE {}({})").format(
                        options, sql.Identifier(_PREPARED), nulls
                    )
                )
            row = cur.fetchone()
    except psycopg.Error as exc:
        raise_if_lost(conn, exc, f"planning {query.name}")
        return server_message(exc)
    finally:
        if prepared and not (conn.closed or conn.broken):
            _deallocate(conn)
    if row is None:  # pragma: no cover - EXPLAIN always returns its row
        return "EXPLAIN returned no row"
    doc = json.loads(row[0]) if isinstance(row[0], str) else row[0]
    return parse_plan(doc[0]["Plan"])


def _deallocate(conn: psycopg.Connection[Any]) -> None:
    """Drop the pre-16 prepared statement if it outlived its transaction (they belong to the
    session: a rollback keeps one that PREPARE made)."""
    found = conn.execute(
        "SELECT 1 FROM pg_catalog.pg_prepared_statements WHERE name = %s", [_PREPARED]
    ).fetchone()
    if found:
        conn.execute(sql.SQL("DEALLOCATE {}").format(sql.Identifier(_PREPARED)))


# --- sources ---------------------------------------------------------------------------------


def _refusal(calls: CallGraph, text: str, *, placeholders: bool) -> str | None:
    try:
        refused = calls.refusals(text, with_placeholders=placeholders)
    except SqlTextError as exc:
        return str(exc)
    return str(refused[0]) if refused else None


def from_statements(
    conn: psycopg.Connection[Any], calls: CallGraph, *, min_calls: int, top: int
) -> Workload:
    """The ``top`` statements of this database by total time with at least ``min_calls``.

    Raises StatementsUnavailableError (exit 2) saying what to do when the extension is not
    installed in this database or the library is not preloaded.
    """
    row = conn.execute(catalog_sql("advise_extension"), {"name": "pg_stat_statements"}).fetchone()
    if row is None:
        raise StatementsUnavailableError(
            f"pg_stat_statements is not installed in database {conn.info.dbname}: a superuser "
            "runs CREATE EXTENSION pg_stat_statements there (the server also needs "
            "shared_preload_libraries = 'pg_stat_statements' and a restart); or give the "
            "workload with --queries FILE or --from-specs"
        )
    view = sql.Identifier(str(row[0]), "pg_stat_statements")
    name = (
        "advise_statements" if conn.info.server_version >= 130000 else "advise_statements_before_13"
    )
    try:
        with read_only_transaction(conn) as cur:
            cur.execute(catalog_sql(name).format(view), {"min_calls": min_calls, "top": top})
            rows = cur.fetchall()
    except pg_errors.ObjectNotInPrerequisiteState as exc:
        raise StatementsUnavailableError(
            "pg_stat_statements is installed but not loaded: add it to "
            "shared_preload_libraries and restart the server "
            f"({server_message(exc)}); or give the workload with --queries FILE or --from-specs"
        ) from None
    queries: list[WorkloadQuery] = []
    skipped: list[Skipped] = []
    hidden = 0
    for queryid, text, count, total_ms, mean_ms in rows:
        label = f"statement {queryid}"
        if text is None or text.startswith("<insufficient privilege>"):
            hidden += 1
            continue
        try:
            checked = _checked(text)
        except SqlTextError as exc:
            skipped.append(Skipped(label, f"not a read-only SELECT advise can plan: {exc}"))
            continue
        refusal = _refusal(calls, checked, placeholders=False)
        if refusal:
            skipped.append(Skipped(label, f"not planned: {refusal}"))
            continue
        queries.append(
            WorkloadQuery(
                name=f"q_{str(queryid).replace('-', 'm')}",
                text=checked,
                source=Source.STATEMENTS,
                calls=int(count),
                total_ms=float(total_ms),
                mean_ms=float(mean_ms),
            )
        )
    return Workload(Source.STATEMENTS, tuple(queries), tuple(skipped), hidden)


def from_file(path: Path, calls: CallGraph, display: str | None = None) -> Workload:
    """The queries of a file (statements separated by semicolons).

    Raises InputError (exit 2) with file:line for a syntax error, a statement that is not a
    read-only SELECT, or one that can reach something that changes the database.
    """
    from pglast import parser

    shown = display or str(path)
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {shown}: {exc}") from None
    try:
        stmts = json.loads(parser.parse_sql_json(text)).get("stmts", [])
    except parser.ParseError as exc:
        pos = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else 0
        line, column = line_column(text, max(0, pos - 1))
        raise InputError(
            f"{shown}: a query has a syntax error",
            [Problem(shown, line, column, f"syntax error: {exc.args[0]}")],
        ) from None
    problems: list[Problem] = []
    queries: list[WorkloadQuery] = []
    # A budget name (the schema's pattern): ASCII letters, digits and _, not a digit first.
    stem = re.sub(r"[^A-Za-z0-9_]", "_", path.stem)
    stem = stem if re.match(r"[A-Za-z_]", stem) else f"q_{stem}"
    for number, stmt in enumerate(stmts, start=1):
        start = int(stmt.get("stmt_location", 0))
        length = stmt.get("stmt_len") or len(text) - start
        body = text[start : start + int(length)]
        offset = start + len(body) - len(body.lstrip())
        line, column = line_column(text, offset)
        try:
            checked = _checked(body)
        except SqlTextError as exc:
            problems.append(Problem(shown, line, column, f"query {number}: {exc}"))
            continue
        refusal = _refusal(calls, checked, placeholders=False)
        if refusal:
            problems.append(Problem(shown, line, column, f"query {number}: {refusal}"))
            continue
        queries.append(
            WorkloadQuery(
                name=f"{stem}_{number}",
                text=checked,
                source=Source.FILE,
                where=f"{shown}:{line}",
            )
        )
    if problems:
        raise InputError(f"{len(problems)} problem(s) in {shown}; nothing was planned", problems)
    if not queries:
        raise InputError(f"{shown} holds no query")
    return Workload(Source.FILE, tuple(queries))


def from_specs(budgets: Sequence[QueryBudget]) -> Workload:
    """The budgeted queries of the specs, planned with their own parameter values (the
    caller checks them first, as verify does: dbopt.verify.select.check_budgets)."""
    return Workload(
        Source.SPECS,
        tuple(
            WorkloadQuery(
                name=b.name,
                text=b.sql,
                source=Source.SPECS,
                budget=b,
                where=str(b.location),
            )
            for b in budgets
        ),
    )


def budgeted_fingerprints(specs: SpecSet) -> dict[str, str]:
    """pglast fingerprint -> budget name, for every budgeted query of the specs: a workload
    statement with the same fingerprint (constants and parameters aside) is already budgeted."""
    from pglast import parser

    from dbopt.sqltext import dollar_text

    out: dict[str, str] = {}
    for budget in specs.queries:
        try:
            out.setdefault(parser.fingerprint(dollar_text(budget.sql)), budget.name)
        except (parser.ParseError, SqlTextError):
            continue
    return out


def fingerprint(text: str) -> str | None:
    """The pglast fingerprint of a ``$n`` query (None when it does not parse)."""
    from pglast import parser

    try:
        return str(parser.fingerprint(text))
    except parser.ParseError:
        return None
