"""What the live database holds: relations and indexes, read in a constant number of queries.

The catalog SQL lives in ``catalog/sql/*.sql`` (one file per object kind, each ordered so the
result is stable); :func:`inspect` runs each once, whatever the number of specs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from dbopt.spec import QualifiedName


@cache
def catalog_sql(name: str) -> sql.SQL:
    """The text of ``catalog/sql/<name>.sql`` (shipped with the package, never user input)."""
    text = resources.files("dbopt.catalog").joinpath("sql", f"{name}.sql").read_text("utf-8")
    return sql.SQL(text)  # a packaged file, not a dynamic string


@dataclass(frozen=True, slots=True)
class Relation:
    """A table, partitioned table or materialized view."""

    name: QualifiedName
    relkind: str  # r table, p partitioned table, m materialized view, v view
    is_partition: bool
    owner: str
    owned: bool
    total_bytes: int
    estimated_rows: int
    columns: tuple[str, ...]
    partitions: tuple[QualifiedName, ...] = ()
    populated: bool | None = None
    view_definition: str | None = None
    oid: int = 0

    @property
    def is_partitioned(self) -> bool:
        """A partitioned parent (CREATE INDEX CONCURRENTLY is refused on it)."""
        return self.relkind == "p"


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
    size_bytes: int
    scans: int | None
    oid: int = 0

    @property
    def allows_concurrent_refresh(self) -> bool:
        """A valid unique index on plain columns without WHERE (REFRESH ... CONCURRENTLY)."""
        return self.is_unique and self.is_valid and not self.has_expressions and not self.predicate

    @property
    def backs_constraint(self) -> bool:
        """True for indexes of PRIMARY KEY / UNIQUE / EXCLUDE constraints."""
        return self.constraint_name is not None


@dataclass(frozen=True, slots=True)
class Catalog:
    """The relations and indexes of one database, keyed by qualified name."""

    server_version: int
    relations: Mapping[QualifiedName, Relation] = field(default_factory=dict)
    indexes: Mapping[QualifiedName, CatalogIndex] = field(default_factory=dict)
    #: For each materialized view, the views and materialized views built on it.
    dependents: Mapping[QualifiedName, tuple[QualifiedName, ...]] = field(default_factory=dict)
    queries: int = 0  # how many catalog queries built it (constant by design)

    def indexes_on(self, table: QualifiedName) -> list[CatalogIndex]:
        """Indexes of one table, ordered by name."""
        return sorted((i for i in self.indexes.values() if i.table == table), key=lambda i: i.name)


def _qn(text: str) -> QualifiedName:
    schema, _, name = text.partition(".")
    return QualifiedName(schema, name)


def inspect(conn: psycopg.Connection[Any]) -> Catalog:
    """Read the catalog in a constant number of queries."""
    queries = 0
    relations: dict[QualifiedName, Relation] = {}
    indexes: dict[QualifiedName, CatalogIndex] = {}
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(catalog_sql("relations"))
        queries += 1
        for row in cur.fetchall():
            name = QualifiedName(row["schema"], row["name"])
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
            )
        cur.execute(catalog_sql("indexes"))
        queries += 1
        for row in cur.fetchall():
            name = QualifiedName(row["schema"], row["name"])
            indexes[name] = CatalogIndex(
                name=name,
                table=QualifiedName(row["schema"], row["table_name"]),
                method=row["method"],
                definition=row["definition"],
                predicate=row["predicate"],
                is_unique=row["is_unique"],
                has_expressions=row["has_expressions"],
                is_primary=row["is_primary"],
                is_valid=row["is_valid"],
                is_ready=row["is_ready"],
                relkind=row["relkind"],
                constraint_name=row["constraint_name"],
                constraint_type=row["constraint_type"],
                size_bytes=row["size_bytes"],
                scans=row["scans"],
                oid=int(row["oid"]),
            )
        dependents: dict[QualifiedName, list[QualifiedName]] = {}
        cur.execute(catalog_sql("view_dependents"))
        queries += 1
        for row in cur.fetchall():
            dependents.setdefault(QualifiedName(row["schema"], row["name"]), []).append(
                QualifiedName(row["dependent_schema"], row["dependent_name"])
            )
    return Catalog(
        server_version=conn.info.server_version,
        relations=relations,
        indexes=indexes,
        dependents={k: tuple(v) for k, v in dependents.items()},
        queries=queries,
    )
