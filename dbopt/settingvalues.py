"""The values of dbopt.yaml's settings: durations, memory sizes, search_path, TimeZone —
parsed, and checked against what the server would accept, before any connection."""

from __future__ import annotations

import re
from collections.abc import Sequence

from dbopt.errors import ConfigError
from dbopt.schema import (
    MAX_IDENTIFIER_BYTES,
    MAX_KILOBYTES,
    MAX_TIMEOUT_MS,
    MEMORY_UNITS_KB,
    MIN_MAINTENANCE_WORK_MEM_KB,
)

_UNIT_MS = {"ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
DURATION_TEXT = re.compile(r"^\s*(\d+)\s*(ms|s|min|h|d)?\s*$")
MEMORY_TEXT = re.compile(r"^\s*(\d+)\s*(B|kB|MB|GB|TB)\s*$")
#: What a TimeZone value may hold (a zone name like Europe/Paris, or a POSIX offset like
#: UTC+3); whether the server knows the zone is its call, at connect.
_TIMEZONE = re.compile(r"^[A-Za-z0-9_+\-/:.]+$")
#: Schemas a pinned search_path may not name: dbopt places them itself (pg_catalog first,
#: pg_temp last), and "$user" would make the path depend on the role again.
_RESERVED_SCHEMAS = ("pg_catalog", "pg_temp", "$user")


def duration_ms(value: int | str) -> int:
    """A PostgreSQL-style duration ('5s', '500ms', 2000) in milliseconds."""
    if isinstance(value, int):
        return value
    match = DURATION_TEXT.match(value)
    if not match:
        raise ConfigError(f"'{value}' is not a duration: write e.g. 500ms, 5s, 2min, 1h")
    return int(match.group(1)) * _UNIT_MS[match.group(2) or "ms"]


def human_ms(ms: int) -> str:
    tenths = ms * 10 // 86_400_000  # rounded down: "at most 24.8 days" must stay true
    return f"{ms}ms, about {tenths // 10}.{tenths % 10} days" if tenths >= 10 else f"{ms}ms"


def duration_problem(key: str, value: int | str) -> str | None:
    """Why a duration setting would be refused (by the server or by dbopt), or None."""
    ms = duration_ms(value)
    if ms > MAX_TIMEOUT_MS:
        return (
            f"{value!r} is longer than PostgreSQL allows for a timeout "
            f"(at most {human_ms(MAX_TIMEOUT_MS)})"
        )
    if key == "lock_timeout" and ms == 0:
        return (
            "0 would let dbopt wait for a lock forever, with the application's queries queued "
            "behind it; give a limit such as 5s"
        )
    return None


def memory_kb(value: str) -> int:
    """A PostgreSQL memory size ('1GB', '512MB', '65536kB') in kilobytes, rounded down."""
    match = MEMORY_TEXT.match(value)
    if not match:
        raise ConfigError(f"'{value}' is not a memory size: write e.g. 512MB or 1GB")
    return int(match.group(1)) * MEMORY_UNITS_KB[match.group(2)] // 1024


def memory_problem(value: str) -> str | None:
    """Why the server would refuse this maintenance_work_mem, or None."""
    kb = memory_kb(value)
    if kb < MIN_MAINTENANCE_WORK_MEM_KB:
        return f"{value!r} is below PostgreSQL's minimum for maintenance_work_mem (1MB)"
    if kb > MAX_KILOBYTES:
        return f"{value!r} is above PostgreSQL's maximum for maintenance_work_mem (2147483647kB)"
    return None


def _split_names(text: str) -> list[str]:
    """Split ``a, "b,c", "d""e"`` on the commas outside double quotes, and unquote."""
    names: list[str] = []
    current: list[str] = []
    quoted = False  # inside double quotes
    was_quoted = False  # the current name was written in quotes (keep its spaces)
    i = 0
    while i < len(text):
        c = text[i]
        if quoted:
            if c == '"' and text.startswith('""', i):
                current.append('"')
                i += 1
            elif c == '"':
                quoted = False
            else:
                current.append(c)
        elif c == '"':
            if not "".join(current).strip():
                current = []  # the spaces before a quoted name are no part of it
            quoted = was_quoted = True
        elif c.isspace() and was_quoted:
            pass  # nor the spaces after it
        elif c == ",":
            name = "".join(current)
            names.append(name if was_quoted else name.strip())
            current, was_quoted = [], False
        else:
            current.append(c)
        i += 1
    if quoted:
        raise ConfigError("search_path has a double quote that is not closed")
    name = "".join(current)
    names.append(name if was_quoted else name.strip())
    return names


def parse_search_path(value: str | Sequence[str]) -> tuple[str, ...]:
    """A search_path setting as schema names: a list, or one string of comma-separated names.

    In the string form a name may be double-quoted (``'"My Schema", public'``); names are
    kept as written (case included), as everywhere in dbopt's files. Raise ConfigError for an
    empty list or name, a name longer than 63 bytes, and for ``$user``, ``pg_catalog`` and
    ``pg_temp``: dbopt searches pg_catalog first and pg_temp last itself.
    """
    names = tuple(_split_names(value) if isinstance(value, str) else value)
    if not names:
        raise ConfigError("search_path must name at least one schema, e.g. public")
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise ConfigError("search_path holds an empty schema name")
        if len(name.encode()) > MAX_IDENTIFIER_BYTES:
            raise ConfigError(f"schema name '{name}' is longer than 63 bytes")
        if "\x00" in name:
            raise ConfigError("a schema name cannot hold a NUL character")
        if name in _RESERVED_SCHEMAS or name.startswith("pg_temp"):
            raise ConfigError(
                f"search_path cannot name {name}: dbopt always searches pg_catalog first and "
                "pg_temp last, and never the role's own schema ($user)"
            )
    if len(set(names)) != len(names):
        raise ConfigError("search_path names a schema twice")
    return names


def timezone_problem(value: str) -> str | None:
    """Why a timezone setting is malformed, or None (the server judges unknown zones)."""
    if not _TIMEZONE.match(value):
        return f"{value!r} is not a time zone name: write e.g. UTC or Europe/Paris"
    return None
