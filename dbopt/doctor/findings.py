"""What `dbopt doctor` finds: a finding model, its ranking, and the report as JSON-ready data.

Pure values: the checks (one module per family) build findings, the CLI renders them (table,
plain, markdown, JSON, SARIF), `dbopt report --html` reads the JSON back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from dbopt.model import Location

#: Format version of doctor's JSON (what `report --doctor-json` reads back).
DOCTOR_JSON_VERSION = 1


class Severity(StrEnum):
    """How much a finding matters: ``error`` is broken now, ``warning`` costs something every
    day, ``info`` is worth knowing."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        """0 for error, 1 for warning, 2 for info (sort order)."""
        return {"error": 0, "warning": 1, "info": 2}[self.value]


class Check(StrEnum):
    """The kind of a finding (SARIF's rule id is ``dbopt/<value>``)."""

    UNUSED = "unused-index"
    DUPLICATE = "duplicate-index"
    REDUNDANT = "redundant-index"
    UNMANAGED_DUPLICATE = "unmanaged-duplicate"
    INVALID = "invalid-index"
    BLOAT = "index-bloat"
    FK_UNINDEXED = "foreign-key-without-index"
    SPEC_UNUSED = "spec-index-unbudgeted"
    VIEW_NEVER_REFRESHED = "view-never-refreshed"
    VIEW_OVERDUE = "view-overdue"


#: One sentence per check: what it means (SARIF's rule descriptions, the docs' table).
CHECK_HELP: dict[Check, str] = {
    Check.UNUSED: "An index no scan used in its window (since the statistics were reset or it "
    "was built, whichever is later): every write pays for it.",
    Check.DUPLICATE: "Two indexes with the same definition: one of them is pure write cost.",
    Check.REDUNDANT: "An index whose lookups a wider index with the same leading columns serves.",
    Check.UNMANAGED_DUPLICATE: "An index in no spec that duplicates or is covered by a spec'd one.",
    Check.INVALID: "An INVALID index (a failed concurrent build, or a partitioned index missing "
    "a partition's index): never used, still maintained.",
    Check.BLOAT: "A btree index much larger than its entries need: a rebuild gives space back.",
    Check.FK_UNINDEXED: "A foreign key whose referencing columns no index leads with.",
    Check.SPEC_UNUSED: "A spec'd index no budgeted query expects (expect: uses_index).",
    Check.VIEW_NEVER_REFRESHED: "A spec'd materialized view that holds no data.",
    Check.VIEW_OVERDUE: "A spec'd materialized view not refreshed since its schedule's last tick.",
}


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem: the object, why it matters, the numbers behind it and the fix."""

    check: Check
    severity: Severity
    object: str  # schema.name of the index, view or constraint
    table: str  # schema.name of its table ("" for a view)
    message: str  # what was found, one line
    why: str  # why it matters
    fix: str  # a spec change or a command (SQL composed with psycopg.sql)
    numbers: tuple[tuple[str, int | float | str | None], ...] = ()
    #: Where the spec that concerns it was written (SARIF points there), if any.
    location: Location | None = None
    #: Sort weight within a severity (bytes at stake, writes...): larger first.
    weight: float = 0.0
    #: The index's OID when the finding is about one (one finding per index, no bloat
    #: advice for an index another finding drops).
    oid: int | None = None
    #: Where a file-based UI should point when there is no ``location``: the spec file of
    #: the finding's table, if it has one (SARIF's physical location).
    anchor: Location | None = None


@dataclass(frozen=True, slots=True)
class IndexRow:
    """One index of the inventory (sizes and scans for the report, whatever its findings)."""

    name: str
    table: str
    method: str
    size_bytes: int
    scans: int
    valid: bool
    managed: bool  # in the specs
    origin: str  # dbopt, constraint NAME, -


@dataclass(frozen=True, slots=True)
class ViewRow:
    """A spec'd materialized view and how fresh it is (as `dbopt status` computes it)."""

    name: str
    exists: bool
    populated: bool | None
    schedule: str | None
    last_refresh: datetime | None
    age_s: float | None
    overdue: bool


@dataclass(frozen=True, slots=True)
class DoctorReport:
    """Every finding of one doctor run, and what they were computed from."""

    findings: tuple[Finding, ...]
    server_version: str
    database: str
    #: When the statistics scans count from (None: never reset, so unknown), and their age.
    stats_reset: datetime | None
    stats_age_s: float | None
    #: Nodes whose scans were summed (the target first), and those that could not be read.
    nodes: tuple[str, ...] = ()
    unreachable: tuple[str, ...] = ()
    #: Things the person should know about this run (a missing extension or grant...).
    notes: tuple[str, ...] = ()
    bloat_source: str = "estimate"  # or "pgstattuple"
    indexes: tuple[IndexRow, ...] = ()
    views: tuple[ViewRow, ...] = ()
    thresholds: dict[str, Any] = field(default_factory=dict)

    def count(self, severity: Severity) -> int:
        """How many findings have ``severity``."""
        return sum(1 for f in self.findings if f.severity is severity)

    def fails(self, fail_on: Severity | None) -> bool:
        """True when a finding is at least as severe as ``fail_on`` (None: never)."""
        if fail_on is None:
            return False
        return any(f.severity.rank <= fail_on.rank for f in self.findings)


def ranked(findings: Sequence[Finding]) -> tuple[Finding, ...]:
    """Errors first, then warnings, then info; within each, the most at stake first, then by
    check and name so the order is stable."""
    return tuple(
        sorted(findings, key=lambda f: (f.severity.rank, -f.weight, f.check.value, f.object))
    )


def _when(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def finding_dict(f: Finding) -> dict[str, Any]:
    """One finding as JSON-ready data."""
    return {
        "check": f.check.value,
        "severity": f.severity.value,
        "object": f.object,
        "table": f.table,
        "message": f.message,
        "why": f.why,
        "fix": f.fix,
        "numbers": dict(f.numbers),
        "location": None
        if f.location is None
        else {"file": f.location.file, "line": f.location.line, "column": f.location.column},
    }


def report_dict(report: DoctorReport) -> dict[str, Any]:
    """The report as JSON-ready data: what ``doctor --format json`` prints and ``report
    --doctor-json`` reads."""
    return {
        "dbopt_doctor": DOCTOR_JSON_VERSION,
        "server_version": report.server_version,
        "database": report.database,
        "stats_reset": _when(report.stats_reset),
        "stats_age_s": None if report.stats_age_s is None else round(report.stats_age_s),
        "nodes": list(report.nodes),
        "unreachable": list(report.unreachable),
        "notes": list(report.notes),
        "bloat_source": report.bloat_source,
        "thresholds": report.thresholds,
        "summary": {s.value: report.count(s) for s in Severity},
        "findings": [finding_dict(f) for f in report.findings],
        "indexes": [
            {
                "index": i.name,
                "table": i.table,
                "method": i.method,
                "size_bytes": i.size_bytes,
                "scans": i.scans,
                "valid": i.valid,
                "managed": i.managed,
                "origin": i.origin,
            }
            for i in report.indexes
        ],
        "views": [
            {
                "view": v.name,
                "exists": v.exists,
                "populated": v.populated,
                "schedule": v.schedule,
                "last_refresh": _when(v.last_refresh),
                "age_s": None if v.age_s is None else round(v.age_s),
                "overdue": v.overdue,
            }
            for v in report.views
        ],
    }
