"""What the live database holds: relations and indexes, read in a constant number of queries.

The catalog SQL lives in ``catalog/sql/*.sql`` (one file per object kind, each ordered so the
result is stable); :func:`inspect` runs each once, whatever the number of specs.

Waiting only on what dbopt touches: the functions that size or deparse a relation
(``pg_total_relation_size``, ``pg_relation_size``, ``pg_get_viewdef``, ``pg_get_indexdef``,
``pg_get_expr``, ``pg_get_constraintdef``) take an ACCESS SHARE lock on it or on its table
(``pg_get_viewdef`` also on every relation the view reads; measured on PostgreSQL 15.18), so
they queue behind any open DDL there. Given the ``relevant`` relations, :func:`inspect` calls
them for those only; every other relation is read from plain catalog columns (pg_class,
pg_attribute, pg_inherits, pg_depend...), which take no lock. Those plain reads show the last
committed state: DDL still open in another session is not visible yet.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row, namedtuple_row, tuple_row

from dbopt.ddl import hurry_held_waits
from dbopt.model import QualifiedName


@cache
def catalog_sql(name: str) -> sql.SQL:
    """The text of ``catalog/sql/<name>.sql`` (shipped with the package, never user input)."""
    text = resources.files("dbopt.catalog").joinpath("sql", f"{name}.sql").read_text("utf-8")
    return sql.SQL(text)  # a packaged file, not a dynamic string


@dataclass(frozen=True, slots=True)
class Relation:
    """A table, partitioned table, materialized view or view.

    ``total_bytes`` and ``view_definition`` are known for inspected relations only (the
    relevant ones; see :func:`inspect`): reading them takes a lock. ``total_bytes`` only when
    inspected with sizes.
    """

    name: QualifiedName
    relkind: str  # r table, p partitioned table, m materialized view, v view
    is_partition: bool
    owner: str
    owned: bool
    total_bytes: int | None
    estimated_rows: int
    columns: tuple[str, ...]
    partitions: tuple[QualifiedName, ...] = ()
    populated: bool | None = None
    view_definition: str | None = None
    oid: int = 0
    #: Sized and deparsed (a relevant relation); False: read from plain catalog columns only.
    inspected: bool = True
    #: Its reloptions as ``key=value`` (a view's security_barrier, check_option...).
    options: tuple[str, ...] = ()
    #: How Citus holds it (citus_tables.sql): "distributed", "reference", "Citus local",
    #: "single-shard distributed"; None for a table Citus does not know (or no Citus).
    citus: str | None = None
    #: Citus's pg_dist_partition.partmethod: h hash, r range, a append, n none.
    citus_method: str | None = None
    #: The distribution column of a distributed table.
    distribution_column: str | None = None
    #: A partitioned table's key as the server prints it (``RANGE (created_at)``).
    partition_key: str | None = None

    @property
    def is_partitioned(self) -> bool:
        """A partitioned parent (CREATE INDEX CONCURRENTLY is refused on it)."""
        return self.relkind == "p"

    @property
    def sharded(self) -> bool:
        """A Citus table: its data and its indexes' live in shards (on workers), the
        coordinator's relation is an empty shell."""
        return self.citus is not None


@dataclass(frozen=True, slots=True)
class CatalogIndex:
    """An index as PostgreSQL has it."""

    name: QualifiedName
    table: QualifiedName
    method: str
    definition: str
    predicate: str | None
    is_unique: bool
    has_expressions: bool
    is_primary: bool
    is_valid: bool
    is_ready: bool
    relkind: str  # i index, I partitioned index
    constraint_name: str | None
    constraint_type: str | None
    size_bytes: int | None  # None unless inspected with sizes
    scans: int | None
    oid: int = 0
    building: bool = False  # INVALID because a session is building it right now

    @property
    def allows_concurrent_refresh(self) -> bool:
        """A valid unique index on plain columns without WHERE (REFRESH ... CONCURRENTLY)."""
        return self.is_unique and self.is_valid and not self.has_expressions and not self.predicate

    @property
    def backs_constraint(self) -> bool:
        """True for indexes of PRIMARY KEY / UNIQUE / EXCLUDE constraints."""
        return self.constraint_name is not None


