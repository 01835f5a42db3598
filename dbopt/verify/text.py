"""verify's results in words, shared by every output: plan trees as text, and the one
explanation of a verdict that the terminal, Markdown, JSON and JUnit all show.

The explanation is a sequence of :class:`Line` values so that a terminal can colour what a
file or a CI report prints as plain text: the words are the same everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from dbopt.verify.hypothetical import WhatIf
from dbopt.verify.plan import PlanNode, fmt_count
from dbopt.verify.run import QueryResult
from dbopt.verify.verdict import Finding, FindingKind, MeantIndex, Status


def _node_numbers(node: PlanNode) -> str:
    if node.never_executed:
        return "never executed"
    if node.actual_rows is None:
        return f"estimated rows {fmt_count(node.plan_rows)}, cost {node.cost:,.2f}"
    parts = [f"rows {fmt_count(node.actual_rows)}"]
    if node.rows_removed:
        parts.append(f"removed by filter {fmt_count(node.rows_removed)}")
    if node.loops and node.loops > 1:
        parts.append(f"loops {node.loops}")
    if node.total_ms is not None:
        parts.append(f"{node.total_ms:.3f} ms")
    return ", ".join(parts)


def plan_lines(
    plan: PlanNode, mark: PlanNode | None = None, why: str | None = None
) -> list[tuple[str, bool]]:
    """The plan as indented lines, each with True when it belongs to the marked node."""
    lines: list[tuple[str, bool]] = []

    def visit(node: PlanNode, depth: int) -> None:
        marked = node is mark
        indent = "  " * depth + ("-> " if depth else "")
        note = f"   <== {why}" if marked and why else ("   <==" if marked else "")
        lines.append((f"{indent}{node.label}  ({_node_numbers(node)}){note}", marked))
        pad = "  " * depth + ("   " if depth else "") + "   "
        lines.extend((f"{pad}{cond}", marked) for cond in node.conditions)
        for child in node.children:
            visit(child, depth + 1)

    visit(plan, 0)
    return lines


def plan_text(plan: PlanNode, mark: PlanNode | None = None, why: str | None = None) -> str:
    """The plan as indented text, the marked node flagged with ``<==``."""
    return "\n".join(line for line, _ in plan_lines(plan, mark, why))


class Role(StrEnum):
    """What a line of an explanation is (a terminal styles each role its own way)."""

    FINDING = "finding"
    HEADING = "heading"
    PLAN = "plan"
    #: A line of the plan node that hurt most.
    CULPRIT = "culprit"
    MEANT = "meant"
    BLANK = "blank"


@dataclass(frozen=True, slots=True)
class Line:
    """One line of an explanation; ``finding`` is set on the lines of findings."""

    text: str
    role: Role
    finding: Finding | None = None

    @property
    def status(self) -> Status | None:
        """The status of the line's finding, when it is one that counts (not a note)."""
        if self.finding is None or self.finding.kind == FindingKind.NOTE:
            return None
        return self.finding.status


_BLANK = Line("", Role.BLANK)


def _lines(
    findings: Sequence[Finding],
    plan: PlanNode | None,
    which: str,
    culprit: PlanNode | None = None,
    why: str | None = None,
    meant: Sequence[MeantIndex] = (),
) -> tuple[Line, ...]:
    lines = [Line(f"- {f.status.value}: {f.message}", Role.FINDING, f) for f in findings]
    if plan is not None:
        lines += [_BLANK] if lines else []
        lines += [Line(f"{which}:", Role.HEADING)]
        lines += [
            Line(text, Role.CULPRIT if marked else Role.PLAN)
            for text, marked in plan_lines(plan, culprit, why)
        ]
    if meant:
        lines += [_BLANK, Line("meant to be served by:", Role.HEADING)]
        lines += [Line(f"  {mi.describe()}", Role.MEANT) for mi in meant]
    return tuple(lines)


def explanation_lines(item: QueryResult | WhatIf) -> tuple[Line, ...]:
    """Why a query did (not) pass: its findings, the plan with the node that hurt marked,
    and the spec indexes meant to serve it; for a query planned with hypothetical indexes,
    its findings and the plan estimated with them."""
    if isinstance(item, WhatIf):
        which = "estimated plan with the hypothetical indexes"
        return _lines(item.findings, item.plan_after, which)
    m, v = item.measurement, item.verdict
    which = "plan of the last run" if m.analyzed else "estimated plan (EXPLAIN without ANALYZE)"
    return _lines(v.findings, m.plan, which, v.culprit, v.culprit_why, v.meant)


def explanation(item: QueryResult | WhatIf) -> str:
    """:func:`explanation_lines` as text (for terminals, Markdown, JSON and JUnit alike)."""
    return "\n".join(line.text for line in explanation_lines(item))
