"""JUnit XML, the report format CI systems render: one test case per budgeted query.

GitLab, Jenkins, Azure Pipelines and the GitHub test-report actions all read the same small
subset: ``<testsuites><testsuite><testcase><failure message type>body</failure>``, which is
what this writes, with xml.etree so that escaping is never done by hand.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from dbopt.verify import HypotheticalReport, QueryResult, Status, VerifyReport, explanation
from dbopt.verify.budgets import band_text

if TYPE_CHECKING:
    from dbopt.fleet import FleetReport

# XML 1.0 cannot hold these characters at all, escaped or not; query text may.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


@dataclass(frozen=True, slots=True)
class Case:
    """One test case: passed when ``failure`` is None."""

    name: str
    classname: str
    seconds: float = 0.0
    failure: str | None = None
    failure_type: str = "failure"
    details: str = ""
    output: str = ""
    #: Why the case did not run (written as ``<skipped>``).
    skipped: str | None = None


def _clean(text: str) -> str:
    return _NOT_XML.sub("?", text)


@dataclass(frozen=True, slots=True)
class Suite:
    """One testsuite: a name (a fleet's target) and its cases."""

    name: str
    cases: Sequence[Case]


def _counts(cases: Sequence[Case]) -> dict[str, str]:
    failures = sum(1 for c in cases if c.failure is not None and c.failure_type != ERROR)
    errors = sum(1 for c in cases if c.failure is not None and c.failure_type == ERROR)
    return {
        "tests": str(len(cases)),
        "failures": str(failures),
        "errors": str(errors),
        "skipped": str(sum(1 for c in cases if c.skipped is not None)),
        "time": f"{sum(c.seconds for c in cases):.3f}",
    }


#: The ``failure_type`` of a case that could not run (written as ``<error>``).
ERROR = "error"


def junit_xml(suite: str, cases: Sequence[Case]) -> bytes:
    """The JUnit XML document (UTF-8, with its declaration) for one suite of cases."""
    return junit_suites_xml(suite, [Suite(suite, cases)])


def junit_suites_xml(name: str, suites: Sequence[Suite]) -> bytes:
    """The JUnit XML document for many suites (a fleet: one per target)."""
    every = [c for s in suites for c in s.cases]
    root = ET.Element("testsuites", {"name": name, **_counts(every)})
    for suite in suites:
        _suite(root, suite)
    ET.indent(root)
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data + b"\n"


def _suite(root: ET.Element, suite: Suite) -> None:
    suite_el = ET.SubElement(
        root, "testsuite", {"name": _clean(suite.name), **_counts(suite.cases)}
    )
    for case in suite.cases:
        el = ET.SubElement(
            suite_el,
            "testcase",
            {
                "name": _clean(case.name),
                "classname": _clean(case.classname),
                "time": f"{case.seconds:.3f}",
            },
        )
        if case.failure is not None:
            failure = ET.SubElement(
                el,
                "error" if case.failure_type == ERROR else "failure",
                {"message": _clean(case.failure), "type": case.failure_type},
            )
            failure.text = _clean(case.details)
        if case.skipped is not None:
            ET.SubElement(el, "skipped", {"message": _clean(case.skipped)})
        if case.output:
            ET.SubElement(el, "system-out").text = _clean(case.output)


def write_junit(path: Path, suite: str, cases: Sequence[Case]) -> None:
    """Write :func:`junit_xml` to ``path``."""
    path.write_bytes(junit_xml(suite, cases))


def _stats(result: QueryResult) -> str:
    """``p50 .. ms, p95 .. ms (noise band ..), max .. ms, budget .. ms, 20 runs; buffers ..``."""
    b, m, v = result.budget, result.measurement, result.verdict
    budget = f"budget {b.budget_ms:g} ms" if b.budget_ms is not None else "no budget_ms"
    if m.p95_ms is not None and m.p50_ms is not None and m.max_ms is not None:
        band = f" ({band_text(v.p95_band)})" if v.p95_band is not None else ""
        runs = f"{len(m.execution_ms)} runs"
        if m.measurements > 1:
            runs += f" in {m.measurements} measurements"
        text = (
            f"p50 {m.p50_ms:.3f} ms, p95 {m.p95_ms:.3f} ms{band}, max {m.max_ms:.3f} ms, "
            f"{budget}, {runs}"
        )
    else:
        text = f"{budget}, no complete run"
    work = []
    if m.buffers is not None:
        work.append(f"buffers {m.buffers}")
    if m.rows_examined is not None:
        work.append(f"rows examined {m.rows_examined}")
    if m.cost is not None:
        work.append(f"cost {m.cost:.2f}")
    return text + (f"; {', '.join(work)}" if work else "")


def write_junit_suites(path: Path, name: str, suites: Sequence[Suite]) -> None:
    """Write :func:`junit_suites_xml` to ``path``."""
    path.write_bytes(junit_suites_xml(name, suites))


def fleet_suites(report: FleetReport, *, strict: bool = False) -> list[Suite]:
    """One suite per target of a fleet's verify: its queries' cases, or one errored case
    saying why the target could not be verified (unreachable, refused...), or one skipped
    case when it was not started (a CI report shows it skipped, not green and empty)."""
    suites = []
    for row in report.results:
        if isinstance(row.value, VerifyReport):
            cases = [
                replace(c, classname=f"{row.name}.{c.classname}")
                for c in verify_cases(row.value, strict=strict)
            ]
        elif row.outcome == "not started":
            cases = [
                Case(
                    name=row.outcome,
                    classname=f"{row.name}.dbopt.verify",
                    skipped=row.detail or row.outcome,
                )
            ]
        else:
            cases = [
                Case(
                    name=row.outcome,
                    classname=f"{row.name}.dbopt.verify",
                    seconds=row.seconds or 0.0,
                    failure=(row.detail.splitlines() or [row.outcome])[0],
                    failure_type=ERROR,
                    details=row.detail,
                )
            ]
        suites.append(Suite(row.name, cases))
    return suites


def verify_cases(report: VerifyReport, *, strict: bool = False) -> list[Case]:
    """One case per measured query; fail verdicts are failures (unstable ones too when
    ``strict``), warnings and unstable verdicts go to system-out."""
    cases = []
    for result in report.results:
        b, m, v = result.budget, result.measurement, result.verdict
        failed = v.status == Status.FAIL or (strict and v.status == Status.UNSTABLE)
        why = explanation(result)
        shown = [] if failed or v.status == Status.PASS else [f"{v.status.value}: {v.summary}"]
        cases.append(
            Case(
                name=b.name,
                classname=f"dbopt.verify.{b.relation}",
                seconds=sum(m.execution_ms) / 1000,
                failure=v.summary if failed else None,
                failure_type=v.findings[0].kind.value if failed and v.findings else "failure",
                details=why if failed else "",
                output="\n".join([_stats(result), *shown, *(why.splitlines() if shown else [])]),
            )
        )
    return cases


def hypothetical_cases(report: HypotheticalReport) -> list[Case]:
    """One case per query of a --hypothetical run (estimates; nothing was measured)."""
    cases = []
    for q in report.queries:
        failed = q.status == Status.FAIL
        change = f"{q.change:+.0%}" if q.change is not None else "n/a"
        cases.append(
            Case(
                name=q.budget.name,
                classname=f"dbopt.verify.hypothetical.{q.budget.relation}",
                failure=q.findings[0].message if failed and q.findings else None,
                failure_type=q.findings[0].kind.value if failed and q.findings else "failure",
                details=explanation(q) if failed else "",
                output=f"estimated cost {q.cost_before} -> {q.cost_after} ({change}); "
                f"would use: {', '.join(q.would_use) or 'none of the new indexes'}",
            )
        )
    return cases
