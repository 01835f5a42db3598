"""DDL for indexes, composed with psycopg.sql only.

Every identifier is a ``sql.Identifier``; methods come from the spec's allow-list; expressions
and predicates enter through :mod:`dbopt.sqltext`, which re-parses them first.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

from psycopg import sql

from dbopt.model import IndexColumn, IndexSpec, QualifiedName, parse_qualified
from dbopt.schema import INDEX_METHODS, MAX_IDENTIFIER_BYTES
from dbopt.sqltext import expression_sql


def _name_ident(text: str) -> sql.Identifier:
    qn = parse_qualified(text, "")
    return sql.Identifier(qn.name) if not qn.schema else sql.Identifier(qn.schema, qn.name)


def _column(col: IndexColumn) -> sql.Composable:
    if col.expr is not None:
        parts: list[sql.Composable] = [sql.SQL("({})").format(expression_sql(col.expr))]
    else:
        parts = [sql.Identifier(col.name or "")]
    if col.collation:
        parts.append(sql.SQL("COLLATE {}").format(_name_ident(col.collation)))
    if col.opclass:
        parts.append(_name_ident(col.opclass))
    if col.order:
        parts.append(sql.SQL("DESC" if col.order == "desc" else "ASC"))
    if col.nulls:
        parts.append(sql.SQL("NULLS FIRST" if col.nulls == "first" else "NULLS LAST"))
    return sql.SQL(" ").join(parts)


#: What an index spec may use only from some PostgreSQL release on: (server_version_num of
#: that release, what it is), and how to tell whether a spec uses it.
_NEWER_FEATURES: tuple[tuple[int, str, Callable[[IndexSpec], bool]], ...] = (
    (
        130000,
        "the storage parameter deduplicate_items",
        lambda s: _has_storage(s, "deduplicate_items"),
    ),
    (
        140000,
        "INCLUDE columns on an spgist index",
        lambda s: bool(s.include) and s.method == "spgist",
    ),
    (150000, "NULLS NOT DISTINCT", lambda s: s.nulls_not_distinct),
)


def _has_storage(spec: IndexSpec, name: str) -> bool:
    return any(key == name for key, _value in spec.storage)


def needs_newer_server(spec: IndexSpec, server_version: int) -> list[str]:
    """What of ``spec`` a server of ``server_version`` (``server_version_num``) cannot build,
    each as "X needs PostgreSQL N or later; this server runs PostgreSQL M.m"; empty when it can
    build all of it.

    For refusing such a spec before anything runs (its CREATE INDEX would fail mid-run).
    """
    running = f"this server runs PostgreSQL {server_version // 10000}.{server_version % 10000}"
    return [
        f"{what} needs PostgreSQL {release // 10000} or later; {running}"
        for release, what, uses in _NEWER_FEATURES
        if server_version < release and uses(spec)
    ]


def create_index(
    spec: IndexSpec,
    *,
    name: str | None = None,
    table: QualifiedName | None = None,
    concurrently: bool = True,
    only: bool = False,
    tablespace: str | None = None,
) -> sql.Composed:
    """CREATE INDEX for ``spec``, optionally under another name, on another table, or in a
    tablespace (carried over from the index a replace swaps out)."""
    if spec.method not in INDEX_METHODS:  # the schema already refuses; never trust one layer
        raise ValueError(f"index method {spec.method!r} is not allowed")
    parts: list[sql.Composable] = [
        sql.SQL("CREATE UNIQUE INDEX" if spec.unique else "CREATE INDEX")
    ]
    if concurrently:
        parts.append(sql.SQL("CONCURRENTLY"))
    parts.append(sql.Identifier(name or spec.name))
    parts.append(sql.SQL("ON ONLY" if only else "ON"))
    parts.append((table or spec.table).ident())
    parts.append(sql.SQL("USING {}").format(sql.SQL(spec.method)))
    parts.append(sql.SQL("({})").format(sql.SQL(", ").join(_column(c) for c in spec.columns)))
    if spec.include:
        parts.append(
            sql.SQL("INCLUDE ({})").format(
                sql.SQL(", ").join(sql.Identifier(c) for c in spec.include)
            )
        )
    if spec.nulls_not_distinct:
        parts.append(sql.SQL("NULLS NOT DISTINCT"))
    if spec.storage:
        parts.append(
            sql.SQL("WITH ({})").format(
                sql.SQL(", ").join(
                    sql.SQL("{} = {}").format(sql.Identifier(k), sql.Literal(v))
                    for k, v in spec.storage
                )
            )
        )
    if tablespace:
        parts.append(sql.SQL("TABLESPACE {}").format(sql.Identifier(tablespace)))
    if spec.where is not None:
        parts.append(sql.SQL("WHERE {}").format(expression_sql(spec.where)))
    return sql.SQL(" ").join(parts)


def drop_index(name: QualifiedName, *, concurrently: bool = True) -> sql.Composed:
    """DROP INDEX [CONCURRENTLY] IF EXISTS."""
    return sql.SQL("DROP INDEX {}IF EXISTS {}").format(
        sql.SQL("CONCURRENTLY " if concurrently else ""), name.ident()
    )


def reindex_concurrently(name: QualifiedName) -> sql.Composed:
    """REINDEX INDEX CONCURRENTLY (on a Citus coordinator: on every shard placement too)."""
    return sql.SQL("REINDEX INDEX CONCURRENTLY {}").format(name.ident())


#: The names PostgreSQL gives what REINDEX INDEX CONCURRENTLY makes on the way: the new copy
#: ``<index>_ccnew`` and, once swapped, the old one ``<index>_ccold`` (a number after it when
#: the name is taken).
_REINDEX_LEFTOVER = re.compile(r"_cc(?:new|old)[0-9]*$")


def reindex_leftover_of(name: str, index: str) -> bool:
    """Whether ``name`` is what a REINDEX INDEX CONCURRENTLY of ``index`` names its new or old
    copy: ``<index>_ccnew``, ``<index>_ccnew1``, ``<index>_ccold``... with ``<index>`` clipped
    so that the whole fits in 63 bytes (ChooseRelationName, makeObjectName in PostgreSQL)."""
    found = _REINDEX_LEFTOVER.search(name)
    if found is None:
        return False
    room = MAX_IDENTIFIER_BYTES - len(found.group(0).encode())
    clipped = index.encode()[:room].decode(errors="ignore")
    return name[: found.start()] == clipped


def rename_index(name: QualifiedName, new_name: str) -> sql.Composed:
    """ALTER INDEX ... RENAME TO (within the same schema)."""
    return sql.SQL("ALTER INDEX {} RENAME TO {}").format(name.ident(), sql.Identifier(new_name))


def attach_partition_index(parent: QualifiedName, child: QualifiedName) -> sql.Composed:
    """ALTER INDEX parent ATTACH PARTITION child."""
    return sql.SQL("ALTER INDEX {} ATTACH PARTITION {}").format(parent.ident(), child.ident())


def recreate_from_definition(
    definition: str, current_name: str, new_name: str, *, concurrently: bool = True
) -> sql.Composed:
    """Rebuild an index from PostgreSQL's own ``pg_get_indexdef`` text under ``new_name``.

    The text comes from the server's deparser (never from a user); only its head
    ``CREATE [UNIQUE] INDEX <name> ON`` is replaced, so the body is exactly what PostgreSQL had.
    """
    unique = definition.startswith("CREATE UNIQUE INDEX ")
    head = "CREATE UNIQUE INDEX " if unique else "CREATE INDEX "
    quoted = sql.Identifier(current_name).as_string()
    for candidate in (quoted, current_name):
        prefix = f"{head}{candidate} ON "
        if definition.startswith(prefix):
            body = definition[len(prefix) :]
            break
    else:
        raise ValueError(f"unexpected index definition: {definition!r}")
    return sql.SQL("{} {}{} ON {}").format(
        sql.SQL(head.strip()),
        sql.SQL("CONCURRENTLY " if concurrently else ""),
        sql.Identifier(new_name),
        sql.SQL(body),
    )


def derived_name(base: str, suffix: str) -> str:
    """``base`` + ``suffix`` kept within 63 bytes (a short hash keeps long names distinct)."""
    candidate = f"{base}{suffix}"
    if len(candidate.encode()) <= MAX_IDENTIFIER_BYTES:
        return candidate
    digest = hashlib.sha1(candidate.encode()).hexdigest()[:8]
    room = MAX_IDENTIFIER_BYTES - len(suffix.encode()) - len(digest) - 1
    trimmed = base.encode()[:room].decode("utf-8", "ignore")
    return f"{trimmed}_{digest}{suffix}"


def create_matview(
    name: QualifiedName,
    query: sql.Composable,
    *,
    with_data: bool = True,
    options: tuple[tuple[str, str], ...] = (),
    tablespace: str | None = None,
) -> sql.Composed:
    """CREATE MATERIALIZED VIEW ... [WITH (options)] [TABLESPACE] AS <query> WITH [NO] DATA."""
    head: list[sql.Composable] = [sql.SQL("CREATE MATERIALIZED VIEW"), name.ident()]
    if options:
        head.append(
            sql.SQL("WITH ({})").format(
                sql.SQL(", ").join(
                    sql.SQL("{} = {}").format(sql.Identifier(k), sql.Literal(v)) for k, v in options
                )
            )
        )
    if tablespace:
        head.append(sql.SQL("TABLESPACE {}").format(sql.Identifier(tablespace)))
    return sql.SQL("{} AS {} WITH {}").format(
        sql.SQL(" ").join(head), query, sql.SQL("DATA" if with_data else "NO DATA")
    )


def analyze(table: QualifiedName) -> sql.Composed:
    """ANALYZE one table (statistics of a new expression index before it takes the name)."""
    return sql.SQL("ANALYZE {}").format(table.ident())


def create_matview_from_definition(name: QualifiedName, definition: str) -> sql.Composed:
    """Rebuild a materialized view from PostgreSQL's own ``pg_get_viewdef`` text."""
    body = definition.strip().rstrip(";").strip()
    # The server's own deparse of a view it had, never user input.
    return create_matview(name, sql.SQL(body))


