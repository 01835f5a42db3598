"""Duplicate and redundant indexes: a pure comparison over indexes read as parts.

Identical: same table, method, key columns, operator classes, collations, per-column
ordering, expressions, predicate, INCLUDE columns, uniqueness (and NULLS NOT DISTINCT).
Redundant: a btree index whose keys (each with its operator class, collation and ordering)
are a left prefix of another valid btree index's keys on the same table, with the same
expressions and the same predicate, whose INCLUDE columns the wider one holds too, and
which enforces nothing (a unique index is not redundant with a wider non-unique one: it
enforces uniqueness on fewer columns). An index that backs a constraint or a foreign key's
reference is never the one to drop; nor is a replica identity, a CLUSTER index or the last
index serving a foreign key (dbopt.doctor.keep). A partitioned table's indexes (relkind I) are
compared among themselves; dropping one cannot be CONCURRENTLY.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dbopt.doctor.facts import IndexFacts
from dbopt.doctor.findings import Check, Finding, Severity
from dbopt.doctor.fixes import cluster_on, drop_fix, remove_from_spec
from dbopt.doctor.keep import Drops
from dbopt.model import Location, QualifiedName


@dataclass(frozen=True, slots=True)
class Managed:
    """A spec'd index: where it is written and its reason (None when it gives none)."""

    location: Location
    reason: str | None


def _key_parts(i: IndexFacts) -> tuple[tuple[int, int, int, int], ...]:
    """Per key column: (attnum, operator class, collation, DESC/NULLS options)."""
    return tuple(zip(i.keys, i.opclasses, i.collations, i.options, strict=False))


def identical(a: IndexFacts, b: IndexFacts) -> bool:
    """The same index under two names."""
    return (
        a.table_oid == b.table_oid
        and a.method == b.method
        and _key_parts(a) == _key_parts(b)
        and a.exprs == b.exprs
        and a.pred == b.pred
        and sorted(a.include) == sorted(b.include)
        and a.is_unique == b.is_unique
        and a.nulls_not_distinct == b.nulls_not_distinct
    )


def covered_by(a: IndexFacts, b: IndexFacts) -> bool:
    """``b`` serves every lookup ``a`` serves, and ``a`` enforces nothing (see module doc)."""
    if a.oid == b.oid or a.table_oid != b.table_oid or identical(a, b):
        return False
    if a.method != "btree" or b.method != "btree" or not b.is_valid:
        return False
    if a.enforces or a.pred != b.pred or a.exprs != b.exprs:
        return False
    ka, kb = _key_parts(a), _key_parts(b)
    if len(ka) > len(kb) or kb[: len(ka)] != ka:
        return False
    return set(a.include) <= set(b.attnums)


def _rank(
    i: IndexFacts, managed: Mapping[QualifiedName, Managed]
) -> tuple[bool, bool, bool, bool, int]:
    """Which of two identical indexes to keep: the one backing a constraint, then the table's
    replica identity or CLUSTER index, then the spec'd one, then the one that has served
    scans, then the older (smaller OID)."""
    return (
        i.constraint_name is not None or i.backs_foreign_key,
        i.is_replident or i.is_clustered,
        i.ident in managed,
        i.scans > 0,
        -i.oid,
    )


def _droppable(i: IndexFacts) -> bool:
    return i.constraint_name is None and not i.backs_foreign_key and not i.building


