"""What every object of a database can run, read from its catalog: the :class:`CallGraph`.

A function is *unsafe* when it is denied, a VOLATILE built-in not known to be harmless, any
VOLATILE user-defined function, one in a language whose body dbopt cannot read, or a
sql/plpgsql function whose body runs dynamic SQL. Unsafety then spreads along everything
that runs something else (operators, aggregates, views, policies, inheritance, domains,
casts, recorded dependencies and function bodies); see :mod:`dbopt.readonly` for the whole
story and its limits. The catalog queries are ``catalog/sql/readonly_*.sql``.
"""

from __future__ import annotations

import functools
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

import psycopg
from psycopg.rows import class_row, tuple_row

from dbopt.catalog import catalog_sql
from dbopt.db import read_only_transaction
from dbopt.readonly.lists import (
    DENIED,
    DENIED_PREFIXES,
    FIRST_USER_OID,
    HARMLESS_VOLATILE,
    IMPLICIT_OPERATORS,
    READABLE_LANGUAGES,
    TRUSTED_LANGUAGES,
    denied,
)
from dbopt.readonly.references import (
    Reference,
    ReferenceKind,
    Refusal,
    denied_calls,
    references,
)


class Kind(StrEnum):
    """The kind of a node of the call graph (its letter in the catalog queries)."""

    FUNCTION = "f"
    OPERATOR = "o"
    RELATION = "r"
    #: A domain: what runs is its CHECK constraints.
    DOMAIN = "t"
    #: "A cast to this type": the cast functions and domain CHECKs a cast to it runs.
    CAST = "c"
    #: Only a name to look up, never a node: the functions callable as ``t.f`` (see
    #: :attr:`ReferenceKind.ATTRIBUTE`).
    ATTRIBUTE = "a"


#: A node of the call graph: its kind and its OID.
Node = tuple[Kind, int]

#: Which nodes a name in a query may mean.
_MEANS: Mapping[ReferenceKind, tuple[Kind, ...]] = {
    ReferenceKind.FUNCTION: (Kind.FUNCTION, Kind.CAST),
    ReferenceKind.ATTRIBUTE: (Kind.ATTRIBUTE,),
    ReferenceKind.OPERATOR: (Kind.OPERATOR,),
    ReferenceKind.RELATION: (Kind.RELATION,),
    ReferenceKind.TYPE: (Kind.CAST,),
}

_RELKINDS = {"v": "view", "f": "foreign table", "p": "partitioned table", "r": "table"}

_IDENT = r'"((?:[^"]|"")+)"|([A-Za-z_\x80-\uffff][A-Za-z0-9_$\x80-\uffff]*)'


@functools.cache
def _pattern(kind: str) -> re.Pattern[str]:
    """A call ``name(``, an attribute ``.name`` or a word; compiled when first needed (their
    non-ASCII ranges take 15 ms to compile, which every command would pay at import)."""
    return re.compile(
        {"call": rf"(?:{_IDENT})\s*\(", "attribute": rf"\.\s*(?:{_IDENT})", "word": _IDENT}[kind]
    )


_COMMENT = re.compile(r"/\*.*?\*/|--[^\n]*", re.S)


# --- the rows of the catalog queries (catalog/sql/readonly_*.sql) --------------------------


@dataclass(frozen=True, slots=True)
class _FunctionRow:
    oid: int
    schema: str
    name: str
    volatility: str
    language: str
    args: str
    #: The source of a user-defined function in a language whose body is not trusted.
    body: str | None
    on_rows: bool | None


@dataclass(frozen=True, slots=True)
class _OperatorRow:
    oid: int
    schema: str
    name: str
    code: int


@dataclass(frozen=True, slots=True)
class _RelationRow:
    oid: int
    schema: str
    name: str
    relkind: str


@dataclass(frozen=True, slots=True)
class _TypeRow:
    oid: int
    schema: str
    name: str
    is_domain: bool
    base: int


@dataclass(frozen=True, slots=True)
class _CastRow:
    source: str
    target: int
    target_name: str
    func: int
    #: i implicit, a assignment, e explicit.
    context: str


@dataclass(frozen=True, slots=True)
class _EdgeRow:
    kind: str
    oid: int
    verb: str
    ref_kind: str
    ref: int


