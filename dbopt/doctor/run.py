"""`dbopt doctor` as a library call: read everything on one read-only session, run the checks,
rank the findings. Never writes, never waits long on a lock (short lock_timeout, a
statement_timeout), works as a non-superuser (pg_stat_* views are readable by every role)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import psycopg

from dbopt.catalog import catalog_sql
from dbopt.config import Settings, Target
from dbopt.db import connect
from dbopt.doctor import bloat as bl
from dbopt.doctor.facts import (
    IndexFacts,
    read_btree_widths,
    read_foreign_keys,
    read_indexes,
    read_stats_window,
)
from dbopt.doctor.findings import DoctorReport, IndexRow, ranked
from dbopt.doctor.foreignkeys import find_unindexed
from dbopt.doctor.redundancy import Managed, find_redundant
from dbopt.doctor.specs import find_stale_views, find_unbudgeted, view_rows
from dbopt.doctor.usage import YOUNG_STATS, find_invalid, find_unused
from dbopt.errors import ConfigError, ConnectError
from dbopt.history import History
from dbopt.model import Location, QualifiedName, SpecSet
from dbopt.replicas import index_scans

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


def _managed(specs: SpecSet) -> dict[str, Managed]:
    return {str(s.qualified_name): Managed(s.location, s.reason) for s in specs.all_indexes}


def _spec_files(specs: SpecSet) -> dict[str, Location]:
    out: dict[str, Location] = {}
    for s in specs.indexes:
        out.setdefault(str(s.table), Location(s.location.file, 1, 1))
    return out


def _node_scans(
    target: Target, indexes: list[IndexFacts], primary_name: str
) -> tuple[dict[int, int], tuple[str, ...], tuple[str, ...]]:
    """Scans per index OID summed over the target and its listed standbys; the nodes read
    and those that could not be."""
    totals = {i.oid: i.scans for i in indexes}
    if not target.replicas:
        return totals, (), ()
    by_name = {i.qualified: i.oid for i in indexes}
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
                found = index_scans(node, list(by_name))
        except (ConnectError, ConfigError, psycopg.Error) as exc:
            unreachable.append(f"{replica.name}: {str(exc).splitlines()[0]}")
            continue
        nodes.append(replica.name)
        for name, count in found.items():
            totals[by_name[name]] += count
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
        owned = {o.oid: o.run_id for o in history.owned(conn) if o.oid is not None}
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
                # Only what could be worth a rebuild is read in full.
                measured = [
                    bl.exact(conn, schema, w)
                    for w in widths
                    if w.pages * w.block_size >= options.bloat_min_bytes
                ]
    stats_age = (
        None if window.stats_reset is None else (window.now - window.stats_reset).total_seconds()
    )
    if window.stats_reset is None:
        notes.append(
            "the statistics were never reset here: scans count since they began (a crash "
            "or pg_stat_reset() starts them again), which doctor cannot date"
        )
    elif stats_age is not None and stats_age < YOUNG_STATS.total_seconds():
        notes.append(
            f"the statistics are {stats_age / 86400:.1f} days old: unused-index findings are "
            "info until they are older than 7 days"
        )
    scans, nodes, unreachable = _node_scans(target, indexes, "primary")
    notes += [f"scans unknown on {u}" for u in unreachable]
    managed = _managed(specs)
    findings = find_invalid(indexes, managed, owned)
    findings += find_redundant(indexes, managed)
    findings += find_unused(
        indexes,
        managed,
        stats_age_s=stats_age,
        scans=scans,
        partial_nodes=bool(unreachable),
        skip=frozenset(f.object for f in findings),
    )
    by_oid = {i.oid: i for i in indexes}
    findings += bl.find_bloat(
        measured,
        by_oid,
        managed,
        min_bytes=options.bloat_min_bytes,
        min_ratio=options.bloat_min_ratio,
    )
    findings += find_unindexed(keys, indexes, _spec_files(specs))
    findings += find_unbudgeted(specs)
    views = view_rows(specs, populated, refreshes, window.now)
    findings += find_stale_views(specs, views)
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
                managed=i.qualified in managed,
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
