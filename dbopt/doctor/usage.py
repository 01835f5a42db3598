"""Unused and INVALID indexes.

Unused: no scan in the window the statistics saw, or scans under 1 per
:data:`RARE_WRITES_PER_SCAN` writes of the table. The window is the shorter of the
statistics' age (since ``pg_stat_database.stats_reset``) and the index's own age (known for
indexes dbopt built, from its history): an index built yesterday has had one day to be used,
whatever the statistics' age. Statistics never reset have no known age: findings are then at
most ``info``, as they are when the window is young. Summed over the primary and every listed
standby; a partitioned index's scans are its partitions'. Indexes that enforce something (a
constraint, uniqueness, a foreign key's reference) are never reported: they work without being
scanned; a replica identity, a CLUSTER index or the last index serving a foreign key is
reported at most as info saying why it stays (dbopt.doctor.keep).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta

from dbopt.doctor.facts import IndexFacts
from dbopt.doctor.findings import Check, Finding, Severity
from dbopt.doctor.fixes import (
    attach_partition,
    create_concurrently,
    drop_concurrently,
    drop_fix,
    index_name,
    reindex_concurrently,
    remove_from_spec,
)
from dbopt.doctor.keep import Drops
from dbopt.doctor.redundancy import Managed, identical
from dbopt.model import QualifiedName

#: A window younger than this cannot call an index unused (a weekly report, a month-end
#: job): findings are downgraded to info and say how young it is.
YOUNG_STATS = timedelta(days=7)

#: An unused index smaller than this costs little: info, not a warning.
UNUSED_WARN_BYTES = 1024 * 1024

#: "Rarely used": fewer scans than one per this many writes (inserts, updates, deletes) of
#: its table, counted only on tables with at least RARE_MIN_WRITES writes.
RARE_WRITES_PER_SCAN = 100
RARE_MIN_WRITES = 10_000


def _window(
    stats_age_s: float | None, built: datetime | None, now: datetime
) -> tuple[float | None, str]:
    """The seconds scans were counted over for one index (None: unknown), and in words."""
    index_age = None if built is None else max(0.0, (now - built).total_seconds())
    if stats_age_s is None:
        if index_age is not None:
            return None, (
                f"since it was built {index_age / 86400:.1f} days ago, as far as the statistics "
                "go (never reset: their start is unknown)"
            )
        return None, "since the statistics began (never reset: their age is unknown)"
    if index_age is not None and index_age < stats_age_s:
        return index_age, f"in the {index_age / 86400:.1f} days since it was built"
    return stats_age_s, f"in the {stats_age_s / 86400:.1f} days since the statistics were reset"


def find_unused(
    indexes: Iterable[IndexFacts],
    managed: Mapping[QualifiedName, Managed],
    *,
    stats_age_s: float | None,
    scans: Mapping[int, int],
    partial_nodes: bool,
    skip: frozenset[int] = frozenset(),
    built: Mapping[int, datetime] | None = None,
    now: datetime | None = None,
    drops: Drops | None = None,
) -> list[Finding]:
    """Indexes nothing scans; ``scans`` is the total per index OID over every node read,
    ``partial_nodes`` that a listed standby could not be read (its scans are unknown),
    ``skip`` the OIDs another finding already names, ``built`` when dbopt built an index
    (per OID), ``drops`` what is already proposed for dropping (see dbopt.doctor.keep)."""
    indexes = list(indexes)
    drops = drops if drops is not None else Drops(indexes, ())
    built = built or {}
    out: list[Finding] = []
    for i in indexes:
        if (
            i.enforces
            or not i.is_valid
            or i.building
            or i.relkind not in ("i", "I")
            or i.is_partition
            or i.oid in skip
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
        since = built.get(i.oid)
        window, words = _window(stats_age_s, since, now or datetime.now(UTC))
        young = window is not None and window < YOUNG_STATS.total_seconds()
        spec = managed.get(i.ident)
        severity = Severity.WARNING
        if window is None or young or partial_nodes or rare or i.size_bytes < UNUSED_WARN_BYTES:
            severity = Severity.INFO
        if total == 0:
            message = f"{i.qualified}: no scan {words}"
        else:
            message = (
                f"{i.qualified}: {total} scans against {i.table_writes} writes of {i.table} {words}"
            )
        caveats = []
        if window is None:
            caveats.append("how long scans were counted is unknown, so this is only info")
        elif young:
            caveats.append(f"that is less than {YOUNG_STATS.days} days")
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
        refusal = drops.refusal(i)
        if refusal is not None:
            severity = Severity.INFO
            why = f"it stays: {refusal[0]}"
            fix = refusal[1]
        else:
            drops.drop(i)
            fix = (
                remove_from_spec(i.ident, spec.location)
                if spec is not None
                else drop_fix(i.ident, partitioned=i.partitioned)
            )
        out.append(
            Finding(
                check=Check.UNUSED,
                severity=severity,
                object=i.qualified,
                table=i.table,
                message=message,
                why=why,
                fix=fix,
                numbers=(
                    ("scans", total),
                    ("table_writes", i.table_writes),
                    ("size_bytes", i.size_bytes),
                    ("stats_age_s", None if stats_age_s is None else round(stats_age_s)),
                    ("window_s", None if window is None else round(window)),
                    ("last_scan", None if i.last_scan is None else i.last_scan.isoformat()),
                ),
                location=spec.location if spec else None,
                weight=float(i.size_bytes),
                oid=i.oid,
            )
        )
    return out


def _partitioned_fix(i: IndexFacts) -> str:
    """How to make an INVALID partitioned index valid, or drop it: neither REINDEX nor
    DROP ... CONCURRENTLY works on one."""
    plain = i.exprs is None and i.pred is None and not any(i.options) and i.nkey == len(i.attnums)
    steps = []
    for partition in i.unattached:
        if plain:
            child = QualifiedName(
                partition.schema, index_name(f"{partition.name}_{'_'.join(i.columns)}_idx")
            )
            steps.append(
                f"{create_concurrently(partition, i.columns, child.name)} "
                f"{attach_partition(i.ident, child)}"
            )
        else:
            steps.append(
                f"build an index of its definition on {partition}, then "
                f"{attach_partition(i.ident, None)}"
            )
    if steps:
        attach = (
            "give each partition without one an index of the same definition (same operator "
            "classes and collations) and attach it: " + " ".join(steps)
        )
    else:
        attach = (
            "make the INVALID indexes of its sub-partitioned partitions valid first (each "
            "is reported too)"
        )
    return (
        f"{attach}{' ' if attach.endswith(';') else '. '}It turns valid when every "
        "partition's index is attached (REINDEX cannot fix it). Or drop it: "
        f"{drop_fix(i.ident, partitioned=True)}"
    )


def find_invalid(
    indexes: Iterable[IndexFacts],
    managed: Mapping[QualifiedName, Managed],
    owned: Mapping[int, int],
) -> list[Finding]:
    """INVALID indexes (a failed concurrent build, or a partitioned index a partition's index
    is missing from) not being built right now; ``owned`` maps the OIDs dbopt made to the
    run that made them. One that duplicates a valid index says so (it is only to drop)."""
    indexes = list(indexes)
    out = []
    for i in indexes:
        if i.is_valid or i.building:
            continue
        run = owned.get(i.oid)
        spec = managed.get(i.ident)
        twin = next((b for b in indexes if b.is_valid and b.oid != i.oid and identical(i, b)), None)
        if run is not None:
            whose = f"dbopt's own (run {run})"
            fix = (
                "`dbopt apply` repairs it (drops and builds it again)"
                if spec is not None
                else f"`dbopt rollback --run {run}` or `dbopt apply --prune` drops it"
            )
        elif twin is not None:
            whose = "not made by dbopt"
            fix = f"drop it: a duplicate of {twin.qualified}: " + drop_fix(
                i.ident, partitioned=i.partitioned
            )
        elif i.partitioned:
            whose = "a partitioned index not made by dbopt"
            fix = _partitioned_fix(i)
        else:
            whose = "not made by dbopt"
            fix = (
                f"rebuild it: {reindex_concurrently(i.ident)} "
                f"or drop it: {drop_concurrently(i.ident)}"
            )
        severity = Severity.ERROR
        why = (
            "no query can use it, yet every write to the table maintains it; a failed CREATE "
            "INDEX CONCURRENTLY leaves one behind"
        )
        if i.partitioned:
            why = (
                "no query plans with it and new partitions get no index from it; it stays "
                "INVALID while a partition has no index attached to it (CREATE INDEX ON ONLY "
                "makes one so)"
            )
        message = f"{i.qualified} is INVALID ({whose})"
        if twin is not None:
            message += f", and a duplicate of the valid {twin.qualified}"
        if i.unseen_build and not i.partitioned:
            severity = Severity.WARNING
            message += "; it may be a build in progress by another role"
            why += (
                "; another role is building an index in this database right now, and this "
                "role cannot see which (GRANT pg_read_all_stats to it to tell): run doctor "
                "again when that build ends"
            )
        out.append(
            Finding(
                check=Check.INVALID,
                severity=severity,
                object=i.qualified,
                table=i.table,
                message=message,
                why=why,
                fix=fix,
                numbers=(
                    ("size_bytes", i.size_bytes),
                    ("dbopt_run", run),
                    ("duplicate_of", None if twin is None else twin.qualified),
                ),
                location=spec.location if spec else None,
                weight=float(i.size_bytes),
                oid=i.oid,
            )
        )
    return out