def find_redundant(
    indexes: Iterable[IndexFacts],
    managed: Mapping[QualifiedName, Managed],
    drops: Drops | None = None,
) -> list[Finding]:
    """One finding per index that should go because another serves it (identical first, then
    a wider one); the one to keep is named with the reason. Valid indexes only (an INVALID
    one is the invalid check's, which says when it duplicates a valid one); a partitioned
    table's indexes among themselves. ``drops`` counts what is proposed for dropping and
    refuses an index that must stay (see :mod:`dbopt.doctor.keep`): that one is reported as
    info, saying why."""
    indexes = list(indexes)
    drops = drops if drops is not None else Drops(indexes, ())
    by_table: dict[int, list[IndexFacts]] = {}
    for i in indexes:
        if i.relkind in ("i", "I") and not i.is_partition and i.is_valid:
            by_table.setdefault(i.table_oid, []).append(i)
    out: list[Finding] = []
    for group in by_table.values():
        for a in group:
            if not _droppable(a):
                continue
            standing = [b for b in group if b.oid != a.oid and b.oid not in drops.gone]
            better = [
                b for b in standing if identical(a, b) and _rank(b, managed) > _rank(a, managed)
            ]
            if better:
                keep = max(better, key=lambda b: _rank(b, managed))
                out.append(_finding(a, keep, managed, drops, duplicate=True))
                continue
            wider = [b for b in standing if covered_by(a, b)]
            if wider:
                keep = min(wider, key=lambda b: (b.ident not in managed, b.size_bytes, b.oid))
                out.append(_finding(a, keep, managed, drops, duplicate=False))
    return out


def _finding(
    drop: IndexFacts,
    keep: IndexFacts,
    managed: Mapping[QualifiedName, Managed],
    drops: Drops,
    *,
    duplicate: bool,
) -> Finding:
    spec = managed.get(drop.ident)
    keep_spec = keep.ident in managed
    if duplicate:
        what = f"{drop.qualified} has the same definition as {keep.qualified}"
        why_keep = (
            "it backs a constraint"
            if keep.constraint_name or keep.backs_foreign_key
            else "it is the replica identity"
            if keep.is_replident
            else "it is the CLUSTER index"
            if keep.is_clustered
            else "it is in the specs"
            if keep_spec
            else "it is the older one"
        )
    else:
        cols = ", ".join(drop.columns[: drop.nkey])
        what = (
            f"{drop.qualified} ({cols}) is a left prefix of {keep.qualified} "
            f"({', '.join(keep.columns[: keep.nkey])})"
        )
        why_keep = "it serves the same lookups (same method, ordering, operator classes, predicate)"
    check = (
        Check.UNMANAGED_DUPLICATE
        if spec is None and keep_spec
        else Check.DUPLICATE
        if duplicate
        else Check.REDUNDANT
    )
    severity = Severity.WARNING
    numbers: tuple[tuple[str, int | float | str | None], ...] = (
        ("size_bytes", drop.size_bytes),
        ("scans", drop.scans),
        ("keep", keep.qualified),
    )
    refusal = drops.refusal(drop)
    if refusal is not None:
        reason, fix = refusal
        if drop.is_clustered:
            fix = f"keep it, or first {cluster_on(drop.table_name, keep.ident)} and then drop it"
        return Finding(
            check=check,
            severity=Severity.INFO,
            object=drop.qualified,
            table=drop.table,
            message=f"{what}, but it stays: {reason}",
            why="doctor never proposes dropping a replica identity, a CLUSTER index or the "
            "last index serving a foreign key",
            fix=fix,
            numbers=numbers,
            location=spec.location if spec else None,
            weight=float(drop.size_bytes),
            oid=drop.oid,
        )
    drops.drop(drop)
    fix = drop_fix(drop.ident, partitioned=drop.partitioned)
    if spec is not None:
        fix = remove_from_spec(drop.ident, spec.location)
        if not duplicate and spec.reason:
            # The validator asked for a reason to keep a left prefix, and the spec gives one.
            severity = Severity.INFO
    why = (
        "every insert and update maintains both indexes and both take space; "
        f"keep {keep.qualified}: {why_keep}"
    )
    if not duplicate:
        why += (
            "; the narrower index is smaller, so check first that no hot query needs exactly it"
            + (f" (its spec says: {spec.reason})" if spec and spec.reason else "")
        )
    return Finding(
        check=check,
        severity=severity,
        object=drop.qualified,
        table=drop.table,
        message=what,
        why=why,
        fix=fix,
        numbers=numbers,
        location=spec.location if spec else None,
        weight=float(drop.size_bytes),
        oid=drop.oid,
    )
