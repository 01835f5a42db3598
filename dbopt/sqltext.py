"""The one audited door for free-form SQL from specs: predicates, expressions and queries.

Everything a spec says in SQL is parsed by the real PostgreSQL parser (pglast, i.e.
libpg_query) before dbopt uses it. An expression must be exactly one expression and a query
exactly one read-only statement; what dbopt later sends to the server is the parser's own
rendering of what it checked (for expressions and view queries), so nothing can ride along.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from psycopg import sql

from dbopt.yamlcache import kept

if TYPE_CHECKING:
    from dbopt.model import QualifiedName

#: Statement and clause nodes that make a query write or lock (pglast JSON node names).
_WRITING_NODES = {
    "InsertStmt": "INSERT",
    "UpdateStmt": "UPDATE",
    "DeleteStmt": "DELETE",
    "MergeStmt": "MERGE",
    "intoClause": "SELECT INTO",
    "lockingClause": "FOR UPDATE/SHARE (row locks)",
}

_SELECT_CLAUSES = (
    "distinctClause",
    "intoClause",
    "fromClause",
    "whereClause",
    "groupClause",
    "havingClause",
    "windowClause",
    "valuesLists",
    "sortClause",
    "limitOffset",
    "limitCount",
    "lockingClause",
    "withClause",
    "op",
)

# psycopg's placeholder grammar: %(name)s, %(name)b, %(name)t, and %% for a literal percent.
_PLACEHOLDER = re.compile(r"%(?:\((?P<name>[^)]*)\)(?P<fmt>[sbt])|(?P<pct>%)|(?P<bad>.?))", re.S)


class SqlTextError(ValueError):
    """Free-form SQL from a spec was rejected; ``position`` is a 0-based offset or None."""

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message)
        self.position = position


@dataclass(frozen=True, slots=True)
class CheckedQuery:
    """A read-only query that passed the parser, with its named placeholders in order."""

    text: str
    placeholders: tuple[str, ...]


def _parse(text: str, offset: int) -> list[Any]:
    # Imported here: pglast loads libpg_query, which no command needs at start-up.
    from pglast import parser

    try:
        tree = json.loads(parser.parse_sql_json(text))
    except parser.ParseError as exc:
        # ParseError.args is (message, 0-based offset in the parsed text).
        pos = exc.args[1] if len(exc.args) > 1 else None
        position = max(0, int(pos) - offset) if isinstance(pos, int) else None
        raise SqlTextError(str(exc.args[0]), position) from None
    stmts: list[Any] = tree.get("stmts", [])
    return stmts


def _keys(node: Any) -> set[str]:
    """Every key of a pglast JSON tree (its node and field names), at any depth: one loop
    over an explicit stack (nested generators would pass each key up through every level)."""
    keys: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            keys.update(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return keys


def _near(text: str, position: int | None) -> str:
    if position is None or position >= len(text):
        return ""
    return f" (near {text[position : position + 20]!r})"


@functools.lru_cache(maxsize=4096)
@kept("render_expression", "pglast")
def render_expression(text: str) -> str:
    """Parse one SQL value expression and return the parser's rendering of it.

    Raises SqlTextError unless ``text`` is exactly one expression: no second statement, no
    FROM/ORDER BY/... smuggled after it, no alias. Remembered per text (a pure function of
    it): a fleet renders the same spec expressions for every target, and the next command
    finds it kept (dbopt.yamlcache.kept).
    """
    from pglast import parser
    from pglast.stream import RawStream

    prefix = "SELECT "
    try:
        stmts = _parse(prefix + text, len(prefix))
    except SqlTextError as exc:
        raise SqlTextError(f"{exc}{_near(text, exc.position)}", exc.position) from None
    if len(stmts) != 1:
        raise SqlTextError("must be a single expression, not several statements")
    select = stmts[0]["stmt"].get("SelectStmt")
    if select is None:
        raise SqlTextError("must be a single expression")
    extra = [c for c in _SELECT_CLAUSES if select.get(c) not in (None, [], "SETOP_NONE")]
    targets = select.get("targetList", [])
    if not targets and not extra:
        raise SqlTextError("is empty: write one SQL expression")
    if extra or len(targets) != 1:
        raise SqlTextError("must be a single expression (found more after it)")
    target = targets[0]["ResTarget"]
    if target.get("name"):
        raise SqlTextError("must be a single expression, without an alias")
    if "A_Star" in _keys(target.get("val", {}).get("ColumnRef", {})):
        raise SqlTextError("must be an expression, not '*' (all columns)")
    if "SubLink" in _keys(target):
        raise SqlTextError("must not contain a subquery (PostgreSQL refuses them in indexes)")
    stmt: Any = parser.parse_sql(prefix + text)[0].stmt  # a SelectStmt, checked above
    return str(RawStream()(stmt.targetList[0].val))


@functools.lru_cache(maxsize=4096)
@kept("expression_columns", "pglast")
def expression_columns(text: str) -> tuple[str, ...]:
    """The column names a SQL value expression (or predicate) names, as the PostgreSQL parser
    reads them (the last part of each column reference), sorted. SqlTextError if it does not
    parse. Kept as render_expression is."""
    prefix = "SELECT "
    return _column_refs(_parse(prefix + text, len(prefix)))


def table_columns(
    text: str, table: QualifiedName, *, with_placeholders: bool
) -> frozenset[str] | None:
    """The columns of ``table`` a read-only query names: those qualified by the table's name
    or one of its aliases, and every unqualified one (it may be the table's). None when that
    cannot be told from the text: the table is not in a FROM list by name (read through a
    view or a function), a join matches columns without naming them (USING, NATURAL), or a
    column is named through a CTE, a subquery or a row value.
    SqlTextError as :func:`check_query`."""
    tree = query_tree(text, with_placeholders=with_placeholders)
    aliases: set[str] = set()
    others: set[str] = set()  # names other tables go by in the query
    ctes: set[str] = set()
    qualified: dict[str, set[str]] = {}
    unqualified: set[str] = set()
    stack: list[Any] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        join = node.get("JoinExpr")
        if isinstance(join, dict) and (join.get("usingClause") or join.get("isNatural")):
            return None
        if "RangeFunction" in node or "A_Indirection" in node:
            return None  # a function's rows, (row).column: which table's, the text cannot say
        cte = node.get("CommonTableExpr")
        if isinstance(cte, dict) and cte.get("ctename"):
            ctes.add(str(cte["ctename"]))
        rel = node.get("RangeVar")
        if isinstance(rel, dict):
            name = rel.get("alias", {}).get("aliasname") or rel.get("relname")
            if rel.get("relname") == table.name and rel.get("schemaname") in (None, table.schema):
                aliases.add(name or table.name)
            elif name:
                others.add(str(name))
        ref = node.get("ColumnRef")
        if isinstance(ref, dict):
            fields = [f.get("String", {}).get("sval") for f in ref.get("fields", [])]
            if len(fields) == 1 and fields[0]:
                unqualified.add(str(fields[0]))
            elif len(fields) >= 2 and fields[-1] and fields[-2]:
                qualified.setdefault(str(fields[-2]), set()).add(str(fields[-1]))
        stack.extend(node.values())
    if not aliases:
        return None
    if set(qualified) - aliases - (others - ctes):
        return None  # a CTE's or a subquery's column: it may be the table's, under its name
    return frozenset(unqualified.union(*(qualified.get(a, set()) for a in aliases)))


def _column_refs(tree: Any) -> tuple[str, ...]:
    names: set[str] = set()
    stack: list[Any] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("ColumnRef")
            if isinstance(ref, dict):
                fields = [f.get("String", {}).get("sval") for f in ref.get("fields", [])]
                if fields and fields[-1]:
                    names.add(str(fields[-1]))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return tuple(sorted(names))


def _psycopg_to_dollar(text: str) -> tuple[str, tuple[str, ...]]:
    """Replace psycopg's %(name)s placeholders by $n so the PostgreSQL parser accepts them."""
    names: list[str] = []
    out: list[str] = []
    last = 0
    for match in _PLACEHOLDER.finditer(text):
        out.append(text[last : match.start()])
        last = match.end()
        if match.group("pct") is not None:
            out.append("%")
        elif match.group("name") is not None:
            name = match.group("name")
            if not name.isidentifier():
                raise SqlTextError(f"bad placeholder name %({name})", match.start())
            if name not in names:
                names.append(name)
            out.append(f"${names.index(name) + 1}")
        elif match.group("bad") in ("s", "b", "t"):
            raise SqlTextError(
                f"a positional placeholder %{match.group('bad')}: name it, e.g. %(day)s, and "
                "give its value under params",
                match.start(),
            )
        else:
            raise SqlTextError(
                "a bare '%' in a query: use %(name)s for parameters and %% for a literal '%'",
                match.start(),
            )
    out.append(text[last:])
    return "".join(out), tuple(names)


def dollar_text(text: str) -> str:
    """A query with psycopg's ``%(name)s`` placeholders as the server's parser reads it
    (``$1``, ``$2``...): what pg_stat_statements shows of it (dbopt advise compares them)."""
    return _psycopg_to_dollar(text.strip())[0]


def check_query(text: str, *, with_placeholders: bool) -> CheckedQuery:
    """Parse one read-only statement (SELECT, VALUES, TABLE, WITH ... SELECT).

    With ``with_placeholders`` the text uses psycopg's ``%(name)s`` parameters (and ``%%`` for
    a literal percent), exactly as it will be sent with bound values.
    """
    checked, placeholders = _checked(text, with_placeholders)
    return CheckedQuery(text=checked, placeholders=placeholders)


@kept("check_query", "pglast")
def _checked(text: str, with_placeholders: bool) -> tuple[str, tuple[str, ...]]:
    """:func:`check_query` as plain values (kept across commands: dbopt.yamlcache.kept)."""
    checked = _check_query(text, with_placeholders)[0]
    return checked.text, checked.placeholders


def query_tree(text: str, *, with_placeholders: bool) -> dict[str, Any]:
    """The parse tree (pglast's JSON form) of a query that :func:`check_query` accepts.

    Raises SqlTextError as check_query does; dbopt.readonly walks the tree for what it calls.
    """
    return _check_query(text, with_placeholders)[1]


def _check_query(text: str, with_placeholders: bool) -> tuple[CheckedQuery, dict[str, Any]]:
    body = text.strip()
    names: tuple[str, ...] = ()
    parsed_text = body
    if with_placeholders:
        parsed_text, names = _psycopg_to_dollar(body)
    try:
        stmts = _parse(parsed_text, 0)
    except SqlTextError as exc:
        raise SqlTextError(f"{exc}{_near(parsed_text, exc.position)}", exc.position) from None
    if len(stmts) != 1:
        raise SqlTextError(
            f"must be exactly one statement, found {len(stmts)}"
            if stmts
            else "must be a statement, found none"
        )
    stmt = stmts[0]["stmt"]
    kind = next(iter(stmt))
    if kind != "SelectStmt":
        # Name the statement by its verb; WITH ... UPDATE is named by the node, not 'WITH'.
        verb = _WRITING_NODES.get(kind) or body.split(None, 1)[0].upper()
        raise SqlTextError("must be a read-only SELECT, not " + verb)
    found = _keys(stmt)
    for node, what in _WRITING_NODES.items():
        if node in found:
            raise SqlTextError(f"must be read-only: it contains {what}")
    # Drop a trailing semicolon so the text can be embedded (EXPLAIN ..., CREATE ... AS ...).
    checked = CheckedQuery(text=body.rstrip().rstrip(";").rstrip(), placeholders=names)
    tree: dict[str, Any] = stmt
    return checked, tree


@functools.lru_cache(maxsize=1024)
@kept("render_query", "pglast")
def render_query(text: str) -> str:
    """The parser's rendering of a read-only query without placeholders (for view bodies);
    remembered per text, as :func:`render_expression`."""
    from pglast import parser
    from pglast.stream import RawStream

    check_query(text, with_placeholders=False)
    stmt: Any = parser.parse_sql(text)[0].stmt  # exactly one statement, checked above
    return str(RawStream()(stmt))


def expression_sql(text: str) -> sql.Composable:
    """The only way a spec's expression or predicate enters composed SQL: re-parsed, rendered."""
    return sql.SQL(render_expression(text))


def query_sql(text: str) -> sql.Composable:
    """The only way a spec's view query enters composed SQL: re-parsed, rendered."""
    return sql.SQL(render_query(text))


def budget_query_sql(text: str) -> sql.Composable:
    """A budget query (with psycopg placeholders) after the parser accepted it as read-only.

    It must also call no function of :data:`dbopt.readonly.DENIED` (the check that needs no
    database); what the database itself holds is checked by dbopt.readonly.CallGraph.
    """
    from dbopt.readonly import static_refusals

    checked = check_query(text, with_placeholders=True)
    refused = static_refusals(text, with_placeholders=True)
    if refused:
        raise SqlTextError(str(refused[0]))
    return sql.SQL(checked.text)