#: pg_class.relkind in words, for messages ("... is taken by a sequence").
RELKIND_NAMES: Mapping[str, str] = {
    "r": "table",
    "p": "partitioned table",
    "i": "index",
    "I": "partitioned index",
    "S": "sequence",
    "t": "TOAST table",
    "v": "view",
    "m": "materialized view",
    "c": "composite type",
    "f": "foreign table",
}

#: pg_type.typtype in words, for types that are no relation's row type.
TYPTYPE_NAMES: Mapping[str, str] = {
    "b": "base type",
    "d": "domain",
    "e": "enum type",
    "p": "pseudo-type",
    "r": "range type",
    "m": "multirange type",
}


@dataclass(frozen=True, slots=True)
class Catalog:
    """The relations and indexes of one database, keyed by qualified name.

    ``relations`` holds every table, partitioned table, materialized view and view; only the
    inspected ones (``Relation.inspected``) carry a size and a view definition. ``indexes``
    holds the indexes of the inspected relations (every index when all were inspected); an
    index elsewhere is known by its name in ``names`` only.
    """

    server_version: int
    relations: Mapping[QualifiedName, Relation] = field(default_factory=dict)
    indexes: Mapping[QualifiedName, CatalogIndex] = field(default_factory=dict)
    #: For each materialized view and view, the views and materialized views built on it.
    dependents: Mapping[QualifiedName, tuple[QualifiedName, ...]] = field(default_factory=dict)
    #: The columns of each (source, dependent) pair of ``dependents`` the dependent reads.
    read_columns: Mapping[tuple[QualifiedName, QualifiedName], tuple[str, ...]] = field(
        default_factory=dict
    )
    queries: int = 0  # how many catalog queries built it (constant by design)
    #: Every relation name outside the system schemas (indexes, sequences, foreign tables,
    #: composite types... included), with its kind in words: a new index or materialized
    #: view cannot take one of these names.
    names: Mapping[QualifiedName, str] = field(default_factory=dict)
    #: Every type outside the system schemas that is no relation's row type (enum, domain,
    #: range...), with its kind in words: a new materialized view cannot take one of these
    #: names either (it creates a row type of its own name). Indexes can.
    type_names: Mapping[QualifiedName, str] = field(default_factory=dict)
    #: The relations asked for with ``relevant`` (None: everything was inspected).
    relevant: frozenset[QualifiedName] | None = None
    #: The citus extension is installed in this database (the coordinator of a cluster).
    citus: bool = False

    def indexes_on(self, table: QualifiedName) -> list[CatalogIndex]:
        """Indexes of one table, ordered by name."""
        return sorted((i for i in self.indexes.values() if i.table == table), key=lambda i: i.name)

    def name_taken(self, name: QualifiedName, *, by_types: bool = False) -> str | None:
        """What already holds ``name`` in its schema ("sequence", "index"...), or None.

        An index needs a name no relation has; a materialized view (``by_types``) also one no
        type has.
        """
        taken = self.names.get(name)
        if taken is None and by_types:
            taken = self.type_names.get(name)
        return taken


def _qn(text: str) -> QualifiedName:
    schema, _, name = text.partition(".")
    return QualifiedName(schema, name)


