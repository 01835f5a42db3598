"""What one query asks of each table it reads, from its parse tree: pure, no database.

The query is parsed by the real PostgreSQL parser (pglast, through :mod:`dbopt.sqltext`);
this module walks the tree for what an index can serve on each table it reads:

- predicates of WHERE and of JOIN ... ON, split at AND: equality (``=``, ``IN``, ``IS NULL``,
  a bare boolean column) and join columns, ranges (``<``, ``>=``, ``BETWEEN``, a prefix
  ``LIKE``), an infix ``LIKE``/``ILIKE`` pattern, containment (``@>``, ``<@``, ``?``), overlap
  (``&&``) and full-text search (``@@``), on a column or on an expression over one table's
  columns (``lower(email)``, ``to_tsvector('english', body)``), rendered by the parser;
- the ORDER BY columns, when they all belong to one table;
- every other column the query reads there (for INCLUDE, so the scan can be index-only).

:mod:`dbopt.advise.candidates` turns that into index specs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from dbopt.model import QualifiedName

_RANGE_OPS = {"<", ">", "<=", ">="}
_CONTAINS_OPS = {"@>", "<@", "?", "?|", "?&"}
_OVERLAP_OPS = {"&&"}
_PLAIN_IDENT = re.compile(r"^[a-z_][a-z0-9_$]*$")


class Kind(StrEnum):
    """What a predicate asks of an index on its column."""

    EQ = "eq"  # = a value, IN (...), IS [NOT] NULL, a bare boolean column
    JOIN = "join"  # = a column of another table
    RANGE = "range"  # <, <=, >, >=, BETWEEN
    INFIX = "infix"  # LIKE/ILIKE with a pattern that may start with %
    CONTAINS = "contains"  # @>, <@, ?, ?|, ?& (arrays, jsonb)
    OVERLAPS = "overlaps"  # && (ranges, geometry; arrays too)
    SEARCH = "search"  # @@ (full-text search on a tsvector expression)


class TypeClass(StrEnum):
    """The family of a column's type, as far as choosing an index method goes."""

    ARRAY = "array"
    JSONB = "jsonb"
    RANGE = "range"
    GEOMETRY = "geometry"
    TEXT = "text"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class ColumnInfo:
    """One column of a table: its type family and the planner's distinct-value estimate."""

    name: str
    type_class: TypeClass = TypeClass.OTHER
    #: pg_stats.n_distinct: a count (> 0), minus a fraction of the rows (< 0), or None.
    n_distinct: float | None = None


@dataclass(frozen=True, slots=True)
class TableInfo:
    """What candidate generation needs of a table: its columns and estimated row count."""

    name: QualifiedName
    columns: Mapping[str, ColumnInfo]
    rows: float = 0.0

    def distinct(self, column: str) -> float:
        """Estimated distinct values of ``column`` (0 when unknown)."""
        info = self.columns.get(column)
        if info is None or info.n_distinct is None:
            return 0.0
        return info.n_distinct if info.n_distinct > 0 else -info.n_distinct * max(self.rows, 1)


@dataclass(frozen=True, slots=True)
class Predicate:
    """One AND-ed condition on one column of one table."""

    column: str
    kind: Kind
    #: The condition as SQL when it compares the column with constants only (the material of
    #: a partial index: ``status = 'completed'``); None otherwise.
    constant: str | None = None
    #: The constant pins the column to one value (``=``, ``IS NULL``, a boolean): a partial
    #: index on it needs the column no more as a key.
    single: bool = False
    #: ``column`` is an expression (``lower(email)``), as the parser renders it.
    expr: bool = False
    #: A LIKE whose pattern may be a prefix: a B-tree needs text_pattern_ops to serve it.
    pattern: bool = False


@dataclass(frozen=True, slots=True)
class TableUse:
    """How one query uses one table."""

    table: QualifiedName
    predicates: tuple[Predicate, ...] = ()
    #: ORDER BY columns (name, descending) when every ORDER BY item is a column of this table.
    order_by: tuple[tuple[str, bool], ...] = ()
    #: Every column of this table the query reads, in order of first use.
    columns: tuple[str, ...] = ()


