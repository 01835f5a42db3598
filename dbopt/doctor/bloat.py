"""Btree bloat: an estimate from the planner's statistics, or exact with pgstattuple.

The estimate follows the well-known one (ioguix/pgsql-bloat-estimation, pgexperts'
pgx_scripts): the pages ``reltuples`` entries would fill at the index's fillfactor, against
the pages it has. Per entry: a 4-byte line pointer, an 8-byte tuple header (16 with a null
bitmap), and the columns placed one after the other as the server places them: each at an
offset aligned to its type's alignment (a short varlena, under 127 bytes, is not aligned),
with the statistics' average width, weighted by how often it is not null; the whole padded to
8 bytes (MAXALIGN). Summing the widths and padding once would count (int4, int8) as 16 bytes
where the server uses 24, and report a fresh index as bloated. Per page: 24 bytes of header
and 16 of btree special space; plus the metapage; inner pages are ignored (under 1%).

It is an estimate: average widths are those of the table's values (an index entry of a
compressed or toasted value can differ), and btree deduplication (PostgreSQL 13+) makes
indexes with repeated keys smaller than this, so it can under-report their bloat; a skewed
mix of null and long values can push it either way. ``--exact`` measures instead.

Exact (``--exact``): pgstatindex's leaf density against the fillfactor, plus its empty and
deleted pages. It reads the whole index, so only indexes large enough to be reported are read;
one that cannot be read within the lock or statement timeout (another session holds a lock
on it) keeps its estimate, and the run says so.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from dbopt.catalog import catalog_sql
from dbopt.doctor.facts import BtreeWidth, ColumnWidth, IndexFacts
from dbopt.doctor.findings import Check, Finding, Severity
from dbopt.doctor.fixes import reindex_concurrently
from dbopt.doctor.redundancy import Managed
from dbopt.model import QualifiedName

#: Worth a rebuild only when both hold: this many bytes would come back ...
BLOAT_MIN_BYTES = 10 * 1024 * 1024
#: ... and they are at least this share of the index.
BLOAT_MIN_RATIO = 0.30

_PAGE_HEADER = 24
_BTREE_SPECIAL = 16
_LINE_POINTER = 4
_ALIGNMENT = {"c": 1, "s": 2, "i": 4, "d": 8}
#: A varlena this short is stored with a 1-byte header and no alignment padding.
_SHORT_VARLENA = 127


def _align(n: float, to: int = 8) -> int:
    return int(math.ceil(n / to) * to)


def data_width(columns: Iterable[ColumnWidth]) -> float:
    """The bytes an entry's columns take, each at its aligned offset (before MAXALIGN)."""
    offset = 0.0
    for c in columns:
        present = 1 - c.null_frac
        if present <= 0:
            continue  # always null: only its bit in the null bitmap
        packed = c.typlen == -2 or (c.typlen == -1 and c.avg_width < _SHORT_VARLENA)
        if not packed:
            offset = float(_align(offset, _ALIGNMENT.get(c.typalign, 8)))
        width = c.typlen if c.typlen > 0 else c.avg_width
        offset += present * width
    return offset


@dataclass(frozen=True, slots=True)
class Bloat:
    """How much of an index is waste, and how that was found."""

    oid: int
    size_bytes: int
    wasted_bytes: int
    source: str  # estimate or pgstattuple

    @property
    def ratio(self) -> float:
        """Wasted share of the index (0..1)."""
        return self.wasted_bytes / self.size_bytes if self.size_bytes else 0.0


def estimate(width: BtreeWidth) -> Bloat | None:
    """The estimate for one index; None without statistics for every column."""
    if width.unknown_columns or not width.columns:
        return None
    header = 16 if width.has_nulls else 8
    entry = _LINE_POINTER + header + _align(data_width(width.columns))
    usable = (width.block_size - _PAGE_HEADER - _BTREE_SPECIAL) * width.fillfactor / 100
    per_page = max(1, math.floor(usable / entry))
    expected = 1 + math.ceil(width.tuples / per_page)
    size = width.pages * width.block_size
    wasted = max(0, width.pages - expected) * width.block_size
    return Bloat(width.oid, size, wasted, "estimate")