def drop_matview(name: QualifiedName) -> sql.Composed:
    """DROP MATERIALIZED VIEW IF EXISTS (its indexes go with it)."""
    return sql.SQL("DROP MATERIALIZED VIEW IF EXISTS {}").format(name.ident())


#: What every lock wait of a swap may take once it holds its first lock (the view's): it never
#: holds the view while it waits for a reader (the application's queries on the view would
#: queue behind it, and one holding the reader would be killed as a deadlock's victim).
HELD_WAIT_MS = 10


def hurry_held_waits() -> sql.Composed:
    """SET LOCAL lock_timeout to :data:`HELD_WAIT_MS` (the rest of a swap's transaction)."""
    return sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{HELD_WAIT_MS}ms"))


def rename_matview(name: QualifiedName, new_name: str) -> sql.Composed:
    """ALTER MATERIALIZED VIEW ... RENAME TO (within the same schema)."""
    return sql.SQL("ALTER MATERIALIZED VIEW {} RENAME TO {}").format(
        name.ident(), sql.Identifier(new_name)
    )


def refresh_matview(name: QualifiedName, *, concurrently: bool) -> sql.Composed:
    """REFRESH MATERIALIZED VIEW [CONCURRENTLY]."""
    return sql.SQL("REFRESH MATERIALIZED VIEW {}{}").format(
        sql.SQL("CONCURRENTLY " if concurrently else ""), name.ident()
    )


