"""Foreign keys without an index on their referencing columns.

Each update of a referenced key and each delete on the referenced table looks up the
referencing rows; without an index that leads with those columns (in any order), that lookup
reads the whole referencing table, under the referenced row's lock. Ranked by the referenced
table's updates and deletes times the referencing table's size.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from dbopt.doctor.facts import ForeignKeyFacts, IndexFacts
from dbopt.doctor.findings import Check, Finding, Severity
from dbopt.doctor.fixes import create_concurrently, index_name, spec_entry
from dbopt.model import Location, QualifiedName

#: A referencing table with fewer rows than this is read quickly: info, not a warning.
FK_WARN_ROWS = 10_000


def serves(index: IndexFacts, fk: ForeignKeyFacts) -> bool:
    """``index`` finds a foreign key's referencing rows: a valid btree (or a one-column
    hash on a one-column key) without predicate whose leading key columns are the key's."""
    if index.table_oid != fk.table_oid or not index.is_valid or index.pred is not None:
        return False
    if index.method == "hash":
        return index.keys == fk.attnums
    if index.method != "btree" or len(index.keys) < len(fk.attnums):
        return False
    return set(index.keys[: len(fk.attnums)]) == set(fk.attnums)


def find_unindexed(
    keys: Iterable[ForeignKeyFacts],
    indexes: Iterable[IndexFacts],
    spec_files: Mapping[QualifiedName, Location],
) -> list[Finding]:
    """A finding per foreign key no index serves; ``spec_files`` maps a table to where its
    spec file starts (the fix names the file to add the index to)."""
    by_table: dict[int, list[IndexFacts]] = {}
    taken: dict[str, set[str]] = {}  # index names per schema, and those suggested
    for i in indexes:
        by_table.setdefault(i.table_oid, []).append(i)
        taken.setdefault(i.schema, set()).add(i.name)
    out = []
    for fk in keys:
        candidates = by_table.get(fk.table_oid, [])
        if any(serves(i, fk) for i in candidates):
            continue
        partial = [
            i.qualified
            for i in candidates
            if i.pred is not None and serves(replace(i, pred=None), fk)
        ]
        names = taken.setdefault(fk.table_name.schema, set())
        name = index_name(f"{fk.table_name.name}_{'_'.join(fk.columns)}_idx", names)
        names.add(name)
        entry = spec_entry(name, fk.columns, f"foreign key {fk.name} to {fk.referenced}")
        where = spec_files.get(fk.table_name)
        target = where.file if where else f"the spec file of {fk.table}"
        out.append(
            Finding(
                check=Check.FK_UNINDEXED,
                severity=Severity.WARNING if fk.table_rows >= FK_WARN_ROWS else Severity.INFO,
                object=f"{fk.table}.{fk.name}",
                table=fk.table,
                message=(
                    f"foreign key {fk.name} ({', '.join(fk.columns)}) -> {fk.referenced}: "
                    "no index leads with its columns"
                ),
                why=(
                    f"every delete on {fk.referenced} (and every update of its key) reads all "
                    f"{fk.table_rows} rows of {fk.table} to check this key, holding locks "
                    "meanwhile; joins on it scan too"
                    + (
                        f" ({', '.join(partial)} leads with them but is partial: it cannot "
                        "find the rows its WHERE leaves out)"
                        if partial
                        else ""
                    )
                ),
                fix=f"add to {target}: {entry}, then `dbopt apply` "
                f"(it runs {create_concurrently(fk.table_name, fk.columns, name)})",
                numbers=(
                    ("referenced_writes", fk.ref_writes),
                    ("table_rows", fk.table_rows),
                    ("table_bytes", fk.table_bytes),
                ),
                location=where,
                weight=float((fk.ref_writes + 1) * max(fk.table_bytes, 1)),
            )
        )
    return out