_R = TypeVar("_R")


def _fetch(
    conn: psycopg.Connection[Any], row: type[_R], name: str, *, params: bool = True
) -> list[_R]:
    """The rows of ``catalog/sql/<name>.sql`` as ``row`` values."""
    values = (
        {
            "first": FIRST_USER_OID,
            "trusted": sorted(TRUSTED_LANGUAGES),
            "denied": sorted(DENIED),
            "denied_prefixes": [prefix for prefix, _why in DENIED_PREFIXES],
        }
        if params
        else None
    )
    with conn.cursor(row_factory=class_row(row)) as cur:
        return cur.execute(catalog_sql(name), values).fetchall()


# --- the graph ------------------------------------------------------------------------------


def _idents(pattern: re.Pattern[str], text: str) -> set[str]:
    """Identifiers matched by ``pattern`` in ``text``, lower-cased (a quoted one unescaped)."""
    found = set()
    for match in pattern.finditer(text):
        quoted, bare = match.group(1), match.group(2)
        found.add((quoted.replace('""', '"') if quoted is not None else bare).lower())
    return found


@dataclass(slots=True)
class _Graph:
    """Nodes with labels and lookup names, edges, and base reasons; built by CallGraph.read."""

    labels: dict[Node, str] = field(default_factory=dict)
    names: dict[tuple[Kind, str], list[tuple[str, Node]]] = field(default_factory=dict)
    edges: dict[Node, list[tuple[str, Node]]] = field(default_factory=dict)
    reasons: dict[Node, str] = field(default_factory=dict)

    def node(self, node: Node, label: str, kind: Kind, schema: str, name: str) -> None:
        self.labels[node] = label
        self.names.setdefault((kind, name.lower()), []).append((schema.lower(), node))

    def edge(self, parent: Node, verb: str, child: Node) -> None:
        if parent != child:
            self.edges.setdefault(parent, []).append((verb, child))

    def label(self, node: Node) -> str:
        """How a refusal names the node (its kind and OID when the catalog gave no name)."""
        return self.labels.get(node) or str((node[0].value, node[1]))

    def named(self, kind: Kind, name: str) -> list[Node]:
        return [node for _, node in self.names.get((kind, name.lower()), [])]


def _function_reason(row: _FunctionRow) -> str | None:
    """Why a function is unsafe by itself, or None (what it calls is judged separately)."""
    why = denied(row.name)
    if why is not None:
        return why
    builtin = row.oid < FIRST_USER_OID
    if row.volatility == "v":
        if builtin:
            if row.name in HARMLESS_VOLATILE:
                return None
            return "is a VOLATILE built-in that dbopt does not know to be harmless"
        return (
            "is VOLATILE, so it may write or change state (declare it STABLE or IMMUTABLE "
            "if it only reads)"
        )
    if builtin or row.language in TRUSTED_LANGUAGES:
        return None
    if row.language not in READABLE_LANGUAGES:
        return f"is written in {row.language}, whose body dbopt cannot check"
    if row.language == "sql" and not (row.body or "").strip():
        # A SQL-standard body (BEGIN ATOMIC, PostgreSQL 14+) is kept parsed, not as text:
        # pg_depend records none of the built-ins it calls (pg_stat_reset, nextval...).
        return "has a SQL-standard body (BEGIN ATOMIC), which dbopt cannot read to check"
    if "execute" in _idents(_pattern("word"), row.body or ""):
        return "runs dynamic SQL (EXECUTE), which dbopt cannot check"
    return None