def pgstatindex_access(conn: psycopg.Connection[Any]) -> tuple[str | None, str]:
    """Where pgstatindex lives (None when it cannot be used) and, if not, what to do."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(catalog_sql("doctor_pgstattuple"))
        row = cur.fetchone()
    if row is None:
        return None, (
            "--exact needs the pgstattuple extension (CREATE EXTENSION pgstattuple, by a "
            "role allowed to); bloat is estimated from the statistics instead"
        )
    if not row["allowed"]:
        return None, (
            "--exact needs EXECUTE on pgstattuple's pgstatindex: GRANT pg_stat_scan_tables TO "
            "this role (managed services allow it to the admin role); bloat is estimated "
            "from the statistics instead"
        )
    return str(row["schema"]), ""


def exact(conn: psycopg.Connection[Any], schema: str, width: BtreeWidth) -> Bloat:
    """pgstatindex's measure of one index (reads all of it)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            catalog_sql("doctor_pgstatindex").format(schema=sql.Identifier(schema)),
            {"oid": width.oid},
        )
        r = cur.fetchone()
    assert r is not None
    density = float(r["avg_leaf_density"])  # NaN for an index with no leaf page
    leaf_waste = 0.0 if math.isnan(density) else max(0.0, 1 - density / width.fillfactor)
    pages = int(r["empty_pages"]) + int(r["deleted_pages"]) + int(r["leaf_pages"]) * leaf_waste
    return Bloat(width.oid, int(r["index_size"]), int(pages * width.block_size), "pgstattuple")


def measure(
    conn: psycopg.Connection[Any],
    schema: str,
    widths: Iterable[BtreeWidth],
    min_bytes: int,
    names: Mapping[int, QualifiedName],
) -> tuple[list[Bloat], list[str]]:
    """pgstatindex's measure of each index large enough to be reported; one it cannot read
    within the lock or statement timeout (another session holds a lock on it, on an
    autocommit session so nothing else is lost) keeps its estimate. The measures, and a note
    per index that fell back."""
    measured: list[Bloat] = []
    notes: list[str] = []
    for w in widths:
        if w.pages * w.block_size < min_bytes:
            continue  # only what could be worth a rebuild is read in full
        try:
            measured.append(exact(conn, schema, w))
        except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled) as exc:
            name = names.get(w.oid, w.oid)
            why = (
                "is locked" if isinstance(exc, psycopg.errors.LockNotAvailable) else "took too long"
            )
            fallback = estimate(w)
            if fallback is not None:
                measured.append(fallback)
            notes.append(
                f"--exact: {name} {why} (pgstatindex needs an ACCESS SHARE lock and reads "
                "all of it): its bloat is "
                + ("estimated" if fallback is not None else "unknown (no statistics)")
            )
    return measured, notes


def find_bloat(
    measured: Iterable[Bloat],
    indexes: Mapping[int, IndexFacts],
    managed: Mapping[QualifiedName, Managed],
    *,
    min_bytes: int = BLOAT_MIN_BYTES,
    min_ratio: float = BLOAT_MIN_RATIO,
    skip: frozenset[int] = frozenset(),
) -> list[Finding]:
    """A finding per index whose waste is at least ``min_bytes`` and ``min_ratio``, except
    the OIDs of ``skip`` (another finding proposes to drop them: no REINDEX advice too)."""
    out = []
    for b in measured:
        index = indexes.get(b.oid)
        if index is None or b.oid in skip or b.wasted_bytes < min_bytes or b.ratio < min_ratio:
            continue
        spec = managed.get(index.ident)
        out.append(
            Finding(
                check=Check.BLOAT,
                severity=Severity.WARNING,
                object=index.qualified,
                table=index.table,
                message=(
                    f"{index.qualified}: about {b.wasted_bytes / 1048576:.1f} MB of its "
                    f"{b.size_bytes / 1048576:.1f} MB is free space ({b.ratio:.0%}, "
                    f"{'measured by pgstattuple' if b.source == 'pgstattuple' else 'estimated'})"
                ),
                why="a bloated index reads and caches more pages for the same lookups, and "
                "btree pages emptied by deletes are reused only for keys in their range",
                fix=f"{reindex_concurrently(index.ident)} (builds a fresh copy without "
                "blocking writes; needs room for the copy)"
                + ("; the spec stays as it is" if spec else ""),
                numbers=(
                    ("size_bytes", b.size_bytes),
                    ("wasted_bytes", b.wasted_bytes),
                    ("wasted_ratio", round(b.ratio, 3)),
                    ("source", b.source),
                ),
                location=spec.location if spec else None,
                weight=float(b.wasted_bytes),
                oid=index.oid,
            )
        )
    return out
