"""The grants of dbopt's two roles, as SQL a DBA reads and runs: one role that applies
(apply, rollback, refresh-views, and everything the other does) and one that only reads
(plan, status, verify).

Nothing here runs a GRANT: ``dbopt init`` prints them, for the person who may.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from psycopg import sql

from dbopt.errors import InputError
from dbopt.model import QualifiedName
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


@dataclass(frozen=True, slots=True)
class GrantFacts:
    """What the grants depend on, read from the database by ``dbopt init``."""

    database: str
    history_schema: str
    server_version: int  # server_version_num
    #: Owners of the tables and views the specs change (membership gives ownership).
    owners: tuple[str, ...]
    #: Of those, the superusers: membership in one would make the role a superuser.
    superuser_owners: tuple[str, ...]
    #: The schemas indexes and materialized views are created in.
    created_in: tuple[str, ...]
    #: The schemas the specs' materialized views live in (they may not exist yet).
    view_schemas: tuple[str, ...]
    #: What the views' queries read (creating a view needs SELECT on it).
    view_reads: tuple[QualifiedName, ...]
    #: What the budgeted queries read, and the spec views that exist (verify reads them).
    budget_reads: tuple[QualifiedName, ...]
    existing_roles: tuple[str, ...]
    reads_lag: bool  # max_replica_lag is set: the applier must see pg_stat_replication's lag


def _comment(text: str) -> str:
    return "-- " + text.replace("\n", "\n-- ")


def _list(names: Iterable[sql.Composable]) -> sql.Composed:
    return sql.SQL(", ").join(names)


def _grant(privileges: str, on: sql.Composable, role: str) -> sql.Composed:
    return sql.SQL("GRANT {} ON {} TO {};").format(sql.SQL(privileges), on, sql.Identifier(role))


def _schemas(names: Iterable[str]) -> sql.Composed:
    return sql.SQL("SCHEMA {}").format(_list(sql.Identifier(s) for s in sorted(set(names))))


def _history(schema: str, names: Iterable[str]) -> sql.Composed:
    return _list(sql.Identifier(schema, n) for n in names)


def grant_sql(facts: GrantFacts, roles: Roles) -> str:
    """The GRANT statements both roles need on this database, with a comment per group."""
    lines: list[str | sql.Composable] = []
    for role in (roles.apply, roles.read):
        if role not in facts.existing_roles:
            lines.append(
                _comment(
                    f"role {role} does not exist yet; create it first, e.g.\n"
                    + sql.SQL("CREATE ROLE {} LOGIN PASSWORD '...';")
                    .format(sql.Identifier(role))
                    .as_string()
                )
            )
    lines += _apply_grants(facts, roles.apply)
    lines += _read_grants(facts, roles)
    return "\n".join(x if isinstance(x, str) else x.as_string() for x in lines) + "\n"


def _apply_grants(facts: GrantFacts, role: str) -> list[str | sql.Composable]:
    history = facts.history_schema
    lines: list[str | sql.Composable] = [
        _comment(
            f"{role}: plan, apply, rollback, refresh-views, status, verify.\n"
            "CREATE/DROP INDEX and REFRESH need ownership of the table or view: membership "
            "in its owner gives it"
            + "; it gives the materialized views it creates to that owner too (so they count "
            "as dbopt's own), which needs membership with SET on PostgreSQL 16+ (the default)."
        )
    ]
    for owner in facts.owners:
        if owner == role:
            continue
        if owner in facts.superuser_owners:
            lines.append(
                _comment(
                    f"some of these tables belong to the superuser {owner}: membership in it "
                    f"would make {role} a superuser. Give them to an application role first "
                    "(ALTER TABLE ... OWNER TO app_owner), then run dbopt init again"
                )
            )
            continue
        lines.append(sql.SQL("GRANT {} TO {};").format(sql.Identifier(owner), sql.Identifier(role)))
    if facts.created_in:
        lines.append(
            _comment(
                "CREATE INDEX and CREATE MATERIALIZED VIEW also need CREATE on the schema the "
                "object goes in"
            )
        )
        lines.append(_grant("CREATE", _schemas(facts.created_in), role))
    if facts.view_reads:
        lines.append(_comment("the materialized views' queries read these"))
        lines.append(_grant("SELECT", _list(n.ident() for n in facts.view_reads), role))
    lines.append(_comment("dbopt normalises definitions on temporary copies (rolled back)"))
    lines.append(
        _grant("TEMPORARY", sql.SQL("DATABASE {}").format(sql.Identifier(facts.database)), role)
    )
    lines.append(_grant("USAGE", _schemas([history]), role))
    lines.append(_grant("SELECT, INSERT, UPDATE", _history(history, WRITTEN), role))
    lines.append(_grant("SELECT", _history(history, (STAMP,)), role))
    lines.append(_grant("USAGE", sql.SQL("SEQUENCE {}").format(_history(history, SEQUENCES)), role))
    if facts.reads_lag:
        lines.append(_comment("max_replica_lag reads the standbys' lag in pg_stat_replication"))
        lines.append(sql.SQL("GRANT pg_read_all_stats TO {};").format(sql.Identifier(role)))
    return lines


def _read_grants(facts: GrantFacts, roles: Roles) -> list[str | sql.Composable]:
    history = facts.history_schema
    reader = roles.read
    lines: list[str | sql.Composable] = [
        _comment(
            f"{reader}: plan, status, verify (EXPLAIN ANALYZE runs the budgeted queries "
            "read-only; they read these relations)."
        ),
        _grant("TEMPORARY", sql.SQL("DATABASE {}").format(sql.Identifier(facts.database)), reader),
        _grant("USAGE", _schemas([history]), reader),
        _grant("SELECT", _history(history, (*WRITTEN, STAMP)), reader),
    ]
    schemas = {n.schema for n in facts.budget_reads} | set(facts.view_schemas)
    if schemas:
        lines.append(_grant("USAGE", _schemas(schemas), reader))
    if facts.budget_reads:
        lines.append(_grant("SELECT", _list(n.ident() for n in facts.budget_reads), reader))
    if facts.view_schemas:
        lines.append(
            _comment(
                f"the materialized views {roles.apply} creates (now or later) are readable too"
            )
        )
        lines.append(
            sql.SQL(
                "ALTER DEFAULT PRIVILEGES FOR ROLE {} IN {} GRANT SELECT ON TABLES TO {};"
            ).format(
                sql.Identifier(roles.apply),
                _schemas(facts.view_schemas),
                sql.Identifier(reader),
            )
        )
    return lines


def sorted_names(names: Iterable[QualifiedName]) -> tuple[QualifiedName, ...]:
    """Names in a stable order (for the facts above)."""
    return tuple(sorted(set(names), key=str))


__all__: Sequence[str] = ("GrantFacts", "Roles", "grant_sql", "sorted_names")