@dataclass
class _Scope:
    """The tables of one SELECT level: alias (or name) -> table."""

    tables: dict[str, QualifiedName] = field(default_factory=dict)
    order: list[QualifiedName] = field(default_factory=list)


@dataclass
class _Uses:
    predicates: dict[QualifiedName, list[Predicate]] = field(default_factory=dict)
    order_by: dict[QualifiedName, tuple[tuple[str, bool], ...]] = field(default_factory=dict)
    columns: dict[QualifiedName, list[str]] = field(default_factory=dict)

    def column(self, table: QualifiedName, name: str) -> None:
        seen = self.columns.setdefault(table, [])
        if name not in seen:
            seen.append(name)


class _Reader:
    """Walks a parse tree (pglast's JSON form) with the tables the database has."""

    def __init__(
        self, tables: Mapping[QualifiedName, TableInfo], search_path: Sequence[str], text: str
    ):
        self.tables = tables
        self.text = text
        self.search_path = tuple(search_path)
        self.uses = _Uses()

    def table(self, range_var: Mapping[str, Any]) -> QualifiedName | None:
        name = str(range_var.get("relname", ""))
        schema = range_var.get("schemaname")
        if schema:
            found = QualifiedName(str(schema), name)
            return found if found in self.tables else None
        for path_schema in self.search_path:
            found = QualifiedName(path_schema, name)
            if found in self.tables:
                return found
        return None

    def select(self, stmt: Mapping[str, Any], ctes: frozenset[str] = frozenset()) -> None:
        """Read one SelectStmt (and every query nested in it)."""
        for arm in ("larg", "rarg"):
            if stmt.get(arm):
                self.select(stmt[arm], ctes)
        with_clause = stmt.get("withClause") or {}
        names = set(ctes)
        for cte in with_clause.get("ctes", []):
            body = cte.get("CommonTableExpr", {})
            names.add(str(body.get("ctename", "")))
            query = body.get("ctequery", {})
            if "SelectStmt" in query:
                self.select(query["SelectStmt"], frozenset(names))
        ctes = frozenset(names)
        scope = _Scope()
        quals: list[Any] = []
        for item in stmt.get("fromClause", []):
            self._from(item, scope, quals, ctes)
        if stmt.get("whereClause"):
            quals.append(stmt["whereClause"])
        for qual in quals:
            for conjunct in _conjuncts(qual):
                self._predicate(conjunct, scope)
        self._order_by(stmt.get("sortClause", []), scope)
        for key in ("targetList", "groupClause", "havingClause", "sortClause", "whereClause"):
            self._columns(stmt.get(key), scope)
        for qual in quals:
            self._columns(qual, scope)
        for key in ("targetList", "fromClause", "whereClause", "havingClause", "sortClause"):
            for sub in _nested_selects(stmt.get(key)):
                self.select(sub, ctes)

    def _from(
        self, item: Mapping[str, Any], scope: _Scope, quals: list[Any], ctes: frozenset[str]
    ) -> None:
        if "RangeVar" in item:
            rv = item["RangeVar"]
            alias = (rv.get("alias") or {}).get("aliasname") or rv.get("relname")
            if not rv.get("schemaname") and rv.get("relname") in ctes:
                return
            table = self.table(rv)
            if table is not None:
                scope.tables[str(alias)] = table
                scope.order.append(table)
        elif "JoinExpr" in item:
            join = item["JoinExpr"]
            self._from(join["larg"], scope, quals, ctes)
            self._from(join["rarg"], scope, quals, ctes)
            if join.get("quals"):
                quals.append(join["quals"])
        # Subqueries in FROM (RangeSubselect) are read by select() as nested selects.

    def resolve(
        self, column_ref: Mapping[str, Any], scope: _Scope
    ) -> tuple[QualifiedName, str] | None:
        """The (table, column) a ColumnRef names in ``scope``, if it is a table's column."""
        fields = [f.get("String", {}).get("sval") for f in column_ref.get("fields", [])]
        if not fields or any(f is None for f in fields):
            return None  # a star, or something else
        if len(fields) == 1:
            owners = [t for t in scope.order if fields[0] in self.tables[t].columns]
            return (owners[0], str(fields[0])) if len(set(owners)) == 1 else None
        table = scope.tables.get(str(fields[-2]))
        if table is None or fields[-1] not in self.tables[table].columns:
            return None
        return table, str(fields[-1])

    def _column_of(self, node: Any, scope: _Scope) -> tuple[QualifiedName, str] | None:
        while isinstance(node, dict) and "TypeCast" in node:
            node = node["TypeCast"].get("arg")
        if isinstance(node, dict) and "ColumnRef" in node:
            return self.resolve(node["ColumnRef"], scope)
        return None

    def _expression_of(self, node: Any, scope: _Scope) -> tuple[QualifiedName, str] | None:
        """(table, rendered text) of a function call over the columns of one table, with no
        parameter or subquery in it: what an expression index can hold."""
        if not (isinstance(node, dict) and "FuncCall" in node) or not self.text:
            return None
        found = {self.resolve(ref, scope) for ref in _column_refs(node)}
        tables = {f[0] for f in found if f is not None}
        if len(tables) != 1 or None in found or _has_key(node, ("ParamRef", "SubLink")):
            return None
        start = int(node["FuncCall"].get("location", -1))
        end = _call_end(self.text, start)
        if start < 0 or end is None:
            return None
        from dbopt.sqltext import SqlTextError, render_expression

        try:
            return next(iter(tables)), render_expression(self.text[start:end])
        except SqlTextError:
            return None

    def _add(self, found: tuple[QualifiedName, str], predicate: Predicate) -> None:
        self.uses.predicates.setdefault(found[0], []).append(predicate)

    def _predicate(self, node: Mapping[str, Any], scope: _Scope) -> None:
        if "NullTest" in node:
            test = node["NullTest"]
            found = self._column_of(test.get("arg"), scope)
            if found:
                negated = test.get("nulltesttype") == "IS_NOT_NULL"
                text = f"{_ident(found[1])} IS {'NOT ' if negated else ''}NULL"
                self._add(found, Predicate(found[1], Kind.EQ, text, single=not negated))
            return
        found = self._column_of(node, scope)
        if found:  # a bare boolean column: WHERE is_active
            self._add(found, Predicate(found[1], Kind.EQ, _ident(found[1]), single=True))
            return
        if "BoolExpr" in node and node["BoolExpr"].get("boolop") == "NOT_EXPR":
            args = node["BoolExpr"].get("args", [])
            found = self._column_of(args[0], scope) if len(args) == 1 else None
            if found:
                self._add(
                    found, Predicate(found[1], Kind.EQ, f"NOT {_ident(found[1])}", single=True)
                )
            return
        if "A_Expr" not in node:
            return
        expr = node["A_Expr"]
        kind = expr.get("kind")
        op = "".join(str(n.get("String", {}).get("sval", "")) for n in expr.get("name", []))
        left, right = expr.get("lexpr"), expr.get("rexpr")
        column = self._column_of(left, scope)
        other = right
        if column is None and kind == "AEXPR_OP":
            column, other = self._column_of(right, scope), left
            op = _flipped(op)
        if column is None:
            self._expression_predicate(kind, op, left, right, scope)
            return
        if _mentions_column(other, scope, self):
            if kind == "AEXPR_OP" and op == "=" and self._column_of(other, scope):
                partner = self._column_of(other, scope)
                if partner and partner[0] != column[0]:
                    self._add(column, Predicate(column[1], Kind.JOIN))
                    self._add(partner, Predicate(partner[1], Kind.JOIN))
            return
        name = column[1]
        literal = _literal_sql(other)
        if kind == "AEXPR_OP" and op == "=":
            constant = f"{_ident(name)} = {literal}" if literal is not None else None
            self._add(column, Predicate(name, Kind.EQ, constant, single=constant is not None))
        elif kind == "AEXPR_IN" and op == "=":
            items = other.get("List", {}).get("items", []) if isinstance(other, dict) else []
            texts = [_literal_sql(i) for i in items]
            constant = None
            if items and all(t is not None for t in texts):
                constant = f"{_ident(name)} IN ({', '.join(str(t) for t in texts)})"
            single = len(items) == 1 and constant is not None
            self._add(column, Predicate(name, Kind.EQ, constant, single=single))
        elif (kind == "AEXPR_OP" and op in _RANGE_OPS) or kind == "AEXPR_BETWEEN":
            self._add(column, Predicate(name, Kind.RANGE))
        elif kind in ("AEXPR_LIKE", "AEXPR_ILIKE") and op in ("~~", "~~*"):
            pattern = _string_const(other)
            if pattern is None or (pattern.startswith(("%", "_")) and _trigrams(pattern)):
                self._add(column, Predicate(name, Kind.INFIX))
            if kind == "AEXPR_LIKE" and (pattern is None or not pattern.startswith(("%", "_"))):
                # A prefix (or a parameter that may be one): a B-tree range.
                self._add(column, Predicate(name, Kind.RANGE, pattern=True))
        elif kind == "AEXPR_OP" and op in _CONTAINS_OPS:
            self._add(column, Predicate(name, Kind.CONTAINS))
        elif kind == "AEXPR_OP" and op in _OVERLAP_OPS:
            self._add(column, Predicate(name, Kind.OVERLAPS))

    def _expression_predicate(
        self, kind: str, op: str, left: Any, right: Any, scope: _Scope
    ) -> None:
        """``lower(email) = $1``, ``lower(name) LIKE 'ab%'``, ``to_tsvector(...) @@ q``."""
        found = self._expression_of(left, scope)
        other = right
        if found is None and kind == "AEXPR_OP":
            found, other = self._expression_of(right, scope), left
        if found is None or _mentions_column(other, scope, self):
            return
        text = found[1]
        if kind == "AEXPR_OP" and op == "=":
            self._add(found, Predicate(text, Kind.EQ, expr=True))
        elif kind == "AEXPR_OP" and op in _RANGE_OPS:
            self._add(found, Predicate(text, Kind.RANGE, expr=True))
        elif kind in ("AEXPR_LIKE", "AEXPR_ILIKE"):
            pattern = _string_const(other)
            if pattern is None or (pattern.startswith(("%", "_")) and _trigrams(pattern)):
                self._add(found, Predicate(text, Kind.INFIX, expr=True))
            if kind == "AEXPR_LIKE" and (pattern is None or not pattern.startswith(("%", "_"))):
                self._add(found, Predicate(text, Kind.RANGE, expr=True, pattern=True))
        elif kind == "AEXPR_OP" and op == "@@":
            self._add(found, Predicate(text, Kind.SEARCH, expr=True))

    def _order_by(self, items: Sequence[Any], scope: _Scope) -> None:
        ordered: list[tuple[QualifiedName, str, bool]] = []
        for item in items:
            sort = item.get("SortBy", {})
            found = self._column_of(sort.get("node"), scope)
            if found is None:
                return
            ordered.append((found[0], found[1], sort.get("sortby_dir") == "SORTBY_DESC"))
        tables = {t for t, _c, _d in ordered}
        if len(tables) == 1:
            table = next(iter(tables))
            self.uses.order_by[table] = tuple((c, d) for _t, c, d in ordered)

    def _columns(self, node: Any, scope: _Scope) -> None:
        for ref in _column_refs(node):
            found = self.resolve(ref, scope)
            if found:
                self.uses.column(*found)


