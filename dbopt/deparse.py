"""Let PostgreSQL itself normalise spec indexes, so the plan compares like with like.

``status IN ('a','b')`` and ``status = ANY (ARRAY['a','b'])`` are the same index; only the
server's deparser can say so reliably. For every spec index whose name already exists, we build
it on an empty temporary copy of its table (``CREATE TEMP TABLE ... (LIKE t)``) inside a
transaction that is always rolled back, and read back ``pg_get_indexdef``. All of it is sent
in one batch, so the number of round trips does not grow with the number of specs.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from dbopt.catalog import catalog_sql
from dbopt.db import server_message
from dbopt.ddl import create_index, create_matview
from dbopt.errors import Problem, SpecError
from dbopt.model import IndexSpec, QualifiedName, ViewSpec
from dbopt.spec import view_order
from dbopt.sqltext import query_sql

_HEAD = re.compile(r"^CREATE (UNIQUE )?INDEX .+? ON (ONLY )?.+? USING ", re.S)


def canonical(definition: str) -> str:
    """The part of a ``pg_get_indexdef`` text that defines the index, without name and table,
    its storage parameters in name order (the server prints them in the order they were
    given: ``WITH (fillfactor=80, deduplicate_items=off)`` is the same index either way)."""
    match = _HEAD.match(definition)
    if not match:
        raise ValueError(f"unexpected index definition: {definition!r}")
    return (
        ("UNIQUE " if match.group(1) else "") + "USING " + sorted_storage(definition[match.end() :])
    )


def sorted_storage(text: str) -> str:
    """``text`` (an index definition, or the part of it after ``USING``) with the options of
    its ``WITH (...)`` clause in name order. Only the clause itself is touched: one at paren
    depth 0, outside quoted literals and identifiers (an expression's string may say WITH)."""
    if " WITH (" not in text:
        return text  # most definitions: no need to scan them character by character
    start = _top_level(text, " WITH (")
    if start is None:
        return text
    open_at = start + len(" WITH (") - 1
    end = _closing(text, open_at)
    if end is None:
        return text
    options = _split_top(text[open_at + 1 : end])
    ordered = sorted(options, key=lambda o: o.split("=", 1)[0])
    return text[: open_at + 1] + ", ".join(ordered) + text[end:]


def _scan(text: str) -> list[tuple[int, int]]:
    """(position, paren depth) of each character outside quotes."""
    out: list[tuple[int, int]] = []
    depth, quote, i = 0, "", 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == quote:
                if i + 1 < len(text) and text[i + 1] == quote:
                    i += 2  # a doubled quote stays inside
                    continue
                quote = ""
        elif c in "'\"":
            quote = c
        else:
            if c == ")":
                depth -= 1
            out.append((i, depth))
            if c == "(":
                depth += 1
        i += 1
    return out


def _top_level(text: str, needle: str) -> int | None:
    outside = {i for i, depth in _scan(text) if depth == 0}
    at = text.find(needle)
    while at != -1:
        if all(j in outside for j in range(at, at + len(needle))):
            return at
        at = text.find(needle, at + 1)
    return None


def _closing(text: str, open_at: int) -> int | None:
    for i, depth in _scan(text):
        if i > open_at and depth == 0 and text[i] == ")":
            return i
    return None


def _split_top(inner: str) -> list[str]:
    parts, last = [], 0
    for i, depth in _scan(inner):
        if depth == 0 and inner[i] == ",":
            parts.append(inner[last:i].strip())
            last = i + 1
    parts.append(inner[last:].strip())
    return parts


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
    *,
    read: bool = True,
    statement_timeout_ms: int | None = None,
    writable: bool = False,
    partition_keys: Mapping[QualifiedName, str] | None = None,
    privileges_noted: bool = False,
) -> tuple[Mapping[QualifiedName, str], int]:
    """Canonical definitions of ``specs`` as the server renders them; and round trips used.
    Without ``read``, the server only builds them (raising SpecError for what it refuses) and
    nothing is read back (the mapping is empty). ``statement_timeout_ms``: the bound of its
    statements, when not the session's. ``writable``: its transactions are made read-write
    (in a session whose transactions are read-only by default: validate's); they are rolled
    back all the same. ``partition_keys``: the key of each partitioned table (its copy is
    partitioned the same way, so what only a partitioned table refuses is refused).
    ``privileges_noted``: a build refused for this role's want of a privilege is not the
    spec's fault: NotTried lists those (when nothing else was refused)."""
    specs = list(specs)
    result: dict[QualifiedName, str] = {}
    round_trips = 0
    for start in range(0, len(specs), BATCH):
        batch, trips = _normalize_batch(
            conn,
            specs[start : start + BATCH],
            lock_timeout_ms,
            read=read,
            statement_timeout_ms=statement_timeout_ms,
            writable=writable,
            partition_keys=partition_keys or {},
            privileges_noted=privileges_noted,
        )
        result.update(batch)
        round_trips += trips
    return result, round_trips


