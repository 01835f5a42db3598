"""`dbopt doctor` as a library call: read everything on one read-only session, run the checks,
rank the findings. Never writes, never waits long on a lock (short lock_timeout, a
statement_timeout), works as a non-superuser (pg_stat_* views are readable by every role)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import psycopg

from dbopt.catalog import catalog_sql
from dbopt.config import Settings, Target
from dbopt.db import connect
from dbopt.doctor import bloat as bl
from dbopt.doctor.facts import (
    IndexFacts,
    read_btree_widths,
    read_built_at,
    read_foreign_keys,
    read_indexes,
    read_node_scans,
    read_stats_window,
)
from dbopt.doctor.findings import DoctorReport, Finding, IndexRow, ranked
from dbopt.doctor.foreignkeys import find_unindexed
from dbopt.doctor.keep import Drops
from dbopt.doctor.redundancy import Managed, find_redundant
from dbopt.doctor.specs import find_stale_views, find_unbudgeted, view_rows
from dbopt.doctor.usage import YOUNG_STATS, find_invalid, find_unused
from dbopt.errors import ConfigError, ConnectError
from dbopt.history import History, OwnedObject
from dbopt.model import Location, QualifiedName, SpecSet

#: Doctor's own bounds: a catalog read waits at most this long for a lock ...
DOCTOR_LOCK_TIMEOUT_MS = 1_000
#: ... and no statement runs longer than this (pgstatindex of a huge index included).
DOCTOR_STATEMENT_TIMEOUT_MS = 60_000


@dataclass(frozen=True, slots=True)
class DoctorOptions:
    """What to check and how: ``exact`` asks pgstattuple for bloat; the bloat thresholds."""

    exact: bool = False
    bloat_min_bytes: int = bl.BLOAT_MIN_BYTES
    bloat_min_ratio: float = bl.BLOAT_MIN_RATIO


def _managed(specs: SpecSet) -> dict[QualifiedName, Managed]:
    return {s.qualified_name: Managed(s.location, s.reason) for s in specs.all_indexes}


def _spec_files(specs: SpecSet) -> dict[QualifiedName, Location]:
    out: dict[QualifiedName, Location] = {}
    for s in specs.indexes:
        out.setdefault(s.table, Location(s.location.file, 1, 1))
    for v in specs.views:
        out.setdefault(v.name, Location(v.location.file, 1, 1))
    return out


def _built_at(
    conn: psycopg.Connection[Any], history: History, owned: list[OwnedObject]
) -> dict[int, datetime]:
    """When dbopt built each index it owns (by OID); not for one it adopted or swapped out,
    whose build time its history does not know."""
    made = {
        o.change_id: o.oid for o in owned if o.oid is not None and not (o.adopted or o.replaced)
    }
    if not made:
        return {}
    try:
        ended = read_built_at(conn, history.schema, list(made))
    except psycopg.errors.InsufficientPrivilege:
        return {}
    return {made[change]: when for change, when in ended.items()}


def _anchored(
    findings: list[Finding], by_oid: dict[int, IndexFacts], files: dict[QualifiedName, Location]
) -> list[Finding]:
    """Each index finding without a spec location, pointed at its table's spec file."""
    out = []
    for f in findings:
        index = by_oid.get(f.oid) if f.oid is not None else None
        if f.location is None and index is not None and index.table_name in files:
            f = replace(f, anchor=files[index.table_name])
        out.append(f)
    return out


def _node_scans(
    target: Target, indexes: list[IndexFacts], primary_name: str
) -> tuple[dict[int, int], tuple[str, ...], tuple[str, ...]]:
    """Scans per index OID summed over the target and its listed standbys; the nodes read
    and those that could not be."""
    totals = {i.oid: i.scans for i in indexes}
    if not target.replicas:
        return totals, (), ()
    # A partitioned index's scans are its leaves'; a standby has the primary's OIDs.
    counted = {i.oid: i.leaves or (i.oid,) for i in indexes}
    oids = sorted({oid for leaves in counted.values() for oid in leaves})
    nodes, unreachable = [primary_name], []
    for replica in target.replicas:
        try:
            with connect(
                replica.dsn,
                application_name="dbopt-doctor",
                connect_timeout=5,
                settings=_bounded(target),
                read_only=True,
                lock_timeout_ms=DOCTOR_LOCK_TIMEOUT_MS,
            ) as node:
                found = read_node_scans(node, oids)
        except (ConnectError, ConfigError, psycopg.Error) as exc:
            unreachable.append(f"{replica.name}: {str(exc).splitlines()[0]}")
            continue
        nodes.append(replica.name)
        for oid, leaves in counted.items():
            totals[oid] += sum(found.get(leaf, 0) for leaf in leaves)
    return totals, tuple(nodes), tuple(unreachable)