class CallGraph:
    """What every function, operator, view, policy, domain and cast of a database can run.

    Read once with :meth:`read` (a constant number of catalog queries, nothing else), then
    asked about any number of queries with :meth:`refusals`.
    """

    def __init__(
        self,
        search_path: tuple[str, ...],
        graph: _Graph,
        unsafe: Mapping[Node, tuple[str, Node | None]],
        everywhere: tuple[Refusal, ...],
    ) -> None:
        self.search_path = search_path
        self._graph = graph
        self._unsafe = unsafe
        #: Refusals that apply to every query (an implicit cast through an unsafe function).
        self.everywhere = everywhere

    @classmethod
    def read(cls, conn: psycopg.Connection[Any]) -> CallGraph:
        """Read the catalog of ``conn``'s database (an autocommit connection).

        Plain SELECTs on pg_catalog, in a READ ONLY transaction that is rolled back, with the
        search path pinned to pg_catalog: no user-defined object can stand in for a function,
        operator or type these queries use.
        """
        with conn.cursor(row_factory=tuple_row) as cur:
            row = cur.execute(catalog_sql("readonly_search_path")).fetchone()
        search_path = tuple(str(s).lower() for s in (row[0] if row else []))
        with read_only_transaction(conn, search_path=("pg_catalog", "pg_temp")):
            g, implicit = _load(conn)
        unsafe = _spread(g)
        return cls(search_path, g, unsafe, _everywhere(g, unsafe, implicit))

    def refusals(self, text: str, *, with_placeholders: bool) -> list[Refusal]:
        """Why ``text`` may not run under verify (empty: it may), statically and on this server.

        Raises SqlTextError when the text is not one read-only query (see check_query).
        """
        refs = references(text, with_placeholders=with_placeholders)
        found = denied_calls(refs)
        seen = {r.subject for r in found}
        for ref in refs:
            if ref.kind == ReferenceKind.FUNCTION and denied(ref.name) is not None:
                continue  # refused by name above
            # One refusal per name: the first unsafe object it may mean (overloads included).
            node = next((n for n in self._candidates(ref) if n in self._unsafe), None)
            if node is None:
                continue
            chain = _chain(self._graph, self._unsafe, node, first=False)
            refusal = Refusal(self._graph.labels[node], chain)
            if refusal.subject not in seen:
                seen.add(refusal.subject)
                found.append(refusal)
        found.extend(self.everywhere)
        return found

    def _candidates(self, ref: Reference) -> list[Node]:
        """Every object the reference may mean on this server (all overloads)."""
        wanted = ref.schema.lower() if ref.schema else None
        return [
            node
            for kind in _MEANS[ref.kind]
            for schema, node in self._graph.names.get((kind, ref.name.lower()), [])
            if (schema in self.search_path if wanted is None else _same_schema(schema, wanted))
        ]


def _everywhere(
    g: _Graph, unsafe: Mapping[Node, tuple[str, Node | None]], implicit: list[_CastRow]
) -> tuple[Refusal, ...]:
    """The refusals of every query: casts the server applies unnamed, through an unsafe function."""
    found = []
    for cast in implicit:
        func: Node = (Kind.FUNCTION, cast.func)
        if func not in unsafe:
            continue
        found.append(
            Refusal(
                f"the {'implicit' if cast.context == 'i' else 'assignment'} cast from "
                f"{cast.source} to {cast.target_name}",
                f"runs {g.label(func)}, which {_chain(g, unsafe, func, first=False)}; "
                "PostgreSQL applies it without the query naming it, so dbopt cannot rule it "
                "out for any query",
            )
        )
    return tuple(found)


def _same_schema(schema: str, written: str) -> bool:
    """``pg_temp`` in a query means this session's pg_temp_N; conservatively, any of them."""
    return schema == written or (written == "pg_temp" and schema.startswith("pg_temp_"))


