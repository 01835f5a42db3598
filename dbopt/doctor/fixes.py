"""The SQL and spec text doctor prints as fixes: statements composed with psycopg.sql (every
name quoted, so what is printed runs for any name), never pasted into strings. Names arrive
as (schema, name) pairs and are never re-parsed from "schema.name" text (a dot is a legal
character in either part)."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import yaml
from psycopg import sql

from dbopt.model import Location, QualifiedName

#: PostgreSQL's identifier limit (NAMEDATALEN - 1), in bytes.
MAX_NAME_BYTES = 63

#: What a plain DROP INDEX of a partitioned index costs (CONCURRENTLY is refused for one).
PARTITIONED_DROP_WARNING = (
    "DROP INDEX CONCURRENTLY is refused on a partitioned index, so this takes an ACCESS "
    "EXCLUSIVE lock on the table and every partition until it commits: run it when they may "
    "be blocked briefly, with a short lock_timeout"
)


def drop_concurrently(index: QualifiedName) -> str:
    """``DROP INDEX CONCURRENTLY "schema"."name";``."""
    return sql.SQL("DROP INDEX CONCURRENTLY {};").format(index.ident()).as_string()


def drop_plain(index: QualifiedName) -> str:
    """``DROP INDEX "schema"."name";`` (what a partitioned index allows)."""
    return sql.SQL("DROP INDEX {};").format(index.ident()).as_string()


def drop_fix(index: QualifiedName, *, partitioned: bool) -> str:
    """The statement that drops an index, with what it costs when it cannot be concurrent."""
    if partitioned:
        return f"{drop_plain(index)} ({PARTITIONED_DROP_WARNING})"
    return drop_concurrently(index)


def reindex_concurrently(index: QualifiedName) -> str:
    """``REINDEX INDEX CONCURRENTLY ...;``: a fresh copy built beside it, swapped in without
    blocking reads or writes (PostgreSQL 12+)."""
    return sql.SQL("REINDEX INDEX CONCURRENTLY {};").format(index.ident()).as_string()


def create_concurrently(
    table: QualifiedName, columns: Sequence[str], name: str | None = None
) -> str:
    """``CREATE INDEX CONCURRENTLY [name] ON "schema"."table" ("a", "b");`` (without a name
    the server picks one)."""
    return (
        sql.SQL("CREATE INDEX CONCURRENTLY {}ON {} ({});")
        .format(
            sql.SQL("") if name is None else sql.SQL("{} ").format(sql.Identifier(name)),
            table.ident(),
            sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        )
        .as_string()
    )


def attach_partition(parent: QualifiedName, child: QualifiedName | None) -> str:
    """``ALTER INDEX parent ATTACH PARTITION child;`` (the child is in the schema of the
    partition it indexes, where CREATE INDEX puts it); without a child, a placeholder for it."""
    if child is None:
        return (
            sql.SQL("ALTER INDEX {} ATTACH PARTITION ").format(parent.ident()).as_string()
            + "<the new index>;"
        )
    return (
        sql.SQL("ALTER INDEX {} ATTACH PARTITION {};")
        .format(parent.ident(), child.ident())
        .as_string()
    )


def _cut(text: str, size: int) -> str:
    """``text`` cut to at most ``size`` UTF-8 bytes, on a character boundary."""
    return text.encode("utf-8")[:size].decode("utf-8", errors="ignore")


def index_name(base: str, taken: Collection[str] = ()) -> str:
    """``base`` as an index name PostgreSQL keeps as written: at most 63 UTF-8 bytes (a
    longer one is cut and ends with a hash of the whole, so two long names stay apart), and
    none of ``taken`` (a counter is added)."""

    def fit(suffix: str) -> str:
        if len((base + suffix).encode("utf-8")) <= MAX_NAME_BYTES:
            return base + suffix
        digest = hashlib.sha256(base.encode("utf-8")).hexdigest()[:8]
        return f"{_cut(base, MAX_NAME_BYTES - 9 - len(suffix))}_{digest}{suffix}"

    name, n = fit(""), 1
    while name in taken:
        name, n = fit(f"_{n}"), n + 1
    return name


class _OneLine(yaml.SafeDumper):
    """Safe YAML whose strings never span lines: one with a line break or another control
    character is written double-quoted, where YAML escapes it."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    multiline = any(ch in value for ch in "\n\r\x85\u2028\u2029") or not value.isprintable()
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"' if multiline else None)


_OneLine.add_representer(str, _text)


def yaml_flow(value: Mapping[str, Any]) -> str:
    """``value`` as one line of YAML flow style, written by the YAML library so any text
    (quotes, backslashes, colons, line breaks) reads back as it was."""
    text = yaml.dump(
        dict(value),
        Dumper=_OneLine,
        default_flow_style=True,
        sort_keys=False,
        allow_unicode=True,
        width=1 << 30,
    )
    return text.strip()


def spec_entry(name: str, columns: Sequence[str], reason: str) -> str:
    """A spec file's index entry, in the layout of the README (flow style, one line)."""
    return "- " + yaml_flow({"name": name, "columns": list(columns), "reason": reason})


def remove_from_spec(name: QualifiedName, location: Location) -> str:
    """The fix for a spec'd index that should go: the spec line, then apply --prune."""
    return (
        f"remove index {name} from {location.file}:{location.line}, then `dbopt apply --prune` "
        "drops it (dbopt drops only what it made)"
    )


def without_replica_identity(table: QualifiedName) -> str:
    """``ALTER TABLE ... REPLICA IDENTITY DEFAULT;``."""
    return sql.SQL("ALTER TABLE {} REPLICA IDENTITY DEFAULT;").format(table.ident()).as_string()


def without_cluster(table: QualifiedName) -> str:
    """``ALTER TABLE ... SET WITHOUT CLUSTER;``."""
    return sql.SQL("ALTER TABLE {} SET WITHOUT CLUSTER;").format(table.ident()).as_string()


def cluster_on(table: QualifiedName, index: QualifiedName) -> str:
    """``ALTER TABLE ... CLUSTER ON index;`` (the index's name without its schema: it is
    always in the table's)."""
    return (
        sql.SQL("ALTER TABLE {} CLUSTER ON {};")
        .format(table.ident(), sql.Identifier(index.name))
        .as_string()
    )
