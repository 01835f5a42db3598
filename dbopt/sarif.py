"""Doctor's findings as SARIF 2.1.0, for code-scanning UIs (GitHub, GitLab, Azure DevOps).

Minimal and valid: one run, the tool's driver with one rule per check, one result per
finding. A finding about a spec'd index or view points at its spec file and line (a
physical location, relative to the working directory when under it); any other finding at
the database object (a logical location), since there is no file to annotate.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dbopt import __version__
from dbopt.doctor.findings import CHECK_HELP, Check, DoctorReport, Finding, Severity

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"

#: SARIF levels are error, warning, note.
_LEVELS = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}


def rule_id(check: Check) -> str:
    """``dbopt/<check>``."""
    return f"dbopt/{check.value}"


def _uri(file: str, base: Path) -> str:
    path = Path(file)
    if path.is_absolute():
        try:
            path = path.relative_to(base)
        except ValueError:
            return path.as_uri()
    return path.as_posix()


def _location(f: Finding, base: Path) -> dict[str, Any]:
    if f.location is not None:
        return {
            "physicalLocation": {
                "artifactLocation": {"uri": _uri(f.location.file, base)},
                "region": {"startLine": f.location.line, "startColumn": f.location.column},
            }
        }
    return {
        "logicalLocations": [
            {
                "fullyQualifiedName": f.object,
                "kind": "member" if f.table else "type",
            }
        ]
    }


def sarif(report: DoctorReport, base: Path | None = None) -> dict[str, Any]:
    """The SARIF log of ``report``; spec paths are made relative to ``base`` (default: the
    working directory), as code-scanning UIs expect paths relative to the repository."""
    root = base or Path(os.getcwd())
    results = [
        {
            "ruleId": rule_id(f.check),
            "level": _LEVELS[f.severity],
            "message": {"text": f"{f.message}. Why: {f.why}. Fix: {f.fix}"},
            "locations": [_location(f, root)],
            "properties": {"object": f.object, "table": f.table, **dict(f.numbers)},
        }
        for f in report.findings
    ]
    rules = [
        {
            "id": rule_id(check),
            "name": check.value,
            "shortDescription": {"text": CHECK_HELP[check]},
            "help": {"text": f"{CHECK_HELP[check]} See docs/doctor.md."},
        }
        for check in Check
    ]
    return {
        "version": SARIF_VERSION,
        "$schema": SARIF_SCHEMA,
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "dbopt doctor",
                        "version": __version__,
                        "rules": rules,
                    }
                },
                "results": results,
            }
        ],
    }
