"""The grants of dbopt's two roles, as SQL a DBA reads and runs: one role that applies
(apply, rollback, refresh-views, and everything the other does) and one that only reads
(plan, status, verify).

Nothing here runs a GRANT: ``dbopt init`` prints them, for the person who may.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from dbopt.catalog import Relation, catalog_sql
from dbopt.errors import InputError
from dbopt.history import HistoryFacts
from dbopt.model import QualifiedName, SpecSet
from dbopt.schema import MAX_IDENTIFIER_BYTES

#: The history's tables a run writes, and the sequences behind their ids.
WRITTEN = ("runs", "changes", "refreshes")
SEQUENCES = ("runs_id_seq", "changes_id_seq", "refreshes_id_seq")
STAMP = "schema_version"


@dataclass(frozen=True, slots=True)
class Roles:
    """The two roles the grants are for (they need not exist yet)."""

    apply: str = "dbopt_apply"
    read: str = "dbopt_read"

    def __post_init__(self) -> None:
        for role in (self.apply, self.read):
            if not role or len(role.encode()) > MAX_IDENTIFIER_BYTES or not role.isprintable():
                raise InputError(
                    f"{role!r} is not a role name: 1 to 63 bytes, no control characters"
                )


def _names(schema: str, names: Iterable[str]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(schema, n) for n in names)


def _grant(privileges: str, on: sql.Composable, role: str) -> sql.Composed:
    return sql.SQL("GRANT {} ON {} TO {};").format(sql.SQL(privileges), on, sql.Identifier(role))


def _comment(text: str) -> str:
    return "-- " + text.replace("\n", "\n-- ")


def grant_sql(
    facts: HistoryFacts,
    specs: SpecSet,
    relations: Mapping[QualifiedName, Relation],
    roles: Roles,
    existing_roles: Iterable[str],
    *,
    reads_lag: bool = False,
) -> str:
    """The GRANT statements both roles need on this database, with a comment per group.

    ``specs``: what the tables and views are (the applying role changes the ones with index
    specs and the views; the reading one reads every relation the specs name);
    ``relations``: the catalog's relations (their owners); ``existing_roles``: the roles
    the server knows (a missing one gets the CREATE ROLE it needs, commented out).
    """
    history = facts.schema
    known = set(existing_roles)
    lines: list[str | sql.Composable] = []
    for role in (roles.apply, roles.read):
        if role not in known:
            lines.append(
                _comment(
                    f"role {role} does not exist yet; create it first, e.g.\n"
                    f"CREATE ROLE {sql.Identifier(role).as_string()} LOGIN PASSWORD '...';"
                )
            )
    specs_relations = sorted(specs.relations())
    views = [v.name for v in specs.views]
    changed = sorted({s.table for s in specs.indexes} | set(views))
    present = [n for n in specs_relations if n in relations]
    owners = sorted({relations[n].owner for n in changed if n in relations} - {roles.apply})
    lines.append(
        _comment(
            f"{roles.apply}: plan, apply, rollback, refresh-views, status, verify.\n"
            "CREATE/DROP INDEX and REFRESH need ownership of the table or view: membership "
            "in its owner gives it."
        )
    )
    for owner in owners:
        lines.append(
            sql.SQL("GRANT {} TO {};").format(sql.Identifier(owner), sql.Identifier(roles.apply))
        )
    schemas = sorted({n.schema for n in changed})
    if schemas:
        lines.append(
            _comment(
                "CREATE INDEX and CREATE MATERIALIZED VIEW also need CREATE on the schema the "
                "object goes in"
            )
        )
        lines.append(
            _grant(
                "CREATE",
                sql.SQL("SCHEMA {}").format(sql.SQL(", ").join(map(sql.Identifier, schemas))),
                roles.apply,
            )
        )
    lines.append(_grant("USAGE", sql.SQL("SCHEMA {}").format(sql.Identifier(history)), roles.apply))
    lines.append(_grant("SELECT, INSERT, UPDATE", _names(history, WRITTEN), roles.apply))
    lines.append(_grant("SELECT", _names(history, (STAMP,)), roles.apply))
    lines.append(
        _grant("USAGE", sql.SQL("SEQUENCE {}").format(_names(history, SEQUENCES)), roles.apply)
    )
    if reads_lag:
        lines.append(_comment("max_replica_lag reads the standbys' lag in pg_stat_replication"))
        lines.append(sql.SQL("GRANT pg_read_all_stats TO {};").format(sql.Identifier(roles.apply)))
    lines.append(
        _comment(
            f"{roles.read}: plan, status, verify (EXPLAIN ANALYZE runs the budgeted queries "
            "read-only; they read these relations)."
        )
    )
    lines.append(_grant("USAGE", sql.SQL("SCHEMA {}").format(sql.Identifier(history)), roles.read))
    lines.append(_grant("SELECT", _names(history, (*WRITTEN, STAMP)), roles.read))
    for schema in sorted({n.schema for n in present}):
        lines.append(
            _grant("USAGE", sql.SQL("SCHEMA {}").format(sql.Identifier(schema)), roles.read)
        )
    if present:
        lines.append(
            _grant(
                "SELECT",
                sql.SQL(", ").join(n.ident() for n in present),
                roles.read,
            )
        )
    view_schemas = sorted({v.schema for v in views})
    if view_schemas:
        lines.append(
            _comment(
                f"the materialized views {roles.apply} creates (now or later) are readable too"
            )
        )
        lines.append(
            sql.SQL(
                "ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT SELECT ON TABLES TO {};"
            ).format(
                sql.Identifier(roles.apply),
                sql.SQL(", ").join(map(sql.Identifier, view_schemas)),
                sql.Identifier(roles.read),
            )
        )
    missing = sorted(str(n) for n in specs_relations if n not in relations and n not in views)
    if missing:
        lines.append(
            _comment(
                "not in this database yet (grant SELECT once they exist): " + ", ".join(missing)
            )
        )
    return "\n".join(x if isinstance(x, str) else x.as_string() for x in lines) + "\n"


def unreadable_problem(conn: psycopg.Connection[Any], names: Iterable[QualifiedName]) -> str | None:
    """One line naming the grants the current role lacks to read the named relations that
    exist (verify's EXPLAIN ANALYZE reads them), or None."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(catalog_sql("unreadable"), {"names": sorted(str(n) for n in names)})
        rows = cur.fetchall()
    if not rows:
        return None
    role_row = conn.execute("SELECT current_user").fetchone()
    role = sql.Identifier(str(role_row[0] if role_row else "")).as_string()
    schemas = sorted({r["schema"] for r in rows if not r["schema_usage"]})
    tables = ", ".join(sql.Identifier(r["schema"], r["name"]).as_string() for r in rows)
    grants = [f"GRANT USAGE ON SCHEMA {', '.join(schemas)} TO {role}"] if schemas else []
    grants.append(f"GRANT SELECT ON {tables} TO {role}")
    return (
        f"role {role} may not read {tables}, which the budgeted queries read; missing: "
        + "; ".join(grants)
        + " (`dbopt init` prints every grant)"
    )
