"""What doctor reads from the database: indexes, foreign keys, btree widths, the statistics'
age. One query each (catalog/sql/doctor_*.sql), from plain catalog columns and statistics
views, so nothing here takes a lock on a relation; the rows become frozen dataclasses the
pure checks work on. Names stay (schema, name) pairs (QualifiedName) from the catalog to the
printed fix: a dot is a legal character in either part, so "schema.name" is only for display
and is never split again."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from dbopt.catalog import catalog_sql
from dbopt.model import QualifiedName


@dataclass(frozen=True, slots=True)
class IndexFacts:
    """One index, its definition as parts (what redundancy compares) and its statistics.

    For a partitioned index (relkind ``I``) ``size_bytes``, ``scans``, ``last_scan`` and
    ``table_writes`` are summed over its partitions' indexes (``leaves``) and their tables.
    """

    oid: int
    schema: str
    name: str
    table_oid: int
    table_name: QualifiedName
    method: str
    relkind: str  # i, or I for a partitioned index
    nkey: int  # key columns; the rest of ``attnums`` are INCLUDE columns
    attnums: tuple[int, ...]  # 0 for an expression
    columns: tuple[str, ...]  # the table's column names, "(expression)" for expressions
    opclasses: tuple[int, ...]
    collations: tuple[int, ...]
    options: tuple[int, ...]  # per key column: DESC, NULLS FIRST bits
    exprs: str | None  # node trees without text positions
    pred: str | None
    is_unique: bool
    is_primary: bool
    is_valid: bool
    nulls_not_distinct: bool
    is_partition: bool
    size_bytes: int
    scans: int
    last_scan: datetime | None
    table_writes: int
    constraint_name: str | None
    backs_foreign_key: bool
    building: bool
    #: The table's replica identity (REPLICA IDENTITY USING INDEX) and its CLUSTER index.
    is_replident: bool = False
    is_clustered: bool = False
    #: INVALID, not seen being built, while another role's index build runs in this
    #: database whose progress this role cannot read (it may be that build).
    unseen_build: bool = False
    #: A partitioned index's leaf partition indexes (their scans are its scans).
    leaves: tuple[int, ...] = ()
    #: A partitioned index's partitions that have no index attached to it (why it is INVALID).
    unattached: tuple[QualifiedName, ...] = ()

    @property
    def ident(self) -> QualifiedName:
        """The index as (schema, name)."""
        return QualifiedName(self.schema, self.name)

    @property
    def qualified(self) -> str:
        """``schema.name``, for display only."""
        return f"{self.schema}.{self.name}"

    @property
    def table(self) -> str:
        """The table's ``schema.name``, for display only."""
        return str(self.table_name)

    @property
    def partitioned(self) -> bool:
        """A partitioned table's index (relkind ``I``): no CONCURRENTLY for it."""
        return self.relkind == "I"

    @property
    def keys(self) -> tuple[int, ...]:
        """The key columns' attribute numbers (0: an expression)."""
        return self.attnums[: self.nkey]

    @property
    def include(self) -> tuple[int, ...]:
        """The INCLUDE columns' attribute numbers."""
        return self.attnums[self.nkey :]

    @property
    def enforces(self) -> bool:
        """It enforces something: a constraint, uniqueness, or a foreign key's reference."""
        return self.constraint_name is not None or self.is_unique or self.backs_foreign_key


@dataclass(frozen=True, slots=True)
class ForeignKeyFacts:
    """A foreign key and what ranks the lack of an index on its referencing columns."""

    name: str
    table_oid: int
    table_name: QualifiedName
    attnums: tuple[int, ...]
    columns: tuple[str, ...]
    referenced_name: QualifiedName
    ref_writes: int  # updates + deletes on the referenced table since the stats reset
    table_bytes: int
    table_rows: int

    @property
    def table(self) -> str:
        """The referencing table's ``schema.name``, for display only."""
        return str(self.table_name)

    @property
    def referenced(self) -> str:
        """The referenced table's ``schema.name``, for display only."""
        return str(self.referenced_name)


@dataclass(frozen=True, slots=True)
class ColumnWidth:
    """One column of a btree index entry: the statistics' average width and null fraction,
    and its type's length and alignment (what padding it needs in the entry)."""

    avg_width: float
    null_frac: float
    typlen: int  # -1: varlena, -2: cstring
    typalign: str  # c, s, i, d


@dataclass(frozen=True, slots=True)
class BtreeWidth:
    """What the planner's statistics say a btree index's entries need."""

    oid: int
    pages: int
    tuples: float
    fillfactor: int
    block_size: int
    columns: tuple[ColumnWidth, ...]  # empty when a column has no statistics
    has_nulls: bool
    unknown_columns: int


@dataclass(frozen=True, slots=True)
class StatsWindow:
    """Since when scans count, and which server."""

    stats_reset: datetime | None
    now: datetime
    database: str
    server_version: str


