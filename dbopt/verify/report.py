"""Reports as data: the JSON document of a run (what the CLI prints and saves), and reading
a saved one back as a :class:`Baseline`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from dbopt.verify.hypothetical import HypotheticalReport
from dbopt.verify.measurement import TIMING_NOTE
from dbopt.verify.noise import NOISE_SQL, Noise
from dbopt.verify.run import QueryResult, VerifyReport
from dbopt.verify.text import explanation, plan_text
from dbopt.verify.verdict import (
    Baseline,
    BaselineEntry,
    BaselineError,
    BaselineProblem,
    Finding,
    Status,
    query_fingerprint,
)

#: Format version of the JSON report (what is saved and read back as a baseline).
REPORT_VERSION = 1

#: A JSON object, as json.dumps takes it.
JsonObject = dict[str, Any]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _findings(findings: tuple[Finding, ...]) -> list[JsonObject]:
    return [
        {"status": f.status.value, "kind": f.kind.value, "message": f.message} for f in findings
    ]


def result_dict(result: QueryResult) -> JsonObject:
    """One query of the JSON report."""
    b, m, v = result.budget, result.measurement, result.verdict
    return {
        "name": b.name,
        "table": b.relation,
        "location": str(b.location),
        "status": v.status.value,
        "outcome": m.outcome.value,
        "p50_ms": _round(m.p50_ms),
        "p95_ms": _round(m.p95_ms),
        "max_ms": _round(m.max_ms),
        "budget_ms": b.budget_ms,
        "warn_ms": b.warn_ms,
        "p95_band_ms": None if v.p95_band is None else [_round(x) for x in v.p95_band],
        "max_buffers": b.max_buffers,
        "max_rows_examined": b.max_rows_examined,
        "max_cost": b.max_cost,
        "planning_ms": _round(m.planning_p50_ms),
        "shared_hit": m.shared_hit,
        "shared_read": m.shared_read,
        "buffers": m.buffers,
        "rows_examined": m.rows_examined,
        "cost": m.cost,
        "rows": m.rows,
        "runs": len(m.execution_ms),
        "measurements": m.measurements,
        "warmup": m.warmup,
        "timeout_ms": m.timeout_ms,
        "indexes": list(m.indexes_used),
        "scans": list(m.scans),
        "plan_shape": list(m.shape),
        "sql_sha256": query_fingerprint(b),
        "findings": _findings(v.findings),
        "culprit": v.culprit.label if v.culprit else None,
        "culprit_why": v.culprit_why,
        "meant_indexes": [mi.describe() for mi in v.meant],
        "plan_stability": result.stability.as_dict() if result.stability else None,
        "plan": plan_text(m.plan, v.culprit, v.culprit_why) if m.plan else None,
        "explanation": explanation(result),
        "execution_ms": [round(t, 3) for t in m.execution_ms],
    }


def noise_dict(noise: Noise | None) -> JsonObject | None:
    """The machine's jitter as JSON (None when it was not measured)."""
    if noise is None:
        return None
    return {
        "query": NOISE_SQL,
        "runs": noise.runs,
        "p50_ms": _round(noise.p50_ms),
        "p95_ms": _round(noise.p95_ms),
        "max_ms": _round(noise.max_ms),
        "jitter": round(noise.jitter, 4),
    }


def report_dict(report: VerifyReport) -> JsonObject:
    """The report as JSON-ready data: what ``--format json`` prints and what is saved."""
    return {
        "dbopt_verify": REPORT_VERSION,
        "server_version": report.server_version,
        "timing": TIMING_NOTE,
        "baseline": report.baseline,
        "regression_threshold": report.threshold,
        "noise": noise_dict(report.noise),
        "retries": report.retries,
        "summary": {s.value: report.count(s) for s in Status},
        "queries": [result_dict(r) for r in report.results],
    }


def save_report(report: VerifyReport, path: Path) -> None:
    """Write :func:`report_dict` to ``path``, to serve as a later baseline."""
    path.write_text(json.dumps(report_dict(report), indent=2) + "\n", encoding="utf-8")


def load_baseline(path: Path) -> Baseline:
    """Read a report written by :func:`save_report`; BaselineError when it is missing or not one."""
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise BaselineError(path, BaselineProblem.MISSING, "no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BaselineError(
            path, BaselineProblem.UNREADABLE, f"not a dbopt verify report: {exc}"
        ) from None
    if not isinstance(data, dict) or data.get("dbopt_verify") != REPORT_VERSION:
        raise BaselineError(
            path,
            BaselineProblem.NOT_A_REPORT,
            f"not a dbopt verify report (version {REPORT_VERSION})",
        )
    entries: dict[str, BaselineEntry] = {}
    for item in data.get("queries", []):
        try:
            p95 = item.get("p95_ms")
            if p95 is not None and not 0 <= float(p95) < math.inf:
                raise ValueError(f"p95_ms {p95!r}")  # a time: never negative, never inf
            entries[str(item["name"])] = BaselineEntry(
                p95_ms=None if p95 is None else float(p95),
                shape=tuple(str(s) for s in item.get("plan_shape", [])),
                sql_sha256=item.get("sql_sha256"),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise BaselineError(
                path, BaselineProblem.MALFORMED, f"a query entry is malformed: {item!r}"
            ) from None
    return Baseline(str(path), entries)


def hypothetical_dict(report: HypotheticalReport) -> JsonObject:
    """The hypothetical report as JSON-ready data."""
    return {
        "dbopt_verify_hypothetical": REPORT_VERSION,
        "server_version": report.server_version,
        "hypopg_version": report.hypopg_version,
        "note": "estimated by the planner (EXPLAIN without ANALYZE); nothing was built",
        "indexes": [
            {
                "name": h.spec.name,
                "table": str(h.spec.table),
                "hypothetical_name": h.hypo_name,
                "error": h.error,
            }
            for h in report.indexes
        ],
        "queries": [
            {
                "name": q.budget.name,
                "table": q.budget.relation,
                "status": q.status.value,
                "cost_before": q.cost_before,
                "cost_after": q.cost_after,
                "cost_change": None if q.change is None else round(q.change, 4),
                "would_use": list(q.would_use),
                "findings": _findings(q.findings),
                "plan_before": plan_text(q.plan_before) if q.plan_before else None,
                "plan_after": plan_text(q.plan_after) if q.plan_after else None,
                "explanation": explanation(q),
            }
            for q in report.queries
        ],
    }
