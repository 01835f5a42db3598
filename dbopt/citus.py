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
What a REINDEX stopped part-way leaves on the shards (``<index>_<shardid>_ccnew``, INVALID) is
read there the same way and dropped on the node holding it (:func:`drop_on_node`).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors as pgerrors
from psycopg import sql
from psycopg.rows import dict_row

from dbopt import ddl
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


# --- what a REINDEX stopped part-way left on the shards ---------------------------------------


@dataclass(frozen=True, slots=True)
class Leftover:
    """An INVALID ``<index>_ccnew`` (or ``_ccold``) a REINDEX INDEX CONCURRENTLY stopped
    part-way left, on the coordinator or, as ``<index>_<shardid>_ccnew``, on a node holding
    a shard placement."""

    name: QualifiedName  # as the node holding it names it
    oid: int  # its OID there
    host: str | None = None  # the node holding the placement; None: the coordinator
    port: int | None = None
    shard_id: int | None = None
    building: bool = False  # a session builds an index of its table right now

    @property
    def key(self) -> tuple[str | None, int | None, int]:
        """Node and OID: what tells it apart from one there before (OIDs are per node)."""
        return (self.host, self.port, self.oid)

    @property
    def where(self) -> str:
        """``on the coordinator`` or ``on shard 102009 on 127.0.0.1:5433``."""
        if self.host is None:
            return "on the coordinator"
        return f"on shard {self.shard_id} on {self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ShardLeftovers:
    """What :func:`shard_leftovers` read on the placements of one table."""

    leftovers: tuple[Leftover, ...] = ()
    #: Placements that could not be read: ``shard 102009 on host:port: why``.
    unreadable: tuple[str, ...] = ()
    #: Placements where a session builds an index right now (a cancelled REINDEX still
    #: stopping, or another session's build): ``shard 102009 on host:port``.
    busy: tuple[str, ...] = ()


def shard_leftovers(
    conn: psycopg.Connection[Any], table: QualifiedName, index: QualifiedName
) -> ShardLeftovers:
    """The INVALID leftovers of a REINDEX INDEX CONCURRENTLY of ``index`` on every shard
    placement of the Citus ``table`` (its copies' ``<index>_<shardid>_ccnew[N]`` and
    ``_ccold[N]``), read on the nodes holding them; and the placements that could not be read
    or where an index is being built right now."""
    leftovers: list[Leftover] = []
    unreadable: list[str] = []
    busy: list[str] = []
    params = {"table": table.ident().as_string(), "index": index.ident().as_string()}
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(catalog_sql("citus_reindex_leftovers"), params)
        rows = cur.fetchall()
    for row in rows:
        where = f"shard {row['shard_id']} on {row['host']}:{row['port']}"
        if row["error"] is not None:
            unreadable.append(f"{where}: {row['error'].strip().splitlines()[0]}")
            continue
        if row["busy"] and where not in busy:
            busy.append(where)
        if row["oid"] is None or row["shard_index"] is None:
            continue
        if not ddl.reindex_leftover_of(row["name"], row["shard_index"]):
            continue
        leftovers.append(
            Leftover(
                name=QualifiedName(table.schema, row["name"]),
                oid=int(row["oid"]),
                host=row["host"],
                port=int(row["port"]),
                shard_id=int(row["shard_id"]),
                building=bool(row["busy"]),
            )
        )
    return ShardLeftovers(tuple(leftovers), tuple(unreadable), tuple(busy))


def drop_on_node(conn: psycopg.Connection[Any], leftover: Leftover, timeout_ms: int) -> str | None:
    """``DROP INDEX CONCURRENTLY IF EXISTS`` of a shard's leftover on the node holding it, from
    the coordinator (``master_run_on_worker``: its own connection, outside any transaction
    block), waiting at most ``timeout_ms`` (then cancelled there too). None when it was done,
    else why not (the node's error, or the wait that ran out)."""
    if leftover.host is None or leftover.port is None:
        raise ValueError(f"{leftover.name} is not on a shard placement")
    command = ddl.drop_index(leftover.name).as_string()
    try:
        with conn.transaction():
            conn.execute(
                sql.SQL("SELECT set_config('statement_timeout', {}, true)").format(
                    sql.Literal(str(max(1, timeout_ms)))
                )
            )
            row = conn.execute(
                catalog_sql("citus_node_command"),
                {"host": leftover.host, "port": leftover.port, "command": command},
            ).fetchone()
    except pgerrors.QueryCanceled:
        return f"not done within {timeout_ms} ms (a transaction on that node still uses the shard)"
    if row is None:
        return "the node did not answer"
    if not row[0]:
        return str(row[1] or "failed").strip().splitlines()[0]
    return None


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
