"""What a query names: the functions, operators, relations and types in its parse tree, and
the refusals that need no database (calls to :data:`~dbopt.readonly.lists.DENIED`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum

from dbopt.readonly.lists import IMPLICIT_OPERATORS, denied
from dbopt.sqltext import query_tree
from dbopt.yamlcache import kept


class ReferenceKind(StrEnum):
    """What kind of object a query names."""

    FUNCTION = "function"
    #: A qualified column reference ``t.name``: PostgreSQL also reads it as ``name(t)``.
    ATTRIBUTE = "attribute"
    OPERATOR = "operator"
    RELATION = "relation"
    TYPE = "type"


@dataclass(frozen=True, slots=True)
class Reference:
    """An object a query names that can run something when the query runs.

    ``attribute`` is a qualified column reference (``t.name``), which PostgreSQL also reads
    as a call ``name(t)`` when such a function exists.
    """

    kind: ReferenceKind
    name: str
    schema: str | None = None

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name


def _strings(items: object) -> list[str]:
    """The ``String`` values of a pglast list of name parts (``["s", "f"]``)."""
    if not isinstance(items, list):
        return []
    return [i["String"]["sval"] for i in items if isinstance(i, dict) and "String" in i]


def _reference(kind: ReferenceKind, parts: list[str]) -> Reference | None:
    if not parts:
        return None
    return Reference(kind, parts[-1], parts[-2] if len(parts) > 1 else None)


def _walk(node: object) -> Iterator[Reference | None]:
    """Every Reference in a pglast JSON tree, in tree order (None for nodes naming nothing)."""
    if isinstance(node, list):
        for item in node:
            yield from _walk(item)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if not isinstance(value, dict):
            yield from _walk(value)
            continue
        if key == "FuncCall":
            yield _reference(ReferenceKind.FUNCTION, _strings(value.get("funcname")))
        elif key == "A_Expr" and "BETWEEN" not in value.get("kind", ""):
            # BETWEEN's "name" is the keyword; its comparisons are among IMPLICIT_OPERATORS.
            yield _reference(ReferenceKind.OPERATOR, _strings(value.get("name")))
        elif key == "SubLink":
            yield _reference(ReferenceKind.OPERATOR, _strings(value.get("operName")))
        elif key == "SortBy":
            yield _reference(ReferenceKind.OPERATOR, _strings(value.get("useOp")))
        elif key == "RangeVar":
            parts = [value.get("schemaname", ""), value.get("relname", "")]
            yield _reference(ReferenceKind.RELATION, [p for p in parts if p])
        elif key == "ColumnRef":
            fields = value.get("fields", [])
            if len(fields) > 1:
                yield _reference(ReferenceKind.ATTRIBUTE, _strings(fields[-1:]))
        elif key == "A_Indirection":
            for name in _strings(value.get("indirection")):
                yield Reference(ReferenceKind.ATTRIBUTE, name)
        elif key in ("typeName", "TypeName"):
            yield _reference(ReferenceKind.TYPE, _strings(value.get("names")))
        yield from _walk(value)


def references(text: str, *, with_placeholders: bool) -> tuple[Reference, ...]:
    """Every function, operator, relation and type a read-only query names, once each.

    The query must pass :func:`dbopt.sqltext.check_query` (SqlTextError otherwise); the
    operators every query may use implicitly (:data:`IMPLICIT_OPERATORS`) are included.
    """
    return tuple(
        Reference(ReferenceKind(kind), name, schema)
        for kind, name, schema in _named(text, with_placeholders)
    )


@kept("query_references", "pglast")
def _named(text: str, with_placeholders: bool) -> tuple[tuple[str, str, str | None], ...]:
    """:func:`references` as plain values (kept across commands: dbopt.yamlcache.kept)."""
    tree = query_tree(text, with_placeholders=with_placeholders)
    found = [r for r in _walk(tree) if r is not None]
    found += [Reference(ReferenceKind.OPERATOR, name) for name in IMPLICIT_OPERATORS]
    return tuple((str(r.kind), r.name, r.schema) for r in dict.fromkeys(found))


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a query may not run under verify: something it reaches could change something."""

    subject: str
    reason: str

    @property
    def message(self) -> str:
        """``pg_stat_reset() resets the server's statistics``: for callers other than verify
        (a materialized view's query, say), which add their own consequence."""
        return f"{self.subject} {self.reason}"

    def __str__(self) -> str:
        return f"{self.message}: verify must change nothing"


def static_refusals(text: str, *, with_placeholders: bool) -> list[Refusal]:
    """The calls of a query to functions of :data:`DENIED`, found without a database.

    Raises SqlTextError when the text is not one read-only query (see check_query).
    """
    return denied_calls(references(text, with_placeholders=with_placeholders))


def denied_calls(refs: Iterable[Reference]) -> list[Refusal]:
    """A refusal for each call among ``refs`` to a function refused by name."""
    out: list[Refusal] = []
    for ref in refs:
        why = denied(ref.name) if ref.kind == ReferenceKind.FUNCTION else None
        if why is not None:
            out.append(Refusal(f"{ref}()", why))
    return out