def _has_key(node: Any, keys: tuple[str, ...]) -> bool:
    if isinstance(node, dict):
        return any(k in keys or _has_key(v, keys) for k, v in node.items())
    if isinstance(node, list):
        return any(_has_key(i, keys) for i in node)
    return False


def _call_end(text: str, start: int) -> int | None:
    """Where the function call starting at ``start`` ends (after its closing parenthesis),
    outside quoted strings and identifiers."""
    depth = 0
    quote: str | None = None
    i = text.find("(", start) if start >= 0 else -1
    if i < 0:
        return None
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == quote:
                quote = None
        elif ch in ("'", '"'):
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def _flipped(op: str) -> str:
    return {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "@>": "<@", "<@": "@>"}.get(op, op)


def _conjuncts(node: Any) -> Iterator[Mapping[str, Any]]:
    if isinstance(node, dict) and node.get("BoolExpr", {}).get("boolop") == "AND_EXPR":
        for arg in node["BoolExpr"].get("args", []):
            yield from _conjuncts(arg)
    elif isinstance(node, dict):
        yield node


def _column_refs(node: Any) -> Iterator[Mapping[str, Any]]:
    """Every ColumnRef under ``node``, not descending into nested queries."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "ColumnRef":
                yield value
            elif key not in ("SubLink", "RangeSubselect", "SelectStmt"):
                yield from _column_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _column_refs(item)


def _nested_selects(node: Any) -> Iterator[Mapping[str, Any]]:
    """The outermost SelectStmts under ``node`` (sublinks, FROM subqueries)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "SelectStmt":
                yield value
            else:
                yield from _nested_selects(value)
    elif isinstance(node, list):
        for item in node:
            yield from _nested_selects(item)


