"""Doctor's findings as SARIF 2.1.0, for code-scanning UIs (GitHub, GitLab, Azure DevOps).

Minimal and valid: one run, the tool's driver with one rule per check, one result per
finding. Every result has a physical location, since GitHub code scanning rejects a result
without one: the spec file and line of a spec'd index or view; else the spec file of its
table (line 1); else the fallback file (dbopt.yaml, or the first spec file) at line 1. Paths
are relative to the repository (the working directory). The database object is named too, as
a logical location; and a partial fingerprint (the check and the object) lets code scanning
follow a finding from run to run whatever line it points at.
"""

from __future__ import annotations

import hashlib
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
    """``file`` relative to ``base`` (``../`` when outside it), as a POSIX path."""
    path = Path(file)
    if path.is_absolute():
        path = Path(os.path.relpath(path, base))
    return path.as_posix()


def _location(f: Finding, base: Path, fallback: str) -> dict[str, Any]:
    where = f.location or f.anchor
    region = (
        {"startLine": max(1, where.line), "startColumn": max(1, where.column)}
        if where is not None
        else {"startLine": 1}
    )
    return {
        "physicalLocation": {
            "artifactLocation": {"uri": _uri(where.file if where else fallback, base)},
            "region": region,
        },
        "logicalLocations": [
            {
                "fullyQualifiedName": f.object,
                "kind": "member" if f.table else "type",
            }
        ],
    }


def fingerprint(f: Finding) -> str:
    """A stable identity for a finding: its check, object and table, hashed."""
    key = "\x00".join((f.check.value, f.object, f.table))
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def sarif(
    report: DoctorReport, base: Path | None = None, fallback: str = "dbopt.yaml"
) -> dict[str, Any]:
    """The SARIF log of ``report``; spec paths are made relative to ``base`` (default: the
    working directory), as code-scanning UIs expect paths relative to the repository;
    ``fallback`` is the file a finding with no spec file of its own points at."""
    root = base or Path(os.getcwd())
    results = [
        {
            "ruleId": rule_id(f.check),
            "level": _LEVELS[f.severity],
            "message": {"text": f"{f.message}. Why: {f.why}. Fix: {f.fix}"},
            "locations": [_location(f, root, fallback)],
            "partialFingerprints": {"dbopt/finding/v1": fingerprint(f)},
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
