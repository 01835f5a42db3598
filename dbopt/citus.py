"""Citus: what the coordinator's catalog does not show, read from the shards.

On a Citus coordinator a distributed, reference or Citus local table is a shell: its rows and
its indexes' pages live in shards (``<table>_<shardid>``, indexes ``<index>_<shardid>``) on
the workers (and on the coordinator for reference and Citus local tables). ``CREATE INDEX
CONCURRENTLY`` on the coordinator builds the index on every shard (Citus's
PreprocessIndexStmt/PostprocessIndexStmt, src/backend/distributed/commands/index.c); the shell
index stays empty (8 kB) whatever the shards hold, and a build that fails on one shard leaves
the coordinator's index INVALID (marked so before the shards are built, valid again only when
all of them were: MarkIndexValid) — the repair Citus documents is DROP INDEX CONCURRENTLY IF
EXISTS, then building again (commands/utility_hook.c).

Whether Citus is there is a catalog fact (the extension in pg_extension, the table in
pg_dist_partition), never guessed from an error text. Each shard's index is read where it
lives, through Citus's ``run_command_on_placements``: its validity, size and scans. The
planner repairs an index of dbopt's that is valid on the coordinator but INVALID on some
placement with REINDEX INDEX CONCURRENTLY (which Citus sends to every placement:
PreprocessReindexStmt/CreateReindexTaskList, commands/index.c), and one missing on some
placement by dropping and building it again (a missing shard index cannot be reindexed).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from dbopt.catalog import Relation, catalog_sql
from dbopt.errors import Problem
from dbopt.model import IndexSpec, QualifiedName


@dataclass(frozen=True, slots=True)
class ShardIndex:
    """One coordinator index on one shard placement, as the node holding it sees it."""

    index: QualifiedName  # the coordinator's name
    shard_id: int
    node: str  # host:port
    valid: bool | None  # None: the placement has no such index (or could not be read)
    size_bytes: int | None = None
    scans: int | None = None
    error: str | None = None  # the placement could not be read: why

    @property
    def where(self) -> str:
        """``shard 102008 on 127.0.0.1:5433``."""
        return f"shard {self.shard_id} on {self.node}"

    @property
    def state(self) -> str:
        """``valid``, ``INVALID``, ``missing`` or ``unreadable (why)``."""
        if self.error is not None:
            return f"unreadable ({self.error.strip().splitlines()[0]})"
        if self.valid is None:
            return "missing"
        return "valid" if self.valid else "INVALID"


@dataclass(frozen=True, slots=True)
class ShardedIndex:
    """An index over all its shard placements: sizes and scans summed, the bad ones named."""

    index: QualifiedName
    placements: tuple[ShardIndex, ...]

    @property
    def size_bytes(self) -> int:
        """Its pages on every placement (what citus_relation_size reports)."""
        return sum(p.size_bytes or 0 for p in self.placements)

    @property
    def scans(self) -> int:
        """Scans of it on every placement (each node counts its own)."""
        return sum(p.scans or 0 for p in self.placements)

    @property
    def bad(self) -> tuple[ShardIndex, ...]:
        """The placements where it is INVALID, missing or unreadable."""
        return tuple(p for p in self.placements if p.valid is not True)

    def describe_bad(self) -> str:
        """``INVALID on shard 102009 on 127.0.0.1:5433; missing on shard ...``."""
        return "; ".join(f"{p.state} on {p.where}" for p in self.bad)


def installed(conn: psycopg.Connection[Any]) -> bool:
    """Whether the citus extension is installed in the connection's database."""
    row = conn.execute(catalog_sql("citus_installed")).fetchone()
    return bool(row and row[0])


def citus_table(conn: psycopg.Connection[Any], table: QualifiedName) -> int | None:
    """The coordinator's OID of ``table`` when Citus holds it (distributed, reference or Citus
    local), else None; None without Citus."""
    if not installed(conn):
        return None
    row = conn.execute(
        catalog_sql("citus_table"), {"schema": table.schema, "name": table.name}
    ).fetchone()
    return None if row is None else int(row[0])


def shard_indexes(
    conn: psycopg.Connection[Any], tables: Collection[int]
) -> dict[QualifiedName, ShardedIndex]:
    """Every index of the Citus ``tables`` (coordinator OIDs) on each of its placements.

    One query on the coordinator: Citus runs the reads on the placements in parallel. A
    placement that could not be read is kept with its error (never silently summed as 0).
    """
    if not tables:
        return {}
    by_index: dict[QualifiedName, list[ShardIndex]] = {}
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(catalog_sql("citus_shard_indexes"), {"tables": sorted(set(tables))})
        for row in cur.fetchall():
            name = QualifiedName(row["schema"], row["name"])
            by_index.setdefault(name, []).append(
                ShardIndex(
                    index=name,
                    shard_id=int(row["shard_id"]),
                    node=row["node"],
                    valid=row["valid"],
                    size_bytes=row["size_bytes"],
                    scans=row["scans"],
                    error=row["error"],
                )
            )
    return {name: ShardedIndex(name, tuple(rows)) for name, rows in by_index.items()}


def placement_check(
    conn: psycopg.Connection[Any], table: QualifiedName, index: QualifiedName
) -> ShardedIndex | None:
    """``index`` on every placement of ``table`` when Citus holds the table (None: it does
    not, or no Citus); ``ShardedIndex.bad`` then names where it is not valid."""
    oid = citus_table(conn, table)
    if oid is None:
        return None
    found = shard_indexes(conn, [oid]).get(index)
    return found if found is not None else ShardedIndex(index, ())


# --- what Citus refuses, refused before anything runs ----------------------------------------


def refusals(spec: IndexSpec, relation: Relation) -> list[Problem]:
    """What Citus would refuse of ``spec`` on ``relation`` (ErrorIfUnsupportedIndexStmt in
    src/backend/distributed/commands/index.c), each as one sentence at the spec's file:line:
    a UNIQUE index on an append-distributed table, and a UNIQUE index on a hash- or
    range-distributed table without the distribution column among its key columns (each shard
    checks uniqueness among its own rows only). A tablespace, which Citus refuses on any of its
    tables' indexes, can only come from an index a replace swaps out: the planner refuses that
    one (dbopt.planner.indexes)."""
    if not relation.sharded:
        return []
    loc = spec.location
    out: list[Problem] = []
    if spec.unique and relation.citus_method == "a":
        out.append(
            loc.problem(
                f"unique index {spec.name} is on the append-distributed table "
                f"{relation.name}, where Citus refuses unique indexes"
            )
        )
    elif spec.unique and relation.distribution_column is not None:
        plain = {c.name for c in spec.columns if c.expr is None}
        if relation.distribution_column not in plain:
            out.append(
                loc.problem(
                    f"unique index {spec.name} does not include {relation.name}'s distribution "
                    f"column {relation.distribution_column} as a key column: Citus refuses it "
                    "(each shard can check uniqueness only among its own rows); add "
                    f"{relation.distribution_column} to its columns"
                )
            )
    return out