def _bounded(target: Target) -> Settings:
    timeout = target.settings.statement_timeout_ms
    if not timeout or timeout > DOCTOR_STATEMENT_TIMEOUT_MS:
        timeout = DOCTOR_STATEMENT_TIMEOUT_MS
    return replace(target.settings, statement_timeout_ms=timeout)


def diagnose(
    target: Target, specs: SpecSet, history: History, options: DoctorOptions = DoctorOptions()
) -> DoctorReport:
    """Every finding on ``target``, ranked (see :mod:`dbopt.doctor`)."""
    notes: list[str] = []
    with connect(
        target.dsn,
        application_name="dbopt-doctor",
        settings=_bounded(target),
        read_only=True,
        lock_timeout_ms=DOCTOR_LOCK_TIMEOUT_MS,
    ) as conn:
        window = read_stats_window(conn)
        indexes = read_indexes(conn, history.schema)
        keys = read_foreign_keys(conn, history.schema)
        widths = read_btree_widths(conn, history.schema)
        owned_objects = history.owned(conn)
        owned = {o.oid: o.run_id for o in owned_objects if o.oid is not None}
        built = _built_at(conn, history, owned_objects)
        refreshes = history.last_refreshes(conn)
        populated = {
            QualifiedName(r[0], r[1]): bool(r[2])
            for r in conn.execute(catalog_sql("doctor_views")).fetchall()
        }
        measured = [b for b in (bl.estimate(w) for w in widths) if b is not None]
        source = "estimate"
        if options.exact:
            schema, problem = bl.pgstatindex_access(conn)
            if schema is None:
                notes.append(problem)
            else:
                source = "pgstattuple"
                measured, fell_back = bl.measure(
                    conn,
                    schema,
                    widths,
                    options.bloat_min_bytes,
                    {i.oid: i.ident for i in indexes},
                )
                notes += fell_back
    stats_age = (
        None if window.stats_reset is None else (window.now - window.stats_reset).total_seconds()
    )
    if window.stats_reset is None:
        notes.append(
            "the statistics were never reset here: scans count since they began (a crash "
            "or pg_stat_reset() starts them again), which doctor cannot date, so unused-index "
            "findings are info at most"
        )
    elif stats_age is not None and stats_age < YOUNG_STATS.total_seconds():
        notes.append(
            f"the statistics are {stats_age / 86400:.1f} days old: unused-index findings are "
            "info until they are older than 7 days"
        )
    scans, nodes, unreachable = _node_scans(target, indexes, "primary")
    notes += [f"scans unknown on {u}" for u in unreachable]
    managed = _managed(specs)
    drops = Drops(indexes, keys)
    findings = find_invalid(indexes, managed, owned)
    findings += find_redundant(indexes, managed, drops)
    findings += find_unused(
        indexes,
        managed,
        stats_age_s=stats_age,
        scans=scans,
        partial_nodes=bool(unreachable),
        skip=frozenset(f.oid for f in findings if f.oid is not None),
        built=built,
        now=window.now,
        drops=drops,
    )
    by_oid = {i.oid: i for i in indexes}
    findings += bl.find_bloat(
        measured,
        by_oid,
        managed,
        min_bytes=options.bloat_min_bytes,
        min_ratio=options.bloat_min_ratio,
        skip=frozenset(drops.gone),
    )
    files = _spec_files(specs)
    findings += find_unindexed(keys, indexes, files)
    findings += find_unbudgeted(specs)
    views = view_rows(specs, populated, refreshes, window.now)
    findings += find_stale_views(specs, views)
    findings = _anchored(findings, by_oid, files)
    origins = {i.oid: "dbopt" for i in indexes if i.oid in owned}
    return DoctorReport(
        findings=ranked(findings),
        server_version=window.server_version,
        database=window.database,
        stats_reset=window.stats_reset,
        stats_age_s=stats_age,
        nodes=nodes,
        unreachable=unreachable,
        notes=tuple(notes),
        bloat_source=source,
        indexes=tuple(
            IndexRow(
                name=i.qualified,
                table=i.table,
                method=i.method,
                size_bytes=i.size_bytes,
                scans=scans.get(i.oid, i.scans),
                valid=i.is_valid,
                managed=i.ident in managed,
                origin=origins.get(i.oid)
                or (f"constraint {i.constraint_name}" if i.constraint_name else "-"),
            )
            for i in indexes
        ),
        views=tuple(views),
        thresholds={
            "young_stats_days": YOUNG_STATS.days,
            "bloat_min_bytes": options.bloat_min_bytes,
            "bloat_min_ratio": options.bloat_min_ratio,
        },
    )
