"""`dbopt init` as a use case: create (or upgrade) the history once, then the grants of the
two roles, from what the database says of the specs' tables, views and queries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors as pgerrors
from psycopg import sql

from dbopt.catalog import catalog_sql, inspect
from dbopt.config import Target
from dbopt.db import connect, server_message
from dbopt.errors import PrivilegeError
from dbopt.grants import GrantFacts, Roles, grant_sql, sorted_names
from dbopt.history import HISTORY_VERSION, History
from dbopt.locks import take_run_lock
from dbopt.model import SpecSet
from dbopt.privileges import budget_relations, resolve, view_relations
from dbopt.replicas import require_primary


@dataclass(frozen=True, slots=True)
class InitOutcome:
    """What ``dbopt init`` did to the history, and the grants for the two roles."""

    done: str  # created, upgraded, or already current
    grants: str  # SQL for a DBA to read and run
    notes: tuple[str, ...] = ()


def init(target: Target, specs: SpecSet, history: History, roles: Roles) -> InitOutcome:
    """Create (or upgrade, stamping its layout version) dbopt's history once, as a role that
    may; then the GRANT statements an applying role and a read-only role need here."""
    with connect(target.dsn, application_name="dbopt-init", settings=target.settings) as conn:
        require_primary(conn, "init")
        take_run_lock(conn, wait=False)
        facts = history.facts(conn)
        notes: list[str] = []
        if facts.exists and facts.version == HISTORY_VERSION:
            done = f"dbopt's history in schema {history.schema} is current (layout {facts.version})"
            missing = ", ".join(history.missing_indexes(conn))
            if missing:
                try:
                    history.add_indexes(conn)
                    done += f"; added its read indexes ({missing})"
                except (
                    pgerrors.InsufficientPrivilege,
                    pgerrors.LockNotAvailable,
                    pgerrors.QueryCanceled,
                ) as exc:
                    notes.append(
                        f"the history lacks its read indexes ({missing}): what a run reads of "
                        f"it grows with its length until `dbopt init` adds them, as a role that "
                        f"owns its tables and may create in schema {history.schema} "
                        f"({server_message(exc)})"
                    )
        else:
            problem = facts.setup_problem()
            if problem:
                raise PrivilegeError(problem)
            history.install(conn, facts)
            done = facts.install_words()
        after = history.facts(conn)
        grant_facts = _grant_facts(conn, target, specs, history, roles)
        keeper = after.object("changes").owner or after.role
        notes += _credibility_notes(conn, keeper, grant_facts)
    return InitOutcome(done, grant_sql(grant_facts, roles), tuple(notes))


def _grant_facts(
    conn: psycopg.Connection[Any], target: Target, specs: SpecSet, history: History, roles: Roles
) -> GrantFacts:
    changed = sorted({s.table for s in specs.indexes} | {v.name for v in specs.views}, key=str)
    catalog = inspect(conn, changed)
    owners = sorted({catalog.relations[n].owner for n in changed if n in catalog.relations})
    path = target.settings.search_path
    view_reads = resolve(conn, view_relations(specs.views), path)
    budget_reads = resolve(conn, budget_relations(specs), path)
    existing_views = [v.name for v in specs.views if v.name in catalog.relations]
    with conn.cursor() as cur:
        cur.execute(catalog_sql("roles"), ([*owners, roles.apply, roles.read],))
        known = {name: bool(superuser) for name, superuser in cur.fetchall()}
        cur.execute(catalog_sql("current_database"))
        row = cur.fetchone()
    assert row is not None
    return GrantFacts(
        database=str(row[0]),
        history_schema=history.schema,
        server_version=conn.info.server_version,
        owners=tuple(owners),
        superuser_owners=tuple(o for o in owners if known.get(o)),
        created_in=tuple(sorted({n.schema for n in changed})),
        view_schemas=tuple(sorted({v.name.schema for v in specs.views})),
        view_reads=sorted_names(a.name for a in view_reads),
        budget_reads=sorted_names([*(a.name for a in budget_reads), *existing_views]),
        existing_roles=tuple(sorted(known)),
        reads_lag=target.settings.max_replica_lag_ms > 0,
    )


def _credibility_notes(conn: psycopg.Connection[Any], keeper: str, facts: GrantFacts) -> list[str]:
    """dbopt counts an object as its own only where the history's owner is a member of the
    owner of its table: say where that does not hold, and what would make it hold."""
    rows = conn.execute(
        catalog_sql("not_member_of"), {"role": keeper, "of": list(facts.owners)}
    ).fetchall()
    notes = []
    for (owner,) in rows:
        if owner in facts.superuser_owners:
            notes.append(
                f"tables the specs name belong to the superuser {owner}: dbopt will not count "
                f"what it makes on them as its own (it would never drop it) unless the "
                f"history's owner is a superuser; give the tables to an application role"
            )
        else:
            notes.append(
                f"the history's owner {keeper} is not a member of {owner}, which owns tables "
                f"the specs name: dbopt will not count what it makes on them as its own (it "
                "would never drop it). "
                + sql.SQL("GRANT {} TO {}")
                .format(sql.Identifier(owner), sql.Identifier(keeper))
                .as_string()
                + f", or create the history as {owner}"
            )
    return notes
