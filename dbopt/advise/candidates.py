"""Candidate indexes for one query's use of one table: pure, no database.

From what :mod:`dbopt.advise.querytree` read of the query, :func:`candidates` writes index
specs in the order B-tree lookups need them: equality columns first (the one with most
distinct values first), then one range column or the ORDER BY columns. Each comes as a plain
index and, when the query compares a column with a constant (``status = 'completed'``), as a
partial index on that constant; with and without INCLUDE. Operators a B-tree cannot serve get
the method that can: GIN with ``gin_trgm_ops`` for ``LIKE '%x%'`` (when pg_trgm is installed),
GIN on the query's own ``to_tsvector(...)`` expression for ``@@``, GIN for array and jsonb
containment, GiST for range and geometric overlap. HypoPG then decides which of them the
planner would use (:mod:`dbopt.advise.evaluation`); nothing here guesses costs.
"""

from __future__ import annotations

from collections.abc import Sequence

from dbopt.advise.querytree import Kind, Predicate, TableInfo, TableUse, TypeClass
from dbopt.model import IndexColumn, IndexSpec, Location, QualifiedName

#: The most INCLUDE columns a candidate carries (wider indexes cost more writes than they save).
MAX_INCLUDE = 4
#: The most key columns of a B-tree candidate.
MAX_KEYS = 4

#: A constant predicate goes to a partial index's WHERE only when its column has at most this
#: many distinct values (pg_stats; unknown counts as few).
PARTIAL_MAX_DISTINCT = 100

NOWHERE = Location("<dbopt advise>", 0, 0)


def _keys(names: Sequence[str], preds: Sequence[Predicate] = ()) -> list[IndexColumn]:
    exprs = {p.column for p in preds if p.expr}
    patterns = {p.column for p in preds if p.pattern}
    return [
        IndexColumn(
            name=None if n in exprs else n,
            expr=n if n in exprs else None,
            opclass="text_pattern_ops" if n in patterns else None,
        )
        for n in names
    ]


def _btree(
    table: QualifiedName,
    keys: Sequence[IndexColumn],
    include: Sequence[str],
    where: str | None,
) -> IndexSpec | None:
    if not keys:
        return None
    key_names = {k.name for k in keys if k.name}
    return IndexSpec(
        name="",
        table=table,
        columns=tuple(keys[:MAX_KEYS]),
        location=NOWHERE,
        include=tuple(c for c in include if c not in key_names)[:MAX_INCLUDE],
        where=where,
    )


def candidates(use: TableUse, info: TableInfo, *, trigram: bool) -> tuple[IndexSpec, ...]:
    """Candidate indexes for one query's use of one table (unnamed: ``name`` is empty).

    ``trigram``: pg_trgm is installed (its operator class can serve ``LIKE '%x%'``).
    """
    out: list[IndexSpec] = []
    preds = use.predicates
    eq_cols = list(dict.fromkeys(p.column for p in preds if p.kind in (Kind.EQ, Kind.JOIN)))
    eq_cols.sort(key=lambda c: -info.distinct(c))
    ranges = list(dict.fromkeys(p.column for p in preds if p.kind == Kind.RANGE))
    ranges = [c for c in ranges if c not in eq_cols]
    ranges.sort(key=lambda c: -info.distinct(c))
    # A constant on a column of few values (a status, a flag, IS NULL) makes a partial index;
    # one on a column of many (customer_id = 17) is an example value of a lookup: a key.
    constants = [
        p
        for p in preds
        if p.constant is not None and info.distinct(p.column) <= PARTIAL_MAX_DISTINCT
    ]
    pinned = {p.column for p in constants if p.single}
    where = " AND ".join(dict.fromkeys(str(p.constant) for p in constants)) or None

    tails: list[list[IndexColumn]] = [_keys(ranges[:1], preds)]
    if use.order_by:
        order = [IndexColumn(name=c, order="desc" if d else None) for c, d in use.order_by]
        tails.append([o for o in order if o.name not in eq_cols])
    for tail in tails:
        variants: list[tuple[list[str], str | None]] = [(eq_cols, None)]
        if where is not None:
            variants.append(([c for c in eq_cols if c not in pinned], where))
        for eq, partial in variants:
            keys = [*_keys(eq, preds), *tail]
            covering = [c for c in use.columns if partial is None or c not in pinned]
            for include in ((), covering):
                spec = _btree(use.table, keys, include, partial)
                if spec is not None:
                    out.append(spec)
    # One column alone (Dexter's single-column pass): joins and the most selective lookups.
    for column in dict.fromkeys([*eq_cols[:2], *(p.column for p in preds if p.kind == Kind.JOIN)]):
        single = _btree(use.table, _keys([column], preds), (), None)
        if single is not None:
            out.append(single)
    for p in preds:
        known = info.columns.get(p.column)
        type_class = known.type_class if known else TypeClass.OTHER
        method, opclass = None, None
        if p.kind == Kind.SEARCH:
            method = "gin"
        elif p.kind == Kind.INFIX and trigram and (type_class == TypeClass.TEXT or p.expr):
            method, opclass = "gin", "gin_trgm_ops"
        elif (p.kind == Kind.CONTAINS and type_class in (TypeClass.ARRAY, TypeClass.JSONB)) or (
            p.kind == Kind.OVERLAPS and type_class == TypeClass.ARRAY
        ):
            method = "gin"
        elif p.kind in (Kind.OVERLAPS, Kind.CONTAINS) and type_class in (
            TypeClass.RANGE,
            TypeClass.GEOMETRY,
        ):
            method = "gist"
        if method is not None:
            out.append(
                IndexSpec(
                    name="",
                    table=use.table,
                    columns=(
                        IndexColumn(expr=p.column, opclass=opclass)
                        if p.expr
                        else IndexColumn(name=p.column, opclass=opclass),
                    ),
                    location=NOWHERE,
                    method=method,
                )
            )
    return tuple(dict.fromkeys(out))
