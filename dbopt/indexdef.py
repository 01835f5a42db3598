"""The server's own index definitions (``pg_get_indexdef``) read back into spec objects.

dbopt never executes SQL text it reads back (from its history, say). When it must rebuild an
index it knows only by its definition — the previous definition of a replaced index, an
unmanaged index of a materialized view being replaced — the text is parsed by the real
PostgreSQL parser, must be exactly one ``CREATE INDEX`` on the expected relation, and becomes
an :class:`IndexSpec`; the DDL is then composed from that spec like any other, its expressions
passing through :mod:`dbopt.sqltext` again.
"""

from __future__ import annotations

from typing import Any

from dbopt.model import IndexColumn, IndexSpec, Location, QualifiedName
from dbopt.schema import INDEX_METHODS


class DefinitionError(ValueError):
    """An index definition dbopt cannot rebuild from (the message says why)."""


def _name(parts: Any) -> str | None:
    """A (possibly qualified) name from a pglast list of String nodes, as spec text."""
    if not parts:
        return None
    return ".".join(str(p.sval) for p in parts)


def _column(elem: Any) -> IndexColumn:
    from pglast.enums import SortByDir, SortByNulls
    from pglast.stream import RawStream

    if elem.opclassopts:
        raise DefinitionError("an operator class with parameters cannot be expressed in a spec")
    order = {SortByDir.SORTBY_DESC: "desc", SortByDir.SORTBY_ASC: "asc"}.get(elem.ordering)
    nulls = {
        SortByNulls.SORTBY_NULLS_FIRST: "first",
        SortByNulls.SORTBY_NULLS_LAST: "last",
    }.get(elem.nulls_ordering)
    expr = None if elem.expr is None else str(RawStream()(elem.expr))
    return IndexColumn(
        name=elem.name,
        expr=expr,
        order=order,
        nulls=nulls,
        opclass=_name(elem.opclass),
        collation=_name(elem.collation),
    )


def _option_value(value: Any) -> str:
    """A storage parameter's value as the spec writes it (the server quotes them all)."""
    names = getattr(value, "names", None)  # an unquoted word (off, on) parses as a type name
    if names and len(names) == 1:
        return str(names[0].sval)
    for attr in ("sval", "ival", "fval", "boolval"):
        if hasattr(value, attr):
            found = getattr(value, attr)
            return ("on" if found else "off") if attr == "boolval" else str(found)
    raise DefinitionError(f"a storage parameter value dbopt cannot read: {value!r}")


def index_spec_from_canonical(canonical: str, *, table: QualifiedName, name: str) -> IndexSpec:
    """An :class:`IndexSpec` from :func:`dbopt.deparse.canonical` text (the server's
    definition without name and table): what the server made of a spec."""
    from psycopg import sql

    unique = canonical.startswith("UNIQUE ")
    body = canonical.removeprefix("UNIQUE ")
    head = "CREATE UNIQUE INDEX" if unique else "CREATE INDEX"
    text = f"{head} {sql.Identifier(name).as_string()} ON {table.ident().as_string()} {body}"
    return index_spec_from_definition(text, table=table, name=name)


def index_spec_from_definition(
    definition: str,
    *,
    table: QualifiedName,
    name: str | None = None,
    location: Location | None = None,
    reason: str | None = None,
) -> IndexSpec:
    """An :class:`IndexSpec` equal to ``definition`` (a ``pg_get_indexdef`` text).

    The text must be exactly one CREATE INDEX on ``table`` (and named ``name`` when given);
    anything else raises DefinitionError, so a tampered or foreign text never becomes DDL.
    """
    from pglast import parser

    try:
        stmts = parser.parse_sql(definition)
    except parser.ParseError as exc:
        raise DefinitionError(f"not an index definition PostgreSQL accepts: {exc}") from None
    if len(stmts) != 1 or type(stmts[0].stmt).__name__ != "IndexStmt":
        raise DefinitionError("must be exactly one CREATE INDEX statement")
    stmt: Any = stmts[0].stmt
    on = QualifiedName(stmt.relation.schemaname or table.schema, stmt.relation.relname)
    if on != table:
        raise DefinitionError(f"is an index on {on}, not on {table}")
    if name is not None and stmt.idxname != name:
        raise DefinitionError(f"defines index {stmt.idxname}, not {name}")
    method = stmt.accessMethod or "btree"
    if method not in INDEX_METHODS:
        raise DefinitionError(f"uses index method {method}, which dbopt does not build")
    if stmt.tableSpace:
        raise DefinitionError("names a tablespace (carried separately, never from text)")
    if stmt.concurrent or stmt.if_not_exists:
        raise DefinitionError("is not a plain CREATE INDEX as the server reports it")
    storage = []
    for option in stmt.options or ():
        storage.append((str(option.defname), _option_value(option.arg)))
    where = None
    if stmt.whereClause is not None:
        from pglast.stream import RawStream

        where = str(RawStream()(stmt.whereClause))
    return IndexSpec(
        name=str(stmt.idxname),
        table=table,
        columns=tuple(_column(e) for e in stmt.indexParams),
        location=location or Location("<database>", 0, 0),
        method=method,
        unique=bool(stmt.unique),
        nulls_not_distinct=bool(stmt.nulls_not_distinct),
        include=tuple(str(e.name) for e in stmt.indexIncludingParams or ()),
        where=where,
        storage=tuple(sorted(storage)),
        reason=reason,
    )
