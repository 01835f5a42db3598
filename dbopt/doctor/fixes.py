"""The SQL and spec text doctor prints as fixes: statements composed with psycopg.sql (every
name quoted, so what is printed runs for any name), never pasted into strings."""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import sql

from dbopt.model import Location, parse_qualified


def _ident(qualified: str) -> sql.Identifier:
    name = parse_qualified(qualified)
    return sql.Identifier(name.schema, name.name)


def drop_concurrently(index: str) -> str:
    """``DROP INDEX CONCURRENTLY "schema"."name";`` for ``schema.name``."""
    return sql.SQL("DROP INDEX CONCURRENTLY {};").format(_ident(index)).as_string()


def reindex_concurrently(index: str) -> str:
    """``REINDEX INDEX CONCURRENTLY ...;``: a fresh copy built beside it, swapped in without
    blocking reads or writes (PostgreSQL 12+)."""
    return sql.SQL("REINDEX INDEX CONCURRENTLY {};").format(_ident(index)).as_string()


def create_concurrently(table: str, columns: Sequence[str]) -> str:
    """``CREATE INDEX CONCURRENTLY ON "schema"."table" ("a", "b");`` (the server names it)."""
    return (
        sql.SQL("CREATE INDEX CONCURRENTLY ON {} ({});")
        .format(_ident(table), sql.SQL(", ").join(sql.Identifier(c) for c in columns))
        .as_string()
    )


def spec_entry(name: str, columns: Sequence[str], reason: str) -> str:
    """A spec file's index entry, in the layout of the README (flow style, one line)."""
    cols = ", ".join(columns)
    return f"- {{name: {name}, columns: [{cols}], reason: {reason!r}}}"


def remove_from_spec(name: str, location: Location) -> str:
    """The fix for a spec'd index that should go: the spec line, then apply --prune."""
    return (
        f"remove index {name} from {location.file}:{location.line}, then `dbopt apply --prune` "
        "drops it (dbopt drops only what it made)"
    )
