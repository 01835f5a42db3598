"""What the current role may do, read from the catalog before anything runs.

Each check returns the one line that names the missing grant (or None), so a command refuses
with it (exit 2) before its first statement instead of failing halfway with "permission
denied". The relations a query reads come from its parse tree (the real PostgreSQL parser),
resolved the way the session's pinned search_path resolves them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from dbopt.catalog import catalog_sql
from dbopt.model import QualifiedName, SpecSet, ViewSpec
from dbopt.readonly.references import ReferenceKind, references
from dbopt.sqltext import SqlTextError

#: A relation as a query names it: (schema or None when unqualified, name).
Ref = tuple[str | None, str]


def _refs(text: str, *, with_placeholders: bool) -> set[Ref]:
    try:
        found = references(text, with_placeholders=with_placeholders)
    except SqlTextError:
        return set()  # validation reports it; nothing to check here
    return {(r.schema, r.name) for r in found if r.kind == ReferenceKind.RELATION}


def budget_relations(specs: SpecSet) -> set[Ref]:
    """Every relation the budgeted queries read (what verify's EXPLAIN ANALYZE needs SELECT
    on), with the tables their expectations name."""
    out: set[Ref] = set()
    for budget in specs.queries:
        out |= _refs(budget.sql, with_placeholders=budget.uses_placeholders)
        for table in budget.expect.no_seq_scan_on:
            out.add((table.schema, table.name))
    return out


def view_relations(views: Iterable[ViewSpec]) -> set[Ref]:
    """Every relation the views' queries read (what creating them needs SELECT on), without
    the spec views themselves (they are made before the views that read them)."""
    views = list(views)
    made: set[Ref] = {(v.name.schema, v.name.name) for v in views}
    out: set[Ref] = set()
    for view in views:
        out |= _refs(view.query, with_placeholders=False)
    return {r for r in out if r not in made and not _is_made(r, made)}


def _is_made(ref: Ref, made: set[Ref]) -> bool:
    return ref[0] is None and any(name == ref[1] for _schema, name in made)


@dataclass(frozen=True, slots=True)
class RelationAccess:
    """A relation a query reads, and whether the current role may read it."""

    name: QualifiedName
    owner: str
    schema_usage: bool
    can_select: bool

    @property
    def readable(self) -> bool:
        return self.schema_usage and self.can_select


def resolve(
    conn: psycopg.Connection[Any], refs: Iterable[Ref], search_path: Sequence[str]
) -> list[RelationAccess]:
    """The existing relations ``refs`` name (an unqualified name: the first schema of
    ``search_path`` that has it, as the pinned session resolves it; CTE names and relations
    that do not exist are left out), with the role's access to each."""
    refs = sorted(refs, key=lambda r: (r[0] or "", r[1]))
    candidates: list[tuple[str, str]] = []
    for schema, name in refs:
        for s in [schema] if schema is not None else ["pg_catalog", *search_path]:
            candidates.append((s, name))
    if not candidates:
        return []
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            catalog_sql("relation_access"),
            {"schemas": [c[0] for c in candidates], "names": [c[1] for c in candidates]},
        )
        found = {(r["schema"], r["name"]): r for r in cur.fetchall()}
    out: dict[QualifiedName, RelationAccess] = {}
    for schema, name in refs:
        for s in [schema] if schema is not None else ["pg_catalog", *search_path]:
            row = found.get((s, name))
            if row is None:
                continue
            if row["schema"] != "pg_catalog":
                qualified = QualifiedName(row["schema"], row["name"])
                out[qualified] = RelationAccess(
                    qualified, row["owner"], row["schema_usage"], row["can_select"]
                )
            break
    return [out[k] for k in sorted(out, key=str)]


def _role(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute(catalog_sql("current_role")).fetchone()
    assert row is not None
    return str(row[0])


def unreadable_problem(
    conn: psycopg.Connection[Any], access: Sequence[RelationAccess], what: str
) -> str | None:
    """One line naming the grants the role lacks to read ``access`` (``what`` reads them)."""
    lacking = [a for a in access if not a.readable]
    if not lacking:
        return None
    grantee = sql.Identifier(_role(conn))
    role = grantee.as_string()
    schemas = sorted({a.name.schema for a in lacking if not a.schema_usage})
    tables = ", ".join(a.name.ident().as_string() for a in lacking)
    grants = (
        [
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}")
            .format(sql.SQL(", ").join(sql.Identifier(s) for s in schemas), grantee)
            .as_string()
        ]
        if schemas
        else []
    )
    grants.append(
        sql.SQL("GRANT SELECT ON {} TO {}")
        .format(sql.SQL(", ").join(a.name.ident() for a in lacking), grantee)
        .as_string()
    )
    return (
        f"role {role} may not read {tables}, which {what}; missing: "
        + "; ".join(grants)
        + " (`dbopt init` prints every grant)"
    )


def unreadable_tables(
    conn: psycopg.Connection[Any], tables: Sequence[QualifiedName]
) -> list[QualifiedName]:
    """The ``tables`` the current role may not SELECT from."""
    if not tables:
        return []
    rows = conn.execute(
        catalog_sql("tables_not_readable"),
        {"schemas": [t.schema for t in tables], "names": [t.name for t in tables]},
    ).fetchall()
    return [QualifiedName(r[0], r[1]) for r in rows]


def temp_problem(conn: psycopg.Connection[Any]) -> str | None:
    """One line when the role may not create temporary tables (dbopt normalises index and
    view definitions on temporary copies, in a rolled-back transaction)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(catalog_sql("temp_privilege"))
        row = cur.fetchone()
    assert row is not None
    if row["may_temp"]:
        return None
    grantee, db = sql.Identifier(row["role"]), sql.Identifier(row["database"])
    role, database = grantee.as_string(), db.as_string()
    grant = sql.SQL("GRANT TEMPORARY ON DATABASE {} TO {}").format(db, grantee).as_string()
    return (
        f"role {role} may not create temporary tables in database {database}, which dbopt "
        f"uses to compare definitions (rolled back); missing: {grant} (`dbopt init` prints "
        "every grant)"
    )


def create_problem(
    conn: psycopg.Connection[Any], schemas: Iterable[str], command: str
) -> str | None:
    """One line when the role may not create objects in one of ``schemas`` (CREATE INDEX and
    CREATE MATERIALIZED VIEW need CREATE on the schema besides ownership of the table)."""
    rows = conn.execute(catalog_sql("schemas_without_create"), (sorted(set(schemas)),)).fetchall()
    if not rows:
        return None
    schemas_sql = sql.SQL(", ").join(sql.Identifier(r[0]) for r in rows)
    names = schemas_sql.as_string()
    grant = sql.SQL("GRANT CREATE ON SCHEMA {}").format(schemas_sql).as_string()
    return (
        f"{command} refused: the current role may not create objects in schema {names}: "
        "CREATE INDEX and CREATE MATERIALIZED VIEW need CREATE on the schema besides "
        f"ownership of the table; {grant} TO this role"
    )
