"""`dbopt doctor`: what is wrong with a database's indexes and materialized views, and the fix.

One module per check family (usage: unused and INVALID; redundancy: duplicate and redundant;
bloat; foreignkeys; specs: specs against reality), a findings model (findings), what is read
from the database (facts), and the use case that runs them all on one read-only session (run).
Rendering lives in the CLI layer (dbopt/cli/doctor_cmd.py) and dbopt/sarif.py.
"""

from __future__ import annotations

from dbopt.doctor.findings import (
    CHECK_HELP,
    DOCTOR_JSON_VERSION,
    Check,
    DoctorReport,
    Finding,
    Severity,
    report_dict,
)
from dbopt.doctor.run import DoctorOptions, diagnose

__all__ = [
    "CHECK_HELP",
    "DOCTOR_JSON_VERSION",
    "Check",
    "DoctorOptions",
    "DoctorReport",
    "Finding",
    "Severity",
    "diagnose",
    "report_dict",
]
