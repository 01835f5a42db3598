"""The one place where dbopt checks an object is its own right before a destructive statement.

Every DROP, RENAME (the swap of a replace) and clean-up of an INVALID index names an
:class:`Identity`: the OID dbopt recorded when it made the object (or read when it planned),
the table, the definition as the server printed it, the validity it expects. Immediately
before the statement runs (and again before each retry), :func:`check` reads the live object
and raises :class:`NotOursError` when anything differs — a namesake made by hand, a definition
changed since, another session building it right now. Inside the transaction of a swap, after
the renames took their locks, the same check runs on the objects by OID, so what is committed
is exactly what was checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import psycopg
from psycopg.rows import dict_row

from dbopt.catalog import catalog_sql
from dbopt.deparse import canonical
from dbopt.errors import DboptError
from dbopt.model import QualifiedName

_RELKINDS = {"index": ("i", "I"), "view": ("m",)}


class NotOursError(DboptError):
    """The object behind a name is not the one dbopt means: it is left alone."""

    def __init__(self, message: str, *, gone: bool = False) -> None:
        super().__init__(message)
        self.gone = gone


@dataclass(frozen=True, slots=True)
class Identity:
    """What an object must be for dbopt to drop, rename or rebuild it."""

    object_type: str  # index or view
    name: QualifiedName
    #: The OID it must have; None when the action itself built it (see ``built_as``).
    oid: int | None = None
    table: QualifiedName | None = None  # an index's table
    #: An index's definition without name and table (normalize.canonical); a view's query as
    #: pg_get_viewdef prints it. None: not compared.
    definition: str | None = None
    invalid: bool | None = None  # True: must be INVALID; False: must be valid
    #: The object is the one this action built under this name (its OID known only then).
    built_as: QualifiedName | None = None
    #: What the object is to dbopt, for messages ("created by run 12").
    origin: str = ""
    #: False for an object that gets this name only during the action (the old index after
    #: a swap): checked when its step comes, not before the action starts.
    upfront: bool = True

    def resolved(self, built: dict[QualifiedName, int]) -> Identity:
        """This identity with the OID of what the running action built filled in."""
        if self.built_as is None or self.oid is not None:
            return self
        return replace(self, oid=built.get(self.built_as))


@dataclass(frozen=True, slots=True)
class LiveObject:
    """The object the server has under a name (or an OID)."""

    oid: int
    name: QualifiedName
    relkind: str
    table: QualifiedName | None
    index_definition: str | None
    view_definition: str | None
    is_valid: bool | None
    building_pid: int | None


def _live(row: dict[str, Any]) -> LiveObject:
    table = QualifiedName(row["table_schema"], row["table_name"]) if row["table_name"] else None
    return LiveObject(
        oid=int(row["oid"]),
        name=QualifiedName(row["schema"], row["name"]),
        relkind=row["relkind"],
        table=table,
        index_definition=row["index_definition"],
        view_definition=row["view_definition"],
        is_valid=None if row["is_valid"] is None else bool(row["is_valid"] and row["is_ready"]),
        building_pid=row["building_pid"],
    )


def lookup(
    conn: psycopg.Connection[Any],
    name: QualifiedName,
    oid: int | None = None,
    own_pids: Sequence[int] = (),
    *,
    deparse: bool = True,
) -> tuple[LiveObject | None, LiveObject | None]:
    """The live object named ``name``, and the one with ``oid`` (either may be None); a
    materialized view's definition only with ``deparse`` (reading it locks all it reads)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            catalog_sql("identity"),
            {
                "schema": name.schema,
                "name": name.name,
                "oid": oid,
                "own": list(own_pids),
                "deparse": deparse,
            },
        )
        rows = [_live(r) for r in cur.fetchall()]
    by_name = next((r for r in rows if r.name == name), None)
    by_oid = next((r for r in rows if oid is not None and r.oid == oid), None)
    return by_name, by_oid


def check(
    conn: psycopg.Connection[Any], identity: Identity, own_pids: Sequence[int] = ()
) -> LiveObject:
    """The live object when it is exactly ``identity``; NotOursError (saying why) otherwise."""
    what = f"{identity.object_type} {identity.name}"
    deparse = identity.definition is not None
    by_name, by_oid = lookup(conn, identity.name, identity.oid, own_pids, deparse=deparse)
    if by_name is None:
        moved = f" (the one dbopt made is now called {by_oid.name})" if by_oid else ""
        raise NotOursError(f"there is no {what} any more{moved}", gone=True)
    if identity.built_as is not None and identity.oid is None:
        raise NotOursError(f"{what}: this run did not build it, so it is not touched")
    if identity.oid is not None and by_name.oid != identity.oid:
        origin = f" ({identity.origin})" if identity.origin else ""
        raise NotOursError(
            f"{what} is not the one dbopt made{origin}: its OID is {by_name.oid}, dbopt's was "
            f"{identity.oid} (dropped and made again by someone else)"
        )
    if by_name.relkind not in _RELKINDS[identity.object_type]:
        raise NotOursError(f"{identity.name} is no longer a {identity.object_type}")
    if identity.table is not None and by_name.table != identity.table:
        raise NotOursError(f"{what} is on {by_name.table}, not on {identity.table}")
    if identity.definition is not None:
        current = (
            canonical(by_name.index_definition or "")
            if identity.object_type == "index"
            else (by_name.view_definition or "")
        )
        if current.strip() != identity.definition.strip():
            raise NotOursError(
                f"{what} changed since dbopt saw it: it is now {current.strip()!r}, "
                f"dbopt expected {identity.definition.strip()!r}"
            )
    if identity.invalid is True and by_name.is_valid:
        raise NotOursError(f"{what} is valid now (another session finished building it)")
    if identity.invalid is False and by_name.is_valid is False:
        raise NotOursError(f"{what} is INVALID")
    if by_name.building_pid is not None:
        raise NotOursError(
            f"{what}: another session (pid {by_name.building_pid}) is building it right now"
        )
    return by_name