def retarget_definition(
    definition: str, current_name: str, new_name: str, table: QualifiedName
) -> sql.Composed:
    """An index definition from ``pg_get_indexdef`` rebuilt under ``new_name`` on ``table``."""
    rebuilt = recreate_from_definition(definition, current_name, new_name).as_string()
    head, _, rest = rebuilt.partition(" ON ")
    _old_table, sep, tail = rest.partition(" USING ")
    if not sep:
        raise ValueError(f"unexpected index definition: {definition!r}")
    # Both halves come from the server's deparse of an index it had.
    return sql.SQL("{} ON {} USING {}").format(sql.SQL(head), table.ident(), sql.SQL(tail))


def create_or_replace_view(
    name: QualifiedName, definition: str, options: tuple[str, ...] = ()
) -> sql.Composed:
    """CREATE OR REPLACE VIEW from PostgreSQL's own ``pg_get_viewdef`` text and reloptions.

    Re-binds a view's references by name (after a materialized view it reads was swapped),
    keeping the view's identity: its grants, comments and own dependents; and its options
    (security_barrier, security_invoker, check_option), which CREATE OR REPLACE would reset.
    """
    body = definition.strip().rstrip(";").strip()
    with_options: sql.Composable = sql.SQL("")
    if options:
        pairs = [o.partition("=") for o in options]
        with_options = sql.SQL(" WITH ({})").format(
            sql.SQL(", ").join(
                sql.SQL("{} = {}").format(sql.Identifier(k), sql.Literal(v)) for k, _, v in pairs
            )
        )
    return sql.SQL("CREATE OR REPLACE VIEW {}{} AS {}").format(
        name.ident(), with_options, sql.SQL(body)
    )


def alter_matview_owner(name: QualifiedName, role: str) -> sql.Composed:
    """Give a materialized view to ``role`` (the creator must be able to become it)."""
    return sql.SQL("ALTER MATERIALIZED VIEW {} OWNER TO {}").format(
        name.ident(), sql.Identifier(role)
    )