def _mentions_column(node: Any, scope: _Scope, reader: _Reader) -> bool:
    return any(reader.resolve(ref, scope) for ref in _column_refs(node))


def _trigrams(pattern: str) -> bool:
    """The LIKE pattern has a run of 3 characters without wildcards: pg_trgm can use it (with
    fewer, a trigram index scans itself whole)."""
    return any(len(run) >= 3 for run in re.split(r"[%_]", pattern))


def _string_const(node: Any) -> str | None:
    while isinstance(node, dict) and "TypeCast" in node:
        node = node["TypeCast"].get("arg")
    if isinstance(node, dict) and "A_Const" in node:
        value = node["A_Const"].get("sval")
        return str(value.get("sval", "")) if isinstance(value, dict) else None
    return None


def _literal_sql(node: Any) -> str | None:
    """SQL for a constant (a string, number or boolean, possibly cast), None for anything else
    (a parameter, a function such as CURRENT_DATE, an expression)."""
    if not isinstance(node, dict):
        return None
    if "TypeCast" in node:
        inner = _literal_sql(node["TypeCast"].get("arg"))
        names = [n.get("String", {}).get("sval") for n in node["TypeCast"]["typeName"]["names"]]
        type_name = str(names[-1]) if names and names[-1] else None
        if inner is None or type_name is None or not _PLAIN_IDENT.match(type_name):
            return None
        return f"{inner}::{type_name}"
    const = node.get("A_Const")
    if not isinstance(const, dict) or const.get("isnull"):
        return None
    if "sval" in const:
        text = str(const["sval"].get("sval", ""))
        return "'" + text.replace("'", "''") + "'"
    if "ival" in const:
        return str(int(const["ival"].get("ival", 0)))
    if "fval" in const:
        return str(const["fval"].get("fval"))
    if "boolval" in const:
        return "true" if const["boolval"].get("boolval") else "false"
    return None


