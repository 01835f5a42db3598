"""Let PostgreSQL itself normalise spec indexes, so the plan compares like with like.

``status IN ('a','b')`` and ``status = ANY (ARRAY['a','b'])`` are the same index; only the
server's deparser can say so reliably. For every spec index whose name already exists, we build
it on an empty temporary copy of its table (``CREATE TEMP TABLE ... (LIKE t)``) inside a
transaction that is always rolled back, and read back ``pg_get_indexdef``. All of it is sent
in one batch, so the number of round trips does not grow with the number of specs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import psycopg
from psycopg import sql

from dbopt.db import server_message
from dbopt.ddl import create_index
from dbopt.errors import Problem, SpecError
from dbopt.spec import IndexSpec, QualifiedName, ViewSpec
from dbopt.sqltext import query_sql

_HEAD = re.compile(r"^CREATE (UNIQUE )?INDEX .+? ON (ONLY )?.+? USING ", re.S)

_READ_BACK = sql.SQL(
    "SELECT c.relname, pg_get_indexdef(c.oid) FROM pg_class c "
    "WHERE c.relnamespace = pg_my_temp_schema() AND c.relkind = 'i' "
    "AND c.relname LIKE 'dbopt\\_norm\\_%' ORDER BY c.relname"
)


def canonical(definition: str) -> str:
    """The part of a ``pg_get_indexdef`` text that defines the index, without name and table."""
    match = _HEAD.match(definition)
    if not match:
        raise ValueError(f"unexpected index definition: {definition!r}")
    return ("UNIQUE " if match.group(1) else "") + "USING " + definition[match.end() :]


#: Specs normalised per transaction: each temporary index holds a lock until the rollback,
#: and max_locks_per_transaction must not run out on big spec sets.
BATCH = 500

_PLAIN_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")


def _ident(name: str) -> str:
    return name if _PLAIN_IDENT.match(name) else '"' + name.replace('"', '""') + '"'


def simple_canonical(spec: IndexSpec) -> str | None:
    """What ``pg_get_indexdef`` prints for a spec with nothing for the server to normalise.

    Only plain columns (no expression, predicate, operator class or collation). A fast path
    for the plan: when this text equals the catalog's, the index is the same; when it does
    not, the caller asks the server (so a quoting difference never shows as drift).
    """
    if spec.where is not None or any(c.expr or c.opclass or c.collation for c in spec.columns):
        return None
    columns = []
    for col in spec.columns:
        text = _ident(col.name or "")
        if col.order == "desc":
            text += " DESC" + (" NULLS LAST" if col.nulls == "last" else "")
        elif col.nulls == "first":
            text += " NULLS FIRST"
        columns.append(text)
    out = ("UNIQUE " if spec.unique else "") + f"USING {spec.method} ({', '.join(columns)})"
    if spec.include:
        out += f" INCLUDE ({', '.join(_ident(c) for c in spec.include)})"
    if spec.nulls_not_distinct:
        out += " NULLS NOT DISTINCT"
    if spec.storage:
        out += " WITH (" + ", ".join(f"{k}='{v}'" for k, v in spec.storage) + ")"
    return out


def normalize_specs(
    conn: psycopg.Connection[Any],
    specs: Iterable[IndexSpec],
    lock_timeout_ms: int,
) -> tuple[Mapping[QualifiedName, str], int]:
    """Canonical definitions of ``specs`` as the server renders them; and round trips used."""
    specs = list(specs)
    result: dict[QualifiedName, str] = {}
    round_trips = 0
    for start in range(0, len(specs), BATCH):
        batch, trips = _normalize_batch(conn, specs[start : start + BATCH], lock_timeout_ms)
        result.update(batch)
        round_trips += trips
    return result, round_trips


def _normalize_batch(
    conn: psycopg.Connection[Any], specs: list[IndexSpec], lock_timeout_ms: int
) -> tuple[dict[QualifiedName, str], int]:
    if not specs:
        return {}, 0
    tables: dict[QualifiedName, str] = {}
    statements: list[sql.Composed] = []
    names: dict[str, IndexSpec] = {}
    for i, spec in enumerate(specs):
        if spec.table not in tables:
            temp = f"dbopt_tmp_{len(tables)}"
            tables[spec.table] = temp
            statements.append(
                sql.SQL("CREATE TEMP TABLE {} (LIKE {}) ON COMMIT DROP").format(
                    sql.Identifier(temp), spec.table.ident()
                )
            )
        temp_index = f"dbopt_norm_{i:06d}"
        names[temp_index] = spec
        statements.append(
            create_index(
                spec,
                name=temp_index,
                table=QualifiedName("pg_temp", tables[spec.table]),
                concurrently=False,
            )
        )
    round_trips = 0
    with conn.transaction(force_rollback=True), conn.cursor() as cur:
        cur.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(lock_timeout_ms)))
        round_trips += 1
        try:
            with conn.transaction():
                cur.execute(sql.SQL("; ").join(statements))
                round_trips += 1
        except psycopg.errors.LockNotAvailable:
            raise
        except psycopg.Error:
            # One spec broke the batch: find which, one by one, to say where.
            _raise_located(conn, statements, list(tables), names)
        cur.execute(_READ_BACK)
        round_trips += 1
        rows = cur.fetchall()
    result = {names[name].qualified_name: canonical(definition) for name, definition in rows}
    return result, round_trips


def _raise_located(
    conn: psycopg.Connection[Any],
    statements: list[sql.Composed],
    tables: list[QualifiedName],
    names: Mapping[str, IndexSpec],
) -> None:
    problems: list[Problem] = []
    by_position = list(names.values())
    spec_index = 0
    with conn.cursor() as cur:
        for statement in statements:
            text = statement.as_string(conn)
            is_table = text.startswith("CREATE TEMP TABLE")
            try:
                with conn.transaction():
                    cur.execute(statement)
            except psycopg.Error as exc:
                if is_table:
                    raise
                spec = by_position[spec_index]
                loc = spec.location
                message = server_message(exc)
                problems.append(
                    Problem(
                        loc.file,
                        loc.line,
                        loc.column,
                        f"index {spec.name}: PostgreSQL refuses it on {spec.table}: {message}",
                    )
                )
            if not is_table:
                spec_index += 1
    raise SpecError(
        f"{len(problems)} index spec(s) PostgreSQL would refuse; nothing was changed", problems
    )


_READ_BACK_VIEWS = sql.SQL(
    "SELECT c.relname, pg_get_viewdef(c.oid) FROM pg_class c "
    "WHERE c.relnamespace = pg_my_temp_schema() AND c.relkind = 'v' "
    "AND c.relname LIKE 'dbopt\\_vnorm\\_%' ORDER BY c.relname"
)


def normalize_views(
    conn: psycopg.Connection[Any], views: Iterable[ViewSpec], lock_timeout_ms: int
) -> tuple[Mapping[QualifiedName, str], int]:
    """``pg_get_viewdef`` of each view's query, as a temporary view in a rolled-back batch."""
    views = list(views)
    if not views:
        return {}, 0
    names = {f"dbopt_vnorm_{i:06d}": v for i, v in enumerate(views)}
    statements = [
        sql.SQL("CREATE TEMP VIEW {} AS {}").format(sql.Identifier(name), query_sql(v.query))
        for name, v in names.items()
    ]
    with conn.transaction(force_rollback=True), conn.cursor() as cur:
        cur.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(lock_timeout_ms)))
        try:
            with conn.transaction():
                cur.execute(sql.SQL("; ").join(statements))
        except psycopg.errors.LockNotAvailable:
            raise
        except psycopg.Error:
            problems = []
            for statement, view in zip(statements, names.values(), strict=True):
                try:
                    with conn.transaction():
                        cur.execute(statement)
                except psycopg.Error as exc:
                    loc = view.location
                    problems.append(
                        Problem(
                            loc.file,
                            loc.line,
                            loc.column,
                            f"view {view.name}: PostgreSQL refuses its query: "
                            f"{server_message(exc)}",
                        )
                    )
            raise SpecError(
                f"{len(problems)} view spec(s) PostgreSQL would refuse; nothing was changed",
                problems,
            ) from None
        cur.execute(_READ_BACK_VIEWS)
        rows = cur.fetchall()
    return {names[name].name: definition for name, definition in rows}, 3