def _normalize_batch(
    conn: psycopg.Connection[Any],
    specs: list[IndexSpec],
    lock_timeout_ms: int,
    *,
    read: bool,
    statement_timeout_ms: int | None,
    writable: bool = False,
    partition_keys: Mapping[QualifiedName, str],
    privileges_noted: bool = False,
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
            key = partition_keys.get(spec.table)
            # The key as the server printed it (pg_get_partkeydef), never user input.
            partitioned = sql.SQL(" PARTITION BY {}").format(sql.SQL(key)) if key else sql.SQL("")
            statements.append(
                sql.SQL("CREATE TEMP TABLE {} (LIKE {}){} ON COMMIT DROP").format(
                    sql.Identifier(temp), spec.table.ident(), partitioned
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
        settings: list[sql.Composable] = [
            sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(lock_timeout_ms))
        ]
        if writable:  # first: before any query of the transaction
            settings.insert(0, sql.SQL("SET TRANSACTION READ WRITE"))
        if statement_timeout_ms is not None:
            settings.append(
                sql.SQL("SET LOCAL statement_timeout = {}").format(
                    sql.Literal(statement_timeout_ms)
                )
            )
        # Never prepared (two statements in one: the simple protocol).
        cur.execute(sql.SQL("; ").join(settings), prepare=False)
        round_trips += 1
        try:
            with conn.transaction():
                cur.execute(sql.SQL("; ").join(statements))
                round_trips += 1
        except psycopg.errors.LockNotAvailable:
            raise
        except psycopg.Error:
            # One spec broke the batch: find which, one by one, to say where.
            _raise_located(conn, statements, list(tables), names, privileges_noted)
        if not read:
            return {}, round_trips
        cur.execute(catalog_sql("deparsed_indexes"))
        round_trips += 1
        rows = cur.fetchall()
    result = {names[name].qualified_name: canonical(definition) for name, definition in rows}
    return result, round_trips


def _raise_located(
    conn: psycopg.Connection[Any],
    statements: list[sql.Composed],
    tables: list[QualifiedName],
    names: Mapping[str, IndexSpec],
    privileges_noted: bool = False,
) -> None:
    problems: list[Problem] = []
    lacking: list[str] = []
    by_position = list(names.values())
    spec_index = 0
    copied = iter(tables)  # the table each CREATE TEMP TABLE copies, in order
    uncopied: dict[QualifiedName, str] = {}  # a table whose copy the role may not make
    with conn.cursor() as cur:
        for statement in statements:
            text = statement.as_string(conn)
            is_table = text.startswith("CREATE TEMP TABLE")
            table = next(copied) if is_table else None
            if not is_table and by_position[spec_index].table in uncopied:
                spec = by_position[spec_index]
                loc = spec.location
                why = uncopied[spec.table]
                lacking.append(f"index {spec.name} ({loc.file}:{loc.line}): {why}")
                spec_index += 1
                continue
            try:
                with conn.transaction():
                    cur.execute(statement)
            except psycopg.Error as exc:
                denied = isinstance(exc, psycopg.errors.InsufficientPrivilege)
                if is_table and table is not None and privileges_noted and denied:
                    uncopied[table] = f"its table cannot be copied: {server_message(exc)}"
                    continue
                if is_table:
                    raise
                spec = by_position[spec_index]
                loc = spec.location
                message = server_message(exc)
                if privileges_noted and denied:
                    lacking.append(f"index {spec.name} ({loc.file}:{loc.line}): {message}")
                    spec_index += 1
                    continue
                problems.append(
                    loc.problem(
                        f"index {spec.name}: PostgreSQL refuses it on {spec.table}: {message}",
                    )
                )
            if not is_table:
                spec_index += 1
    if not problems and lacking:
        raise NotTried(lacking)
    raise SpecError(
        f"{len(problems)} index spec(s) PostgreSQL would refuse; nothing was changed", problems
    )


class NotTried(Exception):
    """Builds the server refused for the current role's want of a privilege (a schema's
    USAGE, a function's EXECUTE), not for the spec: one line each."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("; ".join(lines))
        self.lines = lines


@dataclass(frozen=True, slots=True)
class ViewCheck:
    """What the server says of the spec views: definitions of existing ones, and columns."""

    definitions: Mapping[QualifiedName, str]
    columns: Mapping[QualifiedName, tuple[str, ...]]
    round_trips: int
    #: For each existing view, its columns whose type the new query changes: "old to new".
    retyped: Mapping[QualifiedName, Mapping[str, str]] = field(default_factory=dict)


def normalize_views(
    conn: psycopg.Connection[Any],
    views: Iterable[ViewSpec],
    existing: Collection[QualifiedName],
    lock_timeout_ms: int,
) -> ViewCheck:
    """Check every spec view against the server, in dependency order, in a rolled-back batch.

    A view that exists is created as a temporary view of its query: ``pg_get_viewdef`` of it is
    what the plan compares. A view that does not exist yet is created for real WITH NO DATA
    (rolled back with the rest), so that a view reading another new view is checked against
    it, and a query over a missing table is refused now — never in the middle of an apply.
    A role that may not create in the schema falls back to temporary views.
    """
    ordered = view_order(list(views))
    if not ordered:
        return ViewCheck({}, {}, 0)
    names: dict[str, ViewSpec] = {}
    statements: list[tuple[ViewSpec, sql.Composed]] = []
    for i, view in enumerate(ordered):
        if view.name in existing:
            temp = f"dbopt_vnorm_{i:06d}"
            names[temp] = view
            statement = sql.SQL("CREATE TEMP VIEW {} AS {}").format(
                sql.Identifier(temp), query_sql(view.query)
            )
        else:
            statement = create_matview(view.name, query_sql(view.query), with_data=False)
        statements.append((view, statement))
    with conn.transaction(force_rollback=True), conn.cursor() as cur:
        cur.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(lock_timeout_ms)))
        try:
            with conn.transaction():
                cur.execute(sql.SQL("; ").join(s for _v, s in statements))
        except psycopg.errors.LockNotAvailable:
            raise
        except psycopg.Error:
            _locate_view_problems(conn, statements, existing)
        temps = sorted(names)
        cur.execute(
            catalog_sql("deparsed_views"),
            {
                "temps": temps,
                "schemas": [names[t].name.schema for t in temps],
                "names": [names[t].name.name for t in temps],
            },
        )
        rows = cur.fetchall()
    return ViewCheck(
        {names[name].name: definition for name, definition, _cols, _types in rows},
        {names[name].name: tuple(cols) for name, _definition, cols, _types in rows},
        3,
        {
            names[name].name: {
                column: f"{old} to {new}" for column, old, new in (t.split("\t") for t in types)
            }
            for name, _definition, _cols, types in rows
            if types
        },
    )


def _locate_view_problems(
    conn: psycopg.Connection[Any],
    statements: Sequence[tuple[ViewSpec, sql.Composed]],
    existing: Collection[QualifiedName],
) -> None:
    """Run the statements one by one to say which views the server refuses, and why."""
    problems = []
    new = {v.name for v, _s in statements if v.name not in existing}
    unchecked: set[QualifiedName] = set()
    with conn.cursor() as cur:
        for view, statement in statements:
            try:
                with conn.transaction():
                    cur.execute(statement)
                continue
            except psycopg.errors.InsufficientPrivilege:
                if view.name in existing:
                    raise
            except psycopg.Error as exc:
                problems.append(_view_problem(view, exc))
                continue
            # No right to create in the schema (a read-only role planning): a temporary view
            # checks the query, unless it reads another new view this role cannot create.
            if any(d in new for d in view.depends_on) or unchecked & set(view.depends_on):
                unchecked.add(view.name)
                continue
            try:
                with conn.transaction():
                    cur.execute(
                        sql.SQL("CREATE TEMP VIEW dbopt_vcheck AS {}").format(query_sql(view.query))
                    )
                    cur.execute("DROP VIEW dbopt_vcheck")
            except psycopg.Error as exc:
                problems.append(_view_problem(view, exc))
    if problems:
        raise SpecError(
            f"{len(problems)} view spec(s) PostgreSQL would refuse; nothing was changed",
            problems,
        )


def _view_problem(view: ViewSpec, exc: psycopg.Error) -> Problem:
    loc = view.location
    return loc.problem(
        f"view {view.name}: PostgreSQL refuses its query: {server_message(exc)}",
    )