def _ident(name: str) -> str:
    """``name`` as SQL: quoted when it is not a plain lower-case identifier or is a keyword
    (``"order" = 'x'``, ``"Status" IS NULL``), so a partial index predicate always parses."""
    from pglast.stream import maybe_double_quote_name

    return str(maybe_double_quote_name(name))


def table_uses(
    tree: Mapping[str, Any],
    tables: Mapping[QualifiedName, TableInfo],
    search_path: Sequence[str],
    text: str = "",
) -> tuple[TableUse, ...]:
    """What the query of ``tree`` (a statement node of :func:`dbopt.sqltext.query_tree`) asks
    of each table in ``tables`` it reads, in order of first mention. ``text``: the text the
    tree was parsed from ($n placeholders), where expressions are read from."""
    reader = _Reader(tables, search_path, text)
    if "SelectStmt" in tree:
        reader.select(tree["SelectStmt"])
    uses = reader.uses
    names = list(dict.fromkeys([*uses.predicates, *uses.order_by, *uses.columns]))
    return tuple(
        TableUse(
            table=name,
            predicates=tuple(dict.fromkeys(uses.predicates.get(name, []))),
            order_by=uses.order_by.get(name, ()),
            columns=tuple(uses.columns.get(name, [])),
        )
        for name in names
    )