def _rows(conn: psycopg.Connection[Any], name: str, history_schema: str) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(catalog_sql(name), {"history_schema": history_schema})
        return cur.fetchall()


def _names(schemas: list[str] | None, names: list[str] | None) -> tuple[QualifiedName, ...]:
    return tuple(QualifiedName(s, n) for s, n in zip(schemas or [], names or [], strict=True))


def read_indexes(conn: psycopg.Connection[Any], history_schema: str) -> list[IndexFacts]:
    """Every index of the user's schemas (doctor_indexes.sql)."""
    return [
        IndexFacts(
            oid=int(r["oid"]),
            schema=r["schema"],
            name=r["name"],
            table_oid=int(r["table_oid"]),
            table_name=QualifiedName(r["table_schema"], r["table_name"]),
            method=r["method"],
            relkind=r["relkind"],
            nkey=int(r["nkey"]),
            attnums=tuple(r["attnums"]),
            columns=tuple(r["columns"]),
            opclasses=tuple(int(x) for x in r["opclasses"]),
            collations=tuple(int(x) for x in r["collations"]),
            options=tuple(r["options"]),
            exprs=r["exprs"],
            pred=r["pred"],
            is_unique=r["is_unique"],
            is_primary=r["is_primary"],
            is_valid=r["is_valid"],
            nulls_not_distinct=r["nulls_not_distinct"],
            is_partition=r["is_partition"],
            size_bytes=int(r["size_bytes"]),
            scans=int(r["scans"]),
            last_scan=r["last_scan"],
            table_writes=int(r["table_writes"]),
            constraint_name=r["constraint_name"],
            backs_foreign_key=r["backs_foreign_key"],
            building=bool(r["building"]),
            is_replident=bool(r["is_replident"]),
            is_clustered=bool(r["is_clustered"]),
            unseen_build=bool(r["unseen_build"]),
            leaves=tuple(int(x) for x in r["leaves"] or ()),
            unattached=_names(r["unattached_schemas"], r["unattached_names"]),
        )
        for r in _rows(conn, "doctor_indexes", history_schema)
    ]


def read_foreign_keys(conn: psycopg.Connection[Any], history_schema: str) -> list[ForeignKeyFacts]:
    """Every foreign key of the user's schemas (doctor_foreign_keys.sql)."""
    return [
        ForeignKeyFacts(
            name=r["name"],
            table_oid=int(r["table_oid"]),
            table_name=QualifiedName(r["schema"], r["table_name"]),
            attnums=tuple(r["attnums"]),
            columns=tuple(r["columns"]),
            referenced_name=QualifiedName(r["ref_schema"], r["ref_table"]),
            ref_writes=int(r["ref_writes"]),
            table_bytes=int(r["table_bytes"]),
            table_rows=int(r["table_rows"]),
        )
        for r in _rows(conn, "doctor_foreign_keys", history_schema)
    ]


def read_btree_widths(conn: psycopg.Connection[Any], history_schema: str) -> list[BtreeWidth]:
    """The statistics behind each btree index's bloat estimate (doctor_btree_widths.sql)."""
    return [
        BtreeWidth(
            oid=int(r["oid"]),
            pages=int(r["pages"]),
            tuples=float(r["tuples"]),
            fillfactor=int(r["fillfactor"]),
            block_size=int(r["block_size"]),
            columns=()
            if r["unknown_columns"]
            else tuple(
                ColumnWidth(float(w), float(f), int(n), str(a))
                for w, f, n, a in zip(
                    r["avg_widths"], r["null_fracs"], r["typlens"], r["typaligns"], strict=True
                )
            ),
            has_nulls=bool(r["has_nulls"]),
            unknown_columns=int(r["unknown_columns"]),
        )
        for r in _rows(conn, "doctor_btree_widths", history_schema)
    ]


def read_stats_window(conn: psycopg.Connection[Any]) -> StatsWindow:
    """When this database's statistics were last reset, the time now, and the server."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(catalog_sql("doctor_stats"))
        r = cur.fetchone()
    assert r is not None
    return StatsWindow(r["stats_reset"], r["now"], r["database"], r["server_version"])


def read_node_scans(conn: psycopg.Connection[Any], oids: list[int]) -> dict[int, int]:
    """Index scans per OID on the node ``conn`` reaches (a standby has the primary's OIDs)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(catalog_sql("doctor_node_scans"), {"oids": oids})
        return {int(r["oid"]): int(r["scans"]) for r in cur.fetchall()}


def read_built_at(
    conn: psycopg.Connection[Any], history_schema: str, change_ids: list[int]
) -> dict[int, datetime]:
    """When each of dbopt's changes (by id) finished: the build time of what it made."""
    if not change_ids:
        return {}
    query = catalog_sql("doctor_built_at").format(schema=sql.Identifier(history_schema))
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, {"ids": change_ids})
        return {int(r["id"]): r["built_at"] for r in cur.fetchall()}
