"""Unused and INVALID indexes.

Unused: no scan since the statistics were reset (on the primary and every listed standby),
or scans under 1 per :data:`RARE_WRITES_PER_SCAN` writes of the table. Indexes that enforce
something (a constraint, uniqueness, a foreign key's reference) are never reported: they work
without being scanned. Young statistics say little, so findings then are only ``info``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta

from dbopt.doctor.facts import IndexFacts
from dbopt.doctor.findings import Check, Finding, Severity
from dbopt.doctor.fixes import drop_concurrently, reindex_concurrently, remove_from_spec
from dbopt.doctor.redundancy import Managed

#: Statistics younger than this cannot call an index unused (a weekly report, a month-end
#: job): findings are downgraded to info and say how young they are.
YOUNG_STATS = timedelta(days=7)

#: An unused index smaller than this costs little: info, not a warning.
UNUSED_WARN_BYTES = 1024 * 1024

#: "Rarely used": fewer scans than one per this many writes (inserts, updates, deletes) of
#: its table, counted only on tables with at least RARE_MIN_WRITES writes.
RARE_WRITES_PER_SCAN = 100
RARE_MIN_WRITES = 10_000


def _age_words(age_s: float | None) -> str:
    if age_s is None:
        return "since the statistics began (never reset: their age is unknown)"
    days = age_s / 86400
    return f"in the {days:.1f} days since the statistics were reset"


def find_unused(
    indexes: Iterable[IndexFacts],
    managed: Mapping[str, Managed],
    *,
    stats_age_s: float | None,
    scans: Mapping[int, int],
    partial_nodes: bool,
    skip: frozenset[str] = frozenset(),
) -> list[Finding]:
    """Indexes nothing scans; ``scans`` is the total per index OID over every node read,
    ``partial_nodes`` that a listed standby could not be read (its scans are unknown)."""
    young = stats_age_s is not None and stats_age_s < YOUNG_STATS.total_seconds()
    out: list[Finding] = []
    for i in indexes:
        if (
            i.enforces
            or not i.is_valid
            or i.building
            or i.relkind != "i"
            or i.is_partition
            or i.qualified in skip
        ):
            continue
        total = scans.get(i.oid, i.scans)
        rare = (
            total > 0
            and i.table_writes >= RARE_MIN_WRITES
            and total * RARE_WRITES_PER_SCAN < i.table_writes
        )
        if total > 0 and not rare:
            continue
        spec = managed.get(i.qualified)
        severity = Severity.WARNING
        if young or partial_nodes or rare or i.size_bytes < UNUSED_WARN_BYTES:
            severity = Severity.INFO
        if total == 0:
            message = f"{i.qualified}: no scan {_age_words(stats_age_s)}"
        else:
            message = (
                f"{i.qualified}: {total} scans against {i.table_writes} writes of "
                f"{i.table} {_age_words(stats_age_s)}"
            )
        caveats = []
        if young:
            caveats.append(f"the statistics are younger than {YOUNG_STATS.days} days")
        if partial_nodes:
            caveats.append("a listed standby could not be read, so its scans are unknown")
        why = (
            "every insert and update of the table maintains it and it takes space, for no "
            "read that the statistics saw; scans on an unlisted standby or by a rare job "
            "are invisible here"
        )
        if caveats:
            why += " (" + "; ".join(caveats) + ")"
        if spec is not None and spec.reason:
            why += f"; its spec says why it exists: {spec.reason}"
        out.append(
            Finding(
                check=Check.UNUSED,
                severity=severity,
                object=i.qualified,
                table=i.table,
                message=message,
                why=why,
                fix=remove_from_spec(i.qualified, spec.location)
                if spec is not None
                else drop_concurrently(i.qualified),
                numbers=(
                    ("scans", total),
                    ("table_writes", i.table_writes),
                    ("size_bytes", i.size_bytes),
                    ("stats_age_s", None if stats_age_s is None else round(stats_age_s)),
                    ("last_scan", None if i.last_scan is None else i.last_scan.isoformat()),
                ),
                location=spec.location if spec else None,
                weight=float(i.size_bytes),
            )
        )
    return out


def find_invalid(
    indexes: Iterable[IndexFacts],
    managed: Mapping[str, Managed],
    owned: Mapping[int, int],
) -> list[Finding]:
    """INVALID indexes (a failed concurrent build) not being built right now; ``owned`` maps
    the OIDs dbopt made to the run that made them."""
    out = []
    for i in indexes:
        if i.is_valid or i.building:
            continue
        run = owned.get(i.oid)
        spec = managed.get(i.qualified)
        if run is not None:
            whose = f"dbopt's own (run {run})"
            fix = (
                "`dbopt apply` repairs it (drops and builds it again)"
                if spec is not None
                else f"`dbopt rollback --run {run}` or `dbopt apply --prune` drops it"
            )
        else:
            whose = "not made by dbopt"
            fix = (
                f"rebuild it: {reindex_concurrently(i.qualified)} "
                f"or drop it: {drop_concurrently(i.qualified)}"
            )
        out.append(
            Finding(
                check=Check.INVALID,
                severity=Severity.ERROR,
                object=i.qualified,
                table=i.table,
                message=f"{i.qualified} is INVALID ({whose})",
                why="no query can use it, yet every write to the table maintains it; a "
                "failed CREATE INDEX CONCURRENTLY leaves one behind",
                fix=fix,
                numbers=(("size_bytes", i.size_bytes), ("dbopt_run", run)),
                location=spec.location if spec else None,
                weight=float(i.size_bytes),
            )
        )
    return out
