"""Budget parameters, bound the way the server decides their types.

psycopg types a Python value by the value itself: ``7`` goes out as ``smallint``, ``2**40``
as ``bigint``, a ``date`` as ``date``. Against a ``bigint`` column that plans
``id = '7'::smallint``, which no application sends, and a value past ``bigint`` becomes
``numeric``, which turns an index scan into a sequential one. verify sends every parameter
as text of the *unknown* type (OID 0) instead, as drivers with server-side prepared
statements do (libpq's PQexecParams without types, pgx, sqlx, node-postgres): the server
gives each parameter the type its context infers, ``id = $1`` the type of ``id``.

The text is psycopg's own text form of the value (``t``/``f``, ISO dates and times with
their offset, ``{1,2}`` for a list, ``\\x...`` for bytes); a mapping is sent as JSON; None
is NULL. Where the context infers nothing (``concat(%(x)s)``, ``jsonb_build_object('k',
%(x)s)``), the server says so with "could not determine data type of parameter $n", and that
parameter alone falls back to the type psycopg gives its value, as an application whose
driver types values itself would send it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.adapt import Dumper, PyFormat, Transformer
from psycopg.pq import Format

#: The server's message when a parameter's context gives it no type.
_INDETERMINATE = re.compile(r"parameter \$(\d+)")


@dataclass(frozen=True, slots=True)
class Untyped:
    """A parameter value as text of the unknown type: the server infers its type."""

    text: bytes


class _UntypedDumper(Dumper):
    """Sends :class:`Untyped` as text with OID 0 (unknown): the server decides the type."""

    oid = 0
    format = Format.TEXT

    def dump(self, obj: Any) -> bytes:
        return bytes(obj.text)


def register(cursor: psycopg.Cursor[Any]) -> None:
    """Let ``cursor`` (its own copy of the adapters) send :class:`Untyped` values."""
    cursor.adapters.register_dumper(Untyped, _UntypedDumper)


def untyped(conn: psycopg.Connection[Any], value: Any) -> Any:
    """``value`` as :class:`Untyped` text (None stays None: NULL is NULL in every type)."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return Untyped(json.dumps(value, default=str).encode("utf-8"))
    dumper = Transformer(conn).get_dumper(value, PyFormat.TEXT)
    dumped = dumper.dump(value)
    return Untyped(b"" if dumped is None else bytes(dumped))


def bind(
    conn: psycopg.Connection[Any], params: Mapping[str, Any], typed: Collection[str] = ()
) -> dict[str, Any]:
    """The parameters to send: each :func:`untyped`, those in ``typed`` as psycopg types them."""
    return {k: v if k in typed else untyped(conn, v) for k, v in params.items()}


def indeterminate(exc: psycopg.Error, placeholders: tuple[str, ...]) -> str | None:
    """The placeholder the server could not type (``$n`` in the order of first use), if that
    is what ``exc`` says."""
    if not isinstance(exc, pg_errors.IndeterminateDatatype):
        return None
    found = _INDETERMINATE.search(exc.diag.message_primary or "")
    if found is None:
        return None
    number = int(found.group(1))
    return placeholders[number - 1] if 0 < number <= len(placeholders) else None