def _load(conn: psycopg.Connection[Any]) -> tuple[_Graph, list[_CastRow]]:
    """The call graph of the database, with body edges; and its implicit/assignment casts."""
    g = _Graph()
    bodies: dict[Node, str] = {}
    for fn in _fetch(conn, _FunctionRow, "readonly_functions"):
        node: Node = (Kind.FUNCTION, fn.oid)
        g.node(node, f"{fn.schema}.{fn.name}({fn.args})", Kind.FUNCTION, fn.schema, fn.name)
        if fn.on_rows:
            g.names.setdefault((Kind.ATTRIBUTE, fn.name.lower()), []).append(
                (fn.schema.lower(), node)
            )
        reason = _function_reason(fn)
        if reason is not None:
            g.reasons[node] = reason
        elif fn.body:
            bodies[node] = fn.body
    user_operators: list[tuple[str, Node]] = []
    for op in _fetch(conn, _OperatorRow, "readonly_operators", params=False):
        node = (Kind.OPERATOR, op.oid)
        g.node(node, f"operator {op.schema}.{op.name}", Kind.OPERATOR, op.schema, op.name)
        g.edge(node, "runs", (Kind.FUNCTION, op.code))
        if op.oid >= FIRST_USER_OID:
            user_operators.append((op.name, node))
    for rel in _fetch(conn, _RelationRow, "readonly_relations"):
        node = (Kind.RELATION, rel.oid)
        what = _RELKINDS.get(rel.relkind, "relation")
        g.node(node, f"{what} {rel.schema}.{rel.name}", Kind.RELATION, rel.schema, rel.name)
        if rel.relkind == "f":
            g.reasons[node] = (
                "is read through a foreign-data wrapper: another server (or a program) "
                "runs a query dbopt cannot check"
            )
    for typ in _fetch(conn, _TypeRow, "readonly_types"):
        cast: Node = (Kind.CAST, typ.oid)
        g.node(cast, f"a cast to {typ.schema}.{typ.name}", Kind.CAST, typ.schema, typ.name)
        if typ.is_domain:
            domain: Node = (Kind.DOMAIN, typ.oid)
            g.labels[domain] = f"domain {typ.schema}.{typ.name}"
            g.edge(cast, "checks", domain)
            g.edge(cast, "includes", (Kind.CAST, typ.base))
            g.edge(domain, "is based on", (Kind.DOMAIN, typ.base))
    implicit: list[_CastRow] = []
    for row in _fetch(conn, _CastRow, "readonly_casts"):
        g.edge((Kind.CAST, row.target), "runs", (Kind.FUNCTION, row.func))
        if row.context in ("i", "a"):
            implicit.append(row)
    for edge in _fetch(conn, _EdgeRow, "readonly_edges"):
        g.edge((Kind(edge.kind), edge.oid), edge.verb, (Kind(edge.ref_kind), edge.ref))
    for node, body in bodies.items():
        _body_edges(g, node, body, user_operators)
    return g, implicit


def _body_edges(g: _Graph, node: Node, body: str, operators: list[tuple[str, Node]]) -> None:
    """Edges from a sql/plpgsql function to what its body text may run (in any schema)."""
    # Read with and without what looks like comments: ``f/* x */()`` is a call too, and a
    # ``--`` inside a string literal must not hide the rest of its line.
    uncommented = _COMMENT.sub(" ", body)
    for name in sorted(_idents(_pattern("call"), body) | _idents(_pattern("call"), uncommented)):
        for child in g.named(Kind.FUNCTION, name) + g.named(Kind.CAST, name):
            g.edge(node, "calls", child)
    for name in sorted(_idents(_pattern("attribute"), body)):
        for child in g.named(Kind.ATTRIBUTE, name):
            g.edge(node, "calls", child)
    for name in sorted(_idents(_pattern("word"), body)):
        for child in g.named(Kind.RELATION, name) + g.named(Kind.CAST, name):
            g.edge(node, "mentions", child)
    for name, operator in operators:
        if name in body or name in IMPLICIT_OPERATORS:
            g.edge(node, "may use", operator)


def _spread(g: _Graph) -> dict[Node, tuple[str, Node | None]]:
    """Every unsafe node: its own reason, or the unsafe node it runs (breadth first)."""
    parents: dict[Node, list[Node]] = {}
    for parent, children in g.edges.items():
        for _, child in children:
            parents.setdefault(child, []).append(parent)
    unsafe: dict[Node, tuple[str, Node | None]] = {n: (r, None) for n, r in g.reasons.items()}
    queue = deque(sorted(unsafe))
    while queue:
        child = queue.popleft()
        for parent in parents.get(child, []):
            if parent not in unsafe:
                verb = next(v for v, c in g.edges[parent] if c == child)
                unsafe[parent] = (verb, child)
                queue.append(parent)
    return unsafe


def _chain(
    g: _Graph, unsafe: Mapping[Node, tuple[str, Node | None]], node: Node, *, first: bool = True
) -> str:
    """``public.f() calls public.g(), which resets statistics``; without its first label
    (``calls public.g(), which resets statistics``) when ``first`` is False."""
    pieces: list[str] = []
    current: Node | None = node
    while current is not None:
        text, via = unsafe[current]
        pieces.append(text if via is None else f"{text} {g.label(via)}")
        current = via
    chain = ", which ".join(pieces)
    return f"{g.label(node)} {chain}" if first else chain
