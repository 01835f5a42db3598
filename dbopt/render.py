"""Render rows for people (rich, on a terminal) and for machines (plain, json, markdown)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from dbopt.planner import Plan

FORMATS = ("table", "plain", "json", "markdown")


def rows_text(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    fmt: str,
    *,
    title: str | None = None,
) -> str:
    """Rows as text in one of the non-rich formats (plain, markdown, json)."""
    if fmt == "json":
        return json.dumps([dict(zip(headers, row, strict=True)) for row in rows], default=str)
    from tabulate import tabulate

    tablefmt = "github" if fmt == "markdown" else "plain"
    body = tabulate([[_cell(c) for c in row] for row in rows], headers=headers, tablefmt=tablefmt)
    if title and fmt == "markdown":
        return f"### {title}\n\n{body}"
    return f"{title}\n{body}" if title else body


def print_rows(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    fmt: str,
    out: TextIO,
    *,
    title: str | None = None,
) -> None:
    """Print rows to ``out``: a rich table for ``table``, else :func:`rows_text`."""
    if fmt != "table":
        out.write(rows_text(headers, rows, fmt, title=title) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for header in headers:
        table.add_column(header)
    for row in rows:
        table.add_row(*(_cell(c) for c in row))
    Console(file=out).print(table)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def flag(option: str) -> str:
    """The command-line flag of a library option ("replace_drifted" -> --replace-drifted)."""
    return "--" + option.replace("_", "-")


def plan_rows(plan: Plan) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of a plan: one row per action."""
    rows = []
    for action in plan.actions:
        note = (
            action.reason
            if action.enabled
            else f"{action.reason} (needs {flag(action.needs or '')})"
        )
        rows.append([action.kind.value, str(action.name), str(action.table), note])
    return ["action", "object", "on", "why"], rows


def plan_sql(plan: Plan, *, rollback: bool = False) -> str:
    """The exact SQL apply (or rollback) would run, in order, laid out for reading (the same
    statements: see :mod:`dbopt.sqlformat`), one blank line between actions."""
    from dbopt.planner import StepMode
    from dbopt.sqlformat import script

    actions = plan.runnable
    if rollback:
        actions = tuple(reversed(actions))
    out: list[str] = []
    for action in actions:
        steps = [
            script(
                [s.as_string() for s in (*step.statements, *step.then)],
                transaction=step.mode == StepMode.SWAP,
            )
            for step in (action.rollback if rollback else action.forward)
        ]
        out.append(f"-- {action.kind.value} {action.name}: {action.reason}")
        out.append("\n\n".join(steps))
        out.append("")
    if not out:
        return "-- nothing to do\n"
    return "\n".join(out)


def plan_json(plan: Plan) -> str:
    """The plan as JSON, for CI and scripts."""
    return json.dumps(
        {
            "changes": len(plan.changes),
            "runnable": len(plan.runnable),
            "catalog_queries": plan.catalog_queries,
            "actions": [
                {
                    "action": a.kind.value,
                    "kind": a.object_type,
                    "object": str(a.name),
                    "table": str(a.table),
                    "reason": a.reason,
                    "enabled": a.enabled,
                    "needs": flag(a.needs) if a.needs else None,
                    "current": a.current,
                    "desired": a.desired,
                    "sql": [s.text() for s in a.forward],
                    "rollback_sql": [s.text() for s in a.rollback],
                }
                for a in plan.actions
            ],
        },
        separators=(",", ":"),  # compact: plans of 10,000 specs are for machines,
    )