@contextmanager
def _snapshot(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """One snapshot for every query of an inspection, so they agree with one another.

    A read-only REPEATABLE READ transaction when the connection is idle; inside a
    transaction of the caller's, that transaction. In its own transaction the sorts and
    hashes of the catalog queries get memory enough not to spill to disk (ten thousand
    indexes sort ~5 MB, over the default work_mem of 4 MB: ~20 ms of a plan).
    """
    if conn.info.transaction_status != TransactionStatus.IDLE:
        yield
        return
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        conn.execute(catalog_sql("inspect_work_mem"))
        yield


def _readers(
    conn: psycopg.Connection[Any], oids: list[int]
) -> tuple[dict[int, str | None], list[Any]]:
    """The definitions and indexes of views no command named that read a named materialized
    view (view_definitions.sql, indexes.sql), read only if the locks they take are granted
    at once: pg_get_viewdef locks all such a view reads (which may be any table), and
    pg_get_indexdef the view itself (a REFRESH of it holds it), so within ddl.HELD_WAIT_MS.
    All at once first, one view at a time only when that waits; a view whose locks did not
    come has None and no indexes (a replace that would rebuild or re-bind it refuses). Each
    read is rolled back to its savepoint: no lock it took outlives it, in a caller's
    transaction too."""
    found: dict[int, str | None] = {}
    index_rows: list[Any] = []

    def read(cur: psycopg.Cursor[Any], some: list[int]) -> None:
        with conn.transaction(force_rollback=True):
            # What it reads may be any table: its locks come at once or not at all (the
            # setting ends with the savepoint, rolled back).
            cur.execute(hurry_held_waits())
            cur.execute(catalog_sql("view_definitions"), {"oids": some})
            definitions = {int(oid): text for oid, text in cur.fetchall()}
            with conn.cursor(row_factory=namedtuple_row) as named:
                scope = {"everything": False, "relevant": some, "sizes": False}
                named.execute(catalog_sql("indexes"), scope)
                rows = named.fetchall()
        found.update(definitions)
        index_rows.extend(rows)

    with conn.cursor() as cur:
        try:
            read(cur, oids)
        except psycopg.errors.LockNotAvailable:
            for oid in oids:
                try:
                    read(cur, [oid])
                except psycopg.errors.LockNotAvailable:
                    found[oid] = None
    return found, index_rows


def inspect(
    conn: psycopg.Connection[Any],
    relevant: Collection[QualifiedName] | None = None,
    *,
    sizes: bool = False,
    apart: Collection[QualifiedName] = (),
) -> Catalog:
    """Read the catalog in a constant number of queries (four, five with ``relevant``; one
    more where the citus extension is installed: which tables Citus distributes; two more
    where views no command named read a named materialized view: their definitions and
    indexes, read apart -- one view at a time only when another session holds what one reads).

    ``relevant``: the tables and materialized views the command touches (what its specs name,
    and what dbopt manages: the names history.managed() returns may be given as they are, an
    index standing for its table). Only these, the partitions under them, their indexes and
    the views that read a relevant materialized view are sized and deparsed, the only catalog
    reads that take locks; any other relation is listed from plain catalog columns, so DDL
    left open on it in another session never makes dbopt wait. A name that does not exist is
    no error (it is simply not found). ``None`` inspects everything (and may wait on any
    relation).

    ``sizes``: read the size of every inspected relation and index (status shows them); the
    plan needs none, and on ten thousand indexes sizing them is most of the query's time.

    ``apart`` (with ``relevant``): materialized views read as those readers are, only if the
    locks they take come at once (what an interrupted replace may have left under dbopt's
    temporary names: a reader's copy may read any table).
    """
    queries = 0
    relations: dict[QualifiedName, Relation] = {}
    indexes: dict[QualifiedName, CatalogIndex] = {}
    names: dict[QualifiedName, str] = {}
    type_names: dict[QualifiedName, str] = {}
    wanted = None if relevant is None else sorted(set(relevant))
    with _snapshot(conn), conn.cursor(row_factory=dict_row) as cur:
        oids: list[int] = []
        readers: list[int] = []
        if wanted is not None:
            aside = sorted(set(apart))
            cur.execute(
                catalog_sql("relevant"),
                {
                    "schemas": [n.schema for n in wanted],
                    "names": [n.name for n in wanted],
                    "apart_schemas": [n.schema for n in aside],
                    "apart_names": [n.name for n in aside],
                },
            )
            queries += 1
            found = cur.fetchone()
            oids = list(found["oids"]) if found else []
            readers = list(found["readers"]) if found else []
        scope = {"everything": wanted is None, "relevant": oids, "sizes": sizes}
        cur.execute(catalog_sql("relations"), {**scope, "readers": readers})
        queries += 1
        rows = cur.fetchall()
        reader_indexes: list[Any] = []
        if readers:
            read, reader_indexes = _readers(conn, readers)
            queries += 2
            rows = [
                {**row, "view_definition": read.get(int(row["oid"]))}
                if int(row["oid"]) in readers
                else row
                for row in rows
            ]
        citus = any(row["citus"] for row in rows[:1])
        sharded: dict[int, dict[str, Any]] = {}
        if citus:
            # Only where Citus is installed (its catalog exists): one more query.
            cur.execute(catalog_sql("citus_tables"))
            queries += 1
            sharded = {int(r["oid"]): r for r in cur.fetchall()}
        for row in rows:
            name = QualifiedName(row["schema"], row["name"])
            held = sharded.get(int(row["oid"]), {})
            relations[name] = Relation(
                name=name,
                relkind=row["relkind"],
                is_partition=row["is_partition"],
                owner=row["owner"],
                owned=row["owned"],
                total_bytes=row["total_bytes"],
                estimated_rows=max(0, row["estimated_rows"]),
                columns=tuple(row["columns"]),
                partitions=tuple(_qn(p) for p in row["partitions"]),
                populated=row["populated"],
                view_definition=row["view_definition"],
                oid=int(row["oid"]),
                inspected=row["inspected"],
                options=tuple(row["options"]),
                citus=held.get("kind"),
                citus_method=held.get("method"),
                distribution_column=held.get("distribution_column"),
                partition_key=row["partition_key"],
            )
        # Named tuples, not dicts: ten thousand rows are read here. The readers' are read
        # apart (above): not waited for.
        with conn.cursor(row_factory=namedtuple_row) as named:
            others = [oid for oid in oids if oid not in readers]
            named.execute(catalog_sql("indexes"), {**scope, "relevant": others})
            index_rows: list[Any] = [*named.fetchall(), *reader_indexes]
        queries += 1
        for index_row in index_rows:
            if index_row.definition is None:
                continue  # dropped since the scan began: pg_get_indexdef found no index
            name = QualifiedName(index_row.schema, index_row.name)
            indexes[name] = CatalogIndex(
                name=name,
                table=QualifiedName(index_row.schema, index_row.table_name),
                method=index_row.method,
                definition=index_row.definition,
                predicate=index_row.predicate,
                is_unique=index_row.is_unique,
                has_expressions=index_row.has_expressions,
                is_primary=index_row.is_primary,
                is_valid=index_row.is_valid,
                is_ready=index_row.is_ready,
                relkind=index_row.relkind,
                constraint_name=index_row.constraint_name,
                constraint_type=index_row.constraint_type,
                size_bytes=index_row.size_bytes,
                scans=index_row.scans,
                oid=int(index_row.oid),
                building=bool(index_row.building),
            )
        dependents: dict[QualifiedName, list[QualifiedName]] = {}
        read_columns: dict[tuple[QualifiedName, QualifiedName], tuple[str, ...]] = {}
        cur.execute(catalog_sql("view_dependents"))
        queries += 1
        for row in cur.fetchall():
            source = QualifiedName(row["schema"], row["name"])
            dependent = QualifiedName(row["dependent_schema"], row["dependent_name"])
            dependents.setdefault(source, []).append(dependent)
            read_columns[(source, dependent)] = tuple(sorted(row["columns"]))
        # Plain tuples: every relation and type of the database (ten thousand and more).
        with conn.cursor(row_factory=tuple_row) as rows_of:
            rows_of.execute(catalog_sql("names"))
            for schema, relname, kind, is_type in rows_of.fetchall():
                name = QualifiedName(schema, relname)
                if is_type:
                    type_names[name] = TYPTYPE_NAMES.get(kind, "type")
                else:
                    names[name] = RELKIND_NAMES.get(kind, "relation")
        queries += 1
    return Catalog(
        server_version=conn.info.server_version,
        relations=relations,
        indexes=indexes,
        dependents={k: tuple(v) for k, v in dependents.items()},
        read_columns=read_columns,
        queries=queries,
        names=names,
        type_names=type_names,
        relevant=None if wanted is None else frozenset(wanted),
        citus=citus,
    )
